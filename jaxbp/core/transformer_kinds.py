"""The transformer's layer kinds: a whole block, the embedding, the readout.

Inputs ``x`` ``(batch, T, d_model)``, real; with ``vocab``, token ids ``(batch,
T)``, embedded first (``h_0[i] = table[x_i] + positions[i]``) and read out last
(``logits = h_L @ W + b``, ``(batch, T, vocab)``). With ``alpha =
residual_scale``, ``beta = skip_scale`` and ``f`` each of the two sublayers in
turn (attention, :mod:`jaxbp.core.attention`, then the FFN ``phi(x W1 + b1) W2 +
b2``), a block computes::

    norm="pre":   h <- beta h + alpha f(LN(h))          (a final LN after the last block)
    norm="post":  h <- LN(beta h + alpha f(h))
    norm="none":  h <- beta h + alpha f(h)

**The backward of a sublayer** from ``dy = dL/dy`` (:meth:`BlockKind.parts_backward`),
with ``f``'s own backward giving ``dL/du`` of its input from ``dL/df``::

    pre:   dL/df = alpha dy;   dL/dh = beta dy + LN_back(f_back(dL/df))
    post:  dr = LN_back(dy);   dL/df = alpha dr;   dL/dh = beta dr + f_back(dL/df)
    none:  dL/df = alpha dy;   dL/dh = beta dy + f_back(dL/df)

and for the FFN, ``u = x W1 + b1``, ``dL/dv = dL/df`` at ``v = phi(u) W2 + b2``::

    dW2 = sum_i phi(u_i)^T dv_i   db2 = sum_i dv_i   du = (dv W2^T) * phi'(u)
    dW1 = sum_i x_i^T du_i        db1 = sum_i du_i   dL/dx = du W1^T

The attention's and LayerNorm's steps are in :mod:`jaxbp.core.attention`; the
embedding scatters its delta back to the rows of ``table`` that were read,
``dtable[t] = sum_{b, i: x[b, i] = t} delta[b, i]``, ``dpositions[i] = sum_b
delta[b, i]``. Every block runs as one layer of the base (:mod:`jaxbp.core.base`)
whose ``z`` is the block's output and whose activation is the identity, so
``backprop.deltas`` gives ``dL/dz`` at the block outputs (with the embedding,
the final LN and the logits). The projections inside a block are not layers of
the base: :func:`jaxbp.core.transformer.projection_deltas` gives ``dL/dz`` at each of them.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

import jaxbp.core.activations as _act
from jaxbp.core.attention import (Attention, AttentionKind, LayerNorm, LayerNormKind,
                                  attention, attention_backward, feature_bias, layer_norm,
                                  layer_norm_backward, rows)
from jaxbp.core.kinds import DenseKind, example_grads_by_vmap
from jaxbp.core.layers import Dense

class Block(NamedTuple):
  """One transformer block; ``ln1, ln2`` are None with ``norm="none"``.

  Attributes:
    ln1, ln2: the :class:`LayerNorm` before (pre) or after (post) each sublayer.
    attn: the :class:`Attention` projections.
    ffn1: ``Dense(W (d_model, d_ff), b (d_ff,))``; ffn2: ``Dense(W (d_ff, d_model), b)``.
  """
  ln1: Optional[LayerNorm]
  attn: Attention
  ln2: Optional[LayerNorm]
  ffn1: Dense
  ffn2: Dense


class Embedding(NamedTuple):
  """Token and learned position embeddings: ``table (vocab, d)``, ``positions (max_len, d)``."""
  table: jax.Array
  positions: jax.Array


class Projections(NamedTuple):
  """dL/dz at one block's projections, each ``(batch, T, width)``: ``q, k, v`` (``x W +
  b`` of the attention's input), ``attn`` (``o Wo + bo``, before ``alpha``), ``ffn1``
  (``u = x W1 + b1``, before ``phi``) and ``ffn2`` (``phi(u) W2 + b2``, before ``alpha``)."""
  q: jax.Array
  k: jax.Array
  v: jax.Array
  attn: jax.Array
  ffn1: jax.Array
  ffn2: jax.Array


def _no_scale(scale):
  if scale is not None:
    raise ValueError("backprop: a RowScale (scale=) is a dense-MLP option; a Transformer "
                     "takes none.")


@dataclasses.dataclass(frozen=True)
class BlockKind:
  """A whole block as one layer: ``z`` is its output (the module docstring).

  Its backward recomputes the block's forward from its input (the base keeps
  one ``z`` per layer), then runs the sublayers' steps top down.
  """
  heads: int
  d_ff: int
  norm: str
  alpha: float
  beta: float
  qk_scale: float
  causal: bool
  activation: _act.Activation
  params_type = Block

  def init(self, initializer, w_key, b_key, lead, fan_in, fan_out, dtype):
    ka, k1, k2 = jax.random.split(w_key, 3)
    ba, b1, b2 = jax.random.split(b_key, 3)
    dense = DenseKind()
    ln = None if self.norm == "none" else LayerNormKind().init(None, None, None, lead, fan_in,
                                                                fan_in, dtype)
    return Block(ln, AttentionKind(self.heads).init(initializer, ka, ba, lead, fan_in, fan_in,
                                                    dtype),
                 ln, dense.init(initializer, k1, b1, lead, fan_in, self.d_ff, dtype),
                 dense.init(initializer, k2, b2, lead, self.d_ff, fan_in, dtype))

  def check(self, p, lead, fan_in, fan_out):
    d = fan_in
    for name in ("ln1", "ln2"):
      ln = getattr(p, name)
      if (ln is None) != (self.norm == "none"):
        return (f"{name} is {'None' if ln is None else 'a LayerNorm'}, expected "
                f"{'None' if self.norm == 'none' else 'a LayerNorm'} for norm={self.norm!r}.")
      problem = None if ln is None else LayerNormKind().check(ln, lead, d, d)
      if problem:
        return f"{name}.{problem}"
    parts = (("attn", AttentionKind(self.heads), p.attn, d, d),
             ("ffn1", DenseKind(), p.ffn1, d, self.d_ff),
             ("ffn2", DenseKind(), p.ffn2, self.d_ff, d))
    for name, kind, q, fi, fo in parts:
      problem = kind.check(q, lead, fi, fo)
      if problem:
        return f"{name}.{problem}"
    return None

  # -- the two sublayers ---------------------------------------------------------

  def _attn(self, x, p):
    z, cache = attention(x, p, self.heads, self.qk_scale, self.causal)
    return z, (x, cache)

  def _attn_back(self, p, cache, dz, param_grads):
    x, c = cache
    grads, dx, qkv = attention_backward(x, p, c, dz, self.heads, self.qk_scale, param_grads)
    return grads, dx, qkv

  def _ffn(self, x, p):
    u = x @ p[0].W + feature_bias(p[0].b, x.ndim)
    g = self.activation.fn(u)
    return g @ p[1].W + feature_bias(p[1].b, x.ndim), (x, u, g)

  def _ffn_back(self, p, cache, dv, param_grads):
    x, u, g = cache
    du = (dv @ p[1].W.T) * self.activation.grad(u)
    grads = None
    if param_grads:
      grads = (Dense(rows(x).T @ rows(du), jnp.sum(rows(du), axis=0)),
               Dense(rows(g).T @ rows(dv), jnp.sum(rows(dv), axis=0)))
    return grads, du @ p[0].W.T, du

  def _sublayer(self, h, ln, f, p):
    """``y`` and its cache for one residual sublayer under this block's norm."""
    if self.norm == "pre":
      n, c_ln = layer_norm(h, ln)
      out, c_f = f(n, p)
      return self.beta * h + self.alpha * out, (c_ln, c_f)
    out, c_f = f(h, p)
    r = self.beta * h + self.alpha * out
    if self.norm == "post":
      y, c_ln = layer_norm(r, ln)
      return y, (c_ln, c_f)
    return r, (None, c_f)

  def _sublayer_back(self, ln, f_back, p, cache, dy, param_grads):
    """``(ln grads, f's grads, f's extra deltas, dL/df, dL/dh)`` from ``dy``."""
    c_ln, c_f = cache
    d_ln = None
    if self.norm == "post":
      d_ln, dy = layer_norm_backward(ln, c_ln, dy, param_grads)
    df = self.alpha * dy
    grads, dx, extra = f_back(p, c_f, df, param_grads)
    if self.norm == "pre":
      d_ln, dx = layer_norm_backward(ln, c_ln, dx, param_grads)
    return d_ln, grads, extra, df, self.beta * dy + dx

  # -- the kind's protocol -------------------------------------------------------

  def run(self, h, p):
    """``(z, caches)``: the block's output and every sublayer's cache."""
    h1, c1 = self._sublayer(h, p.ln1, self._attn, p.attn)
    h2, c2 = self._sublayer(h1, p.ln2, self._ffn, (p.ffn1, p.ffn2))
    return h2, (c1, c2)

  def forward(self, h, p, *, scale=None):
    _no_scale(scale)
    return self.run(h, p)[0]

  def parts_backward(self, h_in, p, delta, param_grads=True):
    """``(grads, dL/dh_in, Projections)`` from ``delta = dL/dz`` at the block's output."""
    c1, c2 = self.run(h_in, p)[1]
    ln2, ffn, du, dv, dh1 = self._sublayer_back(p.ln2, self._ffn_back, (p.ffn1, p.ffn2), c2,
                                                delta, param_grads)
    ln1, attn, qkv, do, dh = self._sublayer_back(p.ln1, self._attn_back, p.attn, c1, dh1,
                                                 param_grads)
    grads = Block(ln1, attn, ln2, *ffn) if param_grads else None
    return grads, dh, Projections(*qkv, do, du, dv)

  def backward(self, h_in, p, z, delta, *, scale=None, param_grads=True):
    _no_scale(scale)
    grads, dh, _ = self.parts_backward(h_in, p, delta, param_grads)
    return grads, dh

  def example_grads(self, h_in, p, z, delta):
    return example_grads_by_vmap(self, h_in, p, z, delta)


