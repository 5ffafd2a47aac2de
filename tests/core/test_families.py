"""The family contract: every network family on the base (MLP, ConvNet, RNN) and
every variant of it passes the same checks, in float64.

* the hand backward equals ``jax.grad`` of ``objective`` to 1e-12, with live
  gradients (no leaf of the reference is all zero);
* the deltas equal the gradients at zero probes added to every pre-activation;
* a stacked net equals the same net unrolled, remat equals no remat;
* per-example gradients equal ``jax.grad`` on batches of one;
* jit and vmap over params (two seeds at once) give the per-seed results.

Adding a family adds one entry to ``FAMILIES``.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.core import backprop
from jaxbp.measure import probes

TOL = 1e-12
INIT = jaxbp.initializers.gaussian(sigma_w2=1.6, sigma_b2=0.1)

FAMILIES = {
    "mlp": jaxbp.MLP((3, 5, 5, 5, 2), "tanh"),
    "mlp_residual": jaxbp.MLP((3, 5, 5, 5, 2), "tanh", residual=True),
    "mlp_batchnorm": jaxbp.MLP((3, 5, 5, 2), "tanh", batchnorm=True),
    "mlp_stacked": jaxbp.MLP((3, 5, 5, 5, 5, 2), "relu", stack=True),
    "mlp_stacked_remat3": jaxbp.MLP((3, 5, 5, 5, 5, 5, 2), "tanh", stack=True, remat=3),
    "conv1d_circular_pool": jaxbp.ConvNet((2, 3, 3, 3), 3, padding="circular", ndim=1,
                                          outputs=2),
    "conv2d_same_flatten": jaxbp.ConvNet((2, 3, 3), 3, padding="same", ndim=2, outputs=2,
                                         readout="flatten", spatial=4),
    "conv2d_circular_stacked": jaxbp.ConvNet((2, 3, 3, 3, 2), 3, ndim=2, stack=True),
    "rnn_last": jaxbp.RNN(3, 5, 2, activation="tanh"),
    "rnn_all": jaxbp.RNN(3, 5, 2, activation="relu", readout="all"),
    "transformer_pre": jaxbp.Transformer(4, 2, 2, 8),
}


def _inputs(net, batch=3, seed=1):
  rng = np.random.default_rng(seed)
  if isinstance(net, jaxbp.Transformer):
    shape = (batch, 5, net.d_model)
  elif isinstance(net, jaxbp.RNN):
    shape = (batch, 6, net.input_size)
  elif isinstance(net, jaxbp.ConvNet):
    shape = (batch,) + (4,) * net.ndim + (net.channels[0],)
  else:
    shape = (batch, net.sizes[0])
  return jnp.asarray(rng.standard_normal(shape))


def _targets(net, params, x, seed=2):
  out = jax.eval_shape(net.apply, params, x)
  return jnp.asarray(np.random.default_rng(seed).standard_normal(out.shape))


def _params(net, seed=0):
  return net.init(jax.random.PRNGKey(seed), init=INIT)


def _rel_err(a, b):
  la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b)
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  # A leaf whose gradient is zero by construction (attention's bk: a softmax row
  # ignores a shift common to its logits) is measured against the whole tree.
  whole = max(float(jnp.max(jnp.abs(v))) for v in lb)
  return max(float(jnp.max(jnp.abs(u - v)) / (
      whole if jax.tree_util.keystr(path).endswith(".bk") else jnp.max(jnp.abs(v)) + 1e-300))
             for (path, u), v in zip(la, lb))


def _live(tree):
  """Every leaf carries a nonzero gradient: 0 against 0 checks nothing (but
  attention's bk, whose gradient is zero by construction)."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    if jax.tree_util.keystr(path).endswith(".bk"):
      continue
    assert float(jnp.max(jnp.abs(leaf))) > 1e-8


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def case(request):
  net = FAMILIES[request.param]
  params = _params(net)
  x = _inputs(net)
  return net, params, x, _targets(net, params, x)


def test_hand_backward_equals_jax_grad(case):
  net, params, x, y = case
  hand = jax.jit(lambda p: backprop.value_and_grad(net, "mse", p, x, y))(params)
  auto = jax.jit(jax.value_and_grad(jaxbp.objective(net, "mse")))(params, x, y)
  _live(auto[1])
  assert abs(float(hand[0] - auto[0])) <= TOL * abs(float(auto[0]))
  assert _rel_err(hand[1], auto[1]) <= TOL


def test_deltas_equal_zero_probe_gradients(case):
  net, params, x, y = case
  hand = jax.jit(lambda p: backprop.backward(net, "mse", p, x, y).deltas)(params)
  auto = jax.jit(lambda p: probes.autodiff_backward(net, "mse", p, x, y).deltas)(params)
  _live(auto)
  assert _rel_err(hand, auto) <= TOL


def test_per_example_grads(case):
  net, params, x, y = case
  if getattr(net, "batchnorm", False):
    with pytest.raises(ValueError, match="couple the examples"):
      backprop.per_example_grads(net, "mse", params, x, y)
    return
  hand = backprop.per_example_grads(net, "mse", params, x, y)
  one = jax.grad(jaxbp.objective(net, "mse"))
  auto = jax.vmap(lambda xi, yi: one(params, xi[None], yi[None]))(x, y)
  _live(auto)
  assert _rel_err(hand, auto) <= TOL


def test_remat_equals_no_remat(case):
  net, params, x, y = case
  other = dataclasses.replace(net, remat=False if net.remat else 2)
  g1 = jax.grad(jaxbp.objective(net, "mse"))(params, x, y)
  g2 = jax.grad(jaxbp.objective(other, "mse"))(params, x, y)
  assert _rel_err(g1, g2) <= TOL


def test_jit_and_vmap_over_params(case):
  net, params, x, y = case
  both = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), params, _params(net, 5))
  grads = jax.jit(jax.vmap(lambda p: backprop.grad(net, "mse", p, x, y)))(both)
  for i in range(2):
    ref = backprop.grad(net, "mse", jax.tree_util.tree_map(lambda a: a[i], both), x, y)
    assert _rel_err(jax.tree_util.tree_map(lambda a: a[i], grads), ref) <= TOL


