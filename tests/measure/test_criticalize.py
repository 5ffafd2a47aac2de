"""jaxbp.criticalize: after it, jaxbp.inspect measures flat gradient flow.

Every check is made by an independent measurement of the returned params
(``jaxbp.inspect`` called afresh, the leaves divided by the originals), not by
criticalize's own report; the theory comparison is against
``meanfield.critical_sigma_w2``.
"""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.theory import meanfield

SLOPE, SPREAD = 0.01, 1.0   # the bars: nats per layer, nats about the mean


def _flow(report, rows=slice(None)):
  ln = np.log(np.asarray(report.delta_sq))[rows]
  slope = np.polyfit(np.arange(len(ln)), ln, 1)[0]
  return slope, float(np.max(np.abs(ln - ln.mean())))


def _check_flat(loss_fn, params, *args, rows=slice(None), **kw):
  new, info = jaxbp.criticalize(loss_fn, params, *args, **kw)
  _check_tree(params, new)
  report = jaxbp.inspect(loss_fn, new, *args)
  np.testing.assert_allclose(report.delta_sq, info.report.delta_sq, rtol=1e-6)
  slope, spread = _flow(report, rows)
  assert abs(float(report.log_slope)) <= SLOPE and abs(slope) <= SLOPE, (report.log_slope, slope)
  assert spread <= SPREAD, spread
  assert bool(info.converged)
  return new, info


def _check_tree(old, new):
  assert jax.tree_util.tree_structure(old) == jax.tree_util.tree_structure(new)
  for a, b in zip(jax.tree_util.tree_leaves(old), jax.tree_util.tree_leaves(new)):
    if isinstance(a, (jax.Array, np.ndarray)):
      assert (jnp.result_type(a), np.shape(a)) == (jnp.result_type(b), np.shape(b))
    else:
      assert a is b


def _dict_mlp(depth, width, sigma_w2, act=jnp.tanh, key=0, dtype=jnp.float64):
  keys = jax.random.split(jax.random.PRNGKey(key), depth)
  params = {f"l{k}": {"W": jax.random.normal(keys[k], (width, width), dtype)
                      * np.sqrt(sigma_w2 / width), "b": jnp.zeros(width, dtype)}
            for k in range(depth)}

  def loss_fn(p, x):
    h = x
    for k in range(depth):
      z = h @ p[f"l{k}"]["W"] + p[f"l{k}"]["b"][None, :]
      h = act(z) if k < depth - 1 else z
    return jnp.mean(h ** 2)
  return params, loss_fn


X16 = jax.random.normal(jax.random.PRNGKey(9), (32, 16))


@pytest.mark.slow
def test_dict_mlp_flat_with_each_weight_scaled_by_its_reported_scale():
  params, loss_fn = _dict_mlp(5, 16, 4.0)
  params["step"] = jnp.asarray(3)                 # an int leaf passes through
  params["l3"]["W"] = params["l3"]["W"].astype(jnp.float32)
  before = jaxbp.inspect(loss_fn, params, X16)
  assert abs(float(before.log_slope)) > 0.1      # exploding before
  new, info = _check_flat(loss_fn, params, X16)
  assert new["step"] is params["step"]
  for k in range(5):
    ratio = np.asarray(new[f"l{k}"]["W"], float) / np.asarray(params[f"l{k}"]["W"], float)
    np.testing.assert_allclose(ratio, float(info.scales[k]), rtol=1e-5)
    np.testing.assert_array_equal(new[f"l{k}"]["b"], params[f"l{k}"]["b"])
  np.testing.assert_allclose(info.before.q, before.q)
  assert np.all(np.asarray(info.reached))


@pytest.mark.slow
def test_forward_target_is_unit_variance_per_layer():
  params, loss_fn = _dict_mlp(6, 16, 0.5)
  new, info = jaxbp.criticalize(loss_fn, params, X16, target="forward")
  np.testing.assert_allclose(jaxbp.inspect(loss_fn, new, X16).q, 1.0, atol=0.011)
  assert int(info.iters) >= 1


