"""Mean-field theory at infinite width: q*, chi_1, critical sigma_w^2, depth scales.

A wide network with i.i.d. Gaussian parameters, in the project's parametrisation

  W_l[i, j] ~ N(0, sigma_w2 / fan_in),   b_l[j] ~ N(0, sigma_b2),
  z_l = h_{l-1} W_l + b_l,               h_l = phi(z_l),

has Gaussian pre-activations whose variance q_l follows the variance map
(Poole et al. 2016)

  q_l = sigma_w2 E_z[phi(sqrt(q_{l-1}) z)^2] + sigma_b2,        z ~ N(0, 1),

to a fixed point q*. Two inputs with correlation c there follow the correlation map

  c_l = (sigma_w2 E[phi(u_1) phi(u_2)] + sigma_b2) / q*,
  u_1 = sqrt(q*) z_1,   u_2 = sqrt(q*) (c z_1 + sqrt(1 - c^2) z_2),

whose slope at c = 1 is chi_1 = sigma_w2 E_z[phi'(sqrt(q*) z)^2]. The same number
governs backprop: delta_{l-1} = (delta_l W_l^T) * phi'(z_{l-1}) gives
E||delta_{l-1}||^2 = chi_1 E||delta_l||^2 (Schoenholz et al. 2017), so gradients
vanish for chi_1 < 1 (ordered phase), explode for chi_1 > 1 (chaotic phase), and
keep their size on the critical line chi_1 = 1. He et al. (2015) init,
sigma_w2 = 2, is that line for ReLU; Glorot & Bengio (2010) init, sigma_w2 = 1
for square layers, is it for tanh with sigma_b2 = 0.

Expectations are fixed-size composite Gauss-Legendre sums against the normal
density, so everything is jnp: it jits and vmaps over sigma_w2 and sigma_b2. z = 0,
where relu' jumps, is a panel edge, so E[relu'(z)^2] = 1/2 holds to round-off. (Not
Gauss-Hermite: its nodes are too sparse near 0 to resolve sigmoid'(sqrt(q) z)^2 at
the large q* of a critical sigmoid; see :func:`jaxbp.theory.quadrature.normal_rule`.)

Arguments are checked where they are concrete numbers or arrays: sigma_w2 and
sigma_b2 must be finite and >= 0, a given q >= 0 (inf means the limit q -> inf, as
fixed_point's inf answer does), c in [-1, 1]; anything else is a ValueError, and what
is not a real number (a str, a bool, None) a TypeError, each naming the function
and the argument. Traced values (under jit or vmap) cannot be read and pass unchecked.

References: Poole et al., "Exponential expressivity in deep neural networks through
transient chaos", NeurIPS 2016. Schoenholz et al., "Deep information propagation",
ICLR 2017. Pennington, Schoenholz & Ganguli, "Resurrecting the sigmoid in deep
learning through dynamical isometry: theory and practice", NeurIPS 2017. He et al.,
"Delving deep into rectifiers", ICCV 2015. Glorot & Bengio, "Understanding the
difficulty of training deep feedforward neural networks", AISTATS 2010.

>>> import jaxbp.meanfield as mf
>>> round(float(mf.chi1("relu", 2.0, 0.1)), 6)  # He init is critical for ReLU
1.0
>>> round(float(mf.critical_sigma_w2("tanh", 0.05)), 3)
1.761
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxbp.core import activations as _activations
from jaxbp.core import checks as _checks
import jaxbp.theory.quadrature as _quadrature

NUM_POINTS = 2048  # nodes of the z-rule: 256 panels x 8 Gauss-Legendre nodes on [-12, 12]
_ITERS = 100      # safeguarded Newton steps for a fixed point
_START_HI, MAX_SIGMA_W2 = 20.0, 2.0 ** 16  # critical_sigma_w2's bracket grows from 20 to this


check_real = _checks.real_array       # concrete-argument checks, shared with finite_width
check_points = _quadrature.check_points


class DepthScales(NamedTuple):
  """Depth scales of Schoenholz et al. (2017), in layers.

  Attributes:
    xi_q: |q_l - q*| ~ exp(-l / xi_q); xi_q = -1 / ln|V'(q*)|, V the variance map.
      Where q* = inf (relu-like phi, whose V' does not depend on q), V'(1):
      negative when q grows geometrically, inf when linearly.
    xi_c: |c_l - c*| ~ exp(-l / xi_c); xi_c = -1 / ln(chi_c(c*)), which is
      -1 / ln(chi_1) in the ordered phase (c* = 1).
    xi_grad: E||delta_l||^2 ~ exp(-(L - l) / xi_grad); xi_grad = -1 / ln(chi_1).
      Signed: negative when gradients explode (chi_1 > 1).
  All are inf at criticality, and nan only where q* is nan (not converged).
  """
  xi_q: jax.Array
  xi_c: jax.Array
  xi_grad: jax.Array


def gaussian_expectation(f, q, num_points=NUM_POINTS):
  """E_{z ~ N(0,1)}[f(sqrt(q) z)], elementwise in q, by composite Gauss-Legendre
  quadrature against the normal density (:func:`jaxbp.theory.quadrature.normal_rule`).

  ``f`` must be elementwise; ``q`` >= 0, where inf gives the limit q -> inf (f at
  +-inf: no node sits on z = 0). ``num_points`` is a multiple of 16.

  >>> round(float(gaussian_expectation(lambda u: u ** 2, 3.0)), 6)
  3.0
  """
  if not callable(f):
    raise TypeError(f"gaussian_expectation: f must be an elementwise function, got {f!r}.")
  (q,) = _variances("gaussian_expectation", "q", q)
  x, w = _quadrature.rule(num_points, jnp.result_type(q, float))
  shape = (1,) * q.ndim + (-1,)
  u = jnp.sqrt(q)[..., None] * x.reshape(shape)
  return jnp.sum(w.reshape(shape) * f(u), axis=-1)


def _elementwise(activation):
  act = _activations.get(activation)
  if not act.elementwise:
    raise ValueError(
        f"meanfield needs an elementwise activation, got {act.name!r}, whose units are "
        "coupled; use softmax only as the output of the loss.")
  return act


def _variances(where, q_name=None, q=None, **variances):
  """Checks sigma_w2-like ``variances`` (finite numbers >= 0) and ``q``, a pre-activation
  variance >= 0 that may be inf (fixed_point's answer where q grows without bound);
  returns them, q last, as arrays of one float dtype."""
  for name, value in variances.items():
    check_real(value, name, where, low=0.0)
  values = list(variances.values())
  if q_name is not None:
    check_real(q, q_name, where, low=0.0, allow_inf=True)
    values.append(q)
  values = [np.asarray(v) if isinstance(v, (list, tuple)) else v for v in values]
  # One dtype, never weak: the jitted internals then compile once per shape.
  dtype = jnp.result_type(*values, float)
  return [jnp.asarray(v, dtype) for v in values]


def _jit(fn):
  # The activation, node count and iteration count are static: one compile each.
  args = fn.__code__.co_varnames[:fn.__code__.co_argcount]
  return jax.jit(fn, static_argnames=[a for a in ("act", "grow", "iters", "n") if a in args])


@_jit
def _variance(act, q, s, b, n):
  return s * gaussian_expectation(lambda u: act.fn(u) ** 2, q, n) + b


def _positive(q):
  # At q = 0 the Gaussian collapses onto z = 0, where relu' jumps; take q -> 0+,
  # the limit a network with q_l -> 0 sees (relu keeps chi_1 = sigma_w2 / 2).
  return jnp.maximum(q, jnp.finfo(jnp.result_type(q, float)).tiny)


def _variance_slope(act, q, s, n):
  # dV/dq = sigma_w2 E[phi(u) phi'(u) z] / sqrt(q), u = sqrt(q) z: the exact derivative
  # of the quadrature's V. Equal to sigma_w2 E[phi'^2 + phi phi''] (Gaussian integration
  # by parts), but with no cancelling terms: pairs +-z add up >= 0 for monotone phi,
  # where phi phi'' turned the slope negative at q* ~ 1e4 (tanh) and xi_q into nan.
  q = _positive(q)
  r = jnp.sqrt(q)[..., None]
  return s * gaussian_expectation(lambda u: act.fn(u) / r * act.grad(u) * (u / r), q, n)


@_jit
def _chi1(act, q, s, n):
  return s * gaussian_expectation(lambda u: act.grad(u) ** 2, _positive(q), n)


def _solve(step, slope, x0, iters, lo, hi, floor=False):
  """Fixed point of x -> step(x): a Newton step on step(x) - x where safe, else step(x);
  with ``floor``, one below ``lo`` lands on it (near q = 0, V(q) ~ s q: Newton gives 0 +-)."""
  def body(_, x):
    fx, d = step(x), slope(x)
    newton = x + (fx - x) / (1.0 - d)
    newton = jnp.maximum(newton, lo) if floor else newton
    # Newton only where the map contracts: towards a stable fixed point, never an
    # unstable one (e.g. q = 0 for relu, sigma_w2 > 2).
    ok = (d < 1) & (newton >= lo) & (newton <= hi)
    return jnp.where(ok, newton, fx).astype(x.dtype)
  return lax.fori_loop(0, iters, body, x0)


@_jit
def _fixed_point(act, s, b, q0, iters, n):
  v_map = functools.partial(_variance, act, s=s, b=b, n=n)
  slope = functools.partial(_variance_slope, act, s=s, n=n)
  first = v_map(q0)
  x0 = jnp.broadcast_to(jnp.asarray(q0, first.dtype), first.shape)
  q = _solve(v_map, slope, x0, iters, 0.0, jnp.inf, floor=True)
  fq = v_map(q)
  tol = jnp.sqrt(jnp.finfo(fq.dtype).eps)
  converged = jnp.abs(fq - q) <= tol * jnp.maximum(q, fq)
  # V(q) = q + b, b > 0 (relu, sigma_w2 = 2) "converges" at q ~ b / eps when E[relu(z)^2]
  # rounds an ulp below 1/2; with slope V' = 1 it is no fixed point: q grows forever.
  marginal = (b > 0) & (slope(jnp.where(jnp.isfinite(q), q, 1.0)) >= 1 - tol)
  diverged = (fq > q) | jnp.isinf(q)
  return jnp.where(marginal, jnp.inf,
                   jnp.where(converged, q, jnp.where(diverged, jnp.inf, jnp.nan)))


def _with_fixed_point(where, act, sigma_w2, sigma_b2, q, num_points):
  if q is not None:
    return _variances(where, "q", q, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
  sigma_w2, sigma_b2 = _variances(where, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
  return sigma_w2, sigma_b2, _fixed_point(act, sigma_w2, sigma_b2, jnp.ones((), sigma_w2.dtype),
                                          _ITERS, num_points)


def variance_map(q, activation, sigma_w2, sigma_b2, num_points=NUM_POINTS):
  """One layer of the variance map: q -> sigma_w2 E[phi(sqrt(q) z)^2] + sigma_b2."""
  act = _elementwise(activation)
  sigma_w2, sigma_b2, q = _variances("variance_map", "q", q, sigma_w2=sigma_w2,
                                     sigma_b2=sigma_b2)
  return _variance(act, q, sigma_w2, sigma_b2, check_points(num_points))


def fixed_point(activation, sigma_w2, sigma_b2, q0=1.0, iters=_ITERS,
                num_points=NUM_POINTS):
  """q*, the variance the map reaches from q0: q* = sigma_w2 E[phi(sqrt(q*) z)^2] + sigma_b2.

  Solved by Newton steps on V(q) - q where the map contracts (V'(q) < 1), plain
  steps q <- V(q) elsewhere, inside ``lax.fori_loop``. Returns:
    q*   when |V(q) - q| <= sqrt(eps) q after ``iters`` steps;
    inf  when q is still growing: no finite fixed point, e.g. relu with
         sigma_w2 >= 2 and sigma_b2 > 0 (V(q) = sigma_w2 q / 2 + sigma_b2);
    nan  otherwise (not converged).
  For relu with sigma_w2 = 2, sigma_b2 = 0 every q is fixed and q0 is returned.
  chi_1 of relu / leaky_relu does not depend on q, so it is right even at inf.

  >>> round(float(fixed_point("relu", 1.0, 0.5)), 6)  # 0.5 / (1 - 1/2)
  1.0
  """
  act = _elementwise(activation)
  check_real(q0, "q0", "fixed_point", low=0.0)
  iters = _checks.int_at_least(iters, 0, "iters", "fixed_point")
  sigma_w2, sigma_b2, q0 = _variances("fixed_point", "q0", q0, sigma_w2=sigma_w2,
                                      sigma_b2=sigma_b2)
  return _fixed_point(act, sigma_w2, sigma_b2, q0, iters, check_points(num_points))


def chi1(activation, sigma_w2, sigma_b2, q=None, num_points=NUM_POINTS):
  """chi_1 = sigma_w2 E_z[phi'(sqrt(q) z)^2], at q = q* unless q is given.

  Uses the activation's hand-derived ``grad``. Slope of the correlation map at
  c = 1 and the per-layer factor of E||delta||^2 in backprop.

  >>> round(float(chi1("leaky_relu", 1.0, 0.0)), 6)  # sigma_w2 (1 + p^2) / 2, p = 0.01
  0.50005
  """
  act = _elementwise(activation)
  num_points = check_points(num_points)
  sigma_w2, sigma_b2, q = _with_fixed_point("chi1", act, sigma_w2, sigma_b2, q, num_points)
  return _chi1(act, q, sigma_w2, num_points)


def gradient_log_slope(activation, sigma_w2, sigma_b2, num_points=NUM_POINTS):
  """ln chi_1: predicted ln||delta_{l-1}||^2 - ln||delta_l||^2 per layer of backprop."""
  _variances("gradient_log_slope", sigma_w2=sigma_w2, sigma_b2=sigma_b2)
  return jnp.log(chi1(activation, sigma_w2, sigma_b2, num_points=num_points))


def correlation_map(c, activation, sigma_w2, sigma_b2, q=None, num_points=NUM_POINTS):
  """c -> (sigma_w2 E[phi(u_1) phi(u_2)] + sigma_b2) / q', q' = V(q), q = q* by default."""
  act = _elementwise(activation)
  check_real(c, "c", "correlation_map", low=-1.0, high=1.0)
  num_points = check_points(num_points)
  sigma_w2, sigma_b2, q = _with_fixed_point("correlation_map", act, sigma_w2, sigma_b2, q,
                                            num_points)
  return _correlation(act, c, q, sigma_w2, sigma_b2, num_points)


@_jit
def _correlation(act, c, q, s, b, n):
  # phi / r, r^2 = min(q, 1): products ~ q would flush to 0 at small q (0 / 0 at q = 0,
  # now the q -> 0+ limit); q* = inf (relu-like phi): the q -> inf limit, b negligible.
  q, c, b = jnp.broadcast_arrays(_positive(q), c, b)
  q, b = jnp.where(jnp.isinf(q), 1.0, q), jnp.where(jnp.isinf(q), 0.0, b)
  r2 = jnp.minimum(q, 1.0)
  f = lambda u: act.fn(u) / jnp.sqrt(r2).reshape(r2.shape + (1,) * (u.ndim - r2.ndim))
  e, m = _quadrature.bivariate_expectation(f, f, q, c, n), gaussian_expectation(lambda u: f(u) ** 2, q, n)
  return jnp.where(b > 0, (s * e * r2 + b) / (s * m * r2 + b), e / m)


def _depth(rate):
  # -1 / ln(rate); within quadrature round-off of 1 (sum(w) = 1 to ~1e-16) is critical.
  critical = jnp.abs(jnp.log(rate)) <= 8 * jnp.finfo(jnp.result_type(rate)).eps
  return jnp.where(critical, jnp.inf, -1.0 / jnp.log(rate))


@_jit
def _depth_scales(act, s, b, n):
  q = _fixed_point(act, s, b, 1.0, _ITERS, n)
  chi = _chi1(act, q, s, n)
  # Chaotic phase: c = 1 is unstable; solve for c* < 1 from c = 0, where
  # dc'/dc = sigma_w2 E[phi'(u_1) phi'(u_2)] = chi_c(c) (Poole et al. 2016).
  cmap = lambda c: _correlation(act, c, q, s, b, n)
  chi_c = lambda c: s * _quadrature.bivariate_expectation(act.grad, act.grad, q, c, n)
  c_star = _solve(cmap, chi_c, jnp.zeros_like(chi), _ITERS, -1.0, 1.0)
  rate_c = jnp.where((chi <= 1) | jnp.isinf(_depth(chi)), chi, chi_c(c_star))
  slope = _variance_slope(act, jnp.where(jnp.isfinite(q), q, 1.0), s, n)
  return DepthScales(_depth(jnp.abs(slope)), _depth(rate_c), _depth(chi))


def depth_scales(activation, sigma_w2, sigma_b2, num_points=NUM_POINTS):
  """(xi_q, xi_c, xi_grad) of Schoenholz et al. (2017); see :class:`DepthScales`.

  >>> scales = depth_scales("tanh", 1.5, 0.05)
  >>> bool(scales.xi_c > 0), bool(scales.xi_grad > 0)
  (True, True)
  """
  act = _elementwise(activation)
  sigma_w2, sigma_b2 = _variances("depth_scales", sigma_w2=sigma_w2, sigma_b2=sigma_b2)
  return _depth_scales(act, sigma_w2, sigma_b2, check_points(num_points))


@_jit
def _critical(act, b, lo, hi, grow, iters, n):
  def excess(s):
    return _chi1(act, _fixed_point(act, s, b, 1.0, _ITERS, n), s, n) - 1.0

  # [lo, hi] -> [hi, 2 hi] while chi_1 <= 1 at hi, up to the limit; elementwise,
  # so each sigma_b2 of a batch (or of vmap) grows only as far as it needs.
  def short(state):
    return grow & (state[2] <= 0) & (state[1] < MAX_SIGMA_W2)

  def widen(state):
    a, z, e = state
    more = short(state)
    z2 = jnp.where(more, jnp.minimum(2.0 * z, MAX_SIGMA_W2), z)
    return jnp.where(more, z, a), z2, jnp.where(more, excess(z2), e)

  lo, hi, e_hi = lax.while_loop(lambda st: jnp.any(short(st)), widen, (lo, hi, excess(hi)))

  def body(_, bracket):
    a, z = bracket
    mid = 0.5 * (a + z)
    up = excess(mid) > 0
    return jnp.where(up, a, mid), jnp.where(up, mid, z)

  ok = (excess(lo) <= 0) & (e_hi > 0)
  a, z = lax.fori_loop(0, iters, body, (lo, hi))
  return jnp.where(ok, 0.5 * (a + z), jnp.nan)


def critical_sigma_w2(activation, sigma_b2, lo=0.0, hi=None, iters=60,
                      num_points=NUM_POINTS):
  """The sigma_w2 where chi_1(sigma_w2, sigma_b2) = 1, by bisection.

  With ``hi=None`` the bracket starts at ``[lo, 20]`` and doubles its upper end
  while chi_1 <= 1 there, up to ``MAX_SIGMA_W2`` (2^16): sigmoid's root (~103
  for sigma_b2 in [0, 0.3]) takes three doublings. A given ``hi`` fixes it.
  Raises a ValueError when chi_1 - 1 does not change sign on the bracket; under
  jit or vmap, where a traced value cannot raise, such entries are nan.

  Examples: relu -> 2 for any sigma_b2 (He et al. 2015); leaky_relu with slope
  p -> 2 / (1 + p^2); tanh -> 1 at sigma_b2 = 0 (q* = 0), about 1.761 at
  sigma_b2 = 0.05 (Schoenholz et al. 2017; Pennington et al. 2017).

  >>> round(float(critical_sigma_w2("relu", 0.3)), 6)
  2.0
  """
  act = _elementwise(activation)
  where = "critical_sigma_w2"
  grow = hi is None
  iters = _checks.positive_int(iters, "iters", where)
  num_points = check_points(num_points)
  check_real(lo, "lo", where, low=0.0)
  if not grow:
    check_real(hi, "hi", where, low=0.0, open_low=True)
    if _checks.is_real(lo) and _checks.is_real(hi) and not hi > lo:
      raise ValueError(f"{where}: the bracket needs lo < hi, got lo={lo!r}, hi={hi!r}.")
  sigma_b2, lo, hi = _variances(where, sigma_b2=sigma_b2, lo=lo, hi=_START_HI if grow else hi)
  lo, hi = (jnp.broadcast_to(x, sigma_b2.shape) for x in (lo, hi))
  hi = jnp.maximum(hi, 2.0 * lo) if grow else hi   # above lo, so that doubling moves it
  root = _critical(act, sigma_b2, lo, hi, grow, iters, num_points)
  try:
    missing = np.argwhere(np.isnan(np.asarray(root)))
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return root
  if len(missing):
    b, a, z = (float(np.asarray(v)[tuple(missing[0])]) for v in (sigma_b2, lo, hi))
    z = MAX_SIGMA_W2 if grow else z
    why = (f"chi_1 > 1 already at lo; lower lo" if chi1(act, a, b) > 1 else
           f"chi_1 <= 1 up to {z}" + ("" if grow else "; raise hi, or let it grow: hi=None"))
    raise ValueError(f"critical_sigma_w2({act.name!r}, sigma_b2={b}): no sigma_w2 in "
                     f"[{a}, {z}] has chi_1 = 1 ({why}).")
  return root
