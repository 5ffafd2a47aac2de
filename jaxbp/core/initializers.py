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
  delta_orth...   conv kernels: gain * Q at the centre tap,      gain^2
                  0 elsewhere (Xiao et al. 2018)
  ==============  =====================================  ==========================

Named schemes start biases at zero (``sigma_b^2 = 0``); :func:`gaussian` and
:func:`orthogonal` take ``sigma_b2``. Weights of stacked layers, shape
``(L, fan_in, fan_out)``, are drawn independently per layer.

Convolution kernels, ``(k, ..., k, c_in, c_out)`` (HWIO), are drawn by an
initializer's ``conv`` form (:func:`conv_weight`): a kernel's leading axes are
spatial taps, not a layer axis as in a stacked ``weight``, so the two forms
cannot share one shape convention. Every tap of every input channel feeds an
output unit, so the Gaussian schemes use ``fan_in = k^d c_in`` (and glorot
``fan_out = k^d c_out``), the receptive field of Xiao et al. (2018). The
delta-orthogonal kernel (:func:`delta_orthogonal`, Xiao et al. 2018, §3.2) is
an orthogonal matrix at the centre tap and zero elsewhere: with circular
padding the linear part of the layer is then an isometry (orthogonal when
``c_in = c_out``).

By name, ``"gaussian"`` is ``gaussian(1.0)`` and ``"delta_orthogonal"`` is
``delta_orthogonal(1.0)``; :func:`get` also reads the names the parametrised
families print, ``"gaussian(sigma_w2=1.76, sigma_b2=0.05)"``.
"""
from __future__ import annotations

import functools
import math
import numbers
import re
from typing import Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp


class Initializer(NamedTuple):
  """A weight and bias initialisation.

  Attributes:
    name: look-up name.
    weight: ``(key, shape, dtype) -> W``; ``shape[-2:]`` is ``(fan_in, fan_out)``.
    bias: ``(key, shape, dtype) -> b``.
    conv: ``(key, shape, dtype) -> W`` for one convolution kernel of shape
      ``(k, ..., k, c_in, c_out)``, or None when the scheme has no conv form.
  """
  name: str
  weight: Callable
  bias: Callable
  conv: Optional[Callable] = None


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


def _normal_conv(variance: Callable[[int, int], float]):
  # fan_in = k^d c_in, fan_out = k^d c_out: every tap is an input of the unit.
  def conv(key, shape, dtype):
    taps = math.prod(shape[:-2])
    return (math.sqrt(variance(taps * shape[-2], taps * shape[-1]))
            * jax.random.normal(key, shape, dtype))
  return conv


def gaussian(sigma_w2: float, sigma_b2: float = 0.0) -> Initializer:
  """``W ~ N(0, sigma_w2 / fan_in)``, ``b ~ N(0, sigma_b2)``: the mean-field form.

  For a convolution kernel ``(k, ..., k, c_in, c_out)`` (its ``conv`` form)
  ``fan_in = k^d c_in``: ``W ~ N(0, sigma_w2 / (k^d c_in))``.

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
                     _normal_weight(lambda fi, fo: sigma_w2 / fi), _normal_bias(sigma_b2),
                     _normal_conv(lambda fi, fo: sigma_w2 / fi))


def orthogonal_matrix(key, n_in, n_out, dtype):
  """A Haar-distributed ``(n_in, n_out)`` matrix with orthonormal columns (or rows)."""
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
    qs = jax.vmap(lambda k: orthogonal_matrix(k, shape[-2], shape[-1], dtype))(keys)
    return gain * qs.reshape(shape)

  def conv(key, shape, dtype):
    # Orthogonal on the kernel read as a (k^d c_in, c_out) matrix.
    q = orthogonal_matrix(key, math.prod(shape[:-1]), shape[-1], dtype)
    return gain * q.reshape(shape)

  return Initializer(f"orthogonal(gain={gain:g}, sigma_b2={sigma_b2:g})", weight,
                     _normal_bias(sigma_b2), conv)


def delta_orthogonal(gain: float = 1.0, sigma_b2: float = 0.0) -> Initializer:
  """Delta-orthogonal kernels (Xiao et al. 2018, Algorithm 2): ``W[centre] = gain * Q``.

  The kernel ``(k, ..., k, c_in, c_out)`` is zero at every tap but the centre
  one, ``((k-1)/2, ..., (k-1)/2)``, which holds ``gain`` times a Haar
  orthogonal ``(c_in, c_out)`` matrix with orthonormal rows, ``Q Q^T = I``: it
  needs ``c_out >= c_in`` (no input direction is lost) and an odd k (a centre
  tap). Every output position then sees only its own input position, through an
  isometry. On a dense weight (a net's readout) it is :func:`orthogonal`.
  """
  _check_nonneg("delta_orthogonal", gain=gain, sigma_b2=sigma_b2)
  return _delta_orthogonal(float(gain), float(sigma_b2))


