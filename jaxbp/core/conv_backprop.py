"""Convolution layer kinds and their hand-derived backward (:class:`jaxbp.ConvNet`).

The forward convolution, its padding, the kernel flip of the transposed
convolution and the kernel gradient live here with the kinds that use them:
:class:`ConvKind`, and the two readouts that end a ConvNet, :class:`PoolReadout`
(global average pool, then dense) and :class:`FlattenReadout` (every position
and channel into one dense layer).

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

**Pool readout** (``outputs=n``): ``z = m @ W + b`` with ``m[b, i] = (1 / |S|)
sum_x h_L[b, x, i]`` over the |S| positions, so ``dL/dW = m^T delta``,
``dL/db = sum_b delta`` and ``dL/dh_L[b, x, i] = (delta W^T)[b, i] / |S|``.
**Flatten readout**: ``z = flat(h_L) @ W + b`` with ``flat`` the row-major
reshape ``(batch, |S| c_L)``, so ``dL/dW = flat(h_L)^T delta`` and
``dL/dh_L = unflat(delta W^T)``.

**Output.** ``delta`` of the output layer is ``dL/dh * phi_out'(z)``, fused to
``(p - y) / count`` for sigmoid + binary cross-entropy and softmax +
cross-entropy (:func:`jaxbp.core.losses.output_delta`); a softmax acts on the channel axis at
every position.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Tuple

import jax
import jax.numpy as jnp

import jaxbp.core.initializers as _init
from jaxbp.core.kinds import DenseKind, check_bias, dense_grads, example_grads_by_vmap
from jaxbp.core.layers import Conv, Dense

PADDINGS = ("circular", "same")


def dimension_numbers(ndim: int) -> jax.lax.ConvDimensionNumbers:
  """Channels-last input and output, HWIO kernel, for ``ndim`` spatial axes."""
  spatial = tuple(range(1, ndim + 1))
  return jax.lax.ConvDimensionNumbers(lhs_spec=(0, ndim + 1) + spatial,
                                      rhs_spec=(ndim + 1, ndim) + tuple(range(ndim)),
                                      out_spec=(0, ndim + 1) + spatial)


def pad(h, kernel: Tuple[int, ...], padding: str):
  """``h`` (batch, *spatial, c) padded by ``(k - 1) / 2`` taps on each side of every
  spatial axis: wrapped around for ``"circular"``, zeros for ``"same"``."""
  widths = [(0, 0)] + [((k - 1) // 2, k // 2) for k in kernel] + [(0, 0)]
  return jnp.pad(h, widths, mode="wrap" if padding == "circular" else "constant")


def conv(h, W, padding: str):
  """``conv(h, W)[b, x, o] = sum_{u, i} h[b, x + u - p, i] W[u, i, o]``, stride 1.

  A VALID cross-correlation (``lax.conv_general_dilated``) of the padded input
  (:func:`pad`), so the output has the input's spatial shape.
  """
  d = W.ndim - 2
  return jax.lax.conv_general_dilated(pad(h, W.shape[:d], padding), W, (1,) * d, "VALID",
                                      dimension_numbers=dimension_numbers(d))


def channel_bias(b, ndim: int):
  """A bias ``(c,)`` shaped to add to ``(batch, *spatial, c)`` under strict rank promotion."""
  return b.reshape((1,) * (ndim + 1) + b.shape)


def global_average_pool(h):
  """The mean over the spatial axes: ``(batch, *spatial, c) -> (batch, c)``."""
  return jnp.mean(h, axis=tuple(range(1, h.ndim - 1)))


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


def check_images(x, ndim: int, c_in: int, spatial=None):
  """``x`` if it is ``(batch, *spatial, c_in)``, channels last, with ``ndim`` spatial
  axes (and the given spatial shape); a ValueError naming the layout otherwise."""
  want = "(batch" + ", n" * ndim + f", {c_in})"
  if x.ndim != ndim + 2:
    raise ValueError(
        f"x has shape {x.shape} (rank {x.ndim}), expected rank {ndim + 2}: {want}, "
        f"channels last, for ndim={ndim}. A single example needs a batch axis: x[None].")
  if x.shape[-1] != c_in:
    hint = (" It looks channels-first: move the channels last with jnp.moveaxis(x, 1, -1)."
            if x.shape[1] == c_in else "")
    raise ValueError(f"x has shape {x.shape}, expected {want}: {c_in} input channels, "
                     f"last.{hint}")
  if spatial is not None and x.shape[1:-1] != spatial:
    raise ValueError(f"x has shape {x.shape}, expected spatial shape {spatial} "
                     f"(the net's spatial=, which its flatten readout is sized for).")
  if x.size == 0:
    raise ValueError(f"x has shape {x.shape}: an empty batch or image.")
  return x


@dataclasses.dataclass(frozen=True)
class ConvKind:
  """A stride-1 convolution ``z = conv(h, W) + b`` with odd kernel ``(k,) * ndim``.

  Its fan-in form is the kernel's, ``k^d c_in``: kernels are drawn by the
  initializer's conv form (:func:`jaxbp.core.initializers.conv_weight`), a stack
  one kernel per layer key.
  """
  kernel: Tuple[int, ...]
  padding: str = "circular"
  bias: bool = True
  params_type = Conv

  def init(self, initializer, w_key, b_key, lead, fan_in, fan_out, dtype):
    shape = self.kernel + (fan_in, fan_out)
    if lead:
      keys = jax.random.split(w_key, lead[0])
      W = jax.vmap(lambda k: _init.conv_weight(initializer, k, shape, dtype))(keys)
    else:
      W = _init.conv_weight(initializer, w_key, shape, dtype)
    b = initializer.bias(b_key, lead + (fan_out,), dtype) if self.bias else None
    return Conv(W, b)

  def check(self, p, lead, fan_in, fan_out):
    want, got = lead + self.kernel + (fan_in, fan_out), jnp.shape(p.W)
    if got != want:
      ndim = len(self.kernel)
      if len(got) != len(want):
        why = (f"a kernel has layout {'(L, ' if lead else '('}k{', k' * (ndim - 1)}, "
               f"c_in, c_out) (HWIO) for ndim={ndim}")
      elif got[len(lead):-2] != self.kernel:
        why = f"kernel_size={self.kernel[0]}"
      else:
        why = f"channels {fan_in} -> {fan_out}"
      return f"W has shape {got}, expected {want}: {why}."
    return check_bias(p, lead, fan_out, self.bias)

  def forward(self, h, p, *, scale=None):
    if scale is not None:
      raise ValueError("backprop: a RowScale (scale=) is a dense-layer option; a "
                       "convolution takes none.")
    z = conv(h, p.W, self.padding)
    return z if p.b is None else z + channel_bias(p.b, h.ndim - 2)

  def backward(self, h_in, p, z, delta, *, scale=None, param_grads=True):
    grads = None
    if param_grads:
      dW = conv_kernel_grad(h_in, delta, self.padding, self.kernel)
      db = jnp.sum(delta, axis=tuple(range(delta.ndim - 1))) if p.b is not None else None
      grads = Conv(dW, db)
    return grads, conv_input_grad(delta, p.W, self.padding)

  def example_grads(self, h_in, p, z, delta):
    return example_grads_by_vmap(self, h_in, p, z, delta)


@dataclasses.dataclass(frozen=True)
class PoolReadout(DenseKind):
  """``z = mean_x h[:, x, :] @ W + b``: a global average pool, then a dense layer."""

  def forward(self, h, p, *, scale=None):
    return super().forward(global_average_pool(h), p, scale=scale)

  def backward(self, h_in, p, z, delta, *, scale=None, param_grads=True):
    grads, g_m = super().backward(global_average_pool(h_in), p, z, delta, scale=scale,
                                  param_grads=param_grads)
    positions = math.prod(h_in.shape[1:-1])
    g_in = jnp.broadcast_to(g_m.reshape((g_m.shape[0],) + (1,) * (h_in.ndim - 2)
                                        + g_m.shape[-1:]), h_in.shape) / positions
    return grads, g_in

  def example_grads(self, h_in, p, z, delta):
    return super().example_grads(global_average_pool(h_in), p, z, delta)


@dataclasses.dataclass(frozen=True)
class FlattenReadout(DenseKind):
  """``z = flat(h) @ W + b``, ``flat`` the row-major ``(batch, positions * channels)``."""

  def forward(self, h, p, *, scale=None):
    return super().forward(h.reshape(h.shape[0], -1), p, scale=scale)

  def backward(self, h_in, p, z, delta, *, scale=None, param_grads=True):
    flat = h_in.reshape(h_in.shape[0], -1)
    grads = dense_grads(flat, delta, p.b is not None) if param_grads else None
    return grads, (delta @ p.W.T).reshape(h_in.shape)

  def example_grads(self, h_in, p, z, delta):
    return super().example_grads(h_in.reshape(h_in.shape[0], -1), p, z, delta)


__all__ = ["PADDINGS", "check_images", "ConvKind", "PoolReadout", "FlattenReadout", "conv", "pad",
           "dimension_numbers", "channel_bias", "global_average_pool", "flip_kernel",
           "conv_input_grad", "conv_kernel_grad", "Dense"]
