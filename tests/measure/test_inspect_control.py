"""jaxbp.inspect's layer detection: layers inside lax.cond / lax.switch, what must
not count as a layer, and the second row a normalisation adds.

References are the same models written by hand with explicit zero probes on the
path that runs, differentiated with jax.grad, in float64. Every model has
nonzero biases.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.measure.inspect import inspect

TOL = dict(rtol=1e-10, atol=1e-12)
B = 4


def _params(shapes, seed):
  keys = jax.random.split(jax.random.PRNGKey(seed), len(shapes))
  return {name: (0.4 if name.startswith("b") else 1 / np.sqrt(shape[0]))
          * jax.random.normal(k, shape, jnp.float64)
          for k, (name, shape) in zip(keys, shapes.items())}


def _reference(forward, shapes):
  zeros = [jnp.zeros(s, jnp.float64) for s in shapes]
  (_, zs), deltas = jax.jit(jax.value_and_grad(forward, has_aux=True))(zeros)
  q = np.array([np.mean(np.asarray(z) ** 2) for z in zs])
  d = np.array([np.sum(np.asarray(g) ** 2) for g in deltas])
  assert np.all(d > 0) and np.all(q > 0)
  return q, d


# --- lax.cond / lax.switch: every branch's layers, the ones not taken marked.

P = _params({"W0": (3, 4), "b0": (4,), "W1": (4, 4), "b1": (4,), "W2": (4, 4), "b2": (4,),
             "W3": (4, 2), "b3": (2,)}, seed=0)
BRANCH_ACT = (jnp.sin, jnp.tanh)   # branch 0 (predicate false): W2, sin; branch 1: W1, tanh


def _dense(h, p, k, probe=None):
  z = h @ p[f"W{k}"] + p[f"b{k}"][None]
  return z if probe is None else z + probe


def _cond_loss(p, x):
  h = jnp.tanh(_dense(x, p, 0))
  h = jax.lax.cond(jnp.sum(x) > 0, lambda h: jnp.tanh(_dense(h, p, 1)),
                   lambda h: jnp.sin(_dense(h, p, 2)), h)
  return jnp.sum(_dense(h, p, 3) ** 2)


@pytest.fixture(scope="module")
def cond_reports():
  x = jax.random.normal(jax.random.PRNGKey(1), (B, 3), jnp.float64)
  x = x * jnp.sign(jnp.sum(x))   # sum(x) > 0: branch 1 runs; -x: branch 0
  fn = jax.jit(lambda p, x: inspect(_cond_loss, p, x))
  return {1: (x, fn(P, x)), 0: (-x, fn(P, -x))}


@pytest.mark.parametrize("branch", [0, 1])
def test_cond_under_jit_reports_every_branch(cond_reports, branch):
  x, report = cond_reports[branch]
  assert report.names == ("W0 · dot_general", "W2 (branch 0) · dot_general",
                          "W1 (branch 1) · dot_general", "W3 · dot_general")
  taken = [True, branch == 0, branch == 1, True]
  np.testing.assert_array_equal(report.taken, taken)
  k, act = (2, jnp.sin) if branch == 0 else (1, jnp.tanh)

  def forward(probes):
    z0 = _dense(x, P, 0, probes[0])
    zk = _dense(jnp.tanh(z0), P, k, probes[1])
    z3 = _dense(act(zk), P, 3, probes[2])
    return jnp.sum(z3 ** 2), [z0, zk, z3]

  q, d = _reference(forward, [(B, 4), (B, 4), (B, 2)])
  ran = np.array(taken)
  np.testing.assert_allclose(np.asarray(report.q)[ran], q, **TOL)
  np.testing.assert_allclose(np.asarray(report.delta_sq)[ran], d, **TOL)
  # The branch not taken: zero delta and q, no weight statistics.
  assert np.all(np.asarray(report.delta_sq)[~ran] == 0) and np.all(np.asarray(report.q)[~ran] == 0)
  assert np.all(np.isnan(np.asarray(report.sigma_w2)[~ran]))
  assert np.all(np.isnan(np.asarray(report.sigma_b2)[~ran]))
  np.testing.assert_allclose(np.asarray(report.sigma_b2)[ran],
                             [np.mean(np.asarray(P[f"b{j}"]) ** 2) for j in (0, k, 3)],
                             rtol=1e-12)
  # log_slope fits the layers that ran, at their places in the report.
  slope = np.polyfit(np.arange(1, 5)[ran], np.log(d), 1)[0]
  np.testing.assert_allclose(report.log_slope, slope, rtol=1e-9)
  assert "not taken" in report.table()


def test_switch_with_a_layerless_branch_and_a_model_that_is_only_a_cond():
  p = _params({"W0": (3, 4), "b0": (4,), "W1": (3, 4), "b1": (4,)}, seed=2)

  def loss_fn(p, x):   # branch 1 has no layer
    index = jnp.clip(jnp.floor(jnp.sum(x)), 0, 2).astype(jnp.int32)
    return jnp.sum(jnp.sin(jax.lax.switch(index, [
        lambda x: _dense(x, p, 0), lambda x: jnp.tanh(x[:, :1]) * jnp.ones((1, 4)),
        lambda x: _dense(x, p, 1)], x)))

  fn = jax.jit(lambda p, x: inspect(loss_fn, p, x))
  base = jnp.full((B, 3), 1 / (3 * B), jnp.float64)   # sum 1: index 1, then 0 and 2
  for index, shift in ((0, -1.0), (1, 0.0), (2, 1.5)):
    x = base + shift / (3 * B)
    report = fn(p, x)
    assert report.names == ("W0 (branch 0) · dot_general", "W1 (branch 2) · dot_general")
    np.testing.assert_array_equal(report.taken, [index == 0, index == 2])
    if index != 1:
      k = index // 2
      g = jax.grad(lambda pr: jnp.sum(jnp.sin(_dense(x, p, k, pr))))(jnp.zeros((B, 4)))
      np.testing.assert_allclose(report.delta_sq[k], np.sum(np.asarray(g) ** 2), **TOL)
      assert report.delta_sq[1 - k] == 0
    else:
      assert np.all(np.asarray(report.delta_sq) == 0)
      assert np.isnan(report.log_slope)


# --- what must not count as a layer.

def test_attention_scores_are_not_layers():
  # q @ k.T and softmax(.) @ v multiply two data-derived operands: only the four
  # projections are layers. The log-softmax of the output's z centres it by its
  # max but is no normalisation: no "norm" row.
  p = _params({"Wq": (4, 4), "Wk": (4, 4), "Wv": (4, 4), "Wo": (4, 3), "bo": (3,)}, seed=3)
  x = jax.random.normal(jax.random.PRNGKey(4), (5, 4), jnp.float64)

  def loss_fn(p, x, probe=0.0):
    q, k, v = x @ p["Wq"], x @ p["Wk"], x @ p["Wv"]
    a = jax.nn.softmax(q @ k.T / 2.0, axis=-1) @ v
    return -jnp.sum(jax.nn.log_softmax(a @ p["Wo"] + p["bo"][None] + probe)[:, 0])

  report = jax.jit(lambda p, x: inspect(loss_fn, p, x))(p, x)
  assert report.names == ("Wq · dot_general", "Wk · dot_general", "Wv · dot_general",
                          "Wo · dot_general")
  g = jax.grad(lambda pr: loss_fn(p, x, pr))(jnp.zeros((5, 3), jnp.float64))
  np.testing.assert_allclose(report.delta_sq[3], np.sum(np.asarray(g) ** 2), **TOL)


def test_a_data_scaled_weight_is_not_a_layer():
  p = _params({"W1": (3, 4), "b1": (4,), "W2": (4, 2)}, seed=5)
  x = jax.random.normal(jax.random.PRNGKey(6), (B, 3), jnp.float64)

  def loss_fn(p, x):
    h = jnp.tanh(x @ p["W1"] + p["b1"][None])
    return jnp.sum((h @ (jnp.mean(x ** 2) * p["W2"])) ** 2)   # the weight depends on x

  report = jax.jit(lambda p, x: inspect(loss_fn, p, x))(p, x)
  assert report.names == ("W1 · dot_general",)


# --- normalisation: the probe before it, and a second row after it.

def _hand_norm(z, axis, p, form):
  if form == "rms":
    zn = z * jax.lax.rsqrt(jnp.mean(z ** 2, axis, keepdims=True) + 1e-5)
    return zn * p["g"][None] + p["beta"][None]
  m = jnp.mean(z, axis, keepdims=True)
  v = jnp.mean((z - m) ** 2, axis, keepdims=True)
  zn = (z - m) / jnp.sqrt(v + 1e-5) if form == "sqrt" else (z - m) * jax.lax.rsqrt(v + 1e-5)
  return zn * p["g"][None] + p["beta"][None]


@pytest.mark.parametrize("axis, form", [(0, "sqrt"), (-1, "rsqrt"), (-1, "rms")],
                         ids=["batch", "layer", "rms"])
def test_normalisation_gets_a_post_normalisation_row(axis, form):
  p = _params({"W1": (3, 4), "b1": (4,), "g": (4,), "beta": (4,), "W2": (4, 2), "b2": (2,)},
              seed=7)
  p["g"] = 1.0 + p["g"]
  x = jax.random.normal(jax.random.PRNGKey(8), (B, 3), jnp.float64)

  def forward(probes, p=p, x=x):
    z1 = _dense(x, p, 1, probes[0])
    zn = _hand_norm(z1, axis, p, form)
    zn = zn if probes[1] is None else zn + probes[1]
    z2 = _dense(jax.nn.relu(zn), p, 2, probes[2])
    return jnp.sum(jnp.sin(z2)), [z1, zn, z2]

  report = jax.jit(lambda p, x: inspect(
      lambda p, x: forward([None] * 3, p, x)[0], p, x))(p, x)
  assert report.kinds == ("dot_general", "norm", "dot_general")
  assert report.names[1] == "W1 · norm" and report.activations[1] == "relu"
  q, d = _reference(forward, [(B, 4), (B, 4), (B, 2)])
  np.testing.assert_allclose(report.q, q, **TOL)
  np.testing.assert_allclose(report.delta_sq, d, **TOL)
  assert np.isnan(report.sigma_w2[1])
  assert "before normalisation" in report.table()


class _BN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.BatchNorm(use_running_average=False, epsilon=1e-5, param_dtype=jnp.float64)(
        nn.Dense(4, param_dtype=jnp.float64)(x))
    return nn.Dense(2, param_dtype=jnp.float64)(jax.nn.relu(x))


def test_flax_batch_norm_row_matches_the_hand_normalisation():
  x = jax.random.normal(jax.random.PRNGKey(9), (B, 3), jnp.float64)
  v = _BN().init(jax.random.PRNGKey(10), x)
  params = jax.tree_util.tree_map(   # nonzero biases, scale away from 1
      lambda a: a + 0.3 * jax.random.normal(jax.random.PRNGKey(11), a.shape, a.dtype),
      v["params"])

  def loss_fn(params, x):
    out, _ = _BN().apply({"params": params, "batch_stats": v["batch_stats"]}, x,
                         mutable=["batch_stats"])
    return jnp.sum(jnp.sin(out))

  report = jax.jit(lambda p, x: inspect(loss_fn, p, x))(params, x)
  assert report.names[:2] == ("Dense_0/kernel · dot_general", "Dense_0/kernel · norm")
  assert report.kinds == ("dot_general", "norm", "dot_general")
  d0, bn, d1 = params["Dense_0"], params["BatchNorm_0"], params["Dense_1"]
  hand = {"W1": d0["kernel"], "b1": d0["bias"], "g": bn["scale"], "beta": bn["bias"],
          "W2": d1["kernel"], "b2": d1["bias"]}

  def forward(probes):
    z1 = _dense(x, hand, 1, probes[0])
    zn = _hand_norm(z1, 0, hand, "rsqrt") + probes[1]
    return jnp.sum(jnp.sin(_dense(jax.nn.relu(zn), hand, 2, probes[2]))), [z1, zn]

  q, d = _reference(forward, [(B, 4), (B, 4), (B, 2)])
  # flax takes var = E[z^2] - E[z]^2: equal to round-off here, not bit for bit.
  np.testing.assert_allclose(report.q[:2], q, rtol=1e-8)
  np.testing.assert_allclose(report.delta_sq[:2], d[:2], rtol=1e-8)