@pytest.mark.slow
def test_jit_matches_eager():
  params, loss_fn = _dict_mlp(5, 16, 3.0)
  eager, info = jaxbp.criticalize(loss_fn, params, X16)
  jitted, jinfo = jax.jit(lambda p, x: jaxbp.criticalize(loss_fn, p, x))(params, X16)
  for a, b in zip(jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(jitted)):
    np.testing.assert_allclose(a, b, rtol=1e-9)
  assert int(info.iters) == int(jinfo.iters)


@pytest.mark.slow
def test_scan_stacked_leaf_gets_a_scale_per_slice_and_a_shared_one_a_single_scale():
  n, L = 16, 6
  k1, k2 = jax.random.split(jax.random.PRNGKey(2))
  # Slices of very different size: each needs its own scale.
  W = jax.random.normal(k1, (L, n, n)) / np.sqrt(n) * jnp.linspace(0.5, 3.0, L)[:, None, None]
  V = jax.random.normal(k2, (n, n)) * np.sqrt(3.0 / n)

  def stacked(p, x):
    h, _ = jax.lax.scan(lambda h, w: (jnp.tanh(h @ w), None), x, p["W"])
    return jnp.mean(h ** 2)

  def shared(p, x):
    h, _ = jax.lax.scan(lambda h, _: (jnp.tanh(h @ p["V"]), None), x, None, length=L)
    return jnp.mean(h ** 2)

  new, info = _check_flat(stacked, {"W": W}, X16)
  ratio = np.asarray(new["W"][:, 0, 0] / W[:, 0, 0])
  np.testing.assert_allclose(ratio, np.asarray(info.scales), rtol=1e-6)
  assert np.ptp(ratio[1:]) > 0.5                  # one per slice, and they differ
  new, info = jaxbp.criticalize(shared, {"V": V}, X16)
  assert np.ptp(np.asarray(info.scales)) == 0     # one weight, one scale
  assert abs(_flow(jaxbp.inspect(shared, new, X16))[0]) <= SLOPE


def test_no_layer_is_an_error_and_bad_arguments_are_named():
  params = {"w": jnp.ones(3)}
  with pytest.raises(ValueError, match="no layer found"):
    jaxbp.criticalize(lambda p, x: jnp.sum(p["w"] * x), params, jnp.ones(3))
  mlp, loss_fn = _dict_mlp(2, 4, 1.0)
  x = jnp.ones((2, 4))
  with pytest.raises(ValueError, match="target"):
    jaxbp.criticalize(loss_fn, mlp, x, target="backward")
  with pytest.raises(ValueError, match="max_iters"):
    jaxbp.criticalize(loss_fn, mlp, x, max_iters=0)
  with pytest.raises(ValueError, match="descent_steps"):
    jaxbp.criticalize(loss_fn, mlp, x, descent_steps=-1)
  with pytest.raises(ValueError, match="tol"):
    jaxbp.criticalize(loss_fn, mlp, x, tol=-1.0)


@pytest.mark.slow
def test_dead_relu_layer_is_named_in_a_warning():
  params, loss_fn = _dict_mlp(5, 16, 2.0, act=jax.nn.relu)
  params["l2"]["b"] = jnp.full(16, -100.0)       # layer 3's ReLU is off for every input
  # The layers below the dead ReLU, named together with their reason.
  dead = r"l0/W · dot_general, l1/W · dot_general, l2/W · dot_general[^;]*: no gradient reaches it"
  with pytest.warns(UserWarning, match=dead):
    _, info = jaxbp.criticalize(loss_fn, params, X16)
  assert not bool(info.converged)
  assert not np.all(np.asarray(info.reached))
  # Under jit it cannot warn; info.reached says the same.
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    _, jinfo = jax.jit(lambda p, x: jaxbp.criticalize(loss_fn, p, x))(params, X16)
  np.testing.assert_array_equal(jinfo.reached, info.reached)


# --- The models, on hidden sizes a study would not use.