@pytest.mark.parametrize("name", ["mlp_stacked", "conv2d_circular_stacked"])
def test_stacked_equals_unrolled(name):
  net = FAMILIES[name]
  flat_net = dataclasses.replace(net, stack=False, remat=False)
  params = _params(net)
  flat = net.unstack(params)
  x = _inputs(net)
  y = _targets(net, params, x)
  a = backprop.backward(net, "mse", params, x, y)
  b = backprop.backward(flat_net, "mse", flat, x, y)
  assert _rel_err(net.unstack(a.grads), b.grads) <= TOL
  stacked = [layer for g, d in enumerate(a.deltas) for layer in (d if net.is_stacked(g) else [d])]
  assert _rel_err(tuple(stacked), b.deltas) <= TOL


@pytest.mark.parametrize("readout", ["last", "all"])
def test_rnn_equals_unrolled_loop(readout):
  """The scanned, tied recurrence against the recursion written out step by step."""
  net = jaxbp.RNN(3, 5, 2, activation="tanh", readout=readout)
  p = _params(net)
  x = _inputs(net)
  h, outs = jnp.zeros((x.shape[0], 5)), []
  for t in range(x.shape[1]):
    h = jnp.tanh(x[:, t] @ p.W_in + h @ p.W + p.b[None, :])
    outs.append(h @ p.W_out + p.b_out[None, :])
  ref = outs[-1] if readout == "last" else jnp.stack(outs, axis=1)
  assert _rel_err(net.apply(p, x), ref) <= TOL


def test_select_reads_one_sample():
  """``select`` runs one sample's net out of params stacked over samples."""
  for name in ("conv2d_circular_stacked", "rnn_last"):
    net = FAMILIES[name]
    both = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), _params(net), _params(net, 5))
    x = _inputs(net)
    y = _targets(net, _params(net), x)
    one = backprop.backward(net, "mse", both, x, y, select=1)
    ref = backprop.backward(net, "mse", _params(net, 5), x, y)
    assert _rel_err(one.grads, ref.grads) <= TOL


def test_no_family_dispatch_in_the_package():
  """Families carry their behaviour in their plan and kinds: nothing in jaxbp
  asks which family a net is."""
  import pathlib
  import re
  root = pathlib.Path(jaxbp.__file__).parent
  hits = [str(p) for p in root.rglob("*.py")
          if re.search(r"isinstance\(net, *(MLP|ConvNet|RNN|_nets\.|_convnets\.)", p.read_text())]
  assert hits == []
