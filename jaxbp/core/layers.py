"""One layer of a network, and the containers its parameters and caches live in.

Row-vector convention, batch first (seed 002's ``X W``)::

    z = h @ W + b,    h_next = phi(z)      W: (in, out), h: (batch, in)

:func:`layer_forward` is the only layer body in jaxbp: the MLP's ``apply`` and
``trace``, the probed trace of :mod:`jaxbp.diagnostics` and the depth sweep's
row-scaled nets all run it, and :mod:`jaxbp.backprop` differentiates it by hand.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

import jaxbp.core.activations as _act


class Dense(NamedTuple):
  """One affine layer ``z = h @ W + b`` (or a stack of them, with a leading axis).

  Attributes:
    W: weights, ``(in, out)``; ``(L, n, n)`` for a stack of L layers.
    b: biases, ``(out,)``; ``(L, n)`` for a stack; ``None`` when the net has no bias.
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


def layer_forward(h, p, phi: _act.Activation, *, residual: bool = False,
                  batchnorm_eps: Optional[float] = None, probe=None,
                  scale: Optional[RowScale] = None):
  """One layer: ``z = h @ W + b (+ probe)``, ``h_next = phi(z)`` (``+ h`` if residual).

  The one layer body of jaxbp: ``MLP.apply``, ``MLP.trace``, the probed trace
  of :mod:`jaxbp.diagnostics` and the depth sweep's row-scaled nets all run it.

  Args:
    h: the layer's input, ``(batch, in)``.
    p: :class:`Dense` ``(W, b)`` (``b`` may be None), or :class:`BatchNormDense`
      when ``batchnorm_eps`` is given: ``z = gamma * normalise(h @ W) + beta``.
    phi: the activation.
    residual: add the input back, ``h_next = h + phi(z)``.
    batchnorm_eps: the variance floor of batch norm; None for a plain layer.
    probe: an array added to z, or None: ``dL/dprobe = dL/dz = delta``.
    scale: per-row factors (:class:`RowScale`), or None.

  Returns:
    ``(h_next, z)``.
  """
  if batchnorm_eps is not None:
    if scale is not None:
      raise ValueError("layer_forward: a RowScale does not commute with batch norm's "
                       "statistics; use it on plain or residual layers.")
    z = batch_norm(h @ p.W, p.gamma, p.beta, batchnorm_eps)
  else:
    u = h @ p.W
    if scale is None:
      z = u if p.b is None else u + p.b[None, :]
    else:
      z = scale.w * u if p.b is None else scale.w * u + scale.b * p.b[None, :]
  if probe is not None:
    z = z + probe
  a = phi.fn(z)
  return (h + a if residual else a), z


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
  What ``dL/dW_k = h_{k-1}^T delta_k`` multiplies."""
  ins, h = [], jnp.asarray(x)
  for g, hg in enumerate(trace.h):
    ins.append(jnp.concatenate([h[None], hg[:-1]], axis=0) if net.is_stacked(g) else h)
    h = hg[-1] if net.is_stacked(g) else hg
  return tuple(ins)


def unstack(params, net):
  """Params as one ``Dense`` per layer (stacked groups split), for inspection."""
  out = []
  for g, p in enumerate(params):
    if net.is_stacked(g):
      out.extend(jax.tree_util.tree_map(lambda a: a[i], p) for i in range(p.W.shape[0]))
    else:
      out.append(p)
  return tuple(out)