@functools.lru_cache(maxsize=None)
def _delta_orthogonal(gain: float, sigma_b2: float) -> Initializer:
  dense = _orthogonal(gain, sigma_b2)

  def conv(key, shape, dtype):
    taps, c_in, c_out = tuple(shape[:-2]), shape[-2], shape[-1]
    if c_out < c_in:
      raise ValueError(
          f"delta_orthogonal: needs c_out >= c_in (an isometry from the input channels), "
          f"got a kernel of shape {tuple(shape)} with c_in={c_in} > c_out={c_out}; use "
          "orthogonal or gaussian for layers that shrink the channels.")
    if any(k % 2 == 0 for k in taps):
      raise ValueError(f"delta_orthogonal: needs an odd kernel size (a centre tap), got a "
                       f"kernel of shape {tuple(shape)}.")
    centre = tuple(k // 2 for k in taps)
    q = orthogonal_matrix(key, c_in, c_out, dtype)
    return jnp.zeros(shape, dtype).at[centre].set(gain * q)

  return Initializer(f"delta_orthogonal(gain={gain:g}, sigma_b2={sigma_b2:g})", dense.weight,
                     dense.bias, conv)


def conv_weight(init: "InitializerLike", key, shape, dtype):
  """One convolution kernel of shape ``(k, ..., k, c_in, c_out)`` drawn by ``init``'s
  conv form; a TypeError names the initializer when it has none."""
  initializer = get(init)
  if initializer.conv is None:
    raise TypeError(
        f"init {initializer.name!r} has no convolution form; pass one of "
        f"{', '.join(names())}, gaussian(sigma_w2, sigma_b2), orthogonal(gain) or "
        "delta_orthogonal(gain), or build Initializer(name, weight, bias, conv).")
  return initializer.conv(key, tuple(shape), dtype)


def _glorot_uniform_weight(key, shape, dtype):
  limit = math.sqrt(6.0 / (shape[-2] + shape[-1]))
  return jax.random.uniform(key, shape, dtype, -limit, limit)


def _glorot_uniform_conv(key, shape, dtype):
  taps = math.prod(shape[:-2])
  limit = math.sqrt(6.0 / (taps * (shape[-2] + shape[-1])))
  return jax.random.uniform(key, shape, dtype, -limit, limit)


_zero_bias = _normal_bias(0.0)

def _lecun_var(fi, fo):
  return 1.0 / fi


def _he_var(fi, fo):
  return 2.0 / fi


def _glorot_var(fi, fo):
  return 2.0 / (fi + fo)


lecun = Initializer("lecun", _normal_weight(_lecun_var), _zero_bias, _normal_conv(_lecun_var))
he = Initializer("he", _normal_weight(_he_var), _zero_bias, _normal_conv(_he_var))
glorot_normal = Initializer("glorot_normal", _normal_weight(_glorot_var), _zero_bias,
                            _normal_conv(_glorot_var))
glorot_uniform = Initializer("glorot_uniform", _glorot_uniform_weight, _zero_bias,
                             _glorot_uniform_conv)

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
    "delta_orthogonal": delta_orthogonal(1.0),
    "gaussian": gaussian(1.0),
}

InitializerLike = Union[str, Initializer]

# The parametrised families, by the names their initializers carry, so that
# get(init.name) rebuilds init: "gaussian(sigma_w2=1.76, sigma_b2=0.05)".
_FAMILIES = {"gaussian": gaussian, "orthogonal": orthogonal, "delta_orthogonal": delta_orthogonal}
_CALL = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$")


def _parse_call(text: str):
  """The initializer a name like ``"gaussian(sigma_w2=2, sigma_b2=0.1)"`` spells, or None."""
  match = _CALL.match(text)
  if not match or match.group(1).lower() not in _FAMILIES:
    return None
  args, kwargs = [], {}
  for part in filter(None, (a.strip() for a in match.group(2).split(","))):
    key, eq, value = part.rpartition("=")
    try:
      number = float(value)
    except ValueError:
      return None
    if eq:
      kwargs[key.strip()] = number
    else:
      args.append(number)
  try:
    return _FAMILIES[match.group(1).lower()](*args, **kwargs)
  except TypeError:
    return None


def names() -> tuple[str, ...]:
  """The names :func:`get` accepts."""
  return tuple(sorted(_REGISTRY))


def get(init: InitializerLike) -> Initializer:
  """Looks an initialisation up by name, or passes an :class:`Initializer` through.

  Names are the registry's (:func:`names`) or a parametrised family's as its
  initializers print them, ``"gaussian(sigma_w2=1.76, sigma_b2=0.05)"``,
  ``"orthogonal(gain=1)"``, ``"delta_orthogonal(gain=1, sigma_b2=0)"``.
  """
  if isinstance(init, Initializer):
    return init
  if isinstance(init, str):
    if init.lower() in _REGISTRY:
      return _REGISTRY[init.lower()]
    parsed = _parse_call(init)
    if parsed is not None:
      return parsed
    raise ValueError(
          f"Unknown init {init!r}; valid names are {', '.join(names())}, or pass "
          "jaxbp.initializers.gaussian(sigma_w2, sigma_b2) / orthogonal(gain) / "
          "delta_orthogonal(gain) (or their names, e.g. 'gaussian(sigma_w2=2, sigma_b2=0)').")
  raise TypeError(f"init must be a name or a jaxbp.initializers.Initializer, got "
                  f"{type(init).__name__}: {init!r}.")
