"""Mean-field theory of an Elman RNN's backpropagation through time.

The network (:class:`jaxbp.RNN`), width n, inputs of d components::

    z_t = x_t W_in + h_{t-1} W + b,   h_t = phi(z_t),   h_0 = 0,   t = 1 .. T,
    W ~ N(0, sigma_w2 / n),   W_in ~ N(0, sigma_u2 / d),   b ~ N(0, sigma_b2),

with q_x = ||x_t||^2 / d the mean square input component. Given x_t, the input
term x_t W_in adds a fresh N(0, sigma_u2 q_x) to every unit, so at infinite width
the pre-activation variance follows the feed-forward variance map with the input
in the bias's place (Molgedey et al. 1992; Chen, Pennington & Schoenholz 2018)::

    q_t = sigma_w2 E[phi(z)^2]_{z ~ N(0, q_{t-1})} + sigma_u2 q_x + sigma_b2,   q_1 = sigma_u2 q_x + sigma_b2,

to its fixed point q*. Backpropagation through time is the deep net's delta
recursion with time for depth, ``delta_{t-1} = (delta_t W^T) * phi'(z_{t-1})``, so
``E||delta_{t-1}||^2 = chi_1(q_{t-1}) E||delta_t||^2``, ``chi_1(q) = sigma_w2
E[phi'(z)^2]``: going back in time ``ln||delta_t||^2`` climbs ``ln chi_1(q*)`` a step
once q_t has settled (:func:`predicted_slope`), ``ln chi_1(q_t)`` before
(:func:`variance_trajectory`, the *layerwise* prediction).

**Finite width.** :func:`jaxbp.theory.finite_width.log_gradient_stats` gives the mean
and variance of ``ln||delta_{T-m}||^2 - ln||delta_T||^2`` of a dense net with a
*fresh* W per layer (at n = 256, relu loses (3 kappa - 1) / (2 n) = 0.0098 nats a
step to the log's concavity). :func:`log_gradient_stats` here runs it with time
for depth, ``sigma_b2 -> sigma_u2 q_x + sigma_b2`` and ``q0 -> q_1``. That is exact
for the untied recursion, where W_t is drawn anew at every step; an RNN uses one W
at every step, so the delta of step t + 1 is not independent of the W it meets at
step t, and products of one matrix are not products of independent ones (a linear
RNN's ``||delta W^k||`` grows like the spectral radius of W to the power k). Whether
that moves the slope is measured, not modelled: ``experiments/rnn_sweep.py``
(:mod:`jaxbp.studies.rnn_sweep`) sets the tied RNN beside the untied control.

References: Molgedey, Schuchhardt & Schuster, "Suppressing chaos in neural networks
by noise", PRL 1992. Chen, Pennington & Schoenholz, "Dynamical isometry and a mean
field theory of RNNs", ICML 2018. Schoenholz et al., "Deep information propagation",
ICLR 2017.

>>> import math
>>> round(float(input_variance(0.05, 1.0, 0.0)), 6)          # sigma_u2 q_x + sigma_b2
0.05
>>> round(predicted_slope("relu", 2.0, 0.5, 0.0), 6) + 0.0   # He-init recurrence: critical
0.0
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from jaxbp.core import activations as _activations
from jaxbp.core import checks as _checks
from jaxbp.theory import finite_width as _fw
from jaxbp.theory import infinite_width as _mf


def _number(value, name, where, strict=False):
  return _checks.finite(value, name, where, low=0.0, open_low=strict)


def _args(where, activation, sigma_w2, sigma_u2, sigma_b2, q_x):
  act = _activations.get(activation)
  if not act.elementwise:
    raise ValueError(f"{where}: activation must be elementwise, got {act.name!r}.")
  return (act, _number(sigma_w2, "sigma_w2", where, strict=True),
          _number(sigma_u2, "sigma_u2", where), _number(sigma_b2, "sigma_b2", where),
          _number(q_x, "q_x", where))


def input_variance(sigma_u2, q_x, sigma_b2):
  """``sigma_u2 q_x + sigma_b2``: the variance each step's input and bias add to every
  unit; the recurrence's ``sigma_b2`` in the feed-forward theory, and ``q_1``."""
  return (_number(sigma_u2, "sigma_u2", "input_variance") * _number(q_x, "q_x", "input_variance")
          + _number(sigma_b2, "sigma_b2", "input_variance"))


def variance_map(q, activation, sigma_w2, sigma_u2, sigma_b2, q_x=1.0):
  """One step: ``q -> sigma_w2 E[phi(z)^2]_{z ~ N(0, q)} + sigma_u2 q_x + sigma_b2``."""
  act, s, u, b, qx = _args("variance_map", activation, sigma_w2, sigma_u2, sigma_b2, q_x)
  return _mf.variance_map(q, act, s, u * qx + b)


def variance_trajectory(activation, sigma_w2, sigma_u2, sigma_b2, steps, q_x=1.0):
  """``(q_t, ln chi_1(q_t))`` for t = 1 .. steps, from h_0 = 0 (``q_1 = sigma_u2 q_x +
  sigma_b2``): numpy arrays of shape ``(steps,)``. ``ln chi_1(q_t)`` is the predicted
  ``ln||delta_t||^2 - ln||delta_{t+1}||^2`` at infinite width."""
  act, s, u, b, qx = _args("variance_trajectory", activation, sigma_w2, sigma_u2, sigma_b2, q_x)
  steps = _checks.int_at_least(steps, 1, "steps", "variance_trajectory")
  beta = u * qx + b
  q = [beta]
  for _ in range(int(steps) - 1):
    q.append(float(_mf.variance_map(q[-1], act, s, beta)))
  q = np.asarray(q)
  return q, np.log(np.asarray(_mf.chi1(act, s, beta, q=jnp.asarray(q)), float))


