"""Per-layer Gaussian moments behind :mod:`jaxbp.theory.finite_width`.

:func:`layer` gives one example's numbers of a layer at pre-activation variance q
(kappa, the q-derivatives of chi_1 and of the variance map, the noise
covariances, rho, gamma, F), :func:`pair` two examples' at forward correlation c.
The symbols are those of finite_width's docstring.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

import jaxbp.theory.quadrature as _quadrature


def expect(fns, q, n_pts):
  """[E f(sqrt(q) z) for f in fns] for a scalar q, in one pass over meanfield's nodes
  (every integrand of a layer at once, which keeps the compiled program small)."""
  z, w = _quadrature.normal_rule(n_pts)
  u = jnp.sqrt(q) * jnp.asarray(z, q.dtype)
  return jnp.stack([f(u) for f in fns]) @ jnp.asarray(w, q.dtype)


def layer(act, s, b, q, n_pts):
  """One example's numbers of a layer at variance q (names as in the module docstring)."""
  a = lambda u: act.grad(u) ** 2
  f2 = lambda u: act.fn(u) ** 2
  A2, A3, B2, C, Az, Hz = expect([
      lambda u: a(u) ** 2, lambda u: a(u) ** 3, lambda u: f2(u) ** 2,
      lambda u: f2(u) * a(u), lambda u: a(u) * u * u, lambda u: act.fn(u) * act.grad(u) * u],
      q, n_pts)
  # A = E phi'^2 and B = E phi^2 with their first two q-derivatives (forward mode).
  AB = lambda x: expect([a, f2], x, n_pts)
  first = lambda x: jax.jvp(AB, (x,), (jnp.ones_like(x),))
  (ab, dab), (_, d2ab) = first(q), jax.jvp(lambda x: first(x)[1], (q,), (jnp.ones_like(q),))
  (A, B), (dA, dB), (d2A, d2B) = ab, dab, d2ab
  tiny = jnp.finfo(q.dtype).tiny
  A_ = jnp.maximum(A, tiny)
  qn = jnp.maximum(s * B + b, tiny)   # q_{k+1}
  # Moments of phi^2 scale like q near q = 0: ratios to q keep q^2-sized products normal.
  Bq, B2q, Cq, Hq = B / q, B2 / (q * q), C / q, Hz / q
  Bq_ = jnp.maximum(Bq, tiny)
  r, pq = q / qn, jnp.maximum(q - b, 0.0) / q
  dlnA = dA / A_   # d ln chi_1 / dq, and its derivative d2A / A - dlnA^2
  return dict(
      q=q, q_next=s * B + b, ln_chi=jnp.log(s * A_), kappa=A2 / (A_ * A_), m3=A3 / A_ ** 3,
      A=A, B=B, c=q * dlnA, d=q * q * (d2A / A_ - dlnA * dlnA), a=s * dB * r,
      beta=s * d2B * q * r, var_v=s * s * (B2q - Bq * Bq) * r * r,
      cov_uv=s * (Cq - A * Bq) * r / A_, rho=1.0 + pq * (Az / (q * A_) - 1.0),
      gamma=pq * Hq * Hq / (A_ * Bq_), F=Cq / (A_ * Bq_))


def pair(act, s, b, lay, c, n_pts):
  """Two examples at forward correlation c: the covariances of their u and v noises
  (per 1/n), the ratio E[phi'^a phi'^b] / E[phi'^2] that carries their deltas'
  correlation down, E[a^a a^b] / E[a]^2, and the next layer's correlation.

  A product rule: u_1 = sqrt(q) z_1, u_2 = c u_1 + sqrt((1 - c^2) q) z_2."""
  z, w = (jnp.asarray(x, lay["q"].dtype) for x in _quadrature.normal_rule(n_pts))
  tiny = jnp.finfo(lay["q"].dtype).tiny
  q, A, B = lay["q"], jnp.maximum(lay["A"], tiny), lay["B"]
  qn = jnp.maximum(lay["q_next"], tiny)
  u1 = jnp.sqrt(q) * z
  u2 = c * u1[:, None] + jnp.sqrt(jnp.maximum(1.0 - c * c, 0.0) * q) * z[None, :]
  f1, g1, f2, g2 = act.fn(u1), act.grad(u1), act.fn(u2), act.grad(u2)
  E = lambda x1, x2: w @ (x1[:, None] * x2) @ w
  r, Bq = q / qn, B / q   # ratios to q, as in _layer
  aa = E(g1 * g1, g2 * g2) / (A * A)
  vv = s * s * (E(f1 * f1, f2 * f2) / (q * q) - Bq * Bq) * r * r
  uv = s * (E(g1 * g1, f2 * f2) / q - A * Bq) * r / A
  c_next = jnp.clip(s * E(f1, f2) / q * r + b / qn, -1.0, 1.0)
  return dict(uu=aa - 1.0, vv=vv, uv=uv, carry=E(g1, g2) / A, aa=aa), c_next
