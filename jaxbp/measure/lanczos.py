"""Singular values of a Jacobian without forming it: Golub-Kahan-Lanczos bidiagonalisation.

For ``f: R^n -> R^m`` at ``x``, the Jacobian ``J`` is touched only through
``J v`` (``jax.linearize``, forward mode) and ``J^T u`` (its transpose, reverse
mode). ``k`` steps of the bidiagonalisation

  alpha_j u_j = J v_j - beta_{j-1} u_{j-1},      beta_j v_{j+1} = J^T u_j - alpha_j v_j,

build orthonormal ``U``, ``V`` and an upper-bidiagonal ``B = U^T J V`` whose
singular values converge to ``J``'s from both ends of the spectrum; with
``k = min(n, m)`` steps they are all of ``J``'s (up to round-off). Both bases are
reorthogonalised in full at every step (twice, classical Gram-Schmidt), which keeps
the small singular values as accurate as the large ones; memory is ``k (n + m)``.

So the Jacobian of a width-4096, depth-100 net costs ``k`` forward and ``k``
backward passes of one example, never its ``n m`` entries. For the Jacobian from
layer i to layer j, pass that sub-network as ``f``.

References:
  Golub & Kahan, "Calculating the singular values and pseudo-inverse of a
    matrix", SIAM J. Numer. Anal. B 2 (1965).
  Golub & Van Loan, *Matrix Computations*, 4th ed., §10.4.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp


class Bidiagonal(NamedTuple):
  """The result of :func:`bidiagonalize`: ``B = U^T J V`` and the bases.

  Attributes:
    alpha: ``(k,)`` B's diagonal.
    beta: ``(k,)`` B's superdiagonal; ``B`` is ``(k, k + 1)``, so that when
      ``k = m < n`` (U spans the outputs) ``J = U B V^T`` exactly.
    U: ``(k, m)`` orthonormal rows in the output space.
    V: ``(k + 1, n)`` orthonormal rows in the input space.
  """
  alpha: jax.Array
  beta: jax.Array
  U: jax.Array
  V: jax.Array

  def matrix(self) -> jax.Array:
    """``B = U^T J V``, ``(k, k + 1)``: alpha on the diagonal, beta beside it."""
    k = self.alpha.shape[0]
    B = jnp.zeros((k, k + 1), self.alpha.dtype)
    return B.at[jnp.arange(k), jnp.arange(k)].set(self.alpha).at[
        jnp.arange(k), jnp.arange(1, k + 1)].set(self.beta)


def _orthogonalize(r, Q):
  # Twice is enough (Kahan-Parlett): one pass loses orthogonality to round-off.
  for _ in range(2):
    r = r - Q.T @ (Q @ r)
  return r


def _safe_unit(r):
  norm = jnp.linalg.norm(r)
  # An exact zero means an invariant subspace was found; its direction stays 0
  # rather than becoming nan.
  return norm, jnp.where(norm > 0, r / jnp.where(norm > 0, norm, 1.0), 0.0)


def bidiagonalize(fn: Callable[[jax.Array], jax.Array], x, k: int,
                  key: Optional[jax.Array] = None, linearize: bool = True) -> Bidiagonal:
  """``k`` Golub-Kahan steps on the Jacobian of ``fn`` at ``x`` (any shapes;
  flattened). Jit-able; ``k`` is static.

  ``linearize=True`` keeps ``fn``'s linearisation (every layer's residuals) for
  all steps; ``False`` recomputes the forward pass for each product, holding
  nothing between them: for nets whose weights do not fit in memory twice.
  """
  x = jnp.asarray(x)
  if linearize:
    y, jvp = jax.linearize(fn, x)
    vjp = jax.linear_transpose(jvp, x)
  else:
    y = jax.eval_shape(fn, x)
    jvp = lambda v: jax.jvp(fn, (x,), (v,))[1]
    vjp = lambda u: jax.vjp(fn, x)[1](u)
  n, m = x.size, y.size
  if not 1 <= k <= min(n, m):
    raise ValueError(f"bidiagonalize: k must be in 1..min(n, m) = {min(n, m)} for a "
                     f"Jacobian of shape ({m}, {n}); got {k}.")
  dtype = jnp.result_type(x)
  J = lambda v: jvp(v.reshape(x.shape)).reshape(-1)
  JT = lambda u: vjp(u.reshape(y.shape).astype(y.dtype))[0].reshape(-1)
  key = jax.random.PRNGKey(0) if key is None else key
  v0 = jax.random.normal(key, (n,), dtype)
  V = jnp.zeros((k + 1, n), dtype).at[0].set(v0 / jnp.linalg.norm(v0))
  U = jnp.zeros((k, m), dtype)
  alpha, beta = jnp.zeros(k, dtype), jnp.zeros(k, dtype)
  # A residual this small relative to the largest alpha or beta so far is
  # round-off: the Krylov space has met an invariant subspace (a rank-deficient
  # J, or every singular value found). Normalising it would amplify its
  # components along the basis until orthogonality, and then the recurrence,
  # breaks down; so that coefficient is set to 0 (B splits) and the basis
  # continues from a fresh random direction orthogonal to it.
  tol = 64 * jnp.finfo(dtype).eps

  def fresh(j, which, Q):
    r = jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, which), j),
                          (Q.shape[1],), dtype)
    return _safe_unit(_orthogonalize(r, Q))[1]

  def step(j, state):
    U, V, alpha, beta = state
    scale = jnp.maximum(jnp.max(alpha), jnp.max(beta))
    prev = jnp.where(j > 0, beta[j - 1], 0.0) * U[j - 1]
    a, u = _safe_unit(_orthogonalize(J(V[j]) - prev, U))
    lost = a <= tol * jnp.maximum(scale, a)
    a, u = jnp.where(lost, 0.0, a), jnp.where(lost, fresh(j, 1, U), u)
    U = U.at[j].set(u)
    b, v = _safe_unit(_orthogonalize(JT(u) - a * V[j], V))
    lost = b <= tol * jnp.maximum(jnp.maximum(scale, a), b)
    b, v = jnp.where(lost, 0.0, b), jnp.where(lost, fresh(j, 2, V), v)
    return U, V.at[j + 1].set(v), alpha.at[j].set(a), beta.at[j].set(b)

  U, V, alpha, beta = jax.lax.fori_loop(0, k, step, (U, V, alpha, beta))
  return Bidiagonal(alpha, beta, U, V)


def singular_values(fn: Callable[[jax.Array], jax.Array], x, k: Optional[int] = None,
                    key: Optional[jax.Array] = None, linearize: bool = True) -> jax.Array:
  """Ritz approximations to the singular values of ``d fn / d x`` at ``x``, descending.

  Args:
    fn: a map of arrays, e.g. one example through a network: ``lambda h: net(h)``.
    x: the point.
    k: Lanczos steps (default ``min(n, m)``, which gives every singular value);
      the top and bottom few converge first, in far fewer than ``min(n, m)`` steps.
    key: PRNG key of the random start vector.
    linearize: see :func:`bidiagonalize`.

  Returns:
    ``(k,)`` the singular values of ``B``: ``s[:j]`` approximate J's top j,
    ``s[-j:]`` its bottom j (of the nonzero ones when k = min(n, m)).

  >>> A = jnp.diag(jnp.array([3.0, 2.0, 1.0]))
  >>> [round(float(s), 5) for s in singular_values(lambda v: A @ v, jnp.ones(3))]
  [3.0, 2.0, 1.0]
  """
  x = jnp.asarray(x)
  if k is None:
    k = min(x.size, jax.eval_shape(fn, x).size)
  B = bidiagonalize(fn, x, k, key, linearize).matrix()
  return jnp.linalg.svd(B, compute_uv=False)
