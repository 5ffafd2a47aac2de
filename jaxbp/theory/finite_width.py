"""Finite-depth and finite-width statistics of backpropagated gradient norms.

:mod:`jaxbp.theory.meanfield` predicts ``ln ||delta_{l-1}||^2 - ln ||delta_l||^2 =
ln chi_1(q*)`` for an infinitely wide net at its variance fixed point. This module
predicts the mean and variance of every partial sum ``ln ||delta_{depth-m}||^2 -
ln ||delta_depth||^2`` (:func:`log_gradient_stats`) of ``depth`` dense layers of width n::

    z_l = h_{l-1} W_l + b_l,  h_l = phi(z_l),  W ~ N(0, sigma_w2 / n),  b ~ N(0, sigma_b2),
    z_1 ~ N(0, q_0) per unit,  delta_depth ~ N(0, I_n) independent of the weights,
    delta_{l-1} = (delta_l W_l^T) * phi'(z_{l-1}).

**Layerwise (finite depth).** q_l follows the variance map from q_0, not from q*,
and step l contributes ln chi_1(q_l). Where q* = 0 (tanh without biases) q_l decays
like 1/l, so a finite net never reaches the fixed point's slope.

**One step at finite width, leading order.** Given delta_{k+1} and the forward
pass, g = delta_{k+1} W_{k+1}^T has i.i.d. N(0, sigma_w2 ||delta_{k+1}||^2 / n)
entries (if delta_{k+1} is independent of W_{k+1}), so with a_j = phi'(z_{k,j})^2::

    r_k = ||delta_k||^2 / ||delta_{k+1}||^2 = (sigma_w2 / n) sum_j x_j^2 a_j,  x_j ~ N(0, 1).

Its n terms are i.i.d. (z_{k,j} ~ N(0, q_k)), with mean E[a] and variance
E[x^4] E[a^2] - E[a]^2 = 3 E[a^2] - E[a]^2: E r_k = chi_1(q_k) and Var r_k / chi_1^2 =
(3 kappa - 1) / n, kappa = E[phi'^4] / E[phi'^2]^2. The delta method, ln r = ln E r + e
- e^2/2 + O(e^3) with e = r / E r - 1, gives::

    E ln r_k = ln chi_1(q_k) - (3 kappa_k - 1) / (2 n),    Var ln r_k = (3 kappa_k - 1) / n,

independent across steps to this order, so means and variances add over layers.
ReLU has kappa = 2, so 3 kappa - 1 = 5 (Hanin & Nica 2019); a linear net has kappa = 1.

**What the leading order misses.** Each item is O(1/n) per step, the order of the
bias above, and measurably matters (Monte Carlo: tests/test_finite_width.py and
experiments/width_sweep.py); all are included unless ``leading_order=True``. Write
the step's noise as u_k (the mean of a_j about E[a], relative variance
(kappa - 1) / n) plus eta_k (from the x_j^2, variance 2 kappa / n).

0. *The delta method's next order*, with mu2 = 3 kappa - 1 and mu3 = 15 m3 - 9 kappa
   + 2 (m3 = E[phi'^6] / E[phi'^2]^3) the central moments of y = x^2 a / E[a]:
   E ln r gains (mu3 / 3 - 3 mu2^2 / 4) / n^2, Var ln r gains (5 mu2^2 / 2 - mu3) / n^2.
   For relu at n = 64 that is +6% of the variance; for the critical sigmoid
   (kappa ~ 4.4) -0.004 nats per step.
1. *q_l fluctuates.* Given the layer below, z_{k,j} are i.i.d. N(0, qhat_k) with
   qhat_k = sigma_w2 ||h_{k-1}||^2 / n + sigma_b2. Its relative error e_k = qhat_k / q_k - 1
   follows e_{k+1} = a_k e_k + beta_k e_k^2 / 2 + v_k (a_k = V'(q_k) q_k / q_{k+1},
   beta_k = V''(q_k) q_k^2 / q_{k+1}, v_k the noise of the mean of phi(z)^2, variance
   sigma_w2^2 Var[phi^2] / (n q_{k+1}^2)), e_1 = 0, so ln chi_1(qhat_k) = ln chi_1(q_k) +
   c_k e_k + d_k e_k^2 / 2 (c = q d ln chi_1 / dq, d = q^2 d^2 ln chi_1 / dq^2). The mean
   gains c_k E e_k + d_k Var e_k / 2; the variance gains the e-terms, correlated
   across layers (e_k carries v_j, j < k, through prod a) and with u_j (both read
   phi(z_j): Cov(u_j, v_j) = sigma_w2 Cov[phi'^2, phi^2] / (n E[phi'^2] q_{j+1})).
   Zero for relu, whose chi_1 does not depend on q.
2. *delta_{k+1} depends on W_{k+1}*, through z_{k+1} = h_k W_{k+1} + b_{k+1}, i.e. on
   W_{k+1} along hh = h_k / ||h_k||. Splitting W there, g = g_perp + s hh: g_perp is
   the independent part on the n - 1 other directions, and s = delta_{k+1} . y / ||h_k||
   with y = z_{k+1} - b_{k+1}. Let sigma_k = E s^2 / (sigma_w2 ||delta_{k+1}||^2 / n)
   (1 if independent). E ln r_k gains (sigma_k - 1) F_k / n, F = E[phi^2 phi'^2] /
   (E[phi^2] E[phi'^2]) the weight of hh in sum_j g_j^2 a_j. Since delta_{k+1} =
   g' * phi'(z_{k+1}) and g' itself has its s' hh' part, with p = q - sigma_b2::

       sigma_k - 1 = (rho_{k+1} - 1) + gamma_{k+1} (sigma_{k+1} - 1),   0 on the top step,
       rho = E[phi'^2 y^2] / (p E[phi'^2]) = 1 + (p / q) (E[phi'^2 z^2] / (q E[phi'^2]) - 1),
       gamma = E[phi phi' y]^2 / (p E[phi'^2] E[phi^2]) = p E[phi phi' z]^2 / (q^2 E[phi'^2] E[phi^2]).

   rho = 1 for relu (and for linear nets, where gamma = p / q); rho < 1 for tanh
   and sigmoid, and near q = 0 tanh has gamma ~ 1, so the deficit accumulates down
   the net: -0.1 nats over 32 layers of tanh at q_0 = 1, sigma_b2 = 0, n = 128.
3. *A batch*: the depth sweep averages ||delta_l||^2 over B examples before the
   log. If each example's sum S_b has variance s2 + t2 and covariance t2 with
   another's, and they are Gaussian, the entry ln mean_b exp(S_b) has mean
   E S + g_B(s2) and variance t2 + h_B(s2) (:mod:`jaxbp.theory.log_mean_exp`;
   (1 - 1/B) s2 / 2 and s2 / B for small s2, far less beyond s2 ~ 1). t2 comes
   from the shared weights: the u and v noises of two examples covary through
   their forward correlation c_l (the correlation map with varying q, from
   c_1 = sigma_b2 / q_0: independent input directions of equal norm, as in the
   sweep), and the eta noises through the squared cosine of their deltas
   (1/n at the top, carried down by E[phi'^a phi'^b] / E[phi'^2] and renewed by
   E[a^a a^b] / (n E[a]^2) per step), 2 cos^2 E[a^a a^b] / (n E[a]^2).

Not modelled: terms O(depth / n^2) beyond item 0, and correlations the Gaussian
picture of item 3 leaves out.

References:
  Hanin, "Which neural net architectures give rise to exploding and vanishing
    gradients?", NeurIPS 2018.
  Hanin & Nica, "Products of many large random matrices and gradients in deep
    neural networks", Comm. Math. Phys. 2019.
  Schoenholz et al., "Deep information propagation", ICLR 2017.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxbp.core import activations as _activations
from jaxbp.core import checks as _checks
import jaxbp.theory.layer_moments as _moments
import jaxbp.theory.log_mean_exp as _lme
import jaxbp.theory.infinite_width as _mf

_PAIR_POINTS = 256   # nodes per axis of the two-example expectations (batch > 1)


def _suffix(x):
  """S[j] = sum_{k >= j} x_k, with S[len(x)] = 0."""
  return jnp.concatenate([jnp.cumsum(x[::-1])[::-1], jnp.zeros((1,), x.dtype)])


def _from_top(S, D):
  """Entry m = S[D - m], m = 0 .. len(S) - 1, for the D steps of a net padded to
  len(S) - 1 step slots (0-based step k reads layer k + 1): the sum over the top m
  steps when S is a suffix sum. nan beyond the net's depth."""
  idx = D - jnp.arange(S.shape[-1])
  return jnp.where(idx >= 0, S[..., jnp.clip(idx, 0, None)], jnp.nan)


