"""The one quadrature rule of the theory modules: expectations against the standard
normal density by composite Gauss-Legendre.

:mod:`~jaxbp.theory.infinite_width` (q*, chi_1), :mod:`~jaxbp.theory.layer_moments`
(the finite-width moments) and :mod:`~jaxbp.theory.log_mean_exp` (the batch's
Laplace transform) all sum ``w_i f(z_i)`` over the nodes of :func:`normal_rule`.
"""
from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from jaxbp.core import checks

ORDER = 8        # Gauss-Legendre nodes per panel
Z_MAX = 12.0     # P(|z| > 12) ~ 4e-33: the truncated tails are below float64 round-off


def normal_rule(num_points: int):
  """Nodes z, weights w with sum_i w_i f(z_i) ~= E_{z ~ N(0,1)} f(z): float64 numpy
  arrays of ``num_points`` entries (read-only: the result is cached and shared).

  Composite Gauss-Legendre against the normal density: [-12, 12] cut into an
  even number of equal panels (so z = 0, where relu' jumps, is a panel edge and
  no node sits on it), ``ORDER`` nodes each, weights normalised to sum to 1.
  Gauss-Hermite, the textbook choice, is exact for polynomials but spreads its
  nodes ~0.3 apart near z = 0 at 100 nodes: for sigmoid at q* ~ 50 (the
  critical sigmoid), phi'(sqrt(q) z)^2 is a bump ~0.2 wide in z, and 100
  Hermite nodes gave chi_1 = 0.99997 where the integral is 1.052. Panels of
  width 0.094 (2048 nodes) resolve features of phi down to ~2 / sqrt(q) in
  z, i.e. q up to ~500 for the sigmoid's unit-scale bump; relu-like functions
  (piecewise polynomial, kink at 0) are integrated to round-off at any q.

  Raises a ValueError unless ``num_points`` is a positive multiple of 16.

  >>> z, w = normal_rule(2048)
  >>> round(float(w @ z ** 2), 12), round(float(w @ z ** 4), 12)
  (1.0, 3.0)
  """
  if not checks.is_int(num_points) or num_points < 2 * ORDER or num_points % (2 * ORDER):
    raise ValueError(f"meanfield: num_points must be a positive multiple of {2 * ORDER} "
                     f"(an int), got {num_points!r}.")
  return _normal_rule(int(num_points))


@functools.lru_cache(maxsize=None)
def _normal_rule(num_points):
  panels = num_points // ORDER
  t, v = np.polynomial.legendre.leggauss(ORDER)
  edges = np.linspace(-Z_MAX, Z_MAX, panels + 1)
  half = (edges[1] - edges[0]) / 2
  z = ((edges[:-1] + edges[1:]) / 2)[:, None] + half * t[None, :]
  w = half * v[None, :] * np.exp(-z * z / 2)
  z, w = z.ravel(), (w / w.sum()).ravel()
  z.flags.writeable = w.flags.writeable = False
  return z, w


def rule(num_points, dtype):
  """The shared normal rule (:func:`normal_rule`) in ``dtype``."""
  z, w = normal_rule(num_points)
  return z.astype(dtype), w.astype(dtype)


def bivariate_points(num_points):
  # A product rule, a quarter of the nodes per axis: 512^2 by default (sigmoid: q <~ 30).
  step = 2 * ORDER
  return max(step, (int(num_points) // 4) // step * step)


def bivariate_expectation(f, g, q, c, num_points):
  """E[f(u_1) g(u_2)], (u_1, u_2) centred Gaussian, variances q, correlation c."""
  q, c = jnp.broadcast_arrays(q, c)
  x, w = rule(bivariate_points(num_points), jnp.result_type(q, c, float))
  shape = (1,) * q.ndim
  z1, z2 = x.reshape(shape + (-1, 1)), x.reshape(shape + (1, -1))
  ww = np.outer(w, w).reshape(shape + (len(w), len(w)))
  s, c = jnp.sqrt(q)[..., None, None], c[..., None, None]
  u2 = s * (c * z1 + jnp.sqrt(jnp.maximum(1.0 - c * c, 0.0)) * z2)
  return jnp.sum(ww * f(s * z1) * g(u2), axis=(-2, -1))


def check_points(num_points):
  """``num_points`` as an int, if it is a node count the rule takes (a ValueError otherwise)."""
  normal_rule(num_points)
  return int(num_points)
