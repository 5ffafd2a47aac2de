"""Deltas by autodiff, through zero probes: the independent route to every delta_k.

The forward pass adds a zero "probe" ``p_k`` to every pre-activation,
``z_k = h_{k-1} W_k + b_k + p_k``, so that ``dL/dp_k = dL/dz_k = delta_k``
exactly; ``jax.grad`` with respect to the probes gives every delta, per example,
in one reverse pass. The hand recursion (:func:`jaxbp.backprop.backward`) must
agree with it to round-off.
"""
from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp

from jaxbp.core import backprop as _backprop
from jaxbp.core import losses as _losses
from jaxbp.core import nets as _nets


def zero_probes(net: _nets.Family, x) -> Tuple[jax.Array, ...]:
  """Zeros shaped like the pre-activations of any family's trace: ``(batch, out)``
  per dense layer, ``(batch, *spatial, c)`` per convolution, ``(L, batch, ...)``
  for a stacked group, ``(T, batch, hidden)`` for a recurrent one. The point at
  which to differentiate :func:`probed_trace`."""
  return net.zero_probes(x)


def probed_trace(net: _nets.Family, params, x, probes) -> _nets.Trace:
  """The forward pass of ``net.trace`` with ``z_k = h_{k-1} W_k + b_k + probes[k]``.

  With zero probes it is ``net.trace``; its derivative with respect to
  ``probes[k]`` is the derivative with respect to ``z_k``. Stacked groups run
  under ``lax.scan``, their probes scanned alongside their params.

  Args:
    net: any network family (:class:`jaxbp.MLP`, :class:`jaxbp.ConvNet`, :class:`jaxbp.RNN`).
    params: ``net.init(...)``-shaped parameters.
    x: inputs ``(batch, sizes[0])``.
    probes: :func:`zero_probes`-shaped additions to the pre-activations.
  """
  return net.trace(params, x, probes=probes)


def autodiff_backward(net: _nets.Family, loss, params, x, y,
                      reduction: str = "mean") -> _backprop.Backward:
  """:func:`jaxbp.backprop.backward`, but every number from ``jax.value_and_grad``.

  Differentiates ``L(probed_trace(params, x, probes).h[-1], y)`` at zero probes
  with respect to ``(params, probes)``: ``dL/dprobes[k] = dL/dz_k = delta_k``.

  Returns:
    A :class:`jaxbp.backprop.Backward` ``(value, grads, deltas, trace)``, the
    same pytrees as the hand recursion's.

  >>> import jaxbp
  >>> net = jaxbp.MLP((3, 5, 5, 2), "tanh")
  >>> params = net.init(jax.random.PRNGKey(1))
  >>> x, y = jnp.ones((4, 3)), jnp.zeros((4, 2))
  >>> auto = autodiff_backward(net, "mse", params, x, y)
  >>> hand = jaxbp.backprop.backward(net, "mse", params, x, y)
  >>> bool(jnp.allclose(auto.deltas[0], hand.deltas[0], rtol=1e-5, atol=1e-7))
  True
  """
  loss = _losses.get(loss)
  if reduction not in ("mean", "sum"):
    raise ValueError(f"autodiff_backward: reduction must be 'mean' or 'sum', got {reduction!r}.")

  def objective(params, probes):
    tr = probed_trace(net, params, x, probes)
    return loss.fn(tr.h[-1], y, reduction), tr

  (value, tr), (grads, deltas) = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(
      params, zero_probes(net, x))
  return _backprop.Backward(value, grads, deltas, tr)