def _tail(a, c):
  """T[j] = sum_{k > j} c_k prod_{i=j+1}^{k-1} a_i (0-based steps, j = 0 .. len(a) - 1):
  how much the noise v_j moves every later step's ln chi_1, through e_k. One reverse
  scan, T[j] = c_{j+1} + a_{j+1} T[j+1], T[last] = 0."""
  def step(t, k):
    t = c[k + 1] + a[k + 1] * t
    return t, t
  zero = jnp.zeros((), c.dtype)
  _, T = lax.scan(step, zero, jnp.arange(a.shape[0] - 1), reverse=True)
  return jnp.concatenate([T, zero[None]])


def _noise_sums(T, a, w_vv, w_uv, D):
  """Per top-m window (steps K = D - m .. D - 1, m = 0 .. len(a)): the variance its
  sum of ln chi_1 gains from the v noises, and twice their covariance with the u noises,

    sum_j w_vv[j] G_m[j]^2 + 2 sum_{j >= K} w_uv[j] G_m[j],
    G_m[j] = sum_{k >= K, k > j} c_k prod_{i=j+1}^{k-1} a_i,

  in O(steps) time and memory (``T`` from :func:`_tail`). For j >= K, G_m[j] = T[j];
  for j < K the product splits at K, G_m[j] = prod_{i=j+1}^{K-1} a_i T[K-1], so

    sum_{j<K} w_vv[j] G_m[j]^2 = T[K-1]^2 U[K],   U[K+1] = a_K^2 U[K] + w_vv[K], U[0] = 0,

  and the rest is a suffix sum over j >= K. Entries with K < 0 (beyond the net) are 0."""
  def grow(u, k):
    return a[k] ** 2 * u + w_vv[k], u
  zero = jnp.zeros((), T.dtype)
  last, U = lax.scan(grow, zero, jnp.arange(a.shape[0]))
  U = jnp.concatenate([U, last[None]])                                  # U[K], K = 0 .. steps
  T_before = jnp.concatenate([zero[None], T])                           # T[K - 1]
  # Where T[K-1] = 0 nothing reaches back past K; skip U there (it may be inf).
  below = jnp.where(T_before == 0, 0.0, T_before ** 2 * U)
  by_K = below + _suffix(w_vv * T * T + 2.0 * w_uv * T)
  out = _from_top(by_K, D)
  return jnp.where(jnp.isnan(out), 0.0, out)


