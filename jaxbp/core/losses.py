"""Loss functions with hand-derived gradients dL/d(output).

Every :class:`Loss` has ``fn(h, y, reduction)`` and ``grad(h, y, reduction)``,
where ``h`` is the network output of shape ``(batch, out)`` and ``grad``
returns ``dL/dh`` of the same shape, derived by hand:

  ======================================  =================================  ======================
  name                                    per-example term                   dL/dh (before reduction)
  ======================================  =================================  ======================
  mse                                     (h - y)^2, elementwise              2 (h - y)
  binary_cross_entropy  (h = p in (0,1))  -(y log p + (1-y) log(1-p))         (p - y) / (p (1 - p))
  binary_cross_entropy_with_logits        -(y log s(h) + (1-y) log(1-s(h)))   s(h) - y
  softmax_cross_entropy (h = logits)      -sum_j y_j log softmax(h)_j         softmax(h) - y
  cross_entropy         (h = probs)       -sum_j y_j log p_j                  -y / p
  ======================================  =================================  ======================

Reductions: ``"none"`` keeps the per-example terms (elementwise ``(batch, out)``
for mse and the binary losses, as seed 002's ``mse(method=None)``; ``(batch,)``
for the categorical ones); ``"sum"`` adds them up; ``"mean"`` divides that sum
by the number of terms (all elements for the elementwise losses, like
``torch.nn.MSELoss``; the batch size for the categorical ones, like
``torch.nn.CrossEntropyLoss``). ``grad`` with ``"none"`` gives the gradient of
the sum.

Corrections to the seeds, computed right here:
  * Seed 000 writes the MSE gradient with the wrong sign; seed 002's
    ``grad_mse = -(y_true - y_pred)`` has the right sign but is the gradient of
    ``1/2 (p - y)^2``. The derivative of ``(h - y)^2`` is ``2 (h - y)``.
  * Seed 002's "multi-class cross-entropy" ``-1/N sum_i (y_i log p_i + (1-y_i)
    log(1-p_i))`` is a mean of binary cross-entropies, one per output; the
    categorical cross-entropy is ``-sum_j y_j log p_j`` (``cross_entropy`` here).
  * Seed 002's ``mse(method='mean')`` averages over the batch axis only and so
    returns one number per output; here ``"mean"`` returns a scalar (the mean
    of those numbers), since an objective must be a scalar.

Integer class labels of shape ``(batch,)`` are accepted wherever a one-hot
target is, for the categorical losses (seed 004 passes ``z = [0, 2, 1]``).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp.core.activations as _act
import jaxbp.core.checks as _checks

REDUCTIONS = ("mean", "sum", "none")


class Loss(NamedTuple):
  """A loss and its hand-derived gradient.

  Attributes:
    name: look-up name.
    fn: ``(h, y, reduction="mean") -> loss``.
    grad: ``(h, y, reduction="mean") -> dL/dh``, the shape of ``h``.
    categorical: True when the loss sums over classes (one term per example),
      False when it is elementwise (one term per output).
  """
  name: str
  fn: Callable
  grad: Callable
  categorical: bool


def _concrete(x):
  """The value of ``x`` as numpy when it is known at trace time, else None."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def one_hot(labels, num_classes: int, dtype=None):
  """One-hot rows ``eye(num_classes)[labels]``.

  Unlike seed 002's ``one_hot``, labels are not shifted by their minimum: label
  ``k`` always means class ``k``. Labels outside ``[0, num_classes)`` raise when
  they are concrete (under jit they cannot be inspected and give a zero row,
  as ``jax.nn.one_hot`` does).

  >>> one_hot(jnp.array([0, 2, 1]), 3)
  Array([[1., 0., 0.],
         [0., 0., 1.],
         [0., 1., 0.]], dtype=float32)
  """
  if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
    raise ValueError(f"one_hot: num_classes must be a positive int, got {num_classes!r}.")
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"one_hot: labels must be integers, got dtype {labels.dtype}.")
  value = _concrete(labels)
  if value is not None and value.size and (value.min() < 0 or value.max() >= num_classes):
    raise ValueError(
        f"one_hot: labels must lie in [0, {num_classes}); got values from "
        f"{value.min()} to {value.max()}.")
  dtype = dtype or jax.dtypes.canonicalize_dtype(jnp.float64)
  return jax.nn.one_hot(labels, num_classes, dtype=dtype)


def _check_reduction(reduction):
  if reduction not in REDUCTIONS:
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")


def target(name, h, y, categorical):
  """Validates ``y`` against the output ``h`` and returns it as a float array of h's
  shape (integer labels one-hot encoded when ``categorical``); ``name`` labels the
  error."""
  h = jnp.asarray(h)
  if not jnp.issubdtype(h.dtype, jnp.floating):
    raise TypeError(f"{name}: the network output must be floating point, got {h.dtype}.")
  y = jnp.asarray(y)
  if categorical and jnp.issubdtype(y.dtype, jnp.integer) and y.shape == h.shape[:-1]:
    return one_hot(y, h.shape[-1], dtype=h.dtype)
  if y.shape != h.shape:
    hint = (f" or integer labels of shape {h.shape[:-1]}" if categorical else "")
    raise ValueError(
        f"{name}: target y has shape {y.shape} but the output h has shape {h.shape}; "
        f"pass y of shape {h.shape}{hint}.")
  return y.astype(h.dtype)


def _check_not_empty(name, count, reduction):
  if reduction == "mean" and count == 0:
    raise ValueError(f"{name}: an empty batch; a mean over no terms is 0/0 (nan). Pass at "
                     "least one example, or reduction='sum'.")


def _reduce(terms, reduction):
  if reduction == "none":
    return terms
  total = jnp.sum(terms)
  return total / terms.size if reduction == "mean" else total


