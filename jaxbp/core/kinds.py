"""Layer kinds: each one's init, forward and hand-derived backward, together.

A kind computes a layer's pre-activation ``z = forward(h, p)``; the family base
(:mod:`jaxbp.core.base`) applies the activation, ``h_next = phi(z)`` (``+ h``
when residual), and turns ``dL/dh_next`` into ``delta = dL/dz``. The kind's
``backward`` then gives the parameter gradients and ``dL/dh``::

    init(initializer, w_key, b_key, lead, fan_in, fan_out, dtype) -> params
    check(p, lead, fan_in, fan_out) -> None, or what does not fit
    forward(h, p, *, scale=None) -> z
    backward(h_in, p, z, delta, *, scale=None, param_grads=True) -> (grads, dL/dh_in)
    example_grads(h_in, p, z, delta) -> every example's own grads (batch axis first)

``lead`` is ``(L,)`` for a stacked group, else ``()``. A kind that a tied group
runs (a recurrent layer) also has ``prepare(p, stream)`` (the per-step inputs,
computed once for the whole sequence) and ``tied_grads``; its forward and
backward receive ``(p, step_input)`` in place of ``p``.

Row-vector convention, batch first (seed 002's ``X W``)::

    z = h @ W + b          W: (in, out), h: (batch, in)
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

import jaxbp.core.activations as _act
from jaxbp.core.layers import BatchNormDense, Dense, RowScale, batch_norm


def _shape_problem(name: str, got, want) -> Optional[str]:
  if got != want:
    return f"{name} has shape {got}, expected {want}."
  return None


def check_bias(p, lead, fan_out, bias: bool) -> Optional[str]:
  """What is wrong with ``p.b`` for a layer with (or without) biases, or None."""
  if bias and (p.b is None or jnp.shape(p.b) != lead + (fan_out,)):
    return (f"b has shape {None if p.b is None else jnp.shape(p.b)}, expected "
            f"{lead + (fan_out,)}.")
  if not bias and p.b is not None:
    return "b should be None: the net was built with bias=False."
  return None


def dense_grads(h_in, delta, has_bias: bool) -> Dense:
  """``dL/dW = h_in^T delta`` and ``dL/db = sum_batch delta`` (rows summed)."""
  return Dense(h_in.T @ delta, jnp.sum(delta, axis=0) if has_bias else None)


@dataclasses.dataclass(frozen=True)
class DenseKind:
  """``z = h @ W + b``; with a :class:`RowScale`, ``z = w * (h @ W) + b * bias``.

  Backward (seed 002 eqs. 10-15)::

      dL/dW = h^T @ delta,   dL/db = sum_batch delta,   dL/dh = delta @ W^T
  """
  bias: bool = True
  params_type = Dense

  def init(self, initializer, w_key, b_key, lead, fan_in, fan_out, dtype):
    W = initializer.weight(w_key, lead + (fan_in, fan_out), dtype)
    b = initializer.bias(b_key, lead + (fan_out,), dtype) if self.bias else None
    return Dense(W, b)

  def check(self, p, lead, fan_in, fan_out):
    return (_shape_problem("W", jnp.shape(p.W), lead + (fan_in, fan_out))
            or check_bias(p, lead, fan_out, self.bias))

  def forward(self, h, p, *, scale: Optional[RowScale] = None):
    u = h @ p.W
    if scale is None:
      return u if p.b is None else u + p.b[None, :]
    return scale.w * u if p.b is None else scale.w * u + scale.b * p.b[None, :]

  def backward(self, h_in, p, z, delta, *, scale=None, param_grads=True):
    grads = dense_grads(h_in, delta, p.b is not None) if param_grads else None
    g_in = delta @ p.W.T
    return grads, (g_in if scale is None else scale.w * g_in)

  def example_grads(self, h_in, p, z, delta):
    # dW[i] = outer(h[i], delta[i]): one einsum, no batch of backward passes.
    return Dense(jnp.einsum("bi,bj->bij", h_in, delta), delta if p.b is not None else None)


def batch_norm_backward(delta, u, gamma, eps):
  """dL/du and dL/dgamma for ``z = gamma * uhat + beta``, ``uhat = (u - mean) / s``.

  With ``s = sqrt(var + eps)`` over a batch of m rows, differentiating through
  the batch mean and variance gives, per feature::

      dL/duhat = delta * gamma
      dL/du    = (m dL/duhat - sum_b dL/duhat - uhat sum_b (dL/duhat * uhat)) / (m s)

  The two sums are the paths through the mean and the variance: every row's
  output depends on every row's input (Ioffe & Szegedy 2015, §3).
  """
  m = u.shape[0]
  mean = jnp.mean(u, axis=0, keepdims=True)
  inv_s = jax.lax.rsqrt(jnp.mean((u - mean) ** 2, axis=0, keepdims=True) + eps)
  uhat = (u - mean) * inv_s
  d_uhat = delta * gamma[None, :]
  du = (m * d_uhat - jnp.sum(d_uhat, axis=0, keepdims=True)
        - uhat * jnp.sum(d_uhat * uhat, axis=0, keepdims=True)) * inv_s / m
  return du, jnp.sum(delta * uhat, axis=0)


@dataclasses.dataclass(frozen=True)
class BatchNormKind:
  """``z = gamma * normalise(h @ W) + beta`` with the batch's statistics.

  Its examples are coupled through the batch mean and variance
  (``couples_batch``): there is no per-example gradient.
  """
  eps: float = 1e-5
  params_type = BatchNormDense
  couples_batch = True

  def init(self, initializer, w_key, b_key, lead, fan_in, fan_out, dtype):
    return BatchNormDense(initializer.weight(w_key, lead + (fan_in, fan_out), dtype),
                          jnp.ones(lead + (fan_out,), dtype), jnp.zeros(lead + (fan_out,), dtype))

  def check(self, p, lead, fan_in, fan_out):
    return (_shape_problem("gamma", jnp.shape(p.gamma), lead + (fan_out,))
            or _shape_problem("beta", jnp.shape(p.beta), lead + (fan_out,))
            or _shape_problem("W", jnp.shape(p.W), lead + (fan_in, fan_out)))

  def forward(self, h, p, *, scale=None):
    if scale is not None:
      raise ValueError("layer_forward: a RowScale does not commute with batch norm's "
                       "statistics; use it on plain or residual layers.")
    return batch_norm(h @ p.W, p.gamma, p.beta, self.eps)

  def backward(self, h_in, p, z, delta, *, scale=None, param_grads=True):
    du, d_gamma = batch_norm_backward(delta, h_in @ p.W, p.gamma, self.eps)
    grads = BatchNormDense(h_in.T @ du, d_gamma, jnp.sum(delta, axis=0)) if param_grads else None
    return grads, du @ p.W.T


def example_grads_by_vmap(kind, h_in, p, z, delta):
  """Every example's own gradient, from the kind's backward on batches of one."""
  def one(h, z, d):
    return kind.backward(h[None], p, z[None], d[None])[0]
  return jax.vmap(one)(h_in, z, delta)


def layer_forward(h, p, phi: _act.Activation, *, residual: bool = False,
                  batchnorm_eps: Optional[float] = None, probe=None,
                  scale: Optional[RowScale] = None):
  """One dense layer: ``z = h @ W + b (+ probe)``, ``h_next = phi(z)`` (``+ h`` if residual).

  What the family base does for every layer (:meth:`jaxbp.core.base.Family.layer`),
  spelled out for one dense or batch-norm layer.

  Returns:
    ``(h_next, z)``.
  """
  kind = DenseKind() if batchnorm_eps is None else BatchNormKind(batchnorm_eps)
  z = kind.forward(h, p, scale=scale)
  if probe is not None:
    z = z + probe
  a = phi.fn(z)
  return (h + a if residual else a), z
