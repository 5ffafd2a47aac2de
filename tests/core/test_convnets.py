"""ConvNet: the forward pass against a numpy reference, structure, and bad input."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.core import initializers
from jaxbp.core import nets
from jaxbp.core.convnets import Conv, ConvNet
from jaxbp.core.layers import Dense

from conv_params import np_inputs, np_params

TOL = 1e-12


def np_conv(h, W, padding):
  """``out[b, x, o] = sum_{u, i} h[b, P(x + u - p), i] W[u, i, o]`` by shifting the input
  tap by tap: np.roll for circular, a zero-filled shift for "same"."""
  h, W = np.asarray(h), np.asarray(W)
  d = W.ndim - 2
  out = np.zeros(h.shape[:-1] + (W.shape[-1],))
  for u in np.ndindex(*W.shape[:d]):
    shifted = h
    for axis, (ua, k) in enumerate(zip(u, W.shape[:d]), start=1):
      s = ua - (k - 1) // 2          # out[x] reads h[x + s]
      if padding == "circular":
        shifted = np.roll(shifted, -s, axis=axis)
      else:
        moved = np.zeros_like(shifted)
        n = shifted.shape[axis]
        src = [slice(None)] * shifted.ndim
        dst = [slice(None)] * shifted.ndim
        src[axis] = slice(max(s, 0), n + min(s, 0))
        dst[axis] = slice(max(-s, 0), n - max(s, 0))
        moved[tuple(dst)] = shifted[tuple(src)]
        shifted = moved
    out += shifted @ W[u]
  return out


def np_forward(net, params, x):
  acts = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0), "identity": lambda z: z}
  h = np.asarray(x)
  for g, p in enumerate(params):
    last = g == len(params) - 1
    phi = acts[net.phi_out.name if last else net.phi.name]
    if isinstance(p, Dense):
      z = h.mean(axis=tuple(range(1, h.ndim - 1))) @ np.asarray(p.W) + np.asarray(p.b)
      h = phi(z)
      continue
    Ws = np.asarray(p.W) if net.is_stacked(g) else np.asarray(p.W)[None]
    bs = np.asarray(p.b) if net.is_stacked(g) else np.asarray(p.b)[None]
    for W, b in zip(Ws, bs):
      a = phi(np_conv(h, W, net.padding) + b)
      h = h + a if net.is_residual(g) else a
  return h


def _x(net, batch=2, n=6, seed=1):
  return np_inputs(net, batch, n, seed)


@pytest.mark.parametrize("padding,ndim,k", [("circular", 1, 3), ("same", 1, 5), ("circular", 2, 5),
                                             ("same", 2, 3), ("circular", 2, 1)])
def test_forward_matches_numpy_reference(padding, ndim, k):
  net = ConvNet(channels=(3, 4, 2), kernel_size=k, padding=padding, ndim=ndim)
  params = np_params(net)
  x = _x(net)
  np.testing.assert_allclose(net.apply(params, x), np_forward(net, params, x), atol=TOL, rtol=0)


@pytest.mark.parametrize("kw", [dict(outputs=3, activation="relu"),
                                dict(residual=True, stack=True),
                                dict(stack=True, remat=True, outputs=2)])
def test_variants_match_numpy_reference(kw):
  net = ConvNet(channels=(2, 4, 4, 4), kernel_size=3, ndim=2, **kw)
  params = np_params(net, sigma_w2=1.2)
  x = _x(net, n=5)
  np.testing.assert_allclose(net.apply(params, x), np_forward(net, params, x), atol=TOL, rtol=0)


def test_circular_padding_commutes_with_translation():
  net = ConvNet(channels=(2, 3, 3), kernel_size=3, padding="circular", ndim=2)
  params = np_params(net)
  x = _x(net, n=7)
  shifted = jnp.roll(x, (2, -3), axis=(1, 2))
  np.testing.assert_allclose(net.apply(params, shifted),
                             jnp.roll(net.apply(params, x), (2, -3), axis=(1, 2)), atol=TOL)


def test_stacked_equals_unrolled_and_trace_ends_in_output():
  kw = dict(channels=(2, 4, 4, 4, 4, 3), kernel_size=3, ndim=1)
  stacked, unrolled = ConvNet(stack=True, remat=True, **kw), ConvNet(**kw)
  params = np_params(stacked)
  assert [p.W.shape for p in params] == [(3, 2, 4), (3, 3, 4, 4), (3, 4, 3)]
  flat = (params[0],) + tuple(Conv(params[1].W[i], params[1].b[i]) for i in range(3)) + (params[2],)
  x = _x(stacked)
  np.testing.assert_allclose(stacked.apply(params, x), unrolled.apply(flat, x), atol=TOL)
  tr = stacked.trace(params, x)
  assert tr.z[1].shape == (3, 2, 6, 4)
  np.testing.assert_allclose(tr.h[-1], stacked.apply(params, x), atol=0)


def test_spec_is_frozen_hashable_and_params_layout():
  net = ConvNet(channels=[3, 8, 8], kernel_size=3, ndim=2, outputs=10)
  assert hash(net) == hash(ConvNet(channels=(3, 8, 8), kernel_size=3, ndim=2, outputs=10))
  with pytest.raises(dataclasses.FrozenInstanceError):
    net.kernel_size = 3
  params = net.init(jax.random.PRNGKey(0), init="he")
  assert isinstance(params[0], Conv) and params[0].W.shape == (3, 3, 3, 8)
  assert params[0].b.shape == (8,) and isinstance(params[-1], Dense)
  assert params[-1].W.shape == (8, 10)
  assert jax.jit(net.apply)(params, jnp.ones((4, 6, 6, 3))).shape == (4, 10)
  same = net.init(jax.random.PRNGKey(0), init=initializers.he)
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(same)):
    np.testing.assert_array_equal(a, b)
  assert ConvNet((3, 8), bias=False).init(jax.random.PRNGKey(0))[0].b is None


def test_objective_and_jit_accept_a_convnet():
  net = ConvNet(channels=(1, 3, 2), ndim=1, outputs=2, output_activation="identity")
  params = np_params(net)
  x, y = jnp.ones((3, 8, 1)), jnp.array([0, 1, 1])
  fn = nets.objective(net, "softmax_cross_entropy")
  value, grads = jax.jit(jax.value_and_grad(fn))(params, x, y)
  assert np.isfinite(value) and jax.tree_util.tree_structure(grads) == \
      jax.tree_util.tree_structure(params)
  assert jax.jit(lambda p, x: net.apply(p, x))(params, x).shape == (3, 2)


def test_delta_orthogonal_circular_linear_layer_is_an_isometry():
  # The centre tap alone, orthogonal: every position's channel vector is rotated.
  net = ConvNet(channels=(4, 6), kernel_size=5, activation="identity", padding="circular",
                ndim=2, bias=False)
  params = net.init(jax.random.PRNGKey(3), init="delta_orthogonal")
  x = _x(net, batch=3, n=5)
  np.testing.assert_allclose(jnp.sum(net.apply(params, x) ** 2, axis=-1),
                             jnp.sum(x ** 2, axis=-1), rtol=1e-12)


# -- bad input ------------------------------------------------------------------


@pytest.mark.parametrize("kw,exc,match", [
    (dict(channels=(3,)), ValueError, r"at least two positive ints"),
    (dict(channels=(3, 0)), ValueError, r"at least two positive ints"),
    (dict(channels=(3, 4), kernel_size=4), ValueError, r"padding='circular' needs an odd"),
    (dict(channels=(3, 4), kernel_size=2, padding="same"), ValueError, r"'same' needs an odd"),
    (dict(channels=(3, 4), kernel_size=0), ValueError, r"kernel_size must be a positive int"),
    (dict(channels=(3, 4), padding="valid"), ValueError, r"padding must be one of"),
    (dict(channels=(3, 4), ndim=0), ValueError, r"ndim"),
    (dict(channels=(3, 4), outputs=0), ValueError, r"outputs must be None"),
    (dict(channels=(3, 4, 5, 2), stack=True), ValueError, r"stack=True needs equal hidden"),
    (dict(channels=(3, 4, 4, 5), residual=True, outputs=2), ValueError, r"residual=True"),
    (dict(channels=(3, 4), activation="softmax"), ValueError, r"softmax"),
    (dict(channels=(3, 4), activation="swish"), ValueError, r"swish"),
])
def test_bad_specs_are_named(kw, exc, match):
  with pytest.raises(exc, match=match):
    ConvNet(**kw)


@pytest.mark.parametrize("shape,dtype,exc,match", [
    ((2, 6, 6, 4), jnp.float64, ValueError, r"expected \(batch, n, n, 3\): 3 input channels"),
    ((2, 3, 6, 6), jnp.float64, ValueError, r"channels-first.*moveaxis"),
    ((6, 6, 3), jnp.float64, ValueError, r"rank 3\), expected rank 4.*x\[None\]"),
    ((2, 6, 6, 6, 3), jnp.float64, ValueError, r"expected rank 4"),
    ((2, 6, 6, 3), jnp.int32, TypeError, r"floating point"),
    ((0, 6, 6, 3), jnp.float64, ValueError, r"empty"),
])
def test_bad_images_are_named(shape, dtype, exc, match):
  net = ConvNet(channels=(3, 4), ndim=2)
  params = np_params(net)
  with pytest.raises(exc, match=match):
    net.apply(params, jnp.zeros(shape, dtype))


def test_bad_params_are_named():
  net = ConvNet(channels=(3, 4, 4), kernel_size=3, ndim=2)
  params = np_params(net)
  other_k = np_params(ConvNet(channels=(3, 4, 4), kernel_size=5, ndim=2))
  other_d = np_params(ConvNet(channels=(3, 4, 4), kernel_size=3, ndim=1))
  other_c = np_params(ConvNet(channels=(2, 4, 4), kernel_size=3, ndim=2))
  x = jnp.zeros((1, 5, 5, 3))
  with pytest.raises(ValueError, match=r"expected \(3, 3, 3, 4\): kernel_size=3"):
    net.apply(other_k, x)
  with pytest.raises(ValueError, match=r"layout \(k, k, c_in, c_out\) \(HWIO\) for ndim=2"):
    net.apply(other_d, x)
  with pytest.raises(ValueError, match=r"channels 3 -> 4"):
    net.apply(other_c, x)
  with pytest.raises(ValueError, match=r"expected a tuple of 2"):
    net.apply(params[:1], x)
  with pytest.raises(ValueError, match=r"is a Dense, expected Conv"):
    net.apply((Dense(*params[0]), params[1]), x)


def test_delta_orthogonal_refuses_shrinking_channels():
  net = ConvNet(channels=(3, 8, 4), ndim=1)
  with pytest.raises(ValueError, match=r"c_out >= c_in.*c_in=8 > c_out=4"):
    net.init(jax.random.PRNGKey(0), init="delta_orthogonal")
