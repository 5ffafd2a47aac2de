"""The hand-derived ConvNet backward pass against jax.grad and torch autograd (float64)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.core import backprop, nets
from jaxbp.core.convnets import Conv, ConvNet, conv
from jaxbp.core.layers import Dense

from conv_params import np_inputs, np_params

TOL = 1e-10          # absolute, on float64 gradients of order 0.01 .. 10: far above round-off
ACTIVATIONS = ("tanh", "relu", "sigmoid", "leaky_relu", "identity")


def _x(net, batch=2, n=5, seed=1):
  return np_inputs(net, batch, n, seed)


def _target(net, params, x, loss, seed=2):
  out = net.apply(params, x)
  rng = np.random.default_rng(seed)
  if loss in ("softmax_cross_entropy", "cross_entropy"):
    return jnp.asarray(rng.integers(0, out.shape[-1], out.shape[:-1]))
  if loss == "binary_cross_entropy":
    return jnp.asarray(rng.uniform(size=out.shape))
  return jnp.asarray(rng.standard_normal(out.shape))


def _max_err(a, b):
  return max(float(jnp.max(jnp.abs(u - v)))
             for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def check_against_jax_grad(net, loss="mse", reduction="mean", sigma_w2=1.5, n=5, eager=False):
  params = np_params(net, sigma_w2=sigma_w2)
  x = _x(net, n=n)
  y = _target(net, params, x, loss)

  def both(params, x, y):
    return (backprop.value_and_grad(net, loss, params, x, y, reduction),
            jax.value_and_grad(nets.objective(net, loss, reduction))(params, x, y))

  # One compile per case beats eager dispatch's one per op and shape several-fold;
  # a deep unrolled net is the exception (its layers share the eager compiles).
  (value, grads), (ref_value, ref) = (both if eager else jax.jit(both))(params, x, y)
  assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(ref)
  np.testing.assert_allclose(value, ref_value, rtol=1e-13)
  err = _max_err(grads, ref)
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(ref))
  assert scale > 1e-6, "a vanishing gradient would make the comparison empty"
  assert err <= TOL, f"max |hand - jax.grad| = {err:.2e} (gradient scale {scale:.2e})"
  return err


# Every activation, padding, rank and kernel size, without their full product.
GRID = [(ACTIVATIONS[i % len(ACTIVATIONS)], padding, ndim, k) for i, (padding, ndim, k) in
        enumerate(itertools.product(("circular", "same"), (1, 2), (1, 3, 5)))]


@pytest.mark.parametrize("activation,padding,ndim,k", GRID)
def test_grid_matches_jax_grad(activation, padding, ndim, k):
  net = ConvNet(channels=(2, 3, 2), kernel_size=k, activation=activation, padding=padding,
                ndim=ndim)
  check_against_jax_grad(net)


@pytest.mark.parametrize("depth,stack", [(1, False), (2, False), (2, True), (5, False),
                                         (5, True), (30, False), (30, True)])
def test_depths_stacked_and_unrolled_match_jax_grad(depth, stack):
  net = ConvNet(channels=(2,) + (3,) * depth, kernel_size=3, activation="tanh", ndim=1,
                stack=stack, remat=stack)
  check_against_jax_grad(net, sigma_w2=1.0, n=6, eager=depth > 5 and not stack)


@pytest.mark.parametrize("kw,loss,reduction", [
    (dict(outputs=3, activation="relu", ndim=2), "softmax_cross_entropy", "mean"),
    (dict(outputs=2, stack=True, ndim=1, padding="same"), "mse", "sum"),
    (dict(residual=True, stack=True, ndim=2, padding="same", kernel_size=5), "mse", "mean"),
    (dict(residual=True, ndim=1, outputs=2, bias=False), "mse", "mean"),
    (dict(output_activation="softmax", ndim=1), "cross_entropy", "mean"),
    (dict(output_activation="sigmoid", ndim=2, padding="same"), "binary_cross_entropy", "sum"),
])
def test_variants_match_jax_grad(kw, loss, reduction):
  net = ConvNet(channels=(2, 3, 3, 3), **kw)
  check_against_jax_grad(net, loss, reduction)


def _probed_loss(net, params, x, y, probes):
  """The loss with ``probes[l]`` added to every unrolled z_l: its gradient is delta_l."""
  h, phi = x, net.phi
  for l, (p, probe) in enumerate(zip(params, probes)):
    out = l == len(params) - 1
    z = conv(h, p.W, net.padding) + p.b.reshape((1,) * (h.ndim - 1) + p.b.shape) + probe
    h = (net.phi_out if out else phi).fn(z)
  return jnp.mean((h - y) ** 2)


@pytest.mark.parametrize("stack", [False, True])
def test_deltas_are_dL_dz(stack):
  net = ConvNet(channels=(2, 3, 3, 3, 2), kernel_size=3, padding="same", ndim=2, stack=stack)
  params = np_params(net)
  x = _x(net)
  y = _target(net, params, x, "mse")
  flat = params
  if stack:
    flat = (params[0],) + tuple(Conv(params[1].W[i], params[1].b[i]) for i in range(2)) \
        + (params[2],)

  @jax.jit
  def both(params, flat, x, y):
    deltas = backprop.deltas(net, "mse", params, x, y)
    if stack:
      deltas = (deltas[0],) + tuple(deltas[1]) + (deltas[2],)
    probes = tuple(jnp.zeros(d.shape) for d in deltas)
    return deltas, jax.grad(lambda pr: _probed_loss(net, flat, x, y, pr))(probes)

  deltas, ref = both(params, flat, x, y)
  assert _max_err(deltas, ref) <= TOL


def test_readout_delta_and_options():
  net = ConvNet(channels=(2, 3), ndim=1, outputs=4)
  params = np_params(net)
  x = _x(net)
  out = backprop.backward(net, "mse", params, x, jnp.zeros((2, 4)))
  assert out.deltas[-1].shape == (2, 4) and out.deltas[0].shape == (2, 5, 3)
  assert out.trace.h[-1].shape == (2, 4)
  assert backprop.backward(net, "mse", params, x, jnp.zeros((2, 4)),
                           param_grads=False).grads == (None, None)
  with pytest.raises(ValueError, match=r"a convolution takes none"):
    backprop.backward(net, "mse", params, x, jnp.zeros((2, 4)),
                      scale=nets.RowScale(jnp.ones((2, 1)), jnp.ones((2, 1))))


# -- torch ------------------------------------------------------------------------


def _torch_grads(net, params, x, y):
  torch = pytest.importorskip("torch")
  F = torch.nn.functional
  acts = {"tanh": torch.tanh, "relu": torch.relu, "identity": lambda z: z}
  d = net.ndim
  to_t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True)
  # HWIO -> OIHW: torch stores (c_out, c_in, *kernel) and, like lax, cross-correlates.
  perm = (d + 1, d) + tuple(range(d))
  tw = [to_t(np.transpose(np.asarray(p.W), perm)) if isinstance(p, Conv) else to_t(p.W)
        for p in params]
  tb = [to_t(p.b) for p in params]
  h = torch.tensor(np.moveaxis(np.asarray(x), -1, 1))          # channels first for torch
  convf = F.conv1d if d == 1 else F.conv2d
  p_ = (net.kernel_size - 1) // 2
  for g, (W, b) in enumerate(zip(tw, tb)):
    phi = acts[(net.phi if net.is_hidden(g) else net.phi_out).name]
    if net.is_readout(g):
      h = phi(h.mean(dim=tuple(range(2, 2 + d))) @ W + b)
    elif net.padding == "circular":
      h = phi(convf(F.pad(h, (p_, p_) * d, mode="circular"), W, b))
    else:
      h = phi(convf(h, W, b, padding=p_))
  out = h if net.outputs is not None else h.movedim(1, -1)
  value = torch.mean((out - torch.tensor(np.asarray(y))) ** 2)
  value.backward()
  value = value.item()
  inv = tuple(np.argsort(perm))
  grads = tuple(
      (Conv(np.transpose(W.grad.numpy(), inv), b.grad.numpy()) if isinstance(p, Conv)
       else Dense(W.grad.numpy(), b.grad.numpy()))
      for p, W, b in zip(params, tw, tb))
  return value, grads


@pytest.mark.parametrize("ndim,padding,k,outputs", [(1, "circular", 3, None), (1, "same", 5, 3),
                                                    (2, "circular", 5, 2), (2, "same", 3, None)])
def test_matches_torch_autograd(ndim, padding, k, outputs):
  net = ConvNet(channels=(2, 3, 3), kernel_size=k, padding=padding, ndim=ndim, outputs=outputs)
  params = np_params(net)
  x = _x(net, n=6)
  y = _target(net, params, x, "mse")
  value, grads = backprop.value_and_grad(net, "mse", params, x, y)
  ref_value, ref = _torch_grads(net, params, x, y)
  np.testing.assert_allclose(value, ref_value, rtol=1e-13)
  assert _max_err(grads, ref) <= TOL
