"""Weight initialisations, in the mean-field ``(sigma_w^2, sigma_b^2)`` form.

The common parametrisation of deep-signal-propagation theory (Poole et al.
2016; Schoenholz et al. 2017) is

    W_ij ~ N(0, sigma_w^2 / fan_in),   b_j ~ N(0, sigma_b^2),

and the named schemes are special cases of it:

  ==============  =====================================  ==========================
  name            Var[W_ij]                              sigma_w^2
  ==============  =====================================  ==========================
  lecun           1 / fan_in                             1
  he / kaiming    2 / fan_in          (He et al. 2015)   2   (chi_1 = 1 for ReLU)
  glorot/xavier   2 / (fan_in + fan_out)  (Glorot &      2 fan_in / (fan_in + fan_out)
                  Bengio 2010); uniform on +-sqrt(6/(fan_in+fan_out))
  orthogonal      W = gain * Q, Q^T Q = I  (Saxe et al. 2014)   gain^2
  ==============  =====================================  ==========================

Named schemes start biases at zero (``sigma_b^2 = 0``); :func:`gaussian` and
:func:`orthogonal` take ``sigma_b2``. Weights of stacked layers, shape
``(L, fan_in, fan_out)``, are drawn independently per layer.
"""
from __future__ import annotations

import functools
import math
import numbers
from typing import Callable, NamedTuple, Union

import jax
import jax.numpy as jnp


class Initializer(NamedTuple):
  """A weight and bias initialisation.

  Attributes:
    name: look-up name.
    weight: ``(key, shape, dtype) -> W``; ``shape[-2:]`` is ``(fan_in, fan_out)``.
    bias: ``(key, shape, dtype) -> b``.
  """
  name: str
  weight: Callable
  bias: Callable


def _check_nonneg(where, **values):
  for name, v in values.items():
    if isinstance(v, bool) or not (isinstance(v, numbers.Real) and math.isfinite(v) and v >= 0):
      raise ValueError(f"{where}: {name} must be a finite number >= 0, got {v!r}.")


def _normal_bias(sigma_b2):
  def bias(key, shape, dtype):
    if sigma_b2 == 0:
      return jnp.zeros(shape, dtype)
    return math.sqrt(sigma_b2) * jax.random.normal(key, shape, dtype)
  return bias


def _normal_weight(variance: Callable[[int, int], float]):
  def weight(key, shape, dtype):
    fan_in, fan_out = shape[-2], shape[-1]
    return math.sqrt(variance(fan_in, fan_out)) * jax.random.normal(key, shape, dtype)
  return weight


def gaussian(sigma_w2: float, sigma_b2: float = 0.0) -> Initializer:
  """``W ~ N(0, sigma_w2 / fan_in)``, ``b ~ N(0, sigma_b2)``: the mean-field form.

  >>> init = gaussian(sigma_w2=1.76, sigma_b2=0.05)
  >>> init.weight(jax.random.PRNGKey(0), (500, 400), jnp.float32).var() * 500  # ~ 1.76
  Array(1.76..., dtype=float32)
  """
  # Validate before the cache (an equal float's entry must not skip the check),
  # then cache on floats, so that gaussian(2) is gaussian(sigma_w2=2.0).
  _check_nonneg("gaussian", sigma_w2=sigma_w2, sigma_b2=sigma_b2)
  return _gaussian(float(sigma_w2), float(sigma_b2))


@functools.lru_cache(maxsize=None)
def _gaussian(sigma_w2: float, sigma_b2: float) -> Initializer:
  return Initializer(f"gaussian(sigma_w2={sigma_w2:g}, sigma_b2={sigma_b2:g})",
                     _normal_weight(lambda fi, fo: sigma_w2 / fi), _normal_bias(sigma_b2))


def _orthogonal_matrix(key, n_in, n_out, dtype):
  # QR of a Gaussian matrix, with the signs of R's diagonal folded into Q so
  # that Q is Haar-distributed (Mezzadri 2007), not biased by QR's sign rule.
  big, small = max(n_in, n_out), min(n_in, n_out)
  a = jax.random.normal(key, (big, small), dtype)
  q, r = jnp.linalg.qr(a)
  q = q * jnp.sign(jnp.diagonal(r))[None, :]
  return q if n_in >= n_out else q.T


def orthogonal(gain: float = 1.0, sigma_b2: float = 0.0) -> Initializer:
  """``W = gain * Q`` with orthonormal rows or columns (Saxe et al. 2014).

  Every singular value of a square ``W`` equals ``gain``: the dynamical
  isometry of Pennington et al. (2017) needs this, not just the right variance.
  """
  _check_nonneg("orthogonal", gain=gain, sigma_b2=sigma_b2)
  return _orthogonal(float(gain), float(sigma_b2))


@functools.lru_cache(maxsize=None)
def _orthogonal(gain: float, sigma_b2: float) -> Initializer:

  def weight(key, shape, dtype):
    lead = shape[:-2]
    n = math.prod(lead)
    keys = jax.random.split(key, max(n, 1))
    qs = jax.vmap(lambda k: _orthogonal_matrix(k, shape[-2], shape[-1], dtype))(keys)
    return gain * qs.reshape(shape)

  return Initializer(f"orthogonal(gain={gain:g}, sigma_b2={sigma_b2:g})", weight,
                     _normal_bias(sigma_b2))


def _glorot_uniform_weight(key, shape, dtype):
  limit = math.sqrt(6.0 / (shape[-2] + shape[-1]))
  return jax.random.uniform(key, shape, dtype, -limit, limit)


_zero_bias = _normal_bias(0.0)

lecun = Initializer("lecun", _normal_weight(lambda fi, fo: 1.0 / fi), _zero_bias)
he = Initializer("he", _normal_weight(lambda fi, fo: 2.0 / fi), _zero_bias)
glorot_normal = Initializer("glorot_normal", _normal_weight(lambda fi, fo: 2.0 / (fi + fo)),
                            _zero_bias)
glorot_uniform = Initializer("glorot_uniform", _glorot_uniform_weight, _zero_bias)

_REGISTRY = {
    "lecun": lecun,
    "he": he,
    "kaiming": he,
    "glorot": glorot_normal,
    "glorot_normal": glorot_normal,
    "xavier": glorot_normal,
    "xavier_normal": glorot_normal,
    "glorot_uniform": glorot_uniform,
    "xavier_uniform": glorot_uniform,
    "orthogonal": orthogonal(1.0),
}

InitializerLike = Union[str, Initializer]


def names() -> tuple[str, ...]:
  """The names :func:`get` accepts."""
  return tuple(sorted(_REGISTRY))


def get(init: InitializerLike) -> Initializer:
  """Looks an initialisation up by name, or passes an :class:`Initializer` through."""
  if isinstance(init, Initializer):
    return init
  if isinstance(init, str):
    try:
      return _REGISTRY[init.lower()]
    except KeyError:
      raise ValueError(
          f"Unknown init {init!r}; valid names are {', '.join(names())}, or pass "
          "jaxbp.initializers.gaussian(sigma_w2, sigma_b2) / orthogonal(gain).") from None
  raise TypeError(f"init must be a name or a jaxbp.initializers.Initializer, got "
                  f"{type(init).__name__}: {init!r}.")
