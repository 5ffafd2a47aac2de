"""DKS and TAT through the ``dks`` package: the baselines that change the network.

Deep Kernel Shaping (Martens et al. 2021, arXiv:2110.01765) and Tailored
Activation Transformation (Zhang et al. 2022, ICLR) do not only pick an init.
They replace each activation ``phi`` by ``phi_hat(x) = gamma (phi(alpha x + beta)
+ delta)`` with constants solved for the whole network, so that its kernel maps
stay close to the identity however deep it is:

* every layer's Q map has the fixed point 1 (``E[phi_hat(z)^2] = 1`` for z ~ N(0, 1)):
  the forward second moment q stays 1 from layer to layer;
* DKS bounds the slope of the network's C map (the cosine between two inputs'
  representations) at c = 1, the "maximal slope" zeta (1.5 by default): a chain of
  L layers gets the local slope ``C'(1) = zeta^(1/L)``, so the gradient's norm
  grows by at most zeta over the whole net;
* TAT bounds the network's C-map curvature ``C''(1)`` by tau (0.3) for smooth
  activations, and for (leaky) relus, which have no curvature at 1, sets the
  negative slope so that the network's ``C(0) = eta`` (0.9): two orthogonal inputs
  stay distinguishable at the output, and the deep relu net is close to linear.

Both want data-independent, norm-preserving weights: scaled uniform orthogonal
(SUO) matrices, delta-orthogonal ones for convolutions (only the kernel's centre
tap is non-zero), biases 0, and inputs of unit mean square (:func:`normalise`).
Where they beat a rescaling of the given net, it is because of the new
activation: a shallow-looking kernel with depth (a near-linear net), which plain
rescaling of a tanh or relu net cannot give.

``dks`` is optional: it is imported inside the functions here only.
"""
from __future__ import annotations

import functools
import sys
import types
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

METHODS = ("dks", "tat")
_DKS_NAMES = {"dks": "DKS", "tat": "TAT"}


def _import_dks():
  """``dks.jax``'s two modules, importable under this jax.

  dks 0.1.2's ``parameter_sampling_functions`` does ``from jax.config import
  config``; jax removed the ``jax.config`` module (0.4.25), keeping ``jax.config``
  the object. The shim below gives dks a module of that name holding the object.
  It is added only when no such module exists, and touches nothing else.
  """
  if "jax.config" not in sys.modules:
    shim = types.ModuleType("jax.config")
    shim.config = jax.config
    sys.modules.setdefault("jax.config", shim)
  try:
    from dks.jax import activation_transform, parameter_sampling_functions
  except ImportError as e:
    raise ImportError("the DKS/TAT baselines need the dks package: pip install dks "
                      f"(or pip install 'jaxbp[experiments]'); importing it failed: {e}") from None
  return activation_transform, parameter_sampling_functions


def chain_subnet_max(depth: int) -> Callable:
  """TAT's "subnetwork maximizing function" for a plain chain of ``depth`` nonlinear
  layers: the longest path (here the only one) applies the local map ``depth`` times.
  DKS's maximal slope function follows from it (the product of the local slopes)."""
  def subnet_max(x, r_fn):
    for _ in range(depth):
      x = r_fn(x)
    return x
  return subnet_max


@functools.lru_cache(maxsize=None)
def transformed(name: str, method: str, depth: int) -> Callable:
  """The activation ``name`` (dks's spelling: ``"tanh"``, ``"gelu"``, ``"leaky_relu"``)
  transformed by ``method`` (``"dks"`` or ``"tat"``, their default targets) for a chain
  of ``depth`` nonlinear layers. Cached: one function object per arguments, so a
  net built on it is one static jit argument."""
  if method not in METHODS:
    raise ValueError(f"transformed: method must be one of {METHODS}, got {method!r}.")
  if not isinstance(depth, int) or depth < 1:
    raise ValueError(f"transformed: depth must be an int >= 1, got {depth!r}.")
  activation_transform, _ = _import_dks()
  # The solver's line searches try large inputs, where cosh overflows harmlessly.
  with np.errstate(over="ignore"), warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    fns = activation_transform.get_transformed_activations(
        [name], method=_DKS_NAMES[method], subnet_max_func=chain_subnet_max(depth))
  return fns[name]


def suo(key, tree, axis: int = -1):
  """``tree`` with its weights redrawn by dks's scaled uniform orthogonal law
  (delta-orthogonal for convolution kernels: leaves of 3 or 4 axes, and of 5 axes
  for a stack of 2-D kernels, each drawn apart) and every other float leaf
  (biases) zeroed. ``axis`` is the weights' output axis (-1 for
  ``(in, out)`` and ``(kh, kw, in, out)``; 0 for equinox's ``(out, in)``)."""
  _, sampling = _import_dks()
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  keys = iter(jax.random.split(key, max(len(leaves), 1)))
  out = []
  for leaf in leaves:
    k = next(keys)
    if not (isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jnp.floating)):
      out.append(leaf)
    elif leaf.ndim >= 2:
      draw = functools.partial(sampling.scaled_uniform_orthogonal, axis=axis if leaf.ndim == 2
                               else -1, delta=leaf.ndim > 2, dtype=leaf.dtype)
      # dks broadcasts (n, m) * (m,) implicitly, which rank_promotion="raise" refuses.
      with jax.numpy_rank_promotion("allow"):
        if leaf.ndim == 5:   # a stack of 2-D kernels (lax.scan's layers): one draw each
          out.append(jnp.stack([draw(kk, leaf.shape[1:])
                                for kk in jax.random.split(k, leaf.shape[0])]))
        else:
          out.append(draw(k, leaf.shape))
    else:
      out.append(jnp.zeros_like(leaf))
  return jax.tree_util.tree_unflatten(treedef, out)


def normalise(x: jax.Array) -> jax.Array:
  """Each example scaled to unit mean square over its features, as DKS/TAT assume
  of their inputs (q = 1 at the first layer)."""
  x = jnp.asarray(x)
  axes = tuple(range(1, x.ndim))
  return x / jnp.sqrt(jnp.maximum(jnp.mean(jnp.square(x), axis=axes, keepdims=True), 1e-12))


def c_map_moments(fn: Callable, order: int = 120):
  """``(E[fn(z)^2], E[fn'(z)^2])`` for z ~ N(0, 1) by Gauss-Hermite quadrature: the
  Q map at q = 1 and the C map's slope at c = 1 (for a unit Q map) of ``fn``."""
  z, w = np.polynomial.hermite_e.hermegauss(order)
  w = w / w.sum()
  z = jnp.asarray(z)
  f = fn(z)
  df = jax.vmap(jax.grad(lambda t: fn(t)))(z)
  return float(jnp.sum(w * f ** 2)), float(jnp.sum(w * df ** 2))
