"""jaxbp.inspect on the layouts vmap and equinox produce: the bias folds into z
and z keeps the model's (batch, features) layout.

Under ``jax.vmap(model)(x)`` a transpose, squeeze or unit reshape sits between
the matmul/conv and its bias add; every model here has nonzero biases, so a z
taken before the bias gives a different q. References are the same models
written by hand with an explicit zero probe added to each pre-activation in the
(batch, ...) layout, differentiated with jax.grad, in float64.
"""
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.measure.inspect import inspect as _inspect

TOL = dict(rtol=1e-10, atol=1e-12)
B = 5


def inspect(loss_fn, params, *args):
  # Compiled: one XLA compile costs less than running the probed jaxpr op by op.
  return eqx.filter_jit(lambda p, *a: _inspect(loss_fn, p, *a))(params, *args)


def _probed_reference(forward, probe_shapes):
  """q, delta_sq per probe of ``forward(probes) -> (loss, zs)``, zs the probed z's."""
  zeros = [jnp.zeros(s, jnp.float64) for s in probe_shapes]
  (_, zs), deltas = jax.jit(jax.value_and_grad(forward, has_aux=True))(zeros)
  q = np.array([np.mean(np.asarray(z) ** 2) for z in zs])
  d = np.array([np.sum(np.asarray(g) ** 2) for g in deltas])
  assert np.all(d > 0) and np.all(q > 0)   # no zero-against-zero comparison
  return q, d


def _check(report, q, d, shapes):
  np.testing.assert_allclose(report.q, q, **TOL)
  np.testing.assert_allclose(report.delta_sq, d, **TOL)
  assert report.shapes == tuple(shapes)


# --- equinox models, vmapped over the batch.

@pytest.fixture(scope="module")
def data():
  kx, ky = jax.random.split(jax.random.PRNGKey(7))
  return jax.random.normal(kx, (B, 3), jnp.float64), jax.random.normal(ky, (B, 2), jnp.float64)


def _bias(model, key, scale=0.3):
  # equinox initialises biases uniformly in +-1/sqrt(fan_in); make them plainly
  # nonzero and of a known size.
  leaves, treedef = jax.tree_util.tree_flatten_with_path(model)
  keys = jax.random.split(key, len(leaves))
  return jax.tree_util.tree_unflatten(treedef, [
      scale * jax.random.normal(k, leaf.shape, leaf.dtype)
      if jax.tree_util.keystr(path).endswith(".bias") else leaf
      for k, (path, leaf) in zip(keys, leaves)])


def test_eqx_mlp_vmapped(data):
  x, y = data
  model = eqx.nn.MLP(3, 2, 6, 2, activation=jnp.tanh, key=jax.random.PRNGKey(0),
                     dtype=jnp.float64)
  model = _bias(model, jax.random.PRNGKey(1))
  report = inspect(lambda m, x, y: jnp.mean((jax.vmap(m)(x) - y) ** 2), model, x, y)

  def forward(probes):
    h, zs = x, []
    for k, (layer, p) in enumerate(zip(model.layers, probes)):
      z = h @ layer.weight.T + layer.bias[None] + p
      zs.append(z)
      h = jnp.tanh(z) if k < 2 else z
    return jnp.mean((h - y) ** 2), zs

  q, d = _probed_reference(forward, [(B, 6), (B, 6), (B, 2)])
  _check(report, q, d, [(B, 6), (B, 6), (B, 2)])
  np.testing.assert_allclose(report.sigma_b2, [np.mean(np.asarray(l.bias) ** 2)
                                               for l in model.layers], rtol=1e-12)
  assert np.all(np.asarray(report.sigma_b2) > 0.01)
  assert report.activations == ("tanh", "tanh", None)
  assert report.theory() is not None   # a plain tanh chain of 3 dense layers