@functools.partial(jax.jit, static_argnames=("act", "size", "batch", "leading_order", "n_pts"))
def _stats(act, s, b, n, q0, depth, tab, size, batch, leading_order, n_pts):
  """The ``(size,)`` profiles of a net of ``depth`` <= ``size`` layers (traced: nets of
  many depths share one program); entries beyond depth - 1 are nan."""
  dtype = q0.dtype
  D = depth - 1                        # steps; the top one is D - 1
  k_all = jnp.arange(size - 1)
  valid = k_all < D
  if size == 1:
    return jnp.zeros((1,), dtype), jnp.zeros((1,), dtype)
  # q is kept where q^2 and 1/q^2 are normal numbers (q = 0, e.g. q* of tanh without
  # biases, is its limit q -> 0+; relu's numbers do not depend on q at all).
  lo, hi = (jnp.asarray(jnp.finfo(dtype).tiny ** 0.5 * 16, dtype),
            jnp.asarray(jnp.finfo(dtype).max ** 0.25, dtype))
  tiny = jnp.finfo(dtype).tiny

  def forward(q, _):
    lay = _moments.layer(act, s, b, jnp.clip(q, lo, hi), n_pts)
    return lay["q_next"], lay
  # Layers 1 .. size; the steps read 1 .. depth-1, and rho, gamma of the layer above.
  _, L = lax.scan(forward, q0, None, length=size)
  inv_n = jnp.where(jnp.isinf(n), 0.0, 1.0 / n)
  top = lambda key: L[key][:size - 1]
  sums = lambda x: _from_top(_suffix(jnp.where(valid, x, 0.0)), D)
  kappa = top("kappa")
  mu2 = 3.0 * kappa - 1.0
  step_mean, step_var = top("ln_chi") - 0.5 * mu2 * inv_n, mu2 * inv_n
  if leading_order:
    return sums(step_mean), sums(step_var)
  # 0. The delta method to 1/n^2: third central moment of y = x^2 a / E[a].
  mu3 = 15.0 * top("m3") - 9.0 * kappa + 2.0
  step_mean += (mu3 / 3.0 - 0.75 * mu2 * mu2) * inv_n ** 2
  step_var += (2.5 * mu2 * mu2 - mu3) * inv_n ** 2

  # 1. q fluctuations: E e_k, Var e_k from e_1 = 0.
  a, beta, var_v = top("a"), top("beta"), jnp.where(valid, top("var_v") * inv_n, 0.0)

  def e_moments(carry, k):
    m, v = carry
    return (a[k] * m + 0.5 * beta[k] * v, a[k] ** 2 * v + var_v[k]), carry
  zero = jnp.zeros((), dtype)
  _, (e_mean, e_var) = lax.scan(e_moments, (zero, zero), k_all)
  step_mean += top("c") * e_mean + 0.5 * top("d") * e_var

  # 2. delta_{k+1} and W_{k+1}: sigma_k - 1 = rho_{k+1} - 1 + gamma_{k+1} (sigma_{k+1} - 1).
  def coherence(x, k):
    x = jnp.where(k >= D - 1, 0.0, L["rho"][k + 1] - 1.0 + L["gamma"][k + 1] * x).astype(dtype)
    return x, x
  _, excess = lax.scan(coherence, zero, k_all, reverse=True)
  step_mean += excess * top("F") * inv_n

  T = _tail(a, jnp.where(valid, top("c"), 0.0))
  cov_uv = jnp.where(valid, top("cov_uv") * inv_n, 0.0)
  mean = sums(step_mean)
  var = sums(step_var) + jnp.where(jnp.isnan(mean), jnp.nan, _noise_sums(T, a, var_v, cov_uv, D))
  if batch == 1:
    return mean, var

  # 3. A batch: the covariance t2 between two examples' sums, then log-mean-exp.
  def pairs(c, k):
    lay = {key: L[key][k] for key in ("q", "q_next", "A", "B")}
    out, c_next = _moments.pair(act, s, b, lay, c, _PAIR_POINTS)
    return c_next, out
  c1 = jnp.clip(b / jnp.maximum(q0, tiny), 0.0, 1.0)
  _, P = lax.scan(pairs, c1, k_all)

  # The deltas' squared cosine: 1/n at the top, then carried and renewed per step.
  def cosine(x, k):
    x = jnp.where(k >= D - 1, inv_n, x)
    return P["carry"][k] ** 2 * x + P["aa"][k] * inv_n, x
  _, cos2_above = lax.scan(cosine, inv_n, k_all, reverse=True)
  t2 = (sums((P["uu"] + 2.0 * cos2_above * P["aa"]) * inv_n)
        + _noise_sums(T, a, jnp.where(valid, P["vv"] * inv_n, 0.0),
                      jnp.where(valid, P["uv"] * inv_n, 0.0), D))
  t2 = jnp.minimum(t2, var)
  s2 = var - t2
  # The top's own chi^2_n norms (variance ~ 2/n) enter both logs of the entry.
  top_var = 2.0 * inv_n
  g, _ = _lme.moments(s2 + top_var, batch, tab)
  g0, _ = _lme.moments(top_var, batch, tab)
  _, h = _lme.moments(s2, batch, tab)
  return mean + g - g0, t2 + h


