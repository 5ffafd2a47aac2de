"""log_gradient_stats at large depth: the O(depth) noise sums equal the O(depth^2)
matrix algorithm they replaced (kept here as the reference), and the compiled
program's memory grows linearly with depth."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.core import activations
from jaxbp.theory import finite_width as fw
from jaxbp.theory import log_mean_exp
from jaxbp.theory import meanfield as mf

_EXP_MAX = 600.0
_STATIC = ("act", "size", "batch", "leading_order", "n_pts")


# The quadratic algorithm finite_width used before (a depth x depth matrix G).

def _quadratic_memory(a, c):
  """G[j, k'] = sum_{k >= k', k > j} c_k prod_{i=j+1}^{k-1} a_i, through cumulative logs."""
  D = a.shape[0]
  la = jnp.cumsum(jnp.log(jnp.maximum(jnp.abs(a), jnp.finfo(a.dtype).tiny)))
  sign = jnp.cumprod(jnp.where(a < 0, -1.0, 1.0))
  la_prev = jnp.concatenate([jnp.zeros((1,), la.dtype), la[:-1]])
  sign_prev = jnp.concatenate([jnp.ones((1,), sign.dtype), sign[:-1]])
  j, k = jnp.arange(D)[:, None], jnp.arange(D)[None, :]
  P = sign_prev[None, :] * sign[:, None] * jnp.exp(
      jnp.clip(la_prev[None, :] - la[:, None], -_EXP_MAX, _EXP_MAX))
  return jax.vmap(fw._suffix)(jnp.where(k > j, P * c[None, :], 0.0))


def _quadratic_noise_sums(G, w_vv, w_uv, D):
  size = G.shape[1]
  Gm = fw._from_top(G, D)
  Gm = jnp.where(jnp.isnan(Gm), 0.0, Gm)
  in_window = jnp.arange(G.shape[0])[:, None] >= (D - jnp.arange(size))[None, :]
  return jnp.sum(w_vv[:, None] * Gm * Gm + 2.0 * in_window * Gm * w_uv[:, None], axis=0)


def _loops(a, c, w_vv, w_uv, D):
  """The definition, written out with explicit products (numpy, small sizes only)."""
  steps = len(a)
  out = np.zeros(steps + 1)
  for m in range(steps + 1):
    K = D - m
    if K < 0:
      continue
    for j in range(steps):
      g = sum(c[k] * np.prod(a[j + 1:k]) for k in range(max(K, j + 1), steps))
      out[m] += w_vv[j] * g * g + (2.0 * w_uv[j] * g if j >= K else 0.0)
  return out


@jax.jit
def _linear(a, c, w_vv, w_uv, D):
  return fw._noise_sums(fw._tail(a, c), a, w_vv, w_uv, D)


@jax.jit
def _quadratic(a, c, w_vv, w_uv, D):
  return _quadratic_noise_sums(_quadratic_memory(a, c), w_vv, w_uv, D)


def _inputs(rng, steps, D):
  # Signed a, some |a| > 1; c and the weights zero beyond the net (as _stats masks them).
  a = rng.uniform(-1.3, 1.3, steps)
  valid = np.arange(steps) < D
  c, w_vv, w_uv = (np.where(valid, rng.standard_normal(steps), 0.0) for _ in range(3))
  return a, c, np.abs(w_vv), w_uv


@pytest.mark.parametrize("D", (0, 1, 5, 11, 12))
def test_noise_sums_are_the_definition(D):
  a, c, w_vv, w_uv = _inputs(np.random.default_rng(D), 12, D)
  expect = _loops(a, c, w_vv, w_uv, D)
  got = _linear(*(jnp.asarray(x) for x in (a, c, w_vv, w_uv)), D)
  np.testing.assert_allclose(got, expect, rtol=1e-12, atol=1e-12 * np.abs(expect).max())
  np.testing.assert_allclose(_quadratic(*(jnp.asarray(x) for x in (a, c, w_vv, w_uv)), D), expect, rtol=1e-12, atol=1e-12 * np.abs(expect).max())
  if D >= 2:    # not a test of zeros against zeros
    assert np.abs(expect).max() > 0.1


def test_noise_sums_at_depth_600_equal_the_quadratic_algorithm():
  # |a| < 1 as the layers give (a = d ln V / d ln q), so products stay within range.
  rng = np.random.default_rng(1)
  for steps, D in ((600, 600), (600, 431)):
    a, c, w_vv, w_uv = (jnp.asarray(x) for x in _inputs(rng, steps, D))
    a = 0.999 * a / 1.3
    old = _quadratic(a, c, w_vv, w_uv, D)
    np.testing.assert_allclose(_linear(a, c, w_vv, w_uv, D), old, rtol=1e-12,
                               atol=1e-13 * np.abs(old).max())


def _quadratic_stats(act, s, b, n, q0, depth, tab, size, batch, leading_order, n_pts):
  """finite_width._stats's body; traced only while the old noise sums are patched in
  (a function of its own, so that no trace of fw._stats is reused for it)."""
  return fw._stats.__wrapped__(act, s, b, n, q0, depth, tab, size, batch, leading_order, n_pts)


@pytest.mark.slow
@pytest.mark.parametrize("batch", (1, 4))
def test_log_gradient_stats_equal_the_quadratic_algorithm(monkeypatch, batch):
  sw = float(mf.critical_sigma_w2("tanh", 0.1))
  points = [   # (sigma_w2, sigma_b2, width, q0): critical, a transient to q* = 0, chaotic
      (sw, 0.1, 64.0, float(mf.fixed_point("tanh", sw, 0.1))),
      (1.0, 0.0, 128.0, 1.0),
      (3.0, 0.05, 32.0, float(mf.fixed_point("tanh", 3.0, 0.05)))]
  act = activations.get("tanh")
  tab = tuple(jnp.asarray(x) for x in log_mean_exp.table(batch)) if batch > 1 else None
  size = 240

  def run(stats):
    # One program for a full net and one padded into it (as sweep_predictions runs
    # them: depth traced); 512 nodes, the same for both algorithms, to save time.
    one = lambda s, b, n, q, d: stats(act, s, b, n, q, d, tab, size, batch, False, 512)
    return [jax.vmap(one, in_axes=(0, 0, 0, 0, None))(*columns, d) for d in (size, 130)]

  columns = [jnp.asarray(x, jnp.float64) for x in zip(*points)]
  with monkeypatch.context() as patch:
    patch.setattr(fw, "_tail", _quadratic_memory)
    patch.setattr(fw, "_noise_sums", lambda G, a, w_vv, w_uv, D:
                  _quadratic_noise_sums(G, w_vv, w_uv, D))
    old = run(jax.jit(_quadratic_stats, static_argnames=_STATIC))
  new = run(fw._stats)
  for depth, old_d, new_d in zip((size, 130), old, new):
    for o, n in zip(old_d, new_d):
      o, n = np.asarray(o), np.asarray(n)
      assert np.isnan(o[:, depth:]).all() and np.isnan(n[:, depth:]).all()
      o, n = o[:, :depth], n[:, :depth]
      assert np.abs(o[:, -1]).min() > 0.1          # nonzero profiles are compared
      np.testing.assert_allclose(n, o, rtol=1e-12, atol=1e-14)


def test_compiled_memory_is_linear_in_depth():
  # The matrix form needed >= depth^2 x 8 bytes (128 MB at depth 4000); the per-layer
  # arrays take ~0.15 kB a layer. 2 kB a layer leaves room for XLA's buffer choices
  # while failing any depth x depth array by 60x. (One example: the batch path calls
  # the same _noise_sums, and its compile takes three times as long.)
  act = activations.get("tanh")
  f = jnp.float64
  depth = 4000
  compiled = fw._stats.lower(act, f(1.5), f(0.05), f(128.0), f(1.0), depth, None, depth, 1,
                             False, mf.NUM_POINTS).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  assert temp < 2048 * depth, temp
