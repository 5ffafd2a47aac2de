"""Activation functions with hand-derived derivatives.

Every :class:`Activation` carries its function ``fn`` and its derivative
``grad`` written out by hand (not by ``jax.grad``), so that the delta recursion
in :mod:`jaxbp.backprop` is an independent reference for autodiff:

  ===========  =====================  ==========================================
  name         fn(z)                  grad(z) = fn'(z)
  ===========  =====================  ==========================================
  identity     z                      1
  sigmoid      s(z) = 1/(1+e^{-z})    s(z)(1 - s(z))        (<= 1/4, seed 000)
  tanh         tanh z = 2 s(2z) - 1   1 - tanh^2 z
  relu         max(0, z)              1 if z > 0 else 0     (0 at the kink)
  leaky_relu   z if z > 0 else p z    1 if z > 0 else p
  softmax      e^{z_i} / sum_j e^{z_j}  full Jacobian p_i (delta_ij - p_j)
  ===========  =====================  ==========================================

``softmax`` is the one activation that is not elementwise: its ``grad`` returns
the Jacobian ``(..., n, n)`` (seed 000 §7.3). Seed 002's ``grad_softmax =
s(1 - s)`` is only that Jacobian's diagonal; :func:`softmax_vjp` applies the
whole Jacobian to a row vector without forming it.

References:
  Goodfellow, Bengio & Courville, *Deep Learning* (2016), §6.3 and §6.2.2.3.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Union

import jax
import jax.numpy as jnp

import jaxbp.core.checks as _checks


class Activation(NamedTuple):
  """An activation function and its hand-derived derivative.

  Attributes:
    name: look-up name, e.g. ``"tanh"`` or ``"leaky_relu"``.
    fn: ``z -> phi(z)``.
    grad: ``z -> phi'(z)``, elementwise (or the full Jacobian when
      ``elementwise`` is False).
    elementwise: True for every activation except softmax.
  """
  name: str
  fn: Callable[[jax.Array], jax.Array]
  grad: Callable[[jax.Array], jax.Array]
  elementwise: bool = True


def sigmoid_fn(z):
  # jax.nn.sigmoid is lax.logistic: stable for large |z| in float32, and it
  # never forms exp(+|z|), so it does not overflow.
  return jax.nn.sigmoid(z)


def _sigmoid_grad(z):
  # s (1 - s) on the small side, s = s(-|z|) <= 1/2, which sigmoid computes to
  # full relative precision (1 - s in [1/2, 1] then loses nothing): the textbook
  # s(z) (1 - s(z)) cancels to 0 once s(z) rounds to 1. Keeps s' <= 1/4 exactly.
  s = sigmoid_fn(-jnp.abs(z))
  return s * (1.0 - s)


def _tanh_grad(z):
  # 1 - t^2 cancels once t rounds towards +-1 (to 0 in float32 beyond |z| ~ 9).
  # With e = exp(-2|z|): 1 + |t| = 2 / (1 + e), so 1 - t^2 = 4 e / (1 + e)^2
  # = e (1 + |t|)^2, a product of two accurately computed factors: a few ulps
  # of relative error at every z, with no cancellation, division or select.
  # Inside a jitted backward pass tanh(z) is the forward's own (XLA merges the
  # two), so this costs one exp per element over autodiff's 1 - t^2. Rounding
  # can put it one ulp above 1 near z = 0, where the true value rounds to 1.
  a = 1.0 + jnp.abs(jnp.tanh(z))
  return jnp.minimum(jnp.exp(-2.0 * jnp.abs(z)) * (a * a), 1.0)


def _relu_fn(z):
  # jax.nn.relu, not jnp.maximum: its autodiff derivative at the kink is 0 like
  # the hand-derived one below (maximum's splits the tie and gives 1/2).
  return jax.nn.relu(z)


def _relu_grad(z):
  # The derivative at the kink z = 0 is taken as 0, as jax.nn.relu does.
  return (z > 0).astype(z.dtype)


def _identity_grad(z):
  return jnp.ones_like(z)


def softmax(z, axis: int = -1):
  """Numerically stable softmax: ``exp(z - max z) / sum exp(z - max z)`` (seed 002 eq. 19)."""
  z = jnp.asarray(z)
  shifted = z - jax.lax.stop_gradient(jnp.max(z, axis=axis, keepdims=True))
  e = jnp.exp(shifted)
  return e / jnp.sum(e, axis=axis, keepdims=True)


def log_softmax(z, axis: int = -1):
  """Stable ``log softmax(z)_j = z_j - max z - log sum_i exp(z_i - max z)`` (seed 002 eq. 20)."""
  z = jnp.asarray(z)
  shifted = z - jax.lax.stop_gradient(jnp.max(z, axis=axis, keepdims=True))
  return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))


def softmax_jacobian(z):
  """Full softmax Jacobian ``J[..., i, j] = d p_i / d z_j = p_i (delta_ij - p_j)``.

  Seed 000 §7.3. Its diagonal is ``p_i (1 - p_i)`` (seed 002's ``grad_softmax``),
  its off-diagonal entries ``-p_i p_j`` are what that shortcut drops.

  >>> import jax.numpy as jnp
  >>> softmax_jacobian(jnp.zeros(2))
  Array([[ 0.25, -0.25],
         [-0.25,  0.25]], dtype=float32)
  """
  p = softmax(z)
  n = p.shape[-1]
  # Give eye the batch axes explicitly: strict rank promotion forbids (n, n) - (..., 1, n).
  eye = jnp.eye(n, dtype=p.dtype).reshape((1,) * (p.ndim - 1) + (n, n))
  return p[..., :, None] * (eye - p[..., None, :])


def softmax_vjp(z, g):
  """Row vector times softmax Jacobian: ``(g J)_j = p_j (g_j - sum_i g_i p_i)``.

  This is the backward pass through a softmax layer in O(n) rather than O(n^2).
  """
  p = softmax(z)
  return p * (g - jnp.sum(g * p, axis=-1, keepdims=True))


identity = Activation("identity", lambda z: z, _identity_grad)
sigmoid = Activation("sigmoid", sigmoid_fn, _sigmoid_grad)
tanh = Activation("tanh", jnp.tanh, _tanh_grad)
relu = Activation("relu", _relu_fn, _relu_grad)
softmax_activation = Activation("softmax", softmax, softmax_jacobian, elementwise=False)


def leaky_relu(negative_slope: float = 0.01) -> Activation:
  """LeakyReLU with slope ``p`` for z < 0: ``phi'(z) = 1 if z > 0 else p``.

  Cached on ``float(negative_slope)``, so that ``leaky_relu(0.1) is leaky_relu(0.1)``
  however it is spelled: a net spec built with it stays hashable and equal across
  calls, and jit does not recompile.
  """
  p = float(negative_slope)
  if not (p >= 0.0 and math.isfinite(p)):
    raise ValueError(
        f"leaky_relu: negative_slope must be >= 0 and finite, got {negative_slope!r}.")
  return _leaky_relu(p)


@functools.lru_cache(maxsize=None)
def _leaky_relu(p: float) -> Activation:

  def fn(z):
    return jnp.where(z > 0, z, p * z)

  def grad(z):
    return jnp.where(z > 0, jnp.ones_like(z), jnp.full_like(z, p))

  return Activation("leaky_relu" if p == 0.01 else f"leaky_relu({p:g})", fn, grad)


_REGISTRY = {
    "identity": identity,
    "linear": identity,
    "sigmoid": sigmoid,
    "logistic": sigmoid,
    "tanh": tanh,
    "relu": relu,
    "leaky_relu": leaky_relu(0.01),
    "softmax": softmax_activation,
}

ActivationLike = Union[str, Activation]


def names() -> tuple[str, ...]:
  """The names :func:`get` accepts."""
  return tuple(sorted(_REGISTRY))


def get(activation: ActivationLike) -> Activation:
  """Looks an activation up by name, or passes an :class:`Activation` through.

  >>> get("tanh").name
  'tanh'
  """
  return _checks.lookup(activation, Activation, _REGISTRY, "activation",
                        "a jaxbp.activations.Activation (e.g. leaky_relu(0.2))")


class NetActivations:
  """The ``phi`` / ``phi_out`` of a network spec with ``activation`` and
  ``output_activation`` name fields (:class:`jaxbp.MLP`, :class:`jaxbp.ConvNet`)."""

  @property
  def phi(self) -> Activation:
    """The hidden layers' activation."""
    return get(self.activation)

  @property
  def phi_out(self) -> Activation:
    """The output layer's activation."""
    return get(self.output_activation)