def _prepare(where, activation, sigma_w2, sigma_b2, width, q0, batch):
  act = _activations.get(activation)
  if not act.elementwise:
    raise ValueError(f"{where}: activation must be elementwise, got {act.name!r}.")
  batch = _checks.int_at_least(batch, 1, "batch", where)
  # Concrete values are checked; traced ones (under jit or vmap) cannot be, and pass.
  _mf.check_real(sigma_w2, "sigma_w2", where, low=0.0, open_low=True)
  _mf.check_real(sigma_b2, "sigma_b2", where, low=0.0)
  _mf.check_real(width, "width", where, low=0.0, open_low=True, allow_inf=True)
  if q0 is not None:
    _mf.check_real(q0, "q0", where, low=0.0, open_low=True)
  sigma_w2, sigma_b2, width, q0 = (np.asarray(v) if isinstance(v, (list, tuple)) else v
                                   for v in (sigma_w2, sigma_b2, width, q0))
  dtype = jnp.result_type(sigma_w2, sigma_b2, float)
  s, b = jnp.asarray(sigma_w2, dtype), jnp.asarray(sigma_b2, dtype)
  q0 = _mf.fixed_point(act, s, b) if q0 is None else q0
  tab = tuple(jnp.asarray(x, dtype) for x in _lme.table(batch)) if batch > 1 else None
  return act, s, b, jnp.asarray(width, dtype), jnp.asarray(q0, dtype), batch, tab


