"""jaxbp.inspect on one network written four ways equals the built-in hand backprop.

The reference is :func:`jaxbp.backprop.backward` on a :class:`jaxbp.MLP` (the
hand delta recursion, no autodiff) and its trace's ``z``; the same weights are
loaded into plain JAX, flax.linen, flax.nnx and equinox.nn.MLP, and inspect
must find the same layers with the same ``q`` and ``delta_sq`` to 1e-10 in
float64. The biases are nonzero, so a z that left its bias out would differ.
"""
import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxbp.core import backprop, initializers, losses, nets
from jaxbp.measure.inspect import inspect

SIZES = (3, 6, 6, 6, 2)   # equinox.nn.MLP needs equal hidden widths
TOL = dict(rtol=1e-10, atol=1e-12)
MSE = losses.get("mse").fn


@pytest.fixture(scope="module")
def reference():
  net = nets.MLP(SIZES, "tanh")
  params = net.init(jax.random.PRNGKey(3), init=initializers.gaussian(1.0, sigma_b2=0.1),
                    dtype=jnp.float64)
  assert all(float(np.mean(np.square(p.b))) > 0.01 for p in params)
  kx, ky = jax.random.split(jax.random.PRNGKey(4))
  x = jax.random.normal(kx, (5, SIZES[0]), jnp.float64)
  y = jax.random.normal(ky, (5, SIZES[-1]), jnp.float64)
  out = backprop.backward(net, "mse", params, x, y)
  q = np.array([np.mean(np.square(z)) for z in out.trace.z])
  delta_sq = np.array([np.sum(np.square(d)) for d in out.deltas])
  grad_sq = [(float(np.sum(np.square(g.W))), float(np.sum(np.square(g.b)))) for g in out.grads]
  return dict(params=params, x=x, y=y, q=q, delta_sq=delta_sq, grad_sq=grad_sq,
              loss=float(out.value))


def _check(report, ref):
  assert len(report) == len(SIZES) - 1
  assert report.kinds == ("dot_general",) * (len(SIZES) - 1)
  np.testing.assert_allclose(report.loss, ref["loss"], **TOL)
  np.testing.assert_allclose(report.q, ref["q"], **TOL)
  np.testing.assert_allclose(report.delta_sq, ref["delta_sq"], **TOL)
  np.testing.assert_allclose(report.sigma_b2, [np.mean(np.square(p.b)) for p in ref["params"]],
                             rtol=1e-12)
  assert report.shapes == tuple((5, n) for n in SIZES[1:])


def test_plain_jax_dict(reference):
  params = {f"layer{k}": {"W": p.W, "b": p.b} for k, p in enumerate(reference["params"])}

  def loss_fn(params, x, y):
    h = x
    for k in range(len(params)):
      z = h @ params[f"layer{k}"]["W"] + params[f"layer{k}"]["b"][None, :]
      h = jnp.tanh(z) if k < len(params) - 1 else z
    return MSE(h, y)

  report = inspect(loss_fn, params, reference["x"], reference["y"])
  _check(report, reference)
  assert report.names[0] == "layer0/W · dot_general"
  for k, (gw, gb) in enumerate(reference["grad_sq"]):
    np.testing.assert_allclose(report.grad_sq[f"layer{k}/W"], gw, **TOL)
    np.testing.assert_allclose(report.grad_sq[f"layer{k}/b"], gb, **TOL)


class LinenMLP(nn.Module):
  sizes: tuple

  @nn.compact
  def __call__(self, x):
    for k, n in enumerate(self.sizes[1:]):
      x = nn.Dense(n, param_dtype=jnp.float64)(x)
      if k < len(self.sizes) - 2:
        x = jnp.tanh(x)
    return x


def test_flax_linen(reference):
  model = LinenMLP(SIZES)
  variables = {"params": {f"Dense_{k}": {"kernel": p.W, "bias": p.b}
                          for k, p in enumerate(reference["params"])}}

  def loss_fn(variables, x, y):
    return MSE(model.apply(variables, x), y)

  report = inspect(loss_fn, variables, reference["x"], reference["y"])
  _check(report, reference)
  assert report.names[2] == "params/Dense_2/kernel · dot_general"


def test_flax_nnx(reference):
  class NnxMLP(nnx.Module):
    def __init__(self, sizes, rngs):
      self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs, param_dtype=jnp.float64)
                              for a, b in zip(sizes[:-1], sizes[1:])])

    def __call__(self, x):
      for k, layer in enumerate(self.layers):
        x = layer(x)
        if k < len(self.layers) - 1:
          x = jnp.tanh(x)
      return x

  model = NnxMLP(SIZES, nnx.Rngs(0))
  for layer, p in zip(model.layers, reference["params"]):
    layer.kernel.set_value(p.W)
    layer.bias.set_value(p.b)
  graphdef, state = nnx.split(model)

  def loss_fn(state, x, y):
    return MSE(nnx.merge(graphdef, state)(x), y)

  _check(inspect(loss_fn, state, reference["x"], reference["y"]), reference)


def test_equinox_mlp(reference):
  model = eqx.nn.MLP(SIZES[0], SIZES[-1], SIZES[1], len(SIZES) - 2, activation=jnp.tanh,
                     key=jax.random.PRNGKey(0), dtype=jnp.float64)
  for k, p in enumerate(reference["params"]):
    model = eqx.tree_at(lambda m, k=k: (m.layers[k].weight, m.layers[k].bias), model,
                        (p.W.T, p.b))

  def loss_fn(model, x, y):
    return MSE(jax.vmap(model)(x), y)

  _check(inspect(loss_fn, model, reference["x"], reference["y"]), reference)


def test_haiku_mlp(reference):
  hk = pytest.importorskip("haiku")  # an optional fifth framework (the `inspect` extra)
  f = hk.without_apply_rng(hk.transform(
      lambda x: hk.nets.MLP(SIZES[1:], activation=jnp.tanh)(x)))
  params = {f"mlp/~/linear_{k}": {"w": p.W, "b": p.b}
            for k, p in enumerate(reference["params"])}

  def loss_fn(params, x, y):
    return MSE(f.apply(params, x), y)

  report = inspect(loss_fn, params, reference["x"], reference["y"])
  _check(report, reference)
  assert report.names[0] == "mlp/~/linear_0/w · dot_general"
