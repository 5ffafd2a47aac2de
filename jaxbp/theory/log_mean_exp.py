"""Moments of ln mean_b exp(X_b) for exchangeable Gaussian X: what batch averaging does to
the log of a log-normal gradient norm.

If X_1 .. X_B are jointly Gaussian, mean 0, variance s2 + t2 and covariance t2, then
X_b = sqrt(t2) Z_0 + sqrt(s2) Z_b with i.i.d. standard normal Z, and::

    ln mean_b exp(X_b) = sqrt(t2) Z_0 + ln mean_b exp(s Z_b),

so its mean is g_B(s2) and its variance t2 + h_B(s2), where g_B and h_B are the mean
and variance of Y = ln mean_b exp(s Z_b) for i.i.d. Z. For small s2 they are
(1 - 1/B) s2 / 2 and s2 / B; the log-normal moment match (Fenton 1960) is already
0.05 nats off at s2 = 2, B = 8, so they are computed exactly, by Frullani's integral
``ln Y = int_0^inf (e^-t - e^-tY) dt / t`` (with t = e^x)::

    E ln Y     = int (e^-t - L(t)) dx,
    E (ln Y)^2 = int int [e^-(t+u) - e^-t L(u) - e^-u L(t) + L(t + u)] dx dy,

with the Laplace transform L(t) = E e^{-tY} = (E exp(-t e^{sZ} / B))^B a
one-dimensional Gauss-Legendre sum. Tabulated once per B on s in [0, 6] and
interpolated (jit-safe); beyond s = 6 (s2 = 36), extrapolated linearly in s (g)
and in s2 (h), their asymptotic forms (Y -> s max_b Z_b - ln B).
"""
from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

import jaxbp.theory.quadrature as _quadrature

_S_MAX = 6.0
_S_STEPS = 48
_DX = 0.2   # grid step in x = ln t at large s; cubic interpolation of ln L: h to ~2e-4


def _cubic(x, y, xq):
  """Cubic Hermite interpolation of y on the uniform grid x, slopes by central differences."""
  h = x[1] - x[0]
  d = np.gradient(y, h, edge_order=2)
  i = np.clip(((xq - x[0]) // h).astype(int), 0, len(x) - 2)
  t = (xq - x[i]) / h
  return ((2 * t ** 3 - 3 * t ** 2 + 1) * y[i] + (t ** 3 - 2 * t ** 2 + t) * h * d[i]
          + (-2 * t ** 3 + 3 * t ** 2) * y[i + 1] + (t ** 3 - t ** 2) * h * d[i + 1])


def _moments(batch, s):
  """(E ln Y, Var ln Y) for Y = mean of ``batch`` i.i.d. exp(s Z), by Frullani's integral."""
  z, w = _quadrature.normal_rule(2048)
  dx = min(_DX, 0.02 + 0.06 * s)   # finer where h ~ s^2 / B is small (and the grid short)
  # 1 - L(t) ~ t E[Y] = t e^{s^2/2} below; L(t) ~ Phi(-ln t / s)^B above.
  x = np.arange(-s * s / 2 - 20.0, 5.0 + 4.0 * s + dx, dx)
  with np.errstate(over="ignore"):
    inner = np.exp(-np.exp(x[:, None] + s * z[None, :] - np.log(batch))) @ w
  lnL = batch * np.log(np.maximum(inner, 1e-300))
  L, e = np.exp(lnL), np.exp(-np.exp(x))
  wx = np.full(len(x), dx)
  wx[[0, -1]] = dx / 2
  mean = wx @ (e - L)
  both = np.exp(_cubic(x, lnL, np.logaddexp(x[:, None], x[None, :])))   # L(t + u)
  F = e[:, None] * e[None, :] - e[:, None] * L[None, :] - L[:, None] * e[None, :] + both
  return mean, max(wx @ F @ wx - mean * mean, 0.0)


@functools.lru_cache(maxsize=None)
def table(batch: int):
  """``(s, g / s^2, h / s^2)`` numpy arrays on s = 0 .. 6 (g_B, h_B: module docstring).

  The ratios are smooth down to s = 0, where they are (1 - 1/B) / 2 and 1 / B, so
  they interpolate well where g and h themselves are quadratic in s."""
  s = np.linspace(0.0, _S_MAX, _S_STEPS + 1)
  gh = np.array([_moments(int(batch), v) for v in s[1:]]) / (s[1:, None] ** 2)
  first = np.array([[(1.0 - 1.0 / batch) / 2, 1.0 / batch]])
  gh = np.concatenate([first, gh])
  return s, gh[:, 0], gh[:, 1]


def moments(s2, batch: int, tab=None):
  """(g_B(s2), h_B(s2)): mean and variance of ln mean_b exp(sqrt(s2) Z_b), B = ``batch``.

  jnp and elementwise in ``s2`` (jit-safe, vmappable); ``tab`` is :func:`table`'s
  result as arrays, passed in when called under jit.

  >>> g, h = moments(1.0, 8)
  >>> round(float(g), 3), round(float(h), 3)
  (0.41, 0.174)
  """
  if batch == 1:
    z = jnp.zeros_like(jnp.asarray(s2, float))
    return z, z
  s_grid, rg, rh = tab if tab is not None else (jnp.asarray(a) for a in table(batch))
  s2 = jnp.maximum(jnp.asarray(s2), 0.0)
  s = jnp.sqrt(s2)
  g, h = rg * s_grid ** 2, rh * s_grid ** 2
  # Linear tails beyond the table: g in s, h in s^2.
  g_slope = (g[-1] - g[-2]) / (s_grid[-1] - s_grid[-2])
  h_slope = (h[-1] - h[-2]) / (s_grid[-1] ** 2 - s_grid[-2] ** 2)
  over = s > s_grid[-1]
  g_s = jnp.where(over, g[-1] + g_slope * (s - s_grid[-1]), s2 * jnp.interp(s, s_grid, rg))
  h_s = jnp.where(over, h[-1] + h_slope * (s2 - s_grid[-1] ** 2), s2 * jnp.interp(s, s_grid, rh))
  return g_s, h_s