def log_gradient_stats(activation, sigma_w2, sigma_b2, width, depth, q0=None, batch=1,
                       leading_order=False, num_points=_mf.NUM_POINTS):
  """Predicted mean and variance of ``ln ||delta_{depth-m}||^2 - ln ||delta_depth||^2``.

  The statistic and the theory are in the module docstring. Entry m = 0 .. depth-1
  of each ``(depth,)`` result is for m backward steps from the top: entry 0 is 0,
  entry depth-1 is R = ln ||delta_1||^2 - ln ||delta_depth||^2. With ``batch`` B > 1,
  ``||delta||^2`` is ``mean_b ||delta^b||^2`` over B examples through the same weights.

  Args:
    activation: an elementwise activation (name or :class:`~jaxbp.activations.Activation`).
    sigma_w2, sigma_b2: weight and bias variances (may be arrays, or traced).
    width: n > 0 (may be an array, or traced; ``inf`` gives the layerwise
      infinite-width profile).
    depth: the number of layers, a static int >= 1.
    q0: the input pre-activation variance q_1 > 0; q* (meanfield.fixed_point) if None,
      and then nan where q* is not finite.
    batch: examples averaged before the log, a static int >= 1.
    leading_order: only ln chi_1(q_l) - (3 kappa_l - 1) / (2n) and (3 kappa_l - 1) / n
      per step (one example: ``batch`` is ignored).
    num_points: quadrature nodes (meanfield.gaussian_expectation).

  Returns:
    ``(mean, var)``, each of shape ``broadcast(sigma_w2, sigma_b2, width, q0) + (depth,)``.

  Cost: time and memory linear in ``depth``, per point of the broadcast arguments.
  Each layer's Gaussian moments take a few passes over ``num_points`` nodes (with
  ``batch`` > 1, also a 256 x 256 product rule a layer, ~20x the time); the sums
  over windows are scans. Memory is ~0.2 kB a layer. Each new ``depth`` compiles
  once (~3 s). Measured on 2 CPU cores, float64, one point, compiled: depth 10,000
  in 0.5 s (batch 8: 10 s), depth 100,000 in ~8 s, both under 0.2 GB.

  >>> import math
  >>> mean, var = log_gradient_stats("relu", 2.0, 0.0, math.inf, 3)   # He init
  >>> [round(float(x), 6) + 0.0 for x in mean], [float(x) for x in var]
  ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
  """
  where = "log_gradient_stats"
  depth = _checks.int_at_least(depth, 1, "depth", where)
  leading_order = _checks.boolean(leading_order, "leading_order", where)
  num_points = _mf.check_points(num_points)
  act, s, b, n, q0, batch, tab = _prepare(where, activation, sigma_w2, sigma_b2, width, q0,
                                          batch)
  fn = lambda s_, b_, n_, q_: _stats(act, s_, b_, n_, q_, depth, tab, depth, batch,
                                     leading_order, num_points)
  args = jnp.broadcast_arrays(s, b, n, q0)
  if args[0].ndim == 0:
    return fn(*args)
  shape = args[0].shape
  mean, var = jax.vmap(fn)(*(x.reshape(-1) for x in args))   # one compile for every point
  return mean.reshape(shape + (depth,)), var.reshape(shape + (depth,))


def window_slope(profile, first, last):
  """The least-squares change per layer going backwards of a ``(..., depth)`` profile
  (entry m <-> hidden layer depth - m) over hidden layers [first, last]: what the
  depth sweep fits (the sign of diagnostics.fit_log_slope); nan if first >= last."""
  profile = jnp.asarray(profile)
  depth = profile.shape[-1]
  first = _checks.int_at_least(first, 1, "first", "window_slope")
  last = _checks.int_at_least(last, 1, "last", "window_slope")
  if not 1 <= first <= last <= depth:
    raise ValueError(f"window_slope: need 1 <= first <= last <= depth = {depth}, "
                     f"got first={first}, last={last}.")
  return _window_slope(profile, depth, first, last)


