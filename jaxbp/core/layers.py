"""The containers a network's parameters and caches live in.

Row-vector convention, batch first (seed 002's ``X W``)::

    z = h @ W + b,    h_next = phi(z)      W: (in, out), h: (batch, in)

The layer bodies themselves are the layer kinds (:mod:`jaxbp.core.kinds`), run
by the one family base (:mod:`jaxbp.core.base`).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp



class Dense(NamedTuple):
  """One affine layer ``z = h @ W + b`` (or a stack of them, with a leading axis).

  Attributes:
    W: weights, ``(in, out)``; ``(L, n, n)`` for a stack of L layers.
    b: biases, ``(out,)``; ``(L, n)`` for a stack; ``None`` when the net has no bias.
  """
  W: jax.Array
  b: Optional[jax.Array]


class Conv(NamedTuple):
  """One stride-1 convolution ``z = conv(h, W) + b`` (or a stack, with a leading axis).

  Attributes:
    W: the kernel, ``(k, ..., k, c_in, c_out)`` (HWIO); ``(L, k, ..., k, c, c)`` stacked.
    b: biases ``(c_out,)``, ``(L, c)`` stacked; None when the net has no bias.
  """
  W: jax.Array
  b: Optional[jax.Array]


class BatchNormDense(NamedTuple):
  """A layer ``z = gamma * normalise(h @ W) + beta`` (batch statistics).

  Attributes:
    W: weights ``(in, out)``, or ``(L, n, n)`` stacked.
    gamma: scale ``(out,)``, or ``(L, n)``; starts at 1.
    beta: shift ``(out,)``, or ``(L, n)``; starts at 0.
  """
  W: jax.Array
  gamma: jax.Array
  beta: jax.Array


def batch_norm(u, gamma, beta, eps):
  """``gamma (u - mean) / sqrt(var + eps) + beta`` with the batch's mean and variance."""
  mean = jnp.mean(u, axis=0, keepdims=True)
  var = jnp.mean((u - mean) ** 2, axis=0, keepdims=True)
  return gamma[None, :] * (u - mean) * jax.lax.rsqrt(var + eps) + beta[None, :]


class Trace(NamedTuple):
  """What the forward pass caches for backprop, aligned with the params tuple.

  Attributes:
    z: pre-activations, one entry per ``Dense``: ``(batch, out)``, or
      ``(L, batch, n)`` for a stacked group.
    h: layer outputs, the same shapes: ``phi(z)``, or ``h_{k-1} + phi(z_k)`` for a
      residual layer. ``h[-1]`` is the net's output.
  """
  z: Tuple[jax.Array, ...]
  h: Tuple[jax.Array, ...]


class RowScale(NamedTuple):
  """Per-row factors on a layer's two terms: ``z = w * (h @ W) + b * bias``.

  Nets that differ only by a scalar on their weights and one on their biases
  (``W = sw W_unit``, ``b = sb b_unit``) run as one net on the unit weights,
  their batches stacked along the rows: a scalar commutes with the matmul,
  ``h (sw W) = sw (h W)``, and rows never mix. The depth sweep runs many
  configurations of one seed this way.

  Attributes:
    w: ``(rows, 1)``, the factor on ``h @ W`` (and on ``delta @ W^T`` going back).
    b: ``(rows, 1)``, the factor on the bias.
  """
  w: jax.Array
  b: jax.Array


def take_sample(p, select):
  """``p`` itself, or its sample ``select`` (every leaf indexed on its leading axis)."""
  return p if select is None else jax.tree_util.tree_map(lambda a: a[select], p)


def layer_stream(p, select=None):
  """How a ``lax.scan`` walks a stacked group's layers: ``(xs, take)``.

  Scan over ``xs``; ``take(x)`` is the layer's params. Without ``select`` the
  scan walks the stack itself. With it, ``p`` carries a leading sample axis
  and the scan walks layer indices, reading ``p[select, l]`` one layer at a
  time: selecting a sample's whole stack first would copy it.
  """
  if select is None:
    return p, lambda x: x
  num_layers = jax.tree_util.tree_leaves(p)[0].shape[1]
  return jnp.arange(num_layers), lambda l: jax.tree_util.tree_map(lambda a: a[select, l], p)


def layer_inputs(net, x, trace: Trace) -> Tuple[jax.Array, ...]:
  """Every layer's input ``h_{k-1}``, aligned with the params: ``x`` for the first,
  ``(L, batch, n)`` for a stacked group (its input, then its own outputs but the last).
  What ``dL/dW_k = h_{k-1}^T delta_k`` multiplies (:meth:`jaxbp.core.base.Family.layer_inputs`)."""
  return net.layer_inputs(x, trace)


def unstack(params, net):
  """Params as one entry per layer (stacked groups split), for inspection."""
  return net.unstack(params)