class _ResMLP(eqx.Module):
  inp: eqx.nn.Linear
  blocks: list
  out: eqx.nn.Linear

  def __init__(self, key):
    k = jax.random.split(key, 4)
    self.inp = eqx.nn.Linear(3, 6, key=k[0], dtype=jnp.float64)
    self.blocks = [eqx.nn.Linear(6, 6, key=kk, dtype=jnp.float64) for kk in k[1:3]]
    self.out = eqx.nn.Linear(6, 2, key=k[3], dtype=jnp.float64)

  def __call__(self, h):
    h = jnp.tanh(self.inp(h))
    for block in self.blocks:
      h = h + jnp.tanh(block(h))
    return self.out(h)


def test_eqx_residual_mlp_vmapped(data):
  x, y = data
  model = _bias(_ResMLP(jax.random.PRNGKey(2)), jax.random.PRNGKey(3))
  report = inspect(lambda m, x, y: jnp.mean((jax.vmap(m)(x) - y) ** 2), model, x, y)
  layers = [model.inp, *model.blocks, model.out]

  def forward(probes):
    zs = [x @ layers[0].weight.T + layers[0].bias[None] + probes[0]]
    h = jnp.tanh(zs[0])
    for layer, p in zip(layers[1:3], probes[1:3]):
      zs.append(h @ layer.weight.T + layer.bias[None] + p)
      h = h + jnp.tanh(zs[-1])
    zs.append(h @ layers[3].weight.T + layers[3].bias[None] + probes[3])
    return jnp.mean((zs[-1] - y) ** 2), zs

  shapes = [(B, 6)] * 3 + [(B, 2)]
  q, d = _probed_reference(forward, shapes)
  _check(report, q, d, shapes)
  np.testing.assert_allclose(report.sigma_b2, [np.mean(np.asarray(l.bias) ** 2)
                                               for l in layers], rtol=1e-12)


def test_eqx_conv2d_vmapped():
  k = jax.random.split(jax.random.PRNGKey(4), 3)
  convs = [eqx.nn.Conv2d(2, 3, 3, key=k[0], dtype=jnp.float64),
           eqx.nn.Conv2d(3, 2, 3, stride=2, padding=1, key=k[1], dtype=jnp.float64)]
  convs = _bias(convs, jax.random.PRNGKey(5))
  x = jax.random.normal(k[2], (3, 2, 8, 8), jnp.float64)   # (batch, C, H, W)

  def model(convs, xi):
    return convs[1](jnp.tanh(convs[0](xi)))

  report = inspect(lambda c, x: jnp.sum(jax.vmap(lambda xi: model(c, xi))(x) ** 2), convs, x)
  assert report.kinds == ("conv_general_dilated",) * 2

  def conv(h, c, stride, pad):
    return jax.lax.conv_general_dilated(h, c.weight, (stride, stride), pad) + c.bias[None]

  def forward(probes):
    z0 = conv(x, convs[0], 1, "VALID") + probes[0]
    z1 = conv(jnp.tanh(z0), convs[1], 2, ((1, 1), (1, 1))) + probes[1]
    return jnp.sum(z1 ** 2), [z0, z1]

  shapes = [(3, 3, 6, 6), (3, 2, 3, 3)]
  q, d = _probed_reference(forward, shapes)
  _check(report, q, d, shapes)
  np.testing.assert_allclose(report.sigma_b2, [np.mean(np.asarray(c.bias) ** 2)
                                               for c in convs], rtol=1e-12)
  np.testing.assert_allclose(report.sigma_w2, [18 * np.mean(np.asarray(convs[0].weight) ** 2),
                                               27 * np.mean(np.asarray(convs[1].weight) ** 2)],
                             rtol=1e-12)


# --- the same dense layer in every layout, plain JAX.