def _window_slope(profile, depth, first, last):
  """window_slope with depth, first, last possibly traced (profile padded with nan)."""
  layer = jnp.arange(1, profile.shape[-1] + 1, dtype=profile.dtype)
  keep = (layer >= first) & (layer <= last)
  y = profile[..., jnp.clip(depth - jnp.arange(1, profile.shape[-1] + 1), 0, None)]
  w = keep.astype(profile.dtype)
  x = jnp.broadcast_to((layer - jnp.sum(w * layer) / jnp.sum(w)) * w, y.shape)
  y = jnp.where(jnp.broadcast_to(keep, y.shape), y, 0.0)
  denom = jnp.sum(x * x, axis=-1)
  # ln ||delta_l||^2 rises going down in l when gradients explode backwards.
  slope = -jnp.sum(x * y, axis=-1) / jnp.where(denom > 0, denom, 1.0)
  return jnp.where(denom > 0, slope, jnp.nan)


def sweep_predictions(activation, sigma_w2, sigma_b2, q0, depth, first, last, width,
                      batch=1, max_depth=None):
  """Predictions for a depth sweep's rows (every argument but activation and batch
  an array of rows, or a scalar): nets of ``depth`` hidden layers from input
  variance ``q0``, their slopes fitted over hidden layers [first, last], and
  ``ln mean_b ||delta||^2`` averaged over ``batch`` examples.

  One compiled program serves every depth up to ``max_depth`` (default the deepest
  row; give the same one on every call to compile once).

  Returns:
    A dict of arrays: ``slope_layerwise`` (infinite width, finite depth, from q0),
    ``slope_finite_width`` (at ``width``), and ``log_ratio_mean``, ``log_ratio_var``:
    the mean and variance of R = ln ||delta_1||^2 - ln ||delta_depth||^2 at ``width``.
  """
  depth = np.asarray(depth)
  if depth.size == 0 or depth.min() < 1 or not np.issubdtype(depth.dtype, np.integer):
    raise ValueError(f"sweep_predictions: depth must be ints >= 1, got {depth!r}.")
  where = "sweep_predictions"
  act, s, b, n, q0, batch, tab = _prepare(where, activation, sigma_w2, sigma_b2, width, q0,
                                          batch)
  deepest = int(depth.max())
  size = deepest if max_depth is None else _checks.int_at_least(max_depth, deepest,
                                                                "max_depth", where)
  args = jnp.broadcast_arrays(s, b, n, q0, jnp.asarray(depth), jnp.asarray(first),
                              jnp.asarray(last))
  shape = args[0].shape

  out = _sweep_rows(act, *(x.reshape(-1) for x in args), tab, size, batch)
  return {k: v.reshape(shape) for k, v in out.items()}


@functools.partial(jax.jit, static_argnames=("act", "size", "batch"))
def _sweep_rows(act, s, b, n, q0, depth, first, last, tab, size, batch):
  def one(s_, b_, n_, q_, d_, f_, l_):
    # Infinite and finite width as one vmapped program (half the compile of two).
    widths = jnp.stack([jnp.asarray(jnp.inf, n_.dtype), n_])
    mean, var = jax.vmap(lambda w: _stats(act, s_, b_, w, q_, d_, tab, size, batch, False,
                                          _mf.NUM_POINTS))(widths)
    slopes = _window_slope(mean, d_, f_, l_)
    return {"slope_layerwise": slopes[0], "slope_finite_width": slopes[1],
            "log_ratio_mean": mean[1, d_ - 1], "log_ratio_var": var[1, d_ - 1]}
  return jax.vmap(one)(s, b, n, q0, depth, first, last)


def predicted_slope(activation, sigma_w2, sigma_b2, depth, first, last, q0=None,
                    width=math.inf, batch=1):
  """The slope a net of ``depth`` hidden layers should show over hidden layers
  [first, last]: layerwise from q0 at ``width=inf``, with the finite-width terms
  otherwise (:func:`log_gradient_stats` then :func:`window_slope`)."""
  mean, _ = log_gradient_stats(activation, sigma_w2, sigma_b2, width, depth, q0=q0,
                               batch=batch)
  return window_slope(mean, first, last)