@dataclasses.dataclass(frozen=True)
class EmbedKind:
  """``z[b, i] = table[x[b, i]] + positions[i]`` for token ids ``x`` ``(batch, T)``.

  Entries are drawn N(0, 1/2) each, so ``h_0`` has unit second moment per feature.
  """
  max_len: int
  params_type = Embedding

  def init(self, initializer, w_key, b_key, lead, fan_in, fan_out, dtype):
    return Embedding(math.sqrt(0.5) * jax.random.normal(w_key, (fan_in, fan_out), dtype),
                     math.sqrt(0.5) * jax.random.normal(b_key, (self.max_len, fan_out), dtype))

  def check(self, p, lead, fan_in, fan_out):
    for name, want in (("table", (fan_in, fan_out)), ("positions", (self.max_len, fan_out))):
      if jnp.shape(getattr(p, name)) != want:
        return f"{name} has shape {jnp.shape(getattr(p, name))}, expected {want}."
    return None

  def forward(self, x, p, *, scale=None):
    _no_scale(scale)
    return p.table[x] + p.positions[None, :x.shape[1]]

  def backward(self, x, p, z, delta, *, scale=None, param_grads=True):
    _no_scale(scale)
    grads = None
    if param_grads:
      T = x.shape[1]
      grads = Embedding(jnp.zeros_like(p.table).at[x.reshape(-1)].add(rows(delta)),
                        jnp.zeros_like(p.positions).at[:T].set(jnp.sum(delta, axis=0)))
    return grads, None          # token ids have no gradient

  def example_grads(self, x, p, z, delta):
    return example_grads_by_vmap(self, x, p, z, delta)


