"""Transformers on the family base (:mod:`jaxbp.core.base`): a plan of blocks.

Inputs ``x`` ``(batch, T, d_model)``, real; with ``vocab``, token ids ``(batch,
T)``. With ``alpha = residual_scale`` and ``beta = skip_scale``, each block
applies attention, then the FFN ``phi(x W1 + b1) W2 + b2``, each as a residual
sublayer ``f``::

    norm="pre":   h <- beta h + alpha f(LN(h))          (a final LN after the last block)
    norm="post":  h <- LN(beta h + alpha f(h))
    norm="none":  h <- beta h + alpha f(h)

The plan: the embedding (with vocab), one group per block (one stacked group
with ``stack``), the final LN (pre), the readout (with vocab). The kinds and
the hand-derived backward, written out with indices, are in
:mod:`jaxbp.core.transformer_kinds` (blocks, embedding, readout) and
:mod:`jaxbp.core.attention` (attention, LayerNorm).
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp.core.activations as _act
import jaxbp.core.checks as _checks
from jaxbp.core import backprop as _backprop
from jaxbp.core.attention import (Attention, LayerNorm, LayerNormKind,  # noqa: F401
                                  default_qk_scale)
from jaxbp.core.base import Family, Group
from jaxbp.core.layers import Dense  # noqa: F401
from jaxbp.core.transformer_kinds import (Block, BlockKind, EmbedKind, Embedding,  # noqa: F401
                                          OutputKind, Projections, TokenReadout)

NORMS = ("pre", "post", "none")


@dataclasses.dataclass(frozen=True)
class Transformer(Family):
  """A transformer spec (the module docstring): hashable, a static jit argument.

  Args:
    d_model, heads, depth, d_ff: widths, heads (``d_model % heads == 0``), blocks,
      the FFN's hidden width.
    norm: ``"pre"``, ``"post"`` or ``"none"`` (where each LayerNorm sits).
    activation: the FFN's ``phi`` (an elementwise name or ``Activation``).
    causal: mask token ``j > i`` out of token i's attention.
    residual_scale: ``alpha``, on the sublayer's output; skip_scale: ``beta``, on
      the skip (0: pure attention/FFN stacks).
    qk_scale: the logits' factor, default ``1 / sqrt(d_model / heads)``; 0 makes
      attention the uniform mean over the visible tokens.
    vocab: None (real inputs ``(batch, T, d_model)``), or the number of tokens:
      inputs are ids ``(batch, T)``, embedded first and read out to
      ``(batch, T, vocab)`` logits last. Needs ``max_len``.
    max_len: the longest sequence (the positions' rows with ``vocab``).
    stack: the blocks as one :class:`Block` with a leading depth axis, run under
      ``lax.scan``; remat: checkpoint every block (True) or k blocks (an int k).

  Params: a tuple, ``(Embedding,)`` with vocab, then one :class:`Block` per block
  (one stacked Block with ``stack``), then the final :class:`LayerNorm` with
  ``norm="pre"``, then the readout ``Dense(W (d_model, vocab), b)`` with vocab.

  ``backprop.deltas`` gives dL/dz per params entry: the embedding's output, each
  block's output ``(batch, T, d_model)`` (``(depth, ...)`` stacked), the final
  LN's output, the logits. A block is one layer of the base, whose contract is
  one ``z`` per layer, so these are all it can give. dL/dz at the projections
  inside every block (q, k, v, the attention output ``o Wo + bo``, the FFN's
  ``x W1 + b1`` and ``phi(u) W2 + b2``): :func:`projection_deltas`.

  >>> net = Transformer(d_model=8, heads=2, depth=2, d_ff=16)
  >>> params = net.init(jax.random.PRNGKey(0))
  >>> net.apply(params, jnp.ones((3, 5, 8))).shape
  (3, 5, 8)
  """
  d_model: int
  heads: int
  depth: int
  d_ff: int
  norm: str = "pre"
  activation: Union[str, _act.Activation] = "relu"
  causal: bool = False
  residual_scale: float = 1.0
  skip_scale: float = 1.0
  qk_scale: Optional[float] = None
  vocab: Optional[int] = None
  max_len: Optional[int] = None
  stack: bool = False
  remat: Union[bool, int] = False
  # The base's output activation: every layer's z is its output (logits, with vocab).
  output_activation: str = dataclasses.field(default="identity", init=False, repr=False)

  def __post_init__(self):
    w = "Transformer"
    for name in ("d_model", "heads", "depth", "d_ff"):
      object.__setattr__(self, name, _checks.positive_int(getattr(self, name), name, w))
    if self.d_model % self.heads:
      raise ValueError(f"Transformer: d_model must be a multiple of heads (each head takes "
                       f"d_model / heads features), got d_model={self.d_model}, "
                       f"heads={self.heads}.")
    _checks.one_of(self.norm, NORMS, "norm", w)
    for name in ("causal", "stack"):
      object.__setattr__(self, name, _checks.boolean(getattr(self, name), name, w))
    for name in ("residual_scale", "skip_scale"):
      object.__setattr__(self, name, _checks.finite(getattr(self, name), name, w))
    if self.qk_scale is not None:
      object.__setattr__(self, "qk_scale", _checks.finite(self.qk_scale, "qk_scale", w, low=0.0))
    for name in ("vocab", "max_len"):
      if getattr(self, name) is not None:
        object.__setattr__(self, name, _checks.positive_int(getattr(self, name), name, w))
    if self.vocab is not None and self.max_len is None:
      raise ValueError("Transformer: vocab needs max_len, the number of learned positions "
                       "(the longest sequence), e.g. max_len=128.")
    self._check_family(w, (), "", "")

  @property
  def attention_scale(self) -> float:
    """``qk_scale``, or its default ``1 / sqrt(d_model / heads)``."""
    return default_qk_scale(self.d_model, self.heads) if self.qk_scale is None else self.qk_scale

  @property
  def block_kind(self) -> BlockKind:
    return BlockKind(self.heads, self.d_ff, self.norm, self.residual_scale, self.skip_scale,
                     self.attention_scale, self.causal, self.phi)

  @property
  def plan(self) -> Tuple[Group, ...]:
    d, out = self.d_model, []
    if self.vocab is not None:
      out.append(Group(EmbedKind(self.max_len), 1, self.vocab, d, hidden=False))
    block = Group(self.block_kind, self.depth if self.stack else 1, d, d, stacked=self.stack,
                  hidden=False)
    out += [block] * (1 if self.stack else self.depth)
    if self.norm == "pre":
      out.append(Group(LayerNormKind(), 1, d, d, hidden=False))
    if self.vocab is not None:
      out.append(Group(TokenReadout(), 1, d, self.vocab, hidden=False))
    if self._ends_stacked:
      out.append(Group(OutputKind(), 1, d, d, hidden=False))
    return tuple(out)

  @property
  def _ends_stacked(self) -> bool:
    return self.stack and self.norm != "pre" and self.vocab is None

  def split_params(self, params):
    return tuple(params) + ((None,) if self._ends_stacked else ())

  def join_params(self, entries):
    return tuple(entries)[:-1] if self._ends_stacked else tuple(entries)

  def delta_view(self, deltas):
    # The output layer's delta (OutputKind) repeats the last block's.
    return self.join_params(deltas)

  def unstack(self, params) -> tuple:
    return self.join_params(super().unstack(params))

  @property
  def block_groups(self) -> Tuple[int, ...]:
    """The params entries that are blocks."""
    return tuple(g for g, group in enumerate(self.plan) if isinstance(group.kind, BlockKind))

  def init(self, key, init="lecun", dtype=None):
    """:meth:`Family.init` with LeCun weights (``Var W = 1 / fan_in``) by default;
    LayerNorms start at scale 1, offset 0; the embedding's table and positions
    are N(0, 1/2) each, whatever ``init``."""
    return super().init(key, init, dtype)

  def zero_probes(self, x, dtype=None):
    # Token ids are integers; the probes take the params' float dtype.
    if dtype is None and not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
      dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    return super().zero_probes(x, dtype)

  def _params_form(self) -> str:
    parts = (["Embedding"] if self.vocab else []) + \
        [f"{1 if self.stack else self.depth} Block"] + \
        (["LayerNorm"] if self.norm == "pre" else []) + (["Dense"] if self.vocab else [])
    return f"a tuple of {len(self.plan) - self._ends_stacked} entries ({', '.join(parts)})"

  def check_input(self, x):
    """Validates ``x`` (``(batch, T, d_model)`` floats, or ``(batch, T)`` token ids)."""
    if self.vocab is None:
      x = self._floating_input(x)
      if x.ndim != 3 or x.shape[2] != self.d_model:
        raise ValueError(f"x has shape {x.shape}, expected (batch, T, {self.d_model}) for "
                         f"{self}: batch first, then tokens. One sequence needs x[None].")
    else:
      x = jnp.asarray(x)
      if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"x must be integer token ids for {self} (vocab={self.vocab}), got "
                        f"dtype {x.dtype}.")
      if x.ndim != 2:
        raise ValueError(f"x has shape {x.shape}, expected token ids (batch, T) for {self}. "
                         "One sequence needs x[None].")
    if x.shape[0] == 0 or x.shape[1] == 0:
      raise ValueError(f"x has shape {x.shape}: an empty batch or a sequence of no tokens.")
    if self.max_len is not None and x.shape[1] > self.max_len:
      raise ValueError(f"x has T={x.shape[1]} tokens, more than max_len={self.max_len} of "
                       f"{self}.")
    if self.vocab is not None and not isinstance(x, jax.core.Tracer):
      ids = np.asarray(x)          # concrete ids only: traced ones (under jit) cannot be read
      lo, hi = int(ids.min()), int(ids.max())
      if lo < 0 or hi >= self.vocab:
        raise ValueError(f"x holds token ids in [{lo}, {hi}], outside [0, {self.vocab - 1}] "
                         f"for vocab={self.vocab}.")
    return x

  def __str__(self):
    extras = "".join(f", {f}={getattr(self, f)!r}" for f, default in (
        ("causal", False), ("residual_scale", 1.0), ("skip_scale", 1.0), ("qk_scale", None),
        ("vocab", None), ("max_len", None), ("stack", False), ("remat", False))
        if getattr(self, f) != default)
    return (f"Transformer(d_model={self.d_model}, heads={self.heads}, depth={self.depth}, "
            f"d_ff={self.d_ff}, norm={self.norm!r}, activation={self.phi.name!r}{extras})")


def projection_deltas(net: Transformer, loss, params, x, y,
                      reduction: str = "mean") -> Tuple[Projections, ...]:
  """dL/dz at every projection of every block, by the hand backward: one
  :class:`Projections` per block, in order (a stacked net's too).

  Runs :func:`jaxbp.backprop.backward` (its deltas at the block outputs), then
  each block's backward once more from its input and that delta.
  """
  out = _backprop.backward(net, loss, params, x, y, reduction, param_grads=False)
  ins, entries, kind = net.layer_inputs(x, out.trace), net.split_params(params), net.block_kind
  parts = []
  for g in net.block_groups:
    if net.is_stacked(g):
      stacked = jax.vmap(lambda h, p, d: kind.parts_backward(h, p, d, False)[2])(
          ins[g], entries[g], out.deltas[g])
      parts += [jax.tree_util.tree_map(lambda a, l=l: a[l], stacked) for l in range(net.depth)]
    else:
      parts.append(kind.parts_backward(ins[g], entries[g], out.deltas[g], False)[2])
  return tuple(parts)