def fixed_point(activation, sigma_w2, sigma_u2, sigma_b2, q_x=1.0):
  """q* of :func:`variance_map`, reached from q_1; ``inf`` where q_t grows without
  bound (relu with sigma_w2 >= 2 and an input), as :func:`jaxbp.meanfield.fixed_point`."""
  act, s, u, b, qx = _args("fixed_point", activation, sigma_w2, sigma_u2, sigma_b2, q_x)
  beta = u * qx + b
  return float(_mf.fixed_point(act, s, beta, q0=max(beta, 1e-300)))


def chi1(activation, sigma_w2, sigma_u2, sigma_b2, q_x=1.0):
  """``chi_1 = sigma_w2 E[phi'(z)^2]_{z ~ N(0, q*)}``: the factor of ``E||delta||^2`` per
  step back in time once q_t has settled (relu's does not depend on q: sigma_w2 / 2)."""
  act, s, u, b, qx = _args("chi1", activation, sigma_w2, sigma_u2, sigma_b2, q_x)
  q = fixed_point(act, s, u, b, qx)
  return float(_mf.chi1(act, s, u * qx + b, q=q if math.isfinite(q) else 1.0))


def predicted_slope(activation, sigma_w2, sigma_u2, sigma_b2, q_x=1.0):
  """``ln chi_1(q*)``: the infinite-width change of ``ln||delta_t||^2`` per step back."""
  return math.log(chi1(activation, sigma_w2, sigma_u2, sigma_b2, q_x))


def burn_in(activation, sigma_w2, sigma_u2, sigma_b2, steps, q_x=1.0, tol=1e-3):
  """The first step t (1-based) from which ``|ln chi_1(q_t) - ln chi_1(q*)| <= tol``
  holds to ``steps``: where a fit of the fixed point's slope may start. ``steps`` if
  it never settles within ``steps``."""
  _, ln_chi = variance_trajectory(activation, sigma_w2, sigma_u2, sigma_b2, steps, q_x)
  target = predicted_slope(activation, sigma_w2, sigma_u2, sigma_b2, q_x)
  bad = np.nonzero(~(np.abs(ln_chi - target) <= tol))[0]
  return 1 if len(bad) == 0 else int(min(bad[-1] + 2, steps))


def log_gradient_stats(activation, sigma_w2, sigma_u2, sigma_b2, width, steps, q_x=1.0):
  """Mean and variance of ``ln||delta_{T-m}||^2 - ln||delta_T||^2``, m = 0 .. T - 1,
  ``T = steps``, for one example of the *untied* recursion (fresh W each step) at
  ``width`` (``inf``: the layerwise profile): :func:`jaxbp.theory.finite_width.
  log_gradient_stats` with time for depth, the input in the bias and q0 = q_1."""
  act, s, u, b, qx = _args("log_gradient_stats", activation, sigma_w2, sigma_u2, sigma_b2, q_x)
  beta = u * qx + b
  if beta <= 0:
    raise ValueError("log_gradient_stats: sigma_u2 q_x + sigma_b2 must be > 0 (q_1 > 0; with "
                     "neither input nor bias the RNN's state stays 0).")
  mean, var = _fw.log_gradient_stats(act, s, beta, width, int(steps), q0=beta)
  return np.asarray(mean, float), np.asarray(var, float)


def fit_weights(first, last):
  """``c_t`` with ``sum_t c_t y_t`` the least-squares change of ``y_t`` per step *back*
  in time (minus the slope in t) over steps ``first .. last``: ``(last - first + 1,)``."""
  if not 1 <= first < last:
    raise ValueError(f"fit_weights: need 1 <= first < last, got first={first}, last={last}.")
  t = np.arange(first, last + 1, dtype=float)
  x = t - t.mean()
  return -x / np.sum(x * x)


def window_slopes(activation, sigma_w2, sigma_u2, sigma_b2, width, steps, first, last,
                  q_x=1.0):
  """The predicted slope of ``ln||delta_t||^2`` per step back, fitted over steps
  ``first .. last`` of a sequence of ``steps``: a dict of

  * ``fixed_point``: ``ln chi_1(q*)``;
  * ``layerwise``: infinite width, q_t from q_1 (differs from the fixed point's
    only where the window starts before q_t settles);
  * ``finite_width``: :func:`log_gradient_stats` at ``width`` (untied);
  * ``slope_sd``: the predicted spread of one example's fitted slope, from the
    per-step variances taken as independent (their increments of the variance).
  """
  if not 1 <= first < last <= steps:
    raise ValueError(f"window_slopes: need 1 <= first < last <= steps = {steps}, got "
                     f"first={first}, last={last}.")
  c = fit_weights(first, last)
  t = np.arange(first, last + 1)
  out = {"fixed_point": predicted_slope(activation, sigma_w2, sigma_u2, sigma_b2, q_x)}
  for name, n in (("layerwise", math.inf), ("finite_width", width)):
    mean, var = log_gradient_stats(activation, sigma_w2, sigma_u2, sigma_b2, n, steps, q_x)
    out[name] = float(np.sum(c * mean[steps - t]))
    if name == "finite_width":
      # y_t = y_last + sum of the steps above t: the fit weighs step k (k -> k - 1)
      # by the sum of c over t < k.
      step_var = np.diff(var)[steps - t[1:]]          # the step from k = t[1:] down to k - 1
      out["slope_sd"] = float(np.sqrt(np.sum(step_var * np.cumsum(c)[:-1] ** 2)))
  return out
