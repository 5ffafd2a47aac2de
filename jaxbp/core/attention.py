"""Softmax attention and layer normalisation: the kinds and their hand-derived backward.

Notation: one example (the batch axis runs alongside every line, and the
parameter gradients sum over it), tokens ``i, j = 1 .. T``, model features ``a,
c = 1 .. d``, heads ``h = 1 .. H`` of width ``dh = d / H``, head features ``e =
1 .. dh``. Head h owns columns ``h dh .. (h + 1) dh - 1`` of ``Wq, Wk, Wv`` and
the same rows of ``Wo``; ``[h, e]`` below is column (or row) ``h dh + e``.

**Attention** (:func:`attention`), ``c_s = qk_scale`` (default ``1 / sqrt(dh)``)::

    q[i, h, e] = sum_a x[i, a] Wq[a, (h, e)] + bq[(h, e)]          (k, v: Wk, Wv likewise)
    S[h, i, j] = c_s sum_e q[i, h, e] k[j, h, e]        (-inf where j > i when causal)
    P[h, i, j] = exp(S[h, i, j]) / sum_j' exp(S[h, i, j'])
    o[i, h, e] = sum_j P[h, i, j] v[j, h, e]
    z[i, c]    = sum_{h, e} o[i, h, e] Wo[(h, e), c] + bo[c]

**Its backward** from ``delta[i, c] = dL/dz[i, c]`` (:func:`attention_backward`)::

    dWo[(h, e), c] = sum_i o[i, h, e] delta[i, c]        dbo[c] = sum_i delta[i, c]
    do[i, h, e]    = sum_c delta[i, c] Wo[(h, e), c]
    dv[j, h, e]    = sum_i P[h, i, j] do[i, h, e]                       (dV = P^T dO)
    dP[h, i, j]    = sum_e do[i, h, e] v[j, h, e]                       (dP = dO V^T)
    dS[h, i, j]    = P[h, i, j] (dP[h, i, j] - sum_j' P[h, i, j'] dP[h, i, j'])
    dq[i, h, e]    = c_s sum_j dS[h, i, j] k[j, h, e]                   (dQ = c_s dS K)
    dk[j, h, e]    = c_s sum_i dS[h, i, j] q[i, h, e]                   (dK = c_s dS^T Q)
    dWq[a, (h, e)] = sum_i x[i, a] dq[i, h, e]           dbq = sum_i dq  (k, v likewise)
    dx[i, a]       = sum_{h, e} (dq[i, h, e] Wq[a, (h, e)] + dk[i, h, e] Wk[a, (h, e)]
                                 + dv[i, h, e] Wv[a, (h, e)])

``dS`` is the row softmax's Jacobian, ``dP[i, j'] / dS[i, j] = P[i, j'] (1[j = j']
- P[i, j])``, applied to ``dP`` row by row. The causal mask is a constant: a
masked entry has ``P = 0``, hence ``dS = 0``, so no gradient reaches ``q_i`` or
``k_j`` through it (the diagonal is never masked, so every row's sum is
positive). The ``dq``/``dk`` terms carry ``c_s``; with ``qk_scale = 0`` the
attention is the uniform mean over the visible tokens and ``dq = dk = 0``.
``dbk`` is zero for every input: ``bk`` adds ``c_s q_i . bk`` to every logit of
row i, which a softmax ignores (``sum_j dS[h, i, j] = 0``); the parameter stays
because the layout is relied on, and its computed gradient is round-off.

**LayerNorm** (:func:`layer_norm`), per token over its features, ``eps = 1e-5``::

    mu = (1/d) sum_a x[a]     s = sqrt((1/d) sum_a (x[a] - mu)^2 + eps)
    xh[a] = (x[a] - mu) / s   y[a] = scale[a] xh[a] + offset[a]

**Its backward**, ``g[a] = dL/dy[a] scale[a]`` (:func:`layer_norm_backward`)::

    dx[a]      = (g[a] - (1/d) sum_c g[c] - xh[a] (1/d) sum_c g[c] xh[c]) / s
    dscale[a]  = sum_i dL/dy[i, a] xh[i, a]      doffset[a] = sum_i dL/dy[i, a]

the two sums being the paths through ``mu`` and ``s`` (batch norm's formula,
:func:`jaxbp.core.kinds.batch_norm_backward`, with the feature axis in place of
the batch). Both act on every token of every example alone: per-example
gradients exist.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxbp.core.kinds import example_grads_by_vmap

EPS = 1e-5


class LayerNorm(NamedTuple):
  """``y = scale * (x - mean) / sqrt(var + eps) + offset`` over the feature axis.

  Attributes:
    scale: ``(d,)`` (``(L, d)`` stacked), starts at 1.
    offset: ``(d,)``, starts at 0.
  """
  scale: jax.Array
  offset: jax.Array


class Attention(NamedTuple):
  """Multi-head softmax attention's projections, every ``W`` ``(d, d)`` and ``b`` ``(d,)``.

  Head h uses columns ``h dh:(h + 1) dh`` of ``Wq, Wk, Wv`` (and of ``bq, bk, bv``)
  and rows ``h dh:(h + 1) dh`` of ``Wo``, ``dh = d // heads``.
  """
  Wq: jax.Array
  Wk: jax.Array
  Wv: jax.Array
  Wo: jax.Array
  bq: jax.Array
  bk: jax.Array
  bv: jax.Array
  bo: jax.Array


def feature_bias(b, ndim: int):
  """A ``(n,)`` vector shaped to add to a ``(..., n)`` array of rank ``ndim``
  (the tests run with strict rank promotion)."""
  return b.reshape((1,) * (ndim - 1) + b.shape)


def rows(u):
  """``(..., n) -> (rows, n)``: every token of every example as one row."""
  return u.reshape(-1, u.shape[-1])


# -- layer normalisation ----------------------------------------------------------


def layer_norm(x, p: LayerNorm, eps: float = EPS):
  """``(y, (xh, 1/s))``: the normalised tokens and what the backward needs."""
  centred = x - jnp.mean(x, axis=-1, keepdims=True)
  inv_s = jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + eps)
  xh = centred * inv_s
  return feature_bias(p.scale, x.ndim) * xh + feature_bias(p.offset, x.ndim), (xh, inv_s)


def layer_norm_backward(p: LayerNorm, cache, dy, param_grads: bool = True):
  """``(grads, dL/dx)`` from ``dy = dL/dy`` (the module docstring's formulas)."""
  xh, inv_s = cache
  g = dy * feature_bias(p.scale, dy.ndim)
  dx = (g - jnp.mean(g, axis=-1, keepdims=True)
        - xh * jnp.mean(g * xh, axis=-1, keepdims=True)) * inv_s
  grads = LayerNorm(jnp.sum(rows(dy * xh), axis=0), jnp.sum(rows(dy), axis=0)) \
      if param_grads else None
  return grads, dx


# -- attention -----------------------------------------------------------------------


def split_heads(u, heads: int):
  """``(..., T, d) -> (..., T, H, dh)``: head h is features ``h dh:(h + 1) dh``."""
  return u.reshape(u.shape[:-1] + (heads, u.shape[-1] // heads))


def merge_heads(u):
  """``(..., T, H, dh) -> (..., T, d)``, the inverse of :func:`split_heads`."""
  return u.reshape(u.shape[:-2] + (u.shape[-2] * u.shape[-1],))


def default_qk_scale(d_model: int, heads: int) -> float:
  """``1 / sqrt(dh)``, ``dh = d_model / heads``."""
  return 1.0 / math.sqrt(d_model // heads)


def softmax_rows(s):
  """The softmax over the last axis; ``-inf`` entries get exactly 0."""
  e = jnp.exp(s - jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True)))
  return e / jnp.sum(e, axis=-1, keepdims=True)


def attention(x, p: Attention, heads: int, qk_scale: Optional[float] = None,
              causal: bool = False):
  """``(z, cache)``: multi-head attention of ``x`` ``(..., T, d)``; ``z`` ``(..., T, d)``.

  ``cache = (q, k, v, P, o)``, the projections ``(..., T, d)``, the attention
  ``(..., H, T, T)`` and the heads' outputs ``(..., T, d)``.
  """
  n, d, T = x.ndim, x.shape[-1], x.shape[-2]
  c_s = default_qk_scale(d, heads) if qk_scale is None else qk_scale
  q, k, v = (x @ W + feature_bias(b, n) for W, b in ((p.Wq, p.bq), (p.Wk, p.bk), (p.Wv, p.bv)))
  s = c_s * jnp.einsum("...ihe,...jhe->...hij", split_heads(q, heads), split_heads(k, heads))
  if causal:
    mask = jnp.tril(jnp.ones((T, T), bool)).reshape((1,) * (s.ndim - 2) + (T, T))
    s = jnp.where(mask, s, -jnp.inf)
  P = softmax_rows(s)
  o = merge_heads(jnp.einsum("...hij,...jhe->...ihe", P, split_heads(v, heads)))
  return o @ p.Wo + feature_bias(p.bo, n), (q, k, v, P, o)


def attention_backward(x, p: Attention, cache, delta, heads: int,
                       qk_scale: Optional[float] = None, param_grads: bool = True):
  """``(grads, dL/dx, (dq, dk, dv))`` from ``delta = dL/dz`` (the module docstring's
  formulas); ``dq, dk, dv`` are dL/d of the projections ``q, k, v``, ``(..., T, d)``."""
  q, k, v, P, o = cache
  c_s = default_qk_scale(x.shape[-1], heads) if qk_scale is None else qk_scale
  do = split_heads(delta @ p.Wo.T, heads)
  dv = merge_heads(jnp.einsum("...hij,...ihe->...jhe", P, do))
  dP = jnp.einsum("...ihe,...jhe->...hij", do, split_heads(v, heads))
  dS = P * (dP - jnp.sum(dP * P, axis=-1, keepdims=True))
  dq = c_s * merge_heads(jnp.einsum("...hij,...jhe->...ihe", dS, split_heads(k, heads)))
  dk = c_s * merge_heads(jnp.einsum("...hij,...ihe->...jhe", dS, split_heads(q, heads)))
  dx = dq @ p.Wq.T + dk @ p.Wk.T + dv @ p.Wv.T
  grads = None
  if param_grads:
    xr = rows(x)
    grads = Attention(xr.T @ rows(dq), xr.T @ rows(dk), xr.T @ rows(dv), rows(o).T @ rows(delta),
                      *(jnp.sum(rows(u), axis=0) for u in (dq, dk, dv, delta)))
  return grads, dx, (dq, dk, dv)


def _no_scale(scale, what: str):
  if scale is not None:
    raise ValueError(f"{what}: a RowScale (scale=) is a dense-layer option; attention and "
                     "layer norm take none.")


def _shape_problems(p, lead, shapes) -> Optional[str]:
  for name, want in shapes:
    got = jnp.shape(getattr(p, name))
    if got != lead + want:
      return f"{name} has shape {got}, expected {lead + want}."
  return None


@dataclasses.dataclass(frozen=True)
class LayerNormKind:
  """``z = LN(h)`` on ``(..., d)`` tokens (a family's final norm); ``fan_in = fan_out = d``."""
  eps: float = EPS
  params_type = LayerNorm

  def init(self, initializer, w_key, b_key, lead, fan_in, fan_out, dtype):
    return LayerNorm(jnp.ones(lead + (fan_out,), dtype), jnp.zeros(lead + (fan_out,), dtype))

  def check(self, p, lead, fan_in, fan_out):
    return _shape_problems(p, lead, (("scale", (fan_out,)), ("offset", (fan_out,))))

  def forward(self, h, p, *, scale=None):
    _no_scale(scale, "LayerNorm")
    return layer_norm(h, p, self.eps)[0]

  def backward(self, h_in, p, z, delta, *, scale=None, param_grads=True):
    _no_scale(scale, "LayerNorm")
    return layer_norm_backward(p, layer_norm(h_in, p, self.eps)[1], delta, param_grads)

  def example_grads(self, h_in, p, z, delta):
    return example_grads_by_vmap(self, h_in, p, z, delta)


@dataclasses.dataclass(frozen=True)
class AttentionKind:
  """``z = attention(h)`` on ``(..., T, d)`` (:func:`attention`); ``fan_in = fan_out = d``.

  The backward recomputes ``q, k, v, P`` from ``h`` (the base caches only ``z``).
  """
  heads: int
  qk_scale: Optional[float] = None
  causal: bool = False
  params_type = Attention

  def init(self, initializer, w_key, b_key, lead, fan_in, fan_out, dtype):
    wk, bk = jax.random.split(w_key, 4), jax.random.split(b_key, 4)
    return Attention(*(initializer.weight(k, lead + (fan_in, fan_out), dtype) for k in wk),
                     *(initializer.bias(k, lead + (fan_out,), dtype) for k in bk))

  def check(self, p, lead, fan_in, fan_out):
    d = fan_out
    return _shape_problems(p, lead, [(w, (d, d)) for w in ("Wq", "Wk", "Wv", "Wo")]
                           + [(b, (d,)) for b in ("bq", "bk", "bv", "bo")])

  def forward(self, h, p, *, scale=None):
    _no_scale(scale, "Attention")
    return attention(h, p, self.heads, self.qk_scale, self.causal)[0]

  def backward(self, h_in, p, z, delta, *, scale=None, param_grads=True):
    _no_scale(scale, "Attention")
    cache = attention(h_in, p, self.heads, self.qk_scale, self.causal)[1]
    grads, dx, _ = attention_backward(h_in, p, cache, delta, self.heads, self.qk_scale,
                                      param_grads)
    return grads, dx

  def example_grads(self, h_in, p, z, delta):
    return example_grads_by_vmap(self, h_in, p, z, delta)
