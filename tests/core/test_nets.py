"""The MLP spec: shapes, forward pass against numpy, stacking, remat, jit/vmap, validation."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.core import activations
from jaxbp.core import initializers
from jaxbp.core import losses

SIZES = (3, 5, 5, 5, 2)     # four affine layers, three hidden of width 5
BATCH = 6
RTOL = 1e-13
ATOL = 1e-15

NUMPY_ACT = {
    "identity": lambda z: z,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "softmax": lambda z: np.exp(z - z.max(-1, keepdims=True)) / np.exp(z - z.max(-1, keepdims=True)).sum(
        -1, keepdims=True),
}


def _x(batch=BATCH, width=SIZES[0], seed=1):
  return jax.random.normal(jax.random.PRNGKey(seed), (batch, width), jnp.float64)


def _params(net, seed=0, init="glorot"):
  # Non-zero biases, so that the bias is actually exercised.
  params = net.init(jax.random.PRNGKey(seed), init)
  if not net.bias:
    return params
  keys = jax.random.split(jax.random.PRNGKey(100 + seed), len(params))
  return tuple(jaxbp.Dense(p.W, 0.2 * jax.random.normal(k, p.b.shape, p.b.dtype))
               for p, k in zip(params, keys))


def _numpy_forward(net, params, x, hidden, output):
  """The forward pass layer by layer in numpy: z = h W + b, h = phi(z)."""
  layers = jaxbp.unstack(params, net)
  h = np.asarray(x)
  for k, p in enumerate(layers):
    z = h @ np.asarray(p.W) + (0.0 if p.b is None else np.asarray(p.b))
    h = NUMPY_ACT[output if k == len(layers) - 1 else hidden](z)
  return h


def _allclose_trees(a, b, rtol=RTOL, atol=ATOL):
  jaxbp.gradcheck.check_same_structure(a, b)
  for la, lb in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(la, lb, rtol=rtol, atol=atol)


# -- init ----------------------------------------------------------------------

SHAPES = {
    # (stack, bias): the W shapes and b shapes of the params tuple for SIZES.
    (False, True): ([(3, 5), (5, 5), (5, 5), (5, 2)], [(5,), (5,), (5,), (2,)]),
    (False, False): ([(3, 5), (5, 5), (5, 5), (5, 2)], [None] * 4),
    (True, True): ([(3, 5), (2, 5, 5), (5, 2)], [(5,), (2, 5), (2,)]),
    (True, False): ([(3, 5), (2, 5, 5), (5, 2)], [None] * 3),
}


@pytest.mark.parametrize("stack,bias", list(SHAPES),
                         ids=[f"{'stacked' if s else 'unrolled'}-{'bias' if b else 'nobias'}" for s, b in SHAPES])
def test_init_shapes(stack, bias):
  net = jaxbp.MLP(SIZES, "tanh", stack=stack, bias=bias)
  params = net.init(jax.random.PRNGKey(0))
  w_shapes, b_shapes = SHAPES[(stack, bias)]
  assert isinstance(params, tuple) and all(isinstance(p, jaxbp.Dense) for p in params)
  assert [p.W.shape for p in params] == w_shapes
  assert [None if p.b is None else p.b.shape for p in params] == b_shapes
  assert all(p.W.dtype == jnp.float64 for p in params)
  # One key per layer: no two layers (nor two layers of the stack) are equal.
  layers = jaxbp.unstack(params, net)
  assert len(layers) == len(SIZES) - 1
  assert not np.allclose(layers[1].W, layers[2].W)


def test_init_dtype_and_determinism():
  net = jaxbp.MLP(SIZES, "tanh", stack=True)
  p32 = net.init(jax.random.PRNGKey(0), "he", dtype=jnp.float32)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(p32))
  _allclose_trees(net.init(jax.random.PRNGKey(0), "he"), net.init(jax.random.PRNGKey(0), "he"), rtol=0, atol=0)
  a, b = net.init(jax.random.PRNGKey(0), "he"), net.init(jax.random.PRNGKey(1), "he")
  assert not np.allclose(a[1].W, b[1].W)


def test_init_uses_each_layers_own_fans():
  # Same key, same normal draws: glorot_normal / lecun = sqrt(2 fan_in / (fan_in + fan_out))
  # layer by layer, which pins the (fan_in, fan_out) every layer was drawn with
  # (and that a stack's fans are its last two axes, not the layer axis).
  net = jaxbp.MLP(SIZES, "tanh", stack=True)
  lecun = jaxbp.unstack(net.init(jax.random.PRNGKey(0), "lecun"), net)
  glorot = jaxbp.unstack(net.init(jax.random.PRNGKey(0), "glorot_normal"), net)
  he = jaxbp.unstack(net.init(jax.random.PRNGKey(0), initializers.gaussian(2.0)), net)
  for k, (fi, fo) in enumerate(zip(SIZES[:-1], SIZES[1:])):
    np.testing.assert_allclose(glorot[k].W, lecun[k].W * np.sqrt(2 * fi / (fi + fo)), rtol=1e-14)
    np.testing.assert_allclose(he[k].W, lecun[k].W * np.sqrt(2.0), rtol=1e-14)


def test_stack_needs_three_layers():
  # With fewer than three affine layers there is no width -> width group to stack.
  net = jaxbp.MLP((3, 5, 2), "tanh", stack=True)
  assert [p.W.shape for p in net.init(jax.random.PRNGKey(0))] == [(3, 5), (5, 2)]


def test_uniform_constructor():
  net = jaxbp.MLP.uniform(3, 5, 3, 2, activation="tanh", stack=True)
  assert net == jaxbp.MLP(SIZES, "tanh", stack=True)
  with pytest.raises(ValueError, match=r"depth must be an int >= 1"):
    jaxbp.MLP.uniform(3, 5, 0, 2)


# -- forward -------------------------------------------------------------------

FORWARD_CASES = [
    (hidden, output, stack)
    for hidden in ("identity", "sigmoid", "tanh", "relu", "leaky_relu")
    for output, stack in (("identity", False), ("sigmoid", True), ("softmax", hidden == "relu"))
]


@pytest.mark.parametrize("hidden,output,stack", FORWARD_CASES,
                         ids=[f"{h}-out_{o}-{'stacked' if s else 'unrolled'}" for h, o, s in FORWARD_CASES])
def test_apply_matches_numpy_forward(hidden, output, stack):
  net = jaxbp.MLP(SIZES, hidden, output_activation=output, stack=stack)
  params, x = _params(net), _x()
  out = net.apply(params, x)
  assert out.shape == (BATCH, SIZES[-1])
  np.testing.assert_allclose(out, _numpy_forward(net, params, x, hidden, output), rtol=RTOL, atol=ATOL)


def test_apply_without_bias_matches_numpy():
  net = jaxbp.MLP(SIZES, "tanh", bias=False, stack=True)
  params, x = _params(net), _x()
  np.testing.assert_allclose(net.apply(params, x), _numpy_forward(net, params, x, "tanh", "identity"),
                             rtol=RTOL, atol=ATOL)


def test_apply_accepts_leaky_relu_object():
  net = jaxbp.MLP(SIZES, activations.leaky_relu(0.3))
  params, x = _params(net), _x()
  h = np.asarray(x)
  for k, p in enumerate(params):
    z = h @ np.asarray(p.W) + np.asarray(p.b)
    h = z if k == len(params) - 1 else np.where(z > 0, z, 0.3 * z)
  np.testing.assert_allclose(net.apply(params, x), h, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("stack", (False, True), ids=("unrolled", "stacked"))
def test_trace_is_consistent_with_apply(stack):
  net = jaxbp.MLP(SIZES, "tanh", output_activation="sigmoid", stack=stack)
  params, x = _params(net), _x()
  tr = net.trace(params, x)
  assert len(tr.z) == len(tr.h) == len(params)
  np.testing.assert_allclose(tr.h[-1], net.apply(params, x), rtol=RTOL, atol=ATOL)
  # Flatten the stacked group's leading layer axis: one (batch, width) per layer.
  zs, hs = [], []
  for g, (z, h) in enumerate(zip(tr.z, tr.h)):
    if net.is_stacked(g):
      assert z.shape == h.shape == (len(SIZES) - 3, BATCH, SIZES[1])
      zs.extend(z), hs.extend(h)
    else:
      zs.append(z), hs.append(h)
  layers = jaxbp.unstack(params, net)
  h_prev = x
  for k, (p, z, h) in enumerate(zip(layers, zs, hs)):
    assert z.shape == h.shape == (BATCH, SIZES[k + 1])
    np.testing.assert_allclose(z, h_prev @ p.W + p.b[None, :], rtol=RTOL, atol=ATOL)
    phi = np.tanh if k < len(layers) - 1 else NUMPY_ACT["sigmoid"]
    np.testing.assert_allclose(h, phi(np.asarray(z)), rtol=RTOL, atol=ATOL)
    h_prev = h


def test_stacked_equals_unrolled_given_the_same_params():
  net_s = jaxbp.MLP(SIZES, "tanh", stack=True)
  net_u = jaxbp.MLP(SIZES, "tanh")
  params_s, x = _params(net_s), _x()
  params_u = jaxbp.unstack(params_s, net_s)
  assert len(params_u) == len(SIZES) - 1
  np.testing.assert_allclose(net_s.apply(params_s, x), net_u.apply(params_u, x), rtol=RTOL, atol=ATOL)
  y = jax.random.normal(jax.random.PRNGKey(5), (BATCH, SIZES[-1]), jnp.float64)
  g_s = jax.grad(jaxbp.objective(net_s, "mse"))(params_s, x, y)
  g_u = jax.grad(jaxbp.objective(net_u, "mse"))(params_u, x, y)
  _allclose_trees(jaxbp.unstack(g_s, net_s), g_u, rtol=1e-12)


@pytest.mark.parametrize("stack", (False, True), ids=("unrolled", "stacked"))
def test_remat_gives_identical_outputs_and_gradients(stack):
  plain = jaxbp.MLP(SIZES, "tanh", stack=stack)
  remat = jaxbp.MLP(SIZES, "tanh", stack=stack, remat=True)
  params, x = _params(plain), _x()
  y = jnp.array([0, 1, 1, 0, 1, 0])
  np.testing.assert_allclose(remat.apply(params, x), plain.apply(params, x), rtol=RTOL, atol=ATOL)
  _allclose_trees(remat.trace(params, x), plain.trace(params, x))
  grad = lambda net: jax.jit(jax.grad(jaxbp.objective(net, "softmax_cross_entropy")))(params, x, y)
  _allclose_trees(grad(remat), grad(plain), rtol=1e-12)


def _saved_h_count(net, params, x, y, loss="mse"):
  """How many arrays of one h (batch x width) autodiff saves for the backward pass."""
  try:
    from jax.ad_checkpoint import saved_residuals
  except ImportError:     # jax 0.10 keeps it private (print_saved_residuals is its printer)
    from jax._src.ad_checkpoint import saved_residuals
  batch, width = x.shape[0], net.sizes[1]
  return sum(int(np.prod(aval.shape[:-2]))
             for aval, why in saved_residuals(jaxbp.objective(net, loss), params, x, y)
             if "from the argument" not in why and aval.shape[-2:] == (batch, width))


# 13 hidden layers of width 7: a stack of 12. Blocks that divide it (1, 4), that
# do not (5), one longer than the stack (13).
BLOCK_SIZES = (1, 4, 5, 13)


@pytest.mark.parametrize("variant", ({}, {"residual": True}, {"bias": False},
                                     {"batchnorm": True}),
                         ids=("plain", "residual", "nobias", "batchnorm"))
@pytest.mark.parametrize("stack", (False, True), ids=("unrolled", "stacked"))
def test_block_remat_gives_identical_gradients(stack, variant):
  plain = jaxbp.MLP.uniform(3, 7, 13, 2, activation="tanh", stack=stack, **variant)
  params = plain.init(jax.random.PRNGKey(0), "glorot")
  x, y = _x(batch=5), jax.random.normal(jax.random.PRNGKey(3), (5, 2), jnp.float64)
  want = jax.jit(jax.grad(jaxbp.objective(plain, "mse")))(params, x, y)
  for k in BLOCK_SIZES:
    net = jaxbp.MLP.uniform(3, 7, 13, 2, activation="tanh", stack=stack, remat=k, **variant)
    assert net.remat_block == k
    np.testing.assert_allclose(net.apply(params, x), plain.apply(params, x), rtol=RTOL, atol=ATOL)
    got = jax.jit(jax.grad(jaxbp.objective(net, "mse")))(params, x, y)
    err = jaxbp.gradcheck.max_relative_error(got, want)
    assert err <= 1e-12, (k, err)
    # The hand recursion ignores remat (it keeps its own trace): same gradients.
    hand = jax.jit(jaxbp.backprop.grad, static_argnums=(0, 1))(net, "mse", params, x, y)
    assert jaxbp.gradcheck.max_relative_error(hand, want) <= 1e-10, k


@pytest.mark.parametrize("stack", (False, True), ids=("unrolled", "stacked"))
def test_block_remat_saves_fewer_activations(stack):
  # Stacked: 14 layers, a stack of 12 between the first and the last.
  make = lambda remat: jaxbp.MLP.uniform(3, 7, 13, 2, activation="tanh", stack=stack,
                                         remat=remat)
  params = make(False).init(jax.random.PRNGKey(0), "glorot")
  x, y = _x(batch=5), jax.random.normal(jax.random.PRNGKey(3), (5, 2), jnp.float64)
  saved = {k: _saved_h_count(make(k), params, x, y) for k in (False, True, 2, 3, 4, 5, 12)}
  # Without remat: 2 (unrolled) or 3 (stacked) h per hidden layer; per-layer
  # remat: one, the input of each of the 13 hidden layers after the first.
  assert saved[False] == (39 if stack else 26) and saved[True] == 13
  # Only every k-th activation. Stacked: the first layer's output and the
  # inputs of the ceil(12 / k) blocks of the stack. Unrolled: the outputs of
  # all but the last of the ceil(14 / k) blocks of the 14 layers.
  want = {k: (1 + -(-12 // k) if stack else -(-14 // k) - 1) for k in (2, 3, 4, 5, 12)}
  assert {k: saved[k] for k in want} == want


def test_remat_true_is_per_layer_and_bad_block_sizes_are_refused():
  assert jaxbp.MLP(SIZES, remat=True) == jaxbp.MLP(SIZES, remat=1)
  assert jaxbp.MLP(SIZES, remat=True).remat_block == 1
  assert jaxbp.MLP(SIZES).remat_block == 0
  assert jaxbp.MLP(SIZES, remat=np.int64(3)).remat == 3
  assert "remat=3" in str(jaxbp.MLP(SIZES, stack=True, remat=3))
  for bad in (0, -2, 2.0, 1.5, "2", None):
    with pytest.raises(ValueError, match=r"remat must be a bool or an int k >= 1"):
      jaxbp.MLP(SIZES, remat=bad)


# -- a static, hashable spec: jit and vmap ------------------------------------------------


def test_spec_is_hashable_and_equal():
  a = jaxbp.MLP(SIZES, "tanh", stack=True)
  b = jaxbp.MLP(list(SIZES), "tanh", stack=True)
  assert a == b and hash(a) == hash(b) and a.sizes == SIZES
  assert a != jaxbp.MLP(SIZES, "tanh") and a != jaxbp.MLP(SIZES, "relu", stack=True)
  c = jaxbp.MLP(SIZES, activations.leaky_relu(0.2))
  assert c == jaxbp.MLP(SIZES, activations.leaky_relu(0.2)) and hash(c) == hash(
      jaxbp.MLP(SIZES, activations.leaky_relu(0.2)))
  assert len({a, b, c}) == 2
  with pytest.raises(Exception):   # frozen
    a.sizes = (1, 2)


def test_static_jit_argument_does_not_recompile():
  traces = []

  def forward(net, params, x):
    traces.append(net)          # runs once per trace, not per call
    return net.apply(params, x)

  forward = jax.jit(forward, static_argnums=0)
  x = _x()
  net = jaxbp.MLP(SIZES, "tanh", stack=True)
  params = _params(net)
  first = forward(net, params, x)
  # A new but equal spec, new param values: no retrace.
  again = forward(jaxbp.MLP(list(SIZES), "tanh", stack=True), _params(net, seed=1), x)
  assert len(traces) == 1
  np.testing.assert_allclose(first, net.apply(params, x), rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(again, net.apply(_params(net, seed=1), x), rtol=RTOL, atol=ATOL)
  forward(jaxbp.MLP(SIZES, activations.leaky_relu(0.2), stack=True), params, x)
  forward(jaxbp.MLP(SIZES, activations.leaky_relu(0.2), stack=True), params, x)
  assert len(traces) == 2       # a different spec traces once more, then is cached


def test_jit_matches_eager():
  net = jaxbp.MLP(SIZES, "relu", stack=True)
  params, x = _params(net), _x()
  np.testing.assert_allclose(jax.jit(net.apply)(params, x), net.apply(params, x), rtol=RTOL, atol=ATOL)


def test_vmap_over_seeds():
  # Params of three seeds stacked along a new leading axis (vmapping net.init itself
  # is covered by test_backprop.py, and costs seconds of compile here).
  net = jaxbp.MLP(SIZES, "tanh", stack=True)
  seeds = [_params(net, seed=s) for s in range(3)]
  params = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *seeds)
  assert params[1].W.shape == (3, 2, 5, 5)
  x = _x()
  outs = jax.jit(jax.vmap(net.apply, in_axes=(0, None)))(params, x)
  assert outs.shape == (3, BATCH, SIZES[-1])
  for out, p in zip(outs, seeds):
    np.testing.assert_allclose(out, _numpy_forward(net, p, x, "tanh", "identity"), rtol=RTOL, atol=ATOL)


def test_vmap_over_inputs():
  net = jaxbp.MLP(SIZES, "tanh", stack=True)
  params = _params(net)
  xs = jax.random.normal(jax.random.PRNGKey(2), (4, BATCH, SIZES[0]), jnp.float64)
  outs = jax.vmap(net.apply, in_axes=(None, 0))(params, xs)
  assert outs.shape == (4, BATCH, SIZES[-1])
  # Rows are independent, so a vmap over groups equals one big batch.
  flat = _numpy_forward(net, params, xs.reshape(-1, SIZES[0]), "tanh", "identity")
  np.testing.assert_allclose(outs.reshape(-1, SIZES[-1]), flat, rtol=RTOL, atol=ATOL)


def test_objective_is_the_loss_of_the_output():
  net = jaxbp.MLP(SIZES, "tanh", stack=True)
  params, x = _params(net), _x()
  labels = jnp.array([0, 1, 1, 0, 1, 0])
  out = _numpy_forward(net, params, x, "tanh", "identity")
  logp = out - np.log(np.exp(out).sum(-1, keepdims=True))
  nll = -logp[np.arange(BATCH), np.asarray(labels)]
  np.testing.assert_allclose(jaxbp.objective(net, "softmax_cross_entropy")(params, x, labels), nll.mean(),
                             rtol=1e-13)
  np.testing.assert_allclose(jaxbp.objective(net, losses.softmax_cross_entropy, "sum")(params, x, labels),
                             nll.sum(), rtol=1e-13)


# -- bad input -----------------------------------------------------------------------------
# tests/test_validation.py holds the one-row-per-error table across the API; the
# cases here are the ones it does not have (trace as well as apply, other shapes,
# the full list of valid names, params of other layouts).


@pytest.mark.parametrize("shape", ((BATCH, 2), (3,), (), (2, BATCH, 3)),
                         ids=("too-narrow", "1-D", "scalar", "3-D"))
@pytest.mark.parametrize("method", ("apply", "trace"))
def test_x_shape_mismatch_names_both_shapes(method, shape):
  net = jaxbp.MLP(SIZES, "tanh", stack=True)
  with pytest.raises(ValueError, match=re.escape(
      f"x has shape {shape}, expected (batch, 3) for net sizes={SIZES}. A single example needs "
      "a batch axis: x[None]")):
    getattr(net, method)(_params(net), jnp.zeros(shape))


@pytest.mark.parametrize("method", ("apply", "trace"))
def test_bool_x_raises_type_error(method):
  net = jaxbp.MLP(SIZES, "tanh")
  with pytest.raises(TypeError, match=r"x must be floating point, got dtype bool"):
    getattr(net, method)(_params(net), jnp.ones((BATCH, 3), jnp.bool_))


def test_sizes_must_be_a_sequence():
  with pytest.raises(ValueError, match=r"sizes must list at least two widths .* got 3\."):
    jaxbp.MLP(3, "tanh")


@pytest.mark.parametrize("field", ("activation", "output_activation"))
def test_unknown_activation_lists_every_valid_name(field):
  with pytest.raises(ValueError, match=r"Unknown activation 'swish'") as info:
    jaxbp.MLP(SIZES, **{field: "swish"})
  for name in activations.names():
    assert name in str(info.value)


def test_unknown_init_lists_every_valid_name():
  net = jaxbp.MLP(SIZES, "tanh")
  with pytest.raises(ValueError, match=r"Unknown init 'kaiming_uniform'") as info:
    net.init(jax.random.PRNGKey(0), "kaiming_uniform")
  for name in initializers.names():
    assert name in str(info.value)


def test_softmax_output_is_fine():
  net = jaxbp.MLP(SIZES, "tanh", output_activation="softmax")
  np.testing.assert_allclose(jnp.sum(net.apply(_params(net), _x()), axis=-1), np.ones(BATCH), rtol=1e-14)


@pytest.mark.parametrize("other,match", (
    (dict(sizes=(3, 4, 5, 5, 2)), r"params\[0\]\.W has shape \(3, 4\), expected \(3, 5\)"),
    (dict(sizes=(3, 5, 5, 5, 3)), r"params\[3\]\.W has shape \(5, 3\), expected \(5, 2\)"),
    (dict(sizes=(3, 5, 5, 5, 2), stack=True), r"expected a tuple of 4 Dense layers, got 3"),
    (dict(sizes=(3, 5, 5, 5, 2), bias=False), r"params\[0\]\.b has shape None, expected \(5,\)"),
), ids=("first-layer", "last-layer", "stacked-params", "no-bias-params"))
def test_params_of_another_net_rejected(other, match):
  net = jaxbp.MLP(SIZES, "tanh")
  params = jaxbp.MLP(activation="tanh", **other).init(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match=match):
    net.apply(params, _x())
  with pytest.raises(ValueError, match=match):
    net.trace(params, _x())


def test_unstacked_params_into_a_one_layer_stack_rejected():
  # Three layers: the stack holds one width -> width layer, W of shape (1, n, n).
  net = jaxbp.MLP((3, 5, 5, 2), "tanh", stack=True)
  params = jaxbp.MLP((3, 5, 5, 2), "tanh").init(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match=re.escape("params[1].W has shape (5, 5), expected (1, 5, 5)")):
    net.apply(params, _x())
