"""Matrix-free Jacobian singular values (Golub-Kahan-Lanczos) against the dense SVD.

The reference forms the Jacobian with jax.jacfwd and takes numpy's SVD, in
float64; the Lanczos route never forms it.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.measure.lanczos import bidiagonalize, singular_values


def _net(widths, seed=0, gain=1.0):
  keys = jax.random.split(jax.random.PRNGKey(seed), len(widths) - 1)
  Ws = [gain * jax.random.normal(k, (a, b), jnp.float64) / np.sqrt(a)
        for k, a, b in zip(keys, widths[:-1], widths[1:])]

  def f(h):
    for W in Ws[:-1]:
      h = jnp.tanh(h @ W)
    return h @ Ws[-1]
  return f


@pytest.mark.parametrize("widths", [(12, 12, 12, 12), (16, 10, 7), (6, 9, 11)])
def test_all_singular_values_match_dense_svd(widths):
  f = _net(widths)
  x = jax.random.normal(jax.random.PRNGKey(9), (widths[0],), jnp.float64)
  dense = np.linalg.svd(np.asarray(jax.jacfwd(f)(x)), compute_uv=False)
  got = np.asarray(jax.jit(lambda x: singular_values(f, x))(x))
  r = min(widths[0], widths[-1])
  k = 3
  np.testing.assert_allclose(got[:k], dense[:k], rtol=1e-8)
  np.testing.assert_allclose(got[r - k:r], dense[r - k:r], rtol=1e-8)


def test_top_values_converge_in_few_steps_and_bases_are_orthonormal():
  f = _net((60, 60, 60), gain=1.5)
  x = jax.random.normal(jax.random.PRNGKey(3), (60,), jnp.float64)
  dense = np.linalg.svd(np.asarray(jax.jacfwd(f)(x)), compute_uv=False)
  got = np.asarray(singular_values(f, x, k=30))
  np.testing.assert_allclose(got[:2], dense[:2], rtol=1e-8)
  again = np.asarray(jax.jit(lambda x: singular_values(f, x, k=30, linearize=False))(x))
  np.testing.assert_allclose(again, got, rtol=1e-10)
  bd = bidiagonalize(f, x, 30)
  np.testing.assert_allclose(bd.U @ bd.U.T, np.eye(30), atol=1e-12)
  np.testing.assert_allclose(bd.V[:30] @ bd.V[:30].T, np.eye(30), atol=1e-12)


def test_bad_k():
  with pytest.raises(ValueError, match="k must be in 1..min"):
    singular_values(lambda v: v[:2], jnp.ones(4), k=3)


@pytest.mark.parametrize("rank", [1, 7, 20])
def test_rank_deficient_and_graded_jacobians_stay_stable(rank):
  # A 30 x 30 map of rank `rank` whose singular values fall over 18 decades: once
  # the Krylov space has every direction the map keeps, the residuals are
  # round-off, and those steps deflate and restart (the deep CNN case that broke
  # the recurrence without it is in tests/studies/test_conv_spectrum.py).
  n = 30
  q1, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(n, n)))
  q2, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(n, n)))
  sv = np.zeros(n)
  sv[:rank] = np.logspace(0, -18, rank) if rank > 1 else 1.0
  A = jnp.asarray(q1 @ np.diag(sv) @ q2.T)
  s = np.asarray(singular_values(lambda v: A @ v, jnp.ones(n)))
  assert np.all(np.isfinite(s)) and s.max() <= 1.0 + 1e-12
  dense = np.linalg.svd(np.asarray(A), compute_uv=False)
  np.testing.assert_allclose(s, dense, rtol=0, atol=1e-13)
  kept = dense > 1e-8
  np.testing.assert_allclose(s[kept], dense[kept], rtol=1e-7)
  bd = bidiagonalize(lambda v: A @ v, jnp.ones(n), n)
  np.testing.assert_allclose(np.asarray(bd.U @ bd.U.T), np.eye(n), atol=1e-10)