def _mlp(act, depth, width, sigma_w2, sigma_b2=0.0, batch=64, seed=0):
  net = jaxbp.MLP(sizes=(width,) * (depth + 1) + (10,), activation=act, stack=True)
  params = net.init(jax.random.PRNGKey(seed), init=jaxbp.initializers.gaussian(
      sigma_w2=sigma_w2, sigma_b2=sigma_b2))
  x = jax.random.normal(jax.random.PRNGKey(seed + 1), (batch, width))
  y = jax.nn.one_hot(jnp.arange(batch) % 10, 10)
  return net, params, x, y


@pytest.mark.slow
@pytest.mark.parametrize("act,sigma_w2", [("tanh", 0.5), ("tanh", 4.0), ("relu", 2.5)],
                         ids=["tanh-0.5", "tanh-4", "relu"])
def test_depth_100_mlp(act, sigma_w2):
  net, params, x, y = _mlp(act, 100, 96, sigma_w2)
  _check_flat(jaxbp.objective(net, "softmax_cross_entropy"), params, x, y)


@pytest.mark.slow
def test_depth_50_tanh_convnet():
  cn = jaxbp.ConvNet(channels=(3,) + (12,) * 50, kernel_size=3, activation="tanh",
                     padding="circular", ndim=2, outputs=10)
  params = cn.init(jax.random.PRNGKey(0), init=jaxbp.initializers.gaussian(sigma_w2=3.0))
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 6, 6, 3))
  _check_flat(jaxbp.objective(cn, "softmax_cross_entropy"), params, x,
              jax.nn.one_hot(jnp.arange(8) % 10, 10))


@pytest.mark.slow
def test_depth_20_flax_cnn_and_its_nnx_twin():
  import flax.linen as nn
  from flax import nnx

  class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
      for _ in range(20):
        x = jnp.tanh(nn.Conv(10, (3, 3), kernel_init=nn.initializers.normal(0.5))(x))
      return nn.Dense(10)(x.mean((1, 2)))

  x = jax.random.normal(jax.random.PRNGKey(1), (8, 6, 6, 3))
  y = jax.nn.one_hot(jnp.arange(8) % 10, 10)
  model = CNN()
  variables = model.init(jax.random.PRNGKey(0), x)
  _check_flat(lambda v, x, y: jnp.mean((model.apply(v, x) - y) ** 2), variables, x, y)

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.layers = nnx.List([nnx.Linear(12, 12, rngs=rngs) for _ in range(6)])

    def __call__(self, x):
      for layer in self.layers:
        x = jnp.tanh(layer(x))
      return x
  graphdef, state = nnx.split(Net(nnx.Rngs(0)))
  loss = lambda s, x: jnp.mean(nnx.merge(graphdef, s)(x) ** 2)
  _check_flat(loss, state, jax.random.normal(jax.random.PRNGKey(2), (16, 12)) * 3)


@pytest.mark.slow
def test_equinox_and_haiku_mlps():
  import equinox as eqx
  import haiku as hk

  mlp = eqx.nn.MLP(12, 3, 40, 24, activation=jnp.tanh, key=jax.random.PRNGKey(0))
  params, static = eqx.partition(mlp, eqx.is_inexact_array)
  x = jax.random.normal(jax.random.PRNGKey(1), (32, 12))
  loss = lambda p, x: jnp.mean(jax.vmap(eqx.combine(p, static))(x) ** 2)
  _check_flat(loss, params, x)
  new, _ = jaxbp.criticalize(lambda m, x: jnp.mean(jax.vmap(m)(x) ** 2), mlp, x)
  _check_tree(mlp, new)                         # the whole module, functions and all

  fwd = hk.without_apply_rng(hk.transform(
      lambda x: hk.nets.MLP([20] * 12, activation=jax.nn.relu)(x)))
  hparams = fwd.init(jax.random.PRNGKey(0), x)
  _check_flat(lambda p, x: jnp.mean(fwd.apply(p, x) ** 2), hparams, x)