def _layouts():
  # Each computes z = x @ W + b, shape (batch, out), a different way.
  return {
      "row": lambda W, b, x: x @ W + b[None],
      "transposed dot": lambda W, b, x: (W.T @ x.T).T + b[None],
      "bias before the transpose": lambda W, b, x: (W.T @ x.T + b[:, None]).T,
      "broadcast then add": lambda W, b, x: x @ W + jnp.broadcast_to(b, (x.shape[0], b.size)),
      "vmap per example": lambda W, b, x: jax.vmap(lambda xi: W.T @ xi + b)(x),
      "batch-dimension dot_general": lambda W, b, x: jax.vmap(lambda xi, Wi: xi @ Wi)(
          x, jnp.broadcast_to(W, (x.shape[0],) + W.shape)) + b[None],
      "unit axes": lambda W, b, x: (x[:, None, :] @ W)[:, 0, :] + b[None],
  }


@pytest.fixture(scope="module")
def dense():
  k = jax.random.split(jax.random.PRNGKey(6), 5)
  p = {"W1": jax.random.normal(k[0], (3, 4), jnp.float64),
       "b1": 0.5 * jax.random.normal(k[1], (4,), jnp.float64),
       "W2": jax.random.normal(k[2], (4, 2), jnp.float64) / 2,
       "b2": 0.5 * jax.random.normal(k[3], (2,), jnp.float64)}
  x = jax.random.normal(k[4], (B, 3), jnp.float64)

  def forward(probes):
    z1 = x @ p["W1"] + p["b1"][None] + probes[0]
    z2 = jnp.tanh(z1) @ p["W2"] + p["b2"][None] + probes[1]
    return jnp.sum(jnp.sin(z2)), [z1, z2]

  return p, x, _probed_reference(forward, [(B, 4), (B, 2)])


@pytest.fixture(scope="module")
def layout_reports(dense):
  # Every layout's inspect in one compiled program: one XLA compile for all seven.
  p, x, _ = dense

  def loss(layer):
    def loss_fn(p, x):
      h = jnp.tanh(layer(p["W1"], p["b1"], x))
      return jnp.sum(jnp.sin(layer(p["W2"], p["b2"], h)))
    return loss_fn

  return jax.jit(lambda p, x: {name: _inspect(loss(layer), p, x)
                               for name, layer in _layouts().items()})(p, x)


@pytest.mark.parametrize("layout", list(_layouts()))
def test_every_layout_folds_the_bias(dense, layout_reports, layout):
  p, x, (q, d) = dense
  report = layout_reports[layout]
  _check(report, q, d, [(B, 4), (B, 2)])
  assert report.names == ("W1 · dot_general", "W2 · dot_general")
  np.testing.assert_allclose(report.sigma_b2, [np.mean(np.asarray(p["b1"]) ** 2),
                                               np.mean(np.asarray(p["b2"]) ** 2)], rtol=1e-12)
  np.testing.assert_allclose(report.sigma_w2, [3 * np.mean(np.asarray(p["W1"]) ** 2),
                                               4 * np.mean(np.asarray(p["W2"]) ** 2)],
                             rtol=1e-12)
  assert report.activations == ("tanh", None)


def test_ensemble_vmapped_over_params_and_batch():
  # vmap over members and examples: a dot_general with a batch dimension.
  k = jax.random.split(jax.random.PRNGKey(8), 3)
  W = jax.random.normal(k[0], (2, 3, 4), jnp.float64)
  b = 0.5 * jax.random.normal(k[1], (2, 4), jnp.float64)
  x = jax.random.normal(k[2], (2, B, 3), jnp.float64)
  member = lambda W, b, x: jax.vmap(lambda xi: W.T @ xi + b)(x)
  report = inspect(lambda p, x: jnp.sum(jnp.tanh(jax.vmap(member)(p[0], p[1], x)) ** 2),
                   (W, b), x)

  def forward(probes):
    z = jnp.einsum("ebi,eio->ebo", x, W) + b[:, None, :] + probes[0]
    return jnp.sum(jnp.tanh(z) ** 2), [z]

  q, d = _probed_reference(forward, [(2, B, 4)])
  _check(report, q, d, [(2, B, 4)])
  np.testing.assert_allclose(report.sigma_b2, [np.mean(np.asarray(b) ** 2)], rtol=1e-12)