def _scale(g, terms_count, reduction):
  """The factor a reduction puts on each term's gradient."""
  return g / terms_count if reduction == "mean" else g


def _make(name, term, term_grad, categorical):
  """Builds a Loss from its per-term value and per-term gradient."""

  def fn(h, y, reduction="mean"):
    _check_reduction(reduction)
    h = jnp.asarray(h)
    y = target(name, h, y, categorical)
    terms = term(h, y)
    _check_not_empty(name, terms.size, reduction)
    return _reduce(terms, reduction)

  def grad(h, y, reduction="mean"):
    _check_reduction(reduction)
    h = jnp.asarray(h)
    y = target(name, h, y, categorical)
    # The number of terms _reduce divides by: one per example (all axes but the
    # class axis) for categorical losses, one per element otherwise.
    count = math.prod(h.shape[:-1]) if categorical else h.size
    _check_not_empty(name, count, reduction)
    return _scale(term_grad(h, y), count, reduction)

  return Loss(name, fn, grad, categorical)


def _xlogy_terms(p, y):
  # Written with where so that y = 0 and p = 0 gives 0, not nan (0 * log 0).
  return jnp.where(y == 0, 0.0, y * jnp.log(jnp.where(y == 0, 1.0, p)))


mse = _make("mse", lambda h, y: (h - y) ** 2, lambda h, y: 2.0 * (h - y), False)

binary_cross_entropy = _make(
    "binary_cross_entropy",
    lambda p, y: -(_xlogy_terms(p, y) + _xlogy_terms(1.0 - p, 1.0 - y)),
    # -y/p + (1-y)/(1-p), each part 0 where its y factor is (0 log 0 = 0): finite at
    # a perfect prediction p = y in {0, 1}, where (p - y) / (p (1 - p)) is 0/0.
    lambda p, y: (jnp.where(y == 0, 0.0, -y / jnp.where(y == 0, 1.0, p))
                  + jnp.where(y == 1, 0.0, (1.0 - y) / jnp.where(y == 1, 1.0, 1.0 - p))),
    False)


def _bce_logits_term(h, y):
  # -(y log s(h) + (1-y) log(1 - s(h))) = max(h, 0) - h y + log(1 + e^{-|h|}), written
  # so that it never exponentiates a positive number (finite for any finite h),
  # keeps full precision where the loss is tiny (no softplus(h) - h cancellation),
  # and lets jax.grad find s(0) - y = 1/2 - y at h = 0: -|h| is spelled with a
  # one-sided derivative, so the two kinks at 0 cancel instead of dropping 1/2.
  minus_abs = jnp.where(h >= 0, -h, h)
  return jnp.where(h >= 0, h * (1.0 - y), -h * y) + jnp.log1p(jnp.exp(minus_abs))


binary_cross_entropy_with_logits = _make(
    "binary_cross_entropy_with_logits", _bce_logits_term,
    lambda h, y: _act.sigmoid_fn(h) - y, False)

softmax_cross_entropy = _make(
    "softmax_cross_entropy",
    # where: a class with y = 0 adds 0 even where its log-probability is -inf
    # (logits spanning more than the float range), not 0 * -inf = nan.
    lambda h, y: -jnp.sum(jnp.where(y == 0, 0.0, y * _act.log_softmax(h)), axis=-1),
    # d/dh_j of -sum_i y_i (h_i - logsumexp h) = softmax(h)_j sum_i y_i - y_j,
    # which is softmax(h) - y for a one-hot (or any normalised) target.
    lambda h, y: _act.softmax(h) * jnp.sum(y, axis=-1, keepdims=True) - y,
    True)

cross_entropy = _make(
    "cross_entropy",
    lambda p, y: -jnp.sum(_xlogy_terms(p, y), axis=-1),
    lambda p, y: jnp.where(y == 0, 0.0, -y / jnp.where(y == 0, 1.0, p)),
    True)

_REGISTRY = {
    "mse": mse,
    "binary_cross_entropy": binary_cross_entropy,
    "bce": binary_cross_entropy,
    "binary_cross_entropy_with_logits": binary_cross_entropy_with_logits,
    "bce_with_logits": binary_cross_entropy_with_logits,
    "softmax_cross_entropy": softmax_cross_entropy,
    "cross_entropy": cross_entropy,
}

LossLike = Union[str, Loss]


def names() -> tuple[str, ...]:
  """The names :func:`get` accepts."""
  return tuple(sorted(_REGISTRY))


def get(loss: LossLike) -> Loss:
  """Looks a loss up by name, or passes a :class:`Loss` through."""
  return _checks.lookup(loss, Loss, _REGISTRY, "loss", "a jaxbp.losses.Loss")


def output_delta(phi_out: _act.Activation, loss: Loss, z, h, y, reduction: str):
  """``dL/dz`` of the output layer, for outputs ``(..., c)`` of any rank.

  The pairs sigmoid + binary cross-entropy and softmax + cross-entropy collapse
  to ``(p - y) / count`` (no division by ``p (1 - p)``, which underflows for
  saturated units), ``count`` being the loss's number of terms under "mean":
  every position's class vector for the categorical loss, every element else.
  """
  if (phi_out.name, loss.name) in (("sigmoid", "binary_cross_entropy"),
                                   ("softmax", "cross_entropy")):
    y = target(loss.name, h, y, loss.categorical)
    count = math.prod(h.shape[:-1]) if loss.categorical else h.size
    return (h - y) / count if reduction == "mean" else h - y
  g = loss.grad(h, y, reduction)
  if phi_out.elementwise:
    return g * phi_out.grad(z)
  return _act.softmax_vjp(z, g)