@pytest.mark.slow
def test_rnn_200_steps():
  rnn = jaxbp.RNN(input_size=4, hidden_size=72, output_size=3)
  params = rnn.init(jax.random.PRNGKey(0), init="lecun")
  x = jax.random.normal(jax.random.PRNGKey(1), (32, 200, 4))
  y = jax.random.normal(jax.random.PRNGKey(2), (32, 3))
  loss = jaxbp.objective(rnn, "mse")
  new, info = jaxbp.criticalize(loss, params, x, y)
  _check_tree(params, new)
  report = jaxbp.inspect(loss, new, x, y)
  assert report.names[0] == "W_in · dot_general" and report.names[1] == "W[0] · dot_general"
  # One scale for the recurrent weight, shared by its 200 rows.
  assert np.ptp(np.asarray(info.scales)[1:201]) == 0
  # Row 0 (W_in) holds all 200 steps' deltas at once: the chain is rows 1..201.
  slope, _ = _flow(report, slice(1, None))
  assert abs(slope) <= SLOPE and abs(float(report.log_slope)) <= SLOPE
  assert abs(float(info.before.log_slope)) > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("act,sigma_b2", [("tanh", 0.05), ("relu", 0.0)])
def test_scales_match_critical_sigma_w2_at_width_512(act, sigma_b2):
  # Gain 1 at the theory's fixed point q* is chi_1 = 1 there: the critical
  # sigma_w^2. The input is scaled so that the first layer's q is q* (inside the
  # start band, which keeps it), so every hidden layer sits at the fixed point.
  crit = float(meanfield.critical_sigma_w2(act, sigma_b2))
  q_star = float(meanfield.fixed_point(act, crit, sigma_b2))
  net, params, x, y = _mlp(act, 20, 512, 1.0, sigma_b2, batch=128)
  x = x * np.sqrt(q_star - sigma_b2)
  _, info = jaxbp.criticalize(jaxbp.objective(net, "softmax_cross_entropy"), params, x, y)
  eff = np.asarray(info.scales) ** 2 * np.asarray(info.before.sigma_w2)
  hidden = eff[1:-1] / crit
  assert abs(np.median(hidden) - 1) <= 0.05, hidden
  # Per layer, the 5% holds for tanh (3.8-4.8% over seeds 0-2). A relu
  # layer's gain on a collapsed batch is its own draw (about its fraction of
  # active units, relative s.d. 1/sqrt(512) = 4.4%): 10-11% there.
  assert np.max(np.abs(hidden - 1)) <= (0.05 if act == "tanh" else 0.15), hidden


def _spread(report):
  ld = np.log(np.asarray(report.delta_sq))
  return float(np.max(np.abs(ld - ld.mean())))


@pytest.mark.slow   # ~20 s, nearly all compiling 20 iterations over a transformer
def test_returns_the_best_iterate_where_the_steps_do_not_converge():
  # A post-LN Transformer: the execution-order chain pairs q, k and v, parallel
  # branches, with each other, so the gain steps wander (the last of 20 iterates
  # has a spread near 18 nats against 2.4 as given). What comes back must be no
  # less flat than the params as given, and its report must be theirs.
  import optax
  net = jaxbp.Transformer(d_model=16, heads=2, depth=4, d_ff=32, norm="post", vocab=8,
                          max_len=6)
  params = net.init(jax.random.PRNGKey(0))
  x = jax.random.randint(jax.random.PRNGKey(1), (8, 6), 0, 8)
  loss = lambda p, x, y: jnp.mean(
      optax.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y))
  with pytest.warns(UserWarning, match="did not reach the gradient target"):
    new, info = jaxbp.criticalize(loss, params, x, x[:, ::-1])
  _check_tree(params, new)
  assert not bool(info.converged)
  fresh = jaxbp.inspect(loss, new, x, x[:, ::-1])
  np.testing.assert_allclose(fresh.delta_sq, info.report.delta_sq, rtol=1e-9)
  assert _spread(fresh) <= _spread(info.before) + 1e-9


