"""jaxbp.RNN: its hand BPTT against PyTorch's nn.RNN autograd, inspect on an RNN
loss, and its input checks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.core import backprop

INIT = jaxbp.initializers.gaussian(sigma_w2=1.5, sigma_b2=0.2)


def _case(T, readout, activation, batch=3, n_in=3, hidden=6, n_out=2, seed=0):
  net = jaxbp.RNN(n_in, hidden, n_out, activation=activation, readout=readout)
  params = net.init(jax.random.PRNGKey(seed), init=INIT)
  rng = np.random.default_rng(seed + 1)
  x = rng.standard_normal((batch, T, n_in))
  y = rng.standard_normal((batch, n_out) if readout == "last" else (batch, T, n_out))
  return net, params, x, y


def _torch_grads(net, params, x, y):
  """Loss and gradients from torch.nn.RNN + nn.Linear autograd, weights mapped:
  torch stores ``weight_ih = W_in^T``, ``weight_hh = W^T`` and two biases whose
  sum is our ``b`` (the second is set to zero; its gradient equals the first's)."""
  torch = pytest.importorskip("torch")
  t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64)
  rnn = torch.nn.RNN(net.input_size, net.hidden_size, nonlinearity=net.activation,
                     batch_first=True, dtype=torch.float64)
  lin = torch.nn.Linear(net.hidden_size, net.output_size, dtype=torch.float64)
  with torch.no_grad():
    rnn.weight_ih_l0.copy_(t(params.W_in).T)
    rnn.weight_hh_l0.copy_(t(params.W).T)
    rnn.bias_ih_l0.copy_(t(params.b))
    rnn.bias_hh_l0.zero_()
    lin.weight.copy_(t(params.W_out).T)
    lin.bias.copy_(t(params.b_out))
  hs, h_last = rnn(t(x))
  out = lin(h_last[0] if net.readout == "last" else hs)
  loss = torch.mean((out - t(y)) ** 2)
  loss.backward()
  assert torch.allclose(rnn.bias_ih_l0.grad, rnn.bias_hh_l0.grad)
  g = lambda p: p.grad.detach().numpy()
  return float(loss.detach()), jaxbp.RNNParams(g(rnn.weight_ih_l0).T, g(rnn.weight_hh_l0).T,
                                      g(rnn.bias_ih_l0), g(lin.weight).T, g(lin.bias))


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("readout", ["last", "all"])
@pytest.mark.parametrize("T", [1, 7, 50])
def test_hand_bptt_equals_torch(T, readout, activation):
  net, params, x, y = _case(T, readout, activation)
  value, grads = jax.jit(lambda p, x, y: backprop.value_and_grad(net, "mse", p, x, y))(
      params, jnp.asarray(x), jnp.asarray(y))
  ref_value, ref = _torch_grads(net, params, x, y)
  assert abs(float(value) - ref_value) <= 1e-12 * abs(ref_value)
  for name, a, b in zip(ref._fields, grads, ref):
    if T == 1 and name == "W":
      # h_0 = 0, so one step leaves the recurrent weights without a gradient.
      assert np.all(np.asarray(a) == 0) and np.all(b == 0)
      continue
    assert np.max(np.abs(b)) > 1e-8, f"{name}: a dead gradient checks nothing"
    err = np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b))
    assert err <= 1e-10, (name, err)


def test_deltas_shape_and_inspect_finds_every_step():
  """``backprop.deltas`` gives dL/dz_t for every step; ``jaxbp.inspect`` on the same
  loss finds the recurrent matmul once per step (the scan's iterations), with the
  hand deltas' sum of squares."""
  T = 5
  net, params, x, y = _case(T, "last", "tanh")
  x, y = jnp.asarray(x), jnp.asarray(y)
  deltas = backprop.deltas(net, "mse", params, x, y)
  assert deltas.shape == (T, 3, net.hidden_size)
  report = jaxbp.inspect(jaxbp.objective(net, "mse"), params, x, y)
  steps = [i for i, name in enumerate(report.names) if name.startswith("W[")]
  assert [report.names[i] for i in steps] == [f"W[{t}] · dot_general" for t in range(T)]
  want = jnp.sum(deltas ** 2, axis=(1, 2))
  np.testing.assert_allclose(np.asarray(report.delta_sq)[steps], want, rtol=1e-10)


@pytest.mark.parametrize("kwargs, match", [
    (dict(input_size=0, hidden_size=4, output_size=2), "input_size must be an int >= 1"),
    (dict(input_size=3, hidden_size=True, output_size=2), "hidden_size must be an int >= 1"),
    (dict(input_size=3, hidden_size=4, output_size=2, readout="first"), "readout must be one of"),
    (dict(input_size=3, hidden_size=4, output_size=2, activation="softmax"), "softmax"),
    (dict(input_size=3, hidden_size=4, output_size=2, remat=-1), "remat must be"),
])
def test_bad_specs(kwargs, match):
  with pytest.raises(ValueError, match=match):
    jaxbp.RNN(**kwargs)


def test_bad_inputs_and_params():
  net = jaxbp.RNN(3, 4, 2)
  params = net.init(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match=r"expected \(batch, T, 3\)"):
    net.apply(params, jnp.ones((2, 3)))
  with pytest.raises(ValueError, match="no steps"):
    net.apply(params, jnp.ones((2, 0, 3)))
  with pytest.raises(TypeError, match="floating point"):
    net.apply(params, jnp.ones((2, 4, 3), jnp.int32))
  with pytest.raises(ValueError, match=r"RNNParams"):
    net.apply(tuple(params), jnp.ones((2, 4, 3)))
  with pytest.raises(ValueError, match=r"W has shape \(4, 5\), expected \(4, 4\)"):
    net.apply(params._replace(W=jnp.ones((4, 5))), jnp.ones((2, 4, 3)))
