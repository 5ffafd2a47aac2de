"""Finite-width gradient statistics (jaxbp.theory.finite_width) against Monte Carlo."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.core import activations
from jaxbp.theory import finite_width as fw
from jaxbp.theory import log_mean_exp
from jaxbp.theory import meanfield as mf


@functools.partial(jax.jit, static_argnames=("act", "n", "depth", "batch", "seeds"))
def _simulate(act, sw, sb, q0, n, depth, batch, seeds, key):
  """The statistic as finite_width defines it, ``(seeds, depth)``: entry m is
  ln mean_b ||delta_{depth-m}||^2 - ln mean_b ||delta_depth||^2.

  z_1 = x W_1 + b_1 with rows of x of squared norm n (q0 - sb) / sw, so that z_1 is
  N(0, q0) per unit; delta_depth standard normal, independent of the weights."""
  act = activations.get(act)
  dtype = jnp.float32   # the statistic's noise is ~1/sqrt(n): float32 is plenty, and fast
  scale = lambda v: jnp.sqrt(v).astype(dtype)

  def one(key):
    kx, kd, kw, kb = jax.random.split(key, 4)
    W = jax.random.normal(kw, (depth, n, n), dtype) * scale(sw / n)
    b = jax.random.normal(kb, (depth, n), dtype) * scale(sb)
    g = jax.random.normal(kx, (batch, n), dtype)
    x = g * (scale(n * (q0 - sb) / sw) / jnp.linalg.norm(g, axis=1, keepdims=True))

    def forward(h, wb):
      z = h @ wb[0] + wb[1][None, :]
      return act.fn(z), z
    _, zs = jax.lax.scan(forward, x, (W, b))           # zs[l - 1] = z_l

    def backward(d, wz):                               # delta_{l-1} = (delta_l W_l^T) phi'(z_{l-1})
      d = (d @ wz[0].T) * act.grad(wz[1])
      return d, jnp.log(jnp.mean(jnp.sum(d * d, axis=-1)))
    d = jax.random.normal(kd, (batch, n), dtype)
    _, logs = jax.lax.scan(backward, d, (W[1:][::-1], zs[:-1][::-1]))
    top = jnp.log(jnp.mean(jnp.sum(d * d, axis=-1)))
    return jnp.concatenate([jnp.zeros((1,), dtype), logs - top])
  return jax.lax.map(one, jax.random.split(key, seeds), batch_size=64)


def _compare(act, sw, sb, n, depth, seeds, q0=None, batch=1, key=0):
  q0 = float(mf.fixed_point(act, sw, sb)) if q0 is None else q0
  y = np.asarray(_simulate(act, sw, sb, q0, n, depth, batch, seeds, jax.random.PRNGKey(key)),
                 float)
  mean, var = (np.asarray(v) for v in fw.log_gradient_stats(act, sw, sb, n, depth, q0=q0,
                                                             batch=batch))
  R = y[:, -1]
  se_mean = R.std(ddof=1) / math.sqrt(seeds)
  # Var of a sample variance: (m4 - s^4 (n-3)/(n-1)) / n, from the sample's own kurtosis.
  c = R - R.mean()
  se_var = math.sqrt(max(np.mean(c ** 4) - R.var() ** 2 * (seeds - 3) / (seeds - 1), 0) / seeds)
  return dict(mc_mean=R.mean(), mean=mean[-1], se_mean=se_mean, mc_var=R.var(ddof=1),
              var=var[-1], se_var=se_var, profile=y.mean(0), profile_pred=mean)


# Critical points (chi_1 = 1), an ordered and a chaotic point, and a transient from
# q0 = 1 towards q* = 0 (tanh without biases), where the layerwise and the
# delta-W terms carry most of the mean.
CASES = [
    ("relu", 2.0, 0.0, None),
    ("tanh", float(mf.critical_sigma_w2("tanh", 0.1)), 0.1, None),
    ("tanh", 1.0, 0.0, 1.0),
    ("tanh", 3.0, 0.05, None),
    ("sigmoid", 16.0, 0.0, None),
]


@pytest.mark.parametrize("act,sw,sb,q0", CASES)
def test_mean_and_variance_of_R_match_monte_carlo(act, sw, sb, q0):
  n, depth, seeds = 64, 16, 512
  r = _compare(act, sw, sb, n, depth, seeds, q0=q0)
  assert abs(r["mc_mean"] - r["mean"]) < 3.5 * r["se_mean"] + 0.01, r
  assert abs(r["mc_var"] - r["var"]) < 3.5 * r["se_var"] + 0.02 * r["var"], r
  # The whole profile, not just its end: every partial sum within the same band.
  assert np.all(np.abs(r["profile"] - r["profile_pred"]) < 3.5 * r["se_mean"] + 0.01), r


def test_batch_average_matches_monte_carlo():
  # ln mean_b ||delta^b||^2 over 8 examples through the same weights (the depth sweep's
  # statistic): the batch takes most of the finite-width bias away.
  sw = float(mf.critical_sigma_w2("tanh", 0.1))
  r = _compare("tanh", sw, 0.1, 64, 16, 384, batch=8, key=1)
  single_mean, single_var = (float(v[-1]) for v in fw.log_gradient_stats("tanh", sw, 0.1, 64, 16))
  assert abs(r["mc_mean"] - r["mean"]) < 3.5 * r["se_mean"] + 0.01, r
  assert abs(r["mc_var"] - r["var"]) < 3.5 * r["se_var"] + 0.05 * r["var"], r
  assert single_mean + 10 * r["se_mean"] < r["mean"] < 0.0
  assert 0.0 < r["var"] < single_var / 2


def test_leading_order_is_the_delta_method():
  # relu: chi_1 = sigma_w2 / 2 and 3 kappa - 1 = 5 at any q.
  n, depth = 100.0, 6
  mean, var = fw.log_gradient_stats("relu", 3.0, 0.2, n, depth, q0=1.0, leading_order=True)
  m = np.arange(depth)
  np.testing.assert_allclose(mean, m * (math.log(1.5) - 2.5 / n), rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(var, m * 5 / n, rtol=1e-6, atol=1e-12)


def test_infinite_width_is_the_layerwise_profile():
  act, sw, sb, q0, depth = "tanh", 1.2, 0.0, 1.0, 10
  mean, var = fw.log_gradient_stats(act, sw, sb, math.inf, depth, q0=q0)
  q, ln_chi = q0, []
  for _ in range(depth - 1):
    ln_chi.append(float(jnp.log(mf.chi1(act, sw, sb, q=q))))
    q = float(mf.variance_map(q, act, sw, sb))
  expect = np.concatenate([[0.0], np.cumsum(ln_chi[::-1])])
  np.testing.assert_allclose(mean, expect, rtol=1e-6, atol=1e-10)
  np.testing.assert_array_equal(var, np.zeros(depth))
  # Relu's slope does not depend on q: the window slope is ln(sigma_w2 / 2) exactly.
  slope = fw.predicted_slope("relu", 3.0, 0.1, 20, 3, 18, q0=7.0)
  assert abs(float(slope) - math.log(1.5)) < 1e-6


def test_shapes_jit_and_vmap_over_widths_and_sigmas():
  mean, var = fw.log_gradient_stats("tanh", 1.5, 0.05, 128, 16)
  assert mean.shape == var.shape == (16,)
  assert float(mean[0]) == 0.0 and float(var[0]) == 0.0
  assert np.all(np.diff(np.asarray(var)) > 0)
  widths = jnp.array([32.0, 64.0, 128.0])
  jitted = jax.jit(lambda w: fw.log_gradient_stats("tanh", 1.5, 0.05, w, 16))
  vm, vv = jax.vmap(jitted)(widths)
  assert vm.shape == vv.shape == (3, 16)
  for i, w in enumerate(widths):
    one = fw.log_gradient_stats("tanh", 1.5, 0.05, float(w), 16)
    np.testing.assert_allclose(vm[i], one[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(vv[i], one[1], rtol=1e-5, atol=1e-7)
  # Arrays broadcast like a vmap: sigma_w2 x width.
  sm, _ = fw.log_gradient_stats("tanh", jnp.array([[1.0], [1.5]]), 0.05, widths, 16)
  assert sm.shape == (2, 3, 16)
  np.testing.assert_allclose(sm[1], vm, rtol=1e-5, atol=1e-7)
  # Variance roughly ~ 1/width.
  assert 1.8 < float(vv[0, -1] / vv[1, -1]) < 2.3


@pytest.mark.parametrize("kwargs,name", [
    (dict(sigma_w2=0.0), "sigma_w2"), (dict(sigma_w2=-1.0), "sigma_w2"),
    (dict(sigma_b2=-0.1), "sigma_b2"), (dict(width=0), "width"),
    (dict(width=float("nan")), "width"), (dict(depth=0), "depth"),
    (dict(depth=2.5), "depth"), (dict(q0=0.0), "q0"), (dict(batch=0), "batch"),
    (dict(activation="softmax"), "activation"),
])
def test_bad_input_raises_naming_the_argument(kwargs, name):
  args = dict(activation="tanh", sigma_w2=1.0, sigma_b2=0.0, width=64, depth=4)
  args.update(kwargs)
  with pytest.raises(ValueError, match=name):
    fw.log_gradient_stats(**args)


def test_window_slope_is_the_sweeps_fit():
  # A profile ln ||delta_l||^2 = -0.3 l (entry m <-> layer depth - m) rises going
  # backwards: slope +0.3 per layer, as diagnostics.fit_log_slope reports it.
  depth = 10
  profile = 0.3 * np.arange(depth)
  assert abs(float(fw.window_slope(profile, 2, 9)) - 0.3) < 1e-12
  assert np.isnan(float(fw.window_slope(profile, 4, 4)))
  with pytest.raises(ValueError, match="first"):
    fw.window_slope(profile, 0, 9)


def test_log_mean_exp_moments():
  rng = np.random.default_rng(0)
  z = rng.standard_normal((200000, 8))
  for s2 in (0.3, 2.0, 6.0):
    y = np.log(np.mean(np.exp(math.sqrt(s2) * z), axis=1))
    g, h = (float(v) for v in log_mean_exp.moments(s2, 8))
    assert abs(g - y.mean()) < 4 * y.std() / math.sqrt(len(y)), (s2, g, y.mean())
    assert abs(h / y.var() - 1) < 0.02, (s2, h, y.var())
  g, h = log_mean_exp.moments(1e-4, 4)
  assert abs(float(g) / 1e-4 - 3 / 8) < 1e-3 and abs(float(h) / 1e-4 - 1 / 4) < 1e-2
  assert [float(v) for v in log_mean_exp.moments(2.0, 1)] == [0.0, 0.0]