@pytest.mark.slow   # ~25 s: two criticalize calls, one with the second-order descent
def test_profile_descent_flattens_a_gelu_chain_the_gain_steps_leave_tilted():
  # gelu is not homogeneous: a layer's gain moves with the q of the layers before
  # it, so on this draw the 20 gain steps end with a slope of -0.02 nats/layer.
  import equinox as eqx
  import optax
  mlp = eqx.nn.MLP(16, 10, 48, 30, activation=jax.nn.gelu, key=jax.random.PRNGKey(2))
  params, static = eqx.partition(mlp, eqx.is_inexact_array)
  x = jnp.abs(jax.random.normal(jax.random.PRNGKey(12), (64, 16)))
  y = jnp.arange(64) % 10
  loss = lambda p, x, y: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
      jax.vmap(eqx.combine(p, static))(x), y))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    gains_only, _ = jaxbp.criticalize(loss, params, x, y, descent_steps=0)
  assert abs(float(jaxbp.inspect(loss, gains_only, x, y).log_slope)) > SLOPE
  with pytest.warns(UserWarning, match="profile descent"):
    new, info = jaxbp.criticalize(loss, params, x, y)
  _check_tree(params, new)
  assert int(info.iters) > 20
  slope, spread = _flow(jaxbp.inspect(loss, new, x, y))
  assert abs(slope) <= SLOPE and spread <= SPREAD, (slope, spread)


def test_rnn_input_row_is_the_sum_of_the_recurrent_rows():
  # Why no rescaling can bring an RNN's profile within SPREAD of its mean:
  # W_in's z (x @ W_in + b, one matmul over all T steps) feeds step t's z_t, so
  # its delta_sq is the sum of the T recurrent rows'. Were those within 1 nat of
  # the mean m, it would be at least T e^(m-1), ln T - 1 above m: 1.5 nats at T = 12.
  T = 12
  rnn = jaxbp.RNN(input_size=3, hidden_size=10, output_size=2)
  params = rnn.init(jax.random.PRNGKey(4), init="lecun")
  params = params._replace(b=0.1 * jnp.ones(10))
  x = jax.random.normal(jax.random.PRNGKey(5), (6, T, 3))
  y = jax.random.normal(jax.random.PRNGKey(6), (6, 2))
  report = jaxbp.inspect(jaxbp.objective(rnn, "mse"), params, x, y)
  assert report.names[0] == "W_in · dot_general" and report.names[T] == f"W[{T - 1}] · dot_general"
  d = np.asarray(report.delta_sq)
  assert np.all(d[1:T + 1] > 0)
  np.testing.assert_allclose(d[0], np.sum(d[1:T + 1]), rtol=1e-10)
  assert np.log(d[0]) - np.mean(np.log(d)) > 1.0


def test_warning_groups_rows_by_reason_and_shows_q_outside_the_band():
  # A report built by hand: rows 0-5 short of tol after a descent (iters > max_iters),
  # row 6 with q above the guard, row 7 with no gradient.
  from jaxbp.measure.criticalize import Q_GUARD
  from jaxbp.measure.criticalized import Criticalized, warn_missed
  from jaxbp.measure.report import LayerReport
  L = 9
  q = np.ones(L)
  q[6] = 5e3
  delta_sq = np.full(L, 0.5)
  delta_sq[7] = 0.0
  names = tuple(f"L{i}" for i in range(L))
  report = LayerReport(names=names, kinds=("dot_general",) * L, shapes=((4, 4),) * L,
                       activations=(None,) * L, loss=jnp.asarray(1.0), q=jnp.asarray(q),
                       delta_sq=jnp.asarray(delta_sq), grad_sq={}, log_slope=jnp.asarray(0.02),
                       sigma_w2=jnp.ones(L), sigma_b2=jnp.zeros(L))
  reached = np.zeros(L, bool)
  reached[8] = True
  info = Criticalized(report, report, jnp.ones(L), jnp.asarray(reached), jnp.asarray(50),
                      jnp.asarray(False))
  with pytest.warns(UserWarning) as caught:
    warn_missed(names, info, "gradient", 20, Q_GUARD)
  text = str(caught[0].message)
  assert text.startswith("jaxbp.criticalize: 8 layer(s) did not reach the gradient target")
  assert ("L0, L1, L2, L3 and 2 more: its gain is not within tol after the gain steps and "
          "the profile descent") in text
  assert "L6 (q 5e+03): q is outside the band" in text
  assert "L7: no gradient reaches it" in text
  assert "L8" not in text and "log_slope 0.02" in text
  # Nothing to say where every row reached its target.
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    warn_missed(names, info._replace(reached=jnp.ones(L, bool)), "gradient", 20, Q_GUARD)
