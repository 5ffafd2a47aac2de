"""Convolution kernels from the initializers: delta-orthogonal, and fan-in k^d c_in."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.core import initializers

# Var of N Gaussian draws has relative sd sqrt(2 / N) ~ 2.7e-3 at N = 270,000: 2% is
# seven sigma, while fan-in c_in and k^d c_in differ ninefold.
VAR_RTOL = 0.02
KERNEL = (3, 3, 150, 200)


@pytest.mark.parametrize("name,variance", [
    ("gaussian(sigma_w2=1.76, sigma_b2=0.05)", lambda fi, fo: 1.76 / fi),
    ("lecun", lambda fi, fo: 1.0 / fi),
    ("he", lambda fi, fo: 2.0 / fi),
    ("glorot", lambda fi, fo: 2.0 / (fi + fo)),
    ("glorot_uniform", lambda fi, fo: 2.0 / (fi + fo)),
])
def test_conv_variance_uses_receptive_field_fan_in(name, variance):
  w = np.asarray(initializers.conv_weight(name, jax.random.PRNGKey(0), KERNEL, jnp.float64))
  taps = math.prod(KERNEL[:-2])
  assert w.shape == KERNEL
  assert abs(w.mean()) < 5 * w.std() / math.sqrt(w.size)
  np.testing.assert_allclose(w.var(), variance(taps * KERNEL[-2], taps * KERNEL[-1]),
                             rtol=VAR_RTOL)


def test_gaussian_dense_weights_are_unchanged():
  # The MLP form still draws sqrt(sigma_w2 / fan_in) * N(0, 1) with fan_in = shape[-2].
  key, shape = jax.random.PRNGKey(5), (3, 40, 30)
  w = initializers.gaussian(1.76, 0.05).weight(key, shape, jnp.float64)
  np.testing.assert_array_equal(w, math.sqrt(1.76 / 40) * jax.random.normal(key, shape,
                                                                            jnp.float64))


@pytest.mark.parametrize("shape,gain", [((3, 3, 4, 4), 1.0), ((5, 3, 6), 1.3), ((1, 8, 8), 0.7)])
def test_delta_orthogonal_is_orthogonal_at_the_centre_and_zero_elsewhere(shape, gain):
  init = initializers.delta_orthogonal(gain)
  w = np.asarray(initializers.conv_weight(init, jax.random.PRNGKey(1), shape, jnp.float64))
  centre = tuple(k // 2 for k in shape[:-2])
  q = w[centre]
  np.testing.assert_allclose(q @ q.T, gain ** 2 * np.eye(shape[-2]), atol=1e-12)
  rest = w.copy()
  rest[centre] = 0
  assert not rest.any()


def test_delta_orthogonal_by_name_and_its_refusals():
  init = initializers.get("delta_orthogonal")
  assert init.name == "delta_orthogonal(gain=1, sigma_b2=0)"
  assert initializers.get(init.name) is init
  assert initializers.get("delta_orthogonal(gain=2, sigma_b2=0.1)") is \
      initializers.delta_orthogonal(2.0, 0.1)
  assert "delta_orthogonal" in initializers.names() and "gaussian" in initializers.names()
  with pytest.raises(ValueError, match=r"c_out >= c_in.*c_in=4 > c_out=3"):
    initializers.conv_weight(init, jax.random.PRNGKey(0), (3, 4, 3), jnp.float64)
  with pytest.raises(ValueError, match=r"odd kernel size"):
    initializers.conv_weight(init, jax.random.PRNGKey(0), (2, 2, 3, 3), jnp.float64)
  with pytest.raises(ValueError, match=r"gain must be a finite number >= 0"):
    initializers.delta_orthogonal(-1.0)
  # On a dense readout it is plain orthogonal, any shape.
  np.testing.assert_array_equal(init.weight(jax.random.PRNGKey(2), (6, 3), jnp.float64),
                                initializers.orthogonal().weight(jax.random.PRNGKey(2), (6, 3),
                                                                 jnp.float64))


def test_parametrised_names_round_trip():
  for init in (initializers.gaussian(1.76, 0.05), initializers.orthogonal(1.5)):
    assert initializers.get(init.name) is init
  assert initializers.get("gaussian(2)") is initializers.gaussian(2.0)
  for bad in ("gaussian(sigma_w2=-1)", "uniform(1)", "gaussian(x=1)", "gaussian(a)"):
    with pytest.raises(ValueError):
      initializers.get(bad)


def test_an_initializer_without_a_conv_form_is_named():
  dense_only = initializers.Initializer("mine", initializers.he.weight, initializers.he.bias)
  with pytest.raises(TypeError, match=r"init 'mine' has no convolution form"):
    initializers.conv_weight(dense_only, jax.random.PRNGKey(0), (3, 2, 2), jnp.float64)
