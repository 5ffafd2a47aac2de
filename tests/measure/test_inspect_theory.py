"""Mean-field theory beside jaxbp.inspect's measurements.

The weight statistics are checked exactly against numpy on the weights; the
predicted profile of a wide tanh MLP against the measured one at explicit,
statistical tolerances (finite width and batch), with fixed seeds.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.core import initializers, losses, nets
from jaxbp.measure.inspect import inspect

MSE = losses.get("mse").fn


def _data(n_in, n_out, batch, seed=1):
  kx, ky = jax.random.split(jax.random.PRNGKey(seed))
  return (jax.random.normal(kx, (batch, n_in), jnp.float64),
          jax.random.normal(ky, (batch, n_out), jnp.float64))


def test_weight_statistics_and_activations():
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  params = {"W1": jax.random.normal(keys[0], (3, 5), jnp.float64),
            "b1": jax.random.normal(keys[1], (5,), jnp.float64),
            "W2": 0.3 * jax.random.normal(keys[2], (5, 4), jnp.float64),
            "W3": jax.random.normal(keys[3], (4, 2), jnp.float64)}

  def loss_fn(p, x):
    h = jax.nn.relu(x @ p["W1"] + p["b1"][None, :])
    h = jax.nn.sigmoid(h @ p["W2"])
    return jnp.sum(jnp.tanh(h @ p["W3"]))

  x, _ = _data(3, 2, 4)
  r = inspect(loss_fn, params, x)
  assert r.activations == ("relu", "sigmoid", "tanh")
  want_w = [3 * np.mean(np.asarray(params["W1"]) ** 2), 5 * np.mean(np.asarray(params["W2"]) ** 2),
            4 * np.mean(np.asarray(params["W3"]) ** 2)]
  np.testing.assert_allclose(r.sigma_w2, want_w, rtol=1e-12)
  np.testing.assert_allclose(r.sigma_b2, [np.mean(np.asarray(params["b1"]) ** 2), 0, 0],
                             rtol=1e-12)


def test_conv_fan_in_and_residual_has_no_chain():
  conv = nn.Conv(6, (3, 3), param_dtype=jnp.float64)
  x = jnp.ones((1, 5, 5, 2), jnp.float64)
  v = conv.init(jax.random.PRNGKey(0), x)
  v = {"params": {**v["params"], "bias": 0.3 * jnp.arange(1.0, 7.0, dtype=jnp.float64)}}
  r = inspect(lambda v, x: jnp.sum(jnp.tanh(conv.apply(v, x))), v, x)
  k = np.asarray(v["params"]["kernel"])
  np.testing.assert_allclose(r.sigma_w2, [3 * 3 * 2 * np.mean(k ** 2)], rtol=1e-12)
  np.testing.assert_allclose(r.sigma_b2, [np.mean((0.3 * np.arange(1, 7)) ** 2)], rtol=1e-12)
  # h + tanh(z): a skip connection is not the plain chain mean-field theory describes.
  net = nets.MLP.uniform(4, 4, 3, 4, activation="tanh", residual=True)
  p = net.init(jax.random.PRNGKey(0), init=initializers.gaussian(1.0, sigma_b2=0.1),
               dtype=jnp.float64)
  r = inspect(lambda p, x: jnp.sum(net.apply(p, x) ** 2), p, jnp.ones((2, 4), jnp.float64))
  assert r.activations[1:3] == (None, None) and r.theory() is None


def test_theory_tracks_a_wide_tanh_mlp():
  net = nets.MLP.uniform(32, 512, 8, 4, activation="tanh")
  # sigma_b2 > 0: the variance map's fixed point depends on the biases being in z.
  params = net.init(jax.random.PRNGKey(0), init=initializers.gaussian(1.5, sigma_b2=0.05),
                    dtype=jnp.float64)
  x, y = _data(32, 4, 128)
  r = inspect(lambda p, x, y: MSE(net.apply(p, x), y), params, x, y)
  t = r.theory()
  assert (t.start, t.stop, t.activation) == (0, 8, "tanh")
  assert abs(t.sigma_b2 - 0.05) < 0.02
  # The hidden layers (512 units); the 4-unit output's mean z^2 is too noisy to compare.
  # Seed to seed, each hidden q differs from theory by up to ~4% (finite width and
  # batch, biases or not): this seed's largest is 4.3%.
  np.testing.assert_allclose(t.q[:8], np.asarray(r.q)[:8], rtol=0.05)
  np.testing.assert_allclose(t.ln_delta_sq, np.log(np.asarray(r.delta_sq))[:9], atol=0.15)
  assert abs(t.slope - t.measured_slope) < 0.03
  assert "theory over layers 1..9 (tanh)" in r.table()
