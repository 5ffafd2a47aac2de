"""jaxbp.inspect on residual, scanned, convolutional and tapped models; under jit
and vmap; through remat and custom_vjp; and its errors on bad input.

References are independent of inspect's jaxpr walk: the hand backprop of
jaxbp.MLP (residual, stacked under lax.scan), flax's own ``perturb`` (the CNN)
and explicit probes written into the model by hand (the tap), in float64.
Every model has nonzero biases, so a z that left its bias out would differ.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.core import backprop, initializers, losses, nets
from jaxbp.measure.inspect import inspect, tap
from jaxbp.measure.report import LayerReport

TOL = dict(rtol=1e-10, atol=1e-12)
MSE = losses.get("mse").fn
# tanh nets at the edge of chaos, with biases of a known, clearly nonzero size.
INIT = initializers.gaussian(sigma_w2=1.0, sigma_b2=0.1)


def _data(n_in, n_out, batch=4, seed=0):
  kx, ky = jax.random.split(jax.random.PRNGKey(seed))
  return (jax.random.normal(kx, (batch, n_in), jnp.float64),
          jax.random.normal(ky, (batch, n_out), jnp.float64))


def _flat(net, arrays, reduce):
  # Per-layer values of a jaxbp.MLP trace/deltas, stacked groups unrolled.
  out = []
  for g, a in enumerate(arrays):
    out.extend([reduce(a[i]) for i in range(a.shape[0])] if net.is_stacked(g) else [reduce(a)])
  return np.array(out)


def _against_backprop(net, params, x, y, report):
  ref = backprop.backward(net, "mse", params, x, y)
  biases = [np.asarray(b) for b in jax.tree_util.tree_leaves([p.b for p in params])]
  assert all(np.mean(b ** 2) > 0.01 for b in biases)
  np.testing.assert_allclose(report.q, _flat(net, ref.trace.z, lambda z: np.mean(z ** 2)), **TOL)
  delta_sq = _flat(net, ref.deltas, lambda d: np.sum(d ** 2))
  np.testing.assert_allclose(report.delta_sq, delta_sq, **TOL)
  # log_slope: the least-squares slope of ln delta_sq against the layer index.
  slope = np.polyfit(np.arange(1, len(delta_sq) + 1), np.log(delta_sq), 1)[0]
  np.testing.assert_allclose(report.log_slope, slope, rtol=1e-9)


def test_residual_mlp_matches_hand_backprop():
  net = nets.MLP.uniform(5, 5, 4, 5, activation="tanh", residual=True)
  params = net.init(jax.random.PRNGKey(1), init=INIT, dtype=jnp.float64)
  x, y = _data(5, 5)
  report = inspect(lambda p, x, y: MSE(net.apply(p, x), y), params, x, y)
  assert len(report) == 5
  _against_backprop(net, params, x, y, report)


def test_100_layer_scan_reports_100_layers_and_matches_hand_backprop():
  net = nets.MLP.uniform(4, 8, 100, 3, activation="tanh", stack=True)
  params = net.init(jax.random.PRNGKey(2), init=INIT, dtype=jnp.float64)
  x, y = _data(4, 3)
  report = jax.jit(lambda p, x, y: inspect(lambda p, x, y: MSE(net.apply(p, x), y), p, x, y))(
      params, x, y)
  # 100 hidden layers under one lax.scan, 99 of them stacked (the first changes width).
  assert len(report) == 101
  assert sum("[" in n for n in report.names) == 99
  assert report.names[1].endswith("[0] · dot_general")
  _against_backprop(net, params, x, y, report)


def test_plain_scan_of_100_layers():
  kw, kb = jax.random.split(jax.random.PRNGKey(0))
  w = jax.random.normal(kw, (100, 6, 6), jnp.float64) / np.sqrt(6)
  b = 0.3 * jax.random.normal(kb, (100, 6), jnp.float64)

  def loss_fn(p, x):
    h = jax.lax.scan(lambda h, wb: (jnp.tanh(h @ wb[0] + wb[1][None]), None), x, p)[0]
    return jnp.sum(h ** 2)

  x = jnp.ones((3, 6), jnp.float64)
  report = inspect(loss_fn, (w, b), x)
  assert len(report) == 100 and report.names[7] == "0[7] · dot_general"
  np.testing.assert_allclose(report.sigma_b2, np.mean(np.asarray(b) ** 2, axis=1), rtol=1e-12)

  def probed(probes):  # the same model with explicit probes, written by hand
    h = x
    for l in range(100):
      h = jnp.tanh(h @ w[l] + b[l][None] + probes[l])
    return jnp.sum(h ** 2)

  deltas = jax.jit(jax.grad(probed))(jnp.zeros((100, 3, 6), jnp.float64))
  np.testing.assert_allclose(report.delta_sq, np.sum(np.asarray(deltas) ** 2, axis=(1, 2)),
                             **TOL)


class CNN(nn.Module):
  @nn.compact
  def __call__(self, x, probe=False):
    mark = (lambda name, z: self.perturb(name, z)) if probe else (lambda name, z: z)
    x = jnp.tanh(mark("conv0", nn.Conv(4, (3, 3), param_dtype=jnp.float64)(x)))
    x = jnp.tanh(mark("conv1", nn.Conv(4, (3, 3), strides=2, param_dtype=jnp.float64)(x)))
    x = x.reshape(x.shape[0], -1)
    return mark("dense", nn.Dense(3, param_dtype=jnp.float64)(x))


def test_flax_cnn_matches_flax_perturb():
  model = CNN()
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1), jnp.float64)
  y = jax.random.normal(jax.random.PRNGKey(1), (2, 3), jnp.float64)
  variables = model.init(jax.random.PRNGKey(2), x, probe=True)
  # flax starts biases at zero: give them a clearly nonzero value.
  params = {"params": jax.tree_util.tree_map_with_path(
      lambda path, a: a + 0.3 * jax.random.normal(jax.random.PRNGKey(len(a.shape)), a.shape,
                                                  a.dtype)
      if jax.tree_util.keystr(path).endswith("['bias']") else a, variables["params"])}
  report = inspect(lambda v, x, y: MSE(model.apply(v, x), y), params, x, y)
  assert report.kinds == ("conv_general_dilated",) * 2 + ("dot_general",)
  assert report.shapes == ((2, 8, 8, 4), (2, 4, 4, 4), (2, 3))
  # flax's own route to dL/dz: gradients with respect to its perturbations.
  grads = jax.grad(lambda pert: MSE(model.apply({**params, "perturbations": pert}, x,
                                                probe=True), y))(variables["perturbations"])
  _, state = model.apply({**params, "perturbations": variables["perturbations"]}, x,
                         probe=True, capture_intermediates=True, mutable=["intermediates"])
  for l, name in enumerate(("conv0", "conv1", "dense")):
    np.testing.assert_allclose(report.delta_sq[l], np.sum(np.asarray(grads[name]) ** 2), **TOL)
  for l, name in enumerate(("Conv_0", "Conv_1", "Dense_0")):
    z = state["intermediates"][name]["__call__"][0]
    np.testing.assert_allclose(report.q[l], np.mean(np.asarray(z) ** 2), **TOL)
    bias = np.asarray(params["params"][name]["bias"])
    np.testing.assert_allclose(report.sigma_b2[l], np.mean(bias ** 2), rtol=1e-12)
    assert np.mean(bias ** 2) > 0.01


def _ln(h):
  mean = h.mean(-1, keepdims=True)
  return (h - mean) / jnp.sqrt(((h - mean) ** 2).mean(-1, keepdims=True) + 1e-5)


def test_tap_after_layernorm_matches_explicit_probe():
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(5), 3)
  params = {"W1": jax.random.normal(k1, (3, 5), jnp.float64),
            "b1": 0.3 * jax.random.normal(k3, (5,), jnp.float64),
            "W2": jax.random.normal(k2, (5, 2), jnp.float64)}
  x, y = _data(3, 2)

  def model(p, x, probe=None):
    h = _ln(x @ p["W1"] + p["b1"][None])
    h = tap(h, "ln1") if probe is None else h + probe
    return MSE(jnp.tanh(h) @ p["W2"], y)

  report = inspect(model, params, x)
  assert report.names == ("W1 · dot_general", "ln1 · tap", "W2 · dot_general")
  assert report.kinds[1] == "tap"
  delta = jax.grad(lambda pr: model(params, x, pr))(jnp.zeros((4, 5), jnp.float64))
  np.testing.assert_allclose(report.delta_sq[1], np.sum(np.asarray(delta) ** 2), **TOL)
  np.testing.assert_allclose(
      report.q[1], np.mean(np.asarray(_ln(x @ params["W1"] + params["b1"][None])) ** 2), **TOL)


def test_remat_custom_vjp_and_vmap_over_params():
  @jax.custom_vjp
  def act(z):
    return jnp.tanh(z)
  act.defvjp(lambda z: (jnp.tanh(z), z), lambda z, g: (g / jnp.cosh(z) ** 2,))

  # p: (weights (2, 4, 4), biases (2, 1, 4)); vmapped over 3 draws of both.
  def loss_fn(p, x):
    block = jax.checkpoint(lambda h, w, b: act(h @ w + b))
    return jnp.sum(block(block(x, p[0][0], p[1][0]), p[0][1], p[1][1]) ** 2)

  def plain(p, x):
    return jnp.sum(jnp.tanh(jnp.tanh(x @ p[0][0] + p[1][0]) @ p[0][1] + p[1][1]) ** 2)

  kw, kb = jax.random.split(jax.random.PRNGKey(0))
  ps = (jax.random.normal(kw, (3, 2, 4, 4), jnp.float64),
        0.3 * jax.random.normal(kb, (3, 2, 1, 4), jnp.float64))
  x = jnp.ones((2, 4), jnp.float64)
  got = jax.vmap(lambda p: inspect(loss_fn, p, x))(ps)
  want = jax.vmap(lambda p: inspect(plain, p, x))(ps)
  assert isinstance(got, LayerReport) and got.delta_sq.shape == (3, 2)
  np.testing.assert_allclose(got.delta_sq, want.delta_sq, **TOL)
  np.testing.assert_allclose(got.q, want.q, **TOL)
  np.testing.assert_allclose(got.sigma_b2, np.mean(np.asarray(ps[1]) ** 2, axis=(2, 3)),
                             rtol=1e-12)
  # A stacked report's table shows one entry and says which.
  text = got.table()
  assert text.startswith("entry 0 [0] of 3 stacked")
  assert f"{float(got.q[0, 1]):.4g}" in text
  last = got.at(-1)
  assert last.lead_shape == () and last.names == got.names
  np.testing.assert_allclose(last.q, got.q[2], rtol=0)
  assert got.table(2).splitlines()[1:] == last.table().splitlines()
  with pytest.raises(IndexError, match="out of range for 3"):
    got.at(3)
  grid = jax.tree_util.tree_map(lambda a: a.reshape((1,) + a.shape), got)   # leading (1, 3)
  assert grid.table((0, 1)).startswith("entry 1 [0, 1] of 3 stacked (leading axes (1, 3))")


def test_summary_and_plot(tmp_path, capsys):
  params = {"W": jnp.eye(3, dtype=jnp.float64)}
  report = inspect(lambda p, x: jnp.sum(jnp.tanh(x @ p["W"]) ** 2), params, jnp.ones((2, 3)))
  text = report.summary()
  assert "W · dot_general" in text and text in capsys.readouterr().out
  pytest.importorskip("matplotlib")
  path = report.plot(tmp_path / "profile.png")
  assert path.stat().st_size > 1000


# --- bad input: each error names the problem and what is expected.

W = {"W": jnp.ones((3, 2), jnp.float64)}
X = jnp.ones((4, 3), jnp.float64)


def test_loss_not_scalar():
  with pytest.raises(ValueError, match="one scalar"):
    inspect(lambda p, x: x @ p["W"], W, X)


def test_no_layer_suggests_tap():
  with pytest.raises(ValueError, match="jaxbp.tap"):
    inspect(lambda p, x: jnp.sum(x * p["W"][None, :, 0]), W, X)


def test_closed_over_data_says_to_pass_it_as_an_argument():
  with pytest.raises(ValueError, match="1 matmul/conv.*a constant.*Pass it as an argument"):
    inspect(lambda p: jnp.sum(jnp.tanh(X @ p["W"])), W)
  with pytest.raises(ValueError, match="No array was passed as data.*Pass it as an argument"):
    inspect(lambda p: jnp.sum(jnp.tanh(p["W"]) ** 2), W)
  with pytest.raises(ValueError, match="1 matmul/conv.*a constant.*Pass it as an argument"):
    inspect(lambda p, y: jnp.sum((X @ p["W"] - y) ** 2), W, jnp.ones((4, 2), jnp.float64))


def test_empty_batch():
  with pytest.raises(ValueError, match=r"empty z of shape \(0, 2\).*batch empty"):
    inspect(lambda p, x: jnp.mean(jnp.tanh(x @ p["W"]) ** 2), W, jnp.ones((0, 3), jnp.float64))


def test_params_without_float_leaves():
  with pytest.raises(TypeError, match="no floating-point"):
    inspect(lambda p, x: jnp.sum(x), {"n": jnp.arange(3)}, X)


def test_args_inconsistent_with_shapes():
  with pytest.raises(TypeError, match="shapes and dtypes the model expects"):
    inspect(lambda p, x: jnp.sum(x @ p["W"]), W, jnp.ones((4, 5), jnp.float64))


def test_data_dependent_while_loop():
  def loss_fn(p, x):
    h = jax.lax.while_loop(lambda h: jnp.sum(h ** 2) < 100.0, lambda h: 2.0 * h, x @ p["W"])
    return jnp.sum(h)

  with pytest.raises(ValueError, match="while_loop"):
    inspect(loss_fn, W, X)


@pytest.mark.parametrize("remat", [True, 3])
def test_remat_and_nested_scans_of_a_stacked_mlp(remat):
  # remat=3: blocks of 3 layers, each a scan under jax.checkpoint inside an outer
  # scan, plus a remainder block: every layer still reported once, in order.
  net = nets.MLP.uniform(4, 6, 7, 3, activation="tanh", stack=True, remat=remat)
  params = net.init(jax.random.PRNGKey(0), init=INIT, dtype=jnp.float64)
  x, y = _data(4, 3)
  report = inspect(lambda p, x, y: MSE(net.apply(p, x), y), params, x, y)
  assert len(report) == 8
  _against_backprop(net, params, x, y, report)


def test_a_jax_tracer_error_keeps_its_message():
  # A tracer used as a Python bool raises a JAX error whose constructor takes a
  # tracer: inspect must still say what failed, not crash building its message.
  def loss_fn(params, x):
    if jnp.sum(x) > 0:
      return jnp.sum((x @ params["w"]) ** 2)
    return jnp.sum(x)
  with pytest.raises(TypeError, match="could not be traced.*(?s:.*)Tracer"):
    inspect(loss_fn, {"w": jnp.ones((3, 2))}, jnp.ones((4, 3)))
