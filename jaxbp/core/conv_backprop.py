"""The hand-derived delta recursion of a :class:`jaxbp.core.convnets.ConvNet`.

Notation: one spatial axis of size N is written (several axes repeat the same
steps axis by axis); ``u = 0 .. k-1`` runs over the taps, ``p = (k - 1) / 2``,
``delta_l = dL/dz_l`` and ``P`` is the padding's index map: ``P(y) = y mod N``
for ``"circular"``; for ``"same"`` ``P(y) = y`` when ``0 <= y < N`` and the
term is absent (a zero) otherwise. The forward layer is::

    z_l[b, x, o] = sum_{u, i} h_{l-1}[b, P(x + u - p), i] W_l[u, i, o] + b_l[o]

**Input gradient.** ``h_{l-1}[b, y, i]`` feeds ``z_l[b, x, o]`` through the tap
``u`` with ``P(x + u - p) = y``, i.e. ``x = P(y - u + p)`` (the same map: the
shift is a bijection mod N; with zeros, out-of-range ``x`` are exactly the
absent terms). The chain rule gives::

    dL/dh_{l-1}[b, y, i] = sum_{u, o} delta_l[b, P(y + p - u), o] W_l[u, i, o]
                         = sum_{v, o} delta_l[b, P(y + v - p), o] W~_l[v, o, i]

with ``v = k - 1 - u`` (then ``p - u = v - p`` because ``k - 1 = 2 p``) and the
flipped, transposed kernel ``W~[v, o, i] = W[k - 1 - v, i, o]``. That is the
forward convolution itself, same padding, of ``delta_l`` with ``W~``: the
transposed convolution. Then ``delta_{l-1} = dL/dh_{l-1} * phi'(z_{l-1})`` (plus
``dL/dh_{l-1}`` through a residual skip before the product's ``dL/dh``).

**Kernel gradient.** ``W_l[u, i, o]`` multiplies ``h_{l-1}[b, P(x + u - p), i]``
in every ``z_l[b, x, o]``::

    dL/dW_l[u, i, o] = sum_{b, x} hp_{l-1}[b, x + u, i] delta_l[b, x, o]

where ``hp`` is ``h`` padded by p on each side (wrapped, or zeros:
:func:`jaxbp.core.convnets.pad`), so ``hp[x + u] = h[P(x + u - p)]``. It is a
VALID correlation of ``hp`` with ``delta`` over space, summed over the batch:
``lax.conv_general_dilated`` with the batch as the contracted feature axis and
the input channel ``i`` as the batch axis; its output has ``N + 2 p - N + 1 =
k`` positions, the taps. **Bias**: ``dL/db_l[o] = sum_{b, x} delta_l[b, x, o]``.

**Readout** (``outputs=n``): ``z = m @ W + b`` with ``m[b, i] = (1 / |S|)
sum_x h_L[b, x, i]`` over the |S| positions, so ``dL/dW = m^T delta``,
``dL/db = sum_b delta`` and ``dL/dh_L[b, x, i] = (delta W^T)[b, i] / |S|``.

**Output.** ``delta`` of the output layer is ``dL/dh * phi_out'(z)``, fused to
``(p - y) / count`` for sigmoid + binary cross-entropy and softmax +
cross-entropy (:func:`jaxbp.core.losses.output_delta`); a softmax acts on the channel axis at
every position.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

import jaxbp.core.losses as _losses
from jaxbp.core.convnets import Conv, ConvNet, conv, global_average_pool, pad
from jaxbp.core.layers import Dense


def flip_kernel(W):
  """``W~[v, o, i] = W[k - 1 - v, i, o]``: every spatial axis reversed, channels swapped."""
  d = W.ndim - 2
  return jnp.swapaxes(jnp.flip(W, axis=tuple(range(d))), -1, -2)


def conv_input_grad(delta, W, padding: str):
  """``dL/dh_{l-1}[b, y, i] = sum_{v, o} delta[b, P(y + v - p), o] W~[v, o, i]``: the
  transposed convolution, as a forward convolution with :func:`flip_kernel`."""
  return conv(delta, flip_kernel(W), padding)


def conv_kernel_grad(h, delta, padding: str, kernel):
  """``dL/dW[u, i, o] = sum_{b, x} hp[b, x + u, i] delta[b, x, o]``, shape ``(*kernel, c_in, c_out)``.

  One VALID ``lax.conv_general_dilated`` of the padded input with delta: the
  batch axis b is contracted as the feature axis, the input channel i rides as
  the convolution's batch axis, and the output lands in HWIO order.
  """
  d = h.ndim - 2
  spatial = tuple(range(1, d + 1))
  dims = jax.lax.ConvDimensionNumbers(lhs_spec=(d + 1, 0) + spatial,
                                      rhs_spec=(d + 1, 0) + spatial,
                                      out_spec=(d, d + 1) + tuple(range(d)))
  return jax.lax.conv_general_dilated(pad(h, kernel, padding), delta, (1,) * d, "VALID",
                                      dimension_numbers=dims)


def conv_layer_backward(net: ConvNet, g: int, p: Conv, h_in, z, g_out, param_grads: bool = True):
  """One convolution layer, top to bottom: ``dL/dh_l -> (delta_l, grads, dL/dh_{l-1})``.

  For the output convolution ``g_out`` is delta itself. With
  ``param_grads=False`` the gradients are None.
  """
  delta = g_out * net.phi.grad(z) if net.is_hidden(g) else g_out
  grads = None
  if param_grads:
    dW = conv_kernel_grad(h_in, delta, net.padding, net.kernel)
    db = jnp.sum(delta, axis=tuple(range(delta.ndim - 1))) if p.b is not None else None
    grads = Conv(dW, db)
  g_in = conv_input_grad(delta, p.W, net.padding)
  if net.is_residual(g):
    g_in = g_in + g_out       # the identity skip passes dL/dh_l straight down
  return delta, grads, g_in


def readout_backward(p: Dense, h_in, delta, param_grads: bool = True):
  """The pool-and-dense readout: ``delta -> (grads, dL/dh_L)``."""
  m = global_average_pool(h_in)
  grads = Dense(m.T @ delta, jnp.sum(delta, axis=0) if p.b is not None else None) \
      if param_grads else None
  g_m = delta @ p.W.T
  positions = math.prod(h_in.shape[1:-1])
  g_in = jnp.broadcast_to(g_m.reshape((g_m.shape[0],) + (1,) * (h_in.ndim - 2)
                                      + g_m.shape[-1:]), h_in.shape) / positions
  return grads, g_in


def backward(net: ConvNet, loss, params, x, y, reduction: str = "mean",
             param_grads: bool = True):
  """The forward trace, then the recursion from the output back.

  Returns ``(value, grads, deltas, trace)``: the loss, dL/dparams (the params'
  pytree; Nones with ``param_grads=False``), ``delta_l = dL/dz_l`` aligned with
  the params (stacked groups with a leading layer axis; the readout's
  ``(batch, outputs)``) and the :class:`jaxbp.core.layers.Trace`.
  """
  loss = _losses.get(loss)
  if reduction not in ("mean", "sum"):
    raise ValueError(f"backprop: reduction must be 'mean' or 'sum', got {reduction!r}.")
  tr = net.trace(params, x)
  x = jnp.asarray(x)
  value = loss.fn(tr.h[-1], y, reduction)
  G = len(params)

  def last(g):  # group g's output (a stack's last layer)
    return tr.h[g][-1] if net.is_stacked(g) else tr.h[g]

  g_h = _losses.output_delta(net.phi_out, loss, tr.z[-1], tr.h[-1], y, reduction)
  grads, deltas = [None] * G, [None] * G
  for g in reversed(range(G)):
    h_in = x if g == 0 else last(g - 1)
    if net.is_readout(g):
      deltas[g] = g_h
      grads[g], g_h = readout_backward(params[g], h_in, g_h, param_grads)
    elif net.is_stacked(g):
      # Layer l of the stack reads h_{l-1}: the group's input, then its own outputs.
      h_ins = jnp.concatenate([h_in[None], tr.h[g][:-1]], axis=0)

      def step(g_h, xs, g=g):
        p, h_in, z = xs
        delta, grads, g_in = conv_layer_backward(net, g, p, h_in, z, g_h, param_grads)
        return g_in, (delta, grads)

      g_h, (deltas[g], grads[g]) = jax.lax.scan(step, g_h, (params[g], h_ins, tr.z[g]),
                                                reverse=True)
    else:
      deltas[g], grads[g], g_h = conv_layer_backward(net, g, params[g], h_in, tr.z[g], g_h,
                                                     param_grads)
  return value, tuple(grads), tuple(deltas), tr