@dataclasses.dataclass(frozen=True)
class TokenReadout(DenseKind):
  """``logits[b, i] = h[b, i] @ W + b`` at every token: ``(batch, T, d) -> (batch, T, vocab)``."""

  def forward(self, h, p, *, scale=None):
    _no_scale(scale)
    return h @ p.W + feature_bias(p.b, h.ndim)

  def backward(self, h, p, z, delta, *, scale=None, param_grads=True):
    _no_scale(scale)
    grads = Dense(rows(h).T @ rows(delta), jnp.sum(rows(delta), axis=0)) if param_grads else None
    return grads, delta @ p.W.T

  def example_grads(self, h, p, z, delta):
    return Dense(jnp.einsum("bti,bto->bio", h, delta), jnp.sum(delta, axis=1))


@dataclasses.dataclass(frozen=True)
class OutputKind:
  """``z = h``, no params: the net's output as a layer of its own.

  The base reads the output and the loss's delta off the last group's ``z`` and
  ``h``, unstacked; a net that would end on its stacked blocks (``stack=True``,
  ``norm`` "post" or "none", no vocab) ends on this instead. Its params entry is
  None, and :meth:`Transformer.split_params` supplies it.
  """
  params_type = type(None)

  def init(self, initializer, w_key, b_key, lead, fan_in, fan_out, dtype):
    return None

  def check(self, p, lead, fan_in, fan_out):
    return None

  def forward(self, h, p, *, scale=None):
    _no_scale(scale)
    return h

  def backward(self, h_in, p, z, delta, *, scale=None, param_grads=True):
    return None, delta

  def example_grads(self, h_in, p, z, delta):
    return None
