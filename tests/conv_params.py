"""Random ConvNet params and inputs from numpy, for the conv tests: jax.random
compiles once per shape, which costs seconds on a loaded machine."""
import jax.numpy as jnp
import numpy as np

from jaxbp.core.convnets import Conv
from jaxbp.core.layers import Dense


def np_inputs(net, batch=2, n=6, seed=1):
  """Standard normal inputs ``(batch, n, ..., channels[0])``."""
  shape = (batch,) + (n,) * net.ndim + (net.channels[0],)
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


def np_params(net, seed=0, sigma_w2=1.5, sigma_b=0.3):
  """Gaussian params of ``net``'s layout: weights of variance ``sigma_w2 / fan_in``."""
  rng = np.random.default_rng(seed)
  params = []
  for g, (n, c_in, c_out) in enumerate(net.groups):
    lead = (n,) if net.is_stacked(g) else ()
    if net.is_readout(g):
      shape, fan_in = (c_in, c_out), c_in
    else:
      shape, fan_in = lead + net.kernel + (c_in, c_out), c_in * net.kernel_size ** net.ndim
    W = jnp.asarray(rng.standard_normal(shape) * np.sqrt(sigma_w2 / fan_in))
    b = jnp.asarray(rng.standard_normal(lead + (c_out,)) * sigma_b) if net.bias else None
    params.append((Dense if net.is_readout(g) else Conv)(W, b))
  return tuple(params)
