"""Attention statistics: rank collapse, entropy collapse, the spectral gap, and
the query/key against value/output gradient norms.

The statistics are pure functions of arrays, jittable and vmappable, so they
apply to any model that exposes its hidden states or attention probabilities:

- :func:`token_cosine`: the mean cosine between distinct tokens of a hidden
  state ``(..., T, d)``; 1 when the tokens have collapsed to one direction
  (rank collapse, Dong et al. 2021; Noci et al. 2022).
- :func:`attention_entropy`: the mean row entropy of attention probabilities
  ``(..., H, T, T)`` per head, in nats; near 0 when every query attends to one
  key (entropy collapse, Giorlandino & Goldt 2025).
- :func:`top_singular_values`: the two largest singular values of every head's
  ``T x T`` attention matrix; their gap drives rank collapse in width (Naderi et
  al. 2024).
- :func:`attention_grad_norms` (a :class:`jaxbp.Transformer`'s grads) and
  :func:`grad_norms` (any grads pytree, leaves picked by path patterns): the
  gradient norms of ``Wq, Wk`` against ``Wv, Wo`` per block, whose ratio falls
  as the tokens collapse (Noci et al. 2022).

Two ways to get the arrays: :func:`transformer_states` re-runs a
:class:`jaxbp.Transformer`'s blocks and returns every block's output and
attention probabilities; :func:`tapped` runs any function and returns the
values it marked with :func:`jaxbp.tap` (the jaxpr interpreter that
:func:`jaxbp.inspect` uses, with nothing probed).
"""
from __future__ import annotations

import functools
import re
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp.measure.probe_run as probe_run
import jaxbp.measure.probing as probing
from jaxbp.core.attention import Attention
from jaxbp.core.transformer_kinds import Block, BlockKind
from jaxbp.measure.inspect import path_str
from jaxbp.measure.sites import Flag, Site

# -- statistics of arrays -------------------------------------------------------------


def _square_last(P, where: str):
  P = jnp.asarray(P)
  if P.ndim < 2 or P.shape[-1] != P.shape[-2]:
    raise ValueError(f"{where}: P must be attention probabilities (..., T, T) (e.g. (batch, "
                     f"heads, T, T)), square in its last two axes; got shape {P.shape}.")
  if not jnp.issubdtype(P.dtype, jnp.inexact):
    raise TypeError(f"{where}: P must be floating point, got {P.dtype}.")
  return P


# The statistics are jitted: called eagerly, each is one compiled program rather than
# a dozen op-by-op dispatches; under an outer jit they inline.
@jax.jit
def token_cosine(h) -> jax.Array:
  """The mean cosine similarity between distinct tokens: ``(..., T, d) -> (...)``.

  ``rho = 1/(T (T - 1)) sum_{i != j} <h_i, h_j> / (|h_i| |h_j|)``. A batch
  ``(batch, T, d)`` gives one value per sequence, a stack of per-block states
  ``(depth, batch, T, d)`` one per block and sequence (``.mean(-1)`` per block).
  A token that is exactly zero has no direction; it counts as orthogonal to
  every other (cosine 0).

  Computed as ``(|sum_i u_i|^2 - sum_i |u_i|^2) / (T (T - 1))`` on the unit
  tokens ``u_i``: O(T d), no ``T x T`` Gram matrix.
  """
  h = jnp.asarray(h)
  if h.ndim < 2 or h.shape[-2] < 2:
    raise ValueError(f"token_cosine: h must be hidden states (..., T, d) with T >= 2 tokens "
                     f"(a cosine needs two), got shape {h.shape}.")
  if not jnp.issubdtype(h.dtype, jnp.inexact):
    raise TypeError(f"token_cosine: h must be floating point, got {h.dtype}.")
  T = h.shape[-2]
  norm = jnp.sqrt(jnp.sum(jnp.square(h), axis=-1, keepdims=True))
  # A zero token divides by 1 instead of 0 and stays the zero vector.
  u = h / jnp.where(norm > 0, norm, jnp.ones((), h.dtype))
  total = jnp.sum(jnp.square(jnp.sum(u, axis=-2)), axis=-1)
  own = jnp.sum(jnp.square(u), axis=(-2, -1))
  return (total - own) / (T * (T - 1))


@jax.jit
def attention_entropy(P) -> jax.Array:
  """The mean row entropy of attention probabilities, in nats: ``(..., T, T) -> (...)``.

  ``H = (1/T) sum_i -sum_j P[i, j] log P[i, j]``, so ``(batch, heads, T, T)``
  gives ``(batch, heads)``. Entries that are exactly 0 (a causal mask's) add 0
  (``0 log 0 = 0``), and so does their gradient. Uniform attention over all T
  tokens gives ``log T``; a causal mask's row i at most ``log(i + 1)``; 0 means
  every query attends to one key.
  """
  P = _square_last(P, "attention_entropy")
  positive = P > 0
  plogp = jnp.where(positive, P * jnp.log(jnp.where(positive, P, jnp.ones((), P.dtype))), 0)
  return -jnp.mean(jnp.sum(plogp, axis=-1), axis=-1)


@functools.partial(jax.jit, static_argnames="k")
def top_singular_values(P, k: int = 2) -> jax.Array:
  """The ``k`` largest singular values of every ``T x T`` matrix, largest first:
  ``(..., T, T) -> (..., k)``.

  On attention probabilities ``(batch, heads, T, T)``, ``s[..., 0] - s[..., 1]``
  is the spectral gap (Naderi et al. 2024). A row-stochastic matrix has ``s_0 >=
  1``; uniform attention ``P = 1/T`` is rank one (``s_0 = 1``, ``s_1 = 0``).
  """
  P = _square_last(P, "top_singular_values")
  if not (isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= P.shape[-1]):
    raise ValueError(f"top_singular_values: k must be an int in [1, T={P.shape[-1]}], "
                     f"got {k!r}.")
  return jnp.linalg.svd(P, compute_uv=False)[..., :k]


# -- gradient norms ---------------------------------------------------------------------


class AttentionGradNorms(NamedTuple):
  """Frobenius norms of the gradients of each block's projections, ``(depth,)`` each."""
  Wq: jax.Array
  Wk: jax.Array
  Wv: jax.Array
  Wo: jax.Array


def _frobenius(a, lead: int):
  return jnp.sqrt(jnp.sum(jnp.square(a), axis=tuple(range(lead, a.ndim))))


@jax.jit
def attention_grad_norms(grads) -> AttentionGradNorms:
  """``|dL/dWq|, |dL/dWk|, |dL/dWv|, |dL/dWo|`` per block of a :class:`jaxbp.Transformer`.

  Args:
    grads: shaped like the Transformer's params (a tuple holding one
      :class:`Block` per block, or one stacked Block whose leaves carry a
      leading depth axis; with the embedding, final LayerNorm and readout
      entries, which are skipped), e.g. from ``jax.grad`` or ``backprop``.

  Returns ``AttentionGradNorms`` of ``(depth,)`` arrays, blocks in order.
  """
  blocks = [b for b in (grads if isinstance(grads, (tuple, list)) else ())
            if isinstance(b, Block) and isinstance(b.attn, Attention)]
  if not blocks:
    raise ValueError("attention_grad_norms: grads must be shaped like a jaxbp.Transformer's "
                     "params, a tuple holding Block(ln1, attn=Attention(...), ln2, ffn1, ffn2) "
                     f"entries; got {type(grads).__name__} with no Block. For another model "
                     "use grad_norms(grads, patterns).")
  out = {}
  for name in AttentionGradNorms._fields:
    parts = []
    for b in blocks:
      w = jnp.asarray(getattr(b.attn, name))
      if w.ndim not in (2, 3):
        raise ValueError(f"attention_grad_norms: attn.{name} has shape {w.shape}, expected "
                         "(d, d) per block or (depth, d, d) stacked.")
      parts.append(_frobenius(w, w.ndim - 2).reshape(-1))
    out[name] = jnp.concatenate(parts)
  return AttentionGradNorms(**out)


def grad_norms(grads, patterns: Mapping[str, str], stacked: bool = False) -> dict:
  """Gradient norms of any model's leaves, grouped by path patterns.

  Args:
    grads: any pytree (flax variables, an equinox module, a dict).
    patterns: ``{name: regex}``; a leaf belongs to ``name`` when ``re.search``
      finds the regex in its path, written as :func:`jaxbp.inspect` names it
      (``params/block0/attn/query/kernel``, ``blocks/1/attn/key_proj/weight``).
    stacked: the matched leaves carry a leading layer axis (a scanned model):
      one norm per slice instead of one per leaf.

  Returns:
    ``{name: (n,)}``: the Frobenius norm of every matched leaf (or slice), in
    the pytree's leaf order, which for the usual layouts is block order.

  Raises ValueError when a pattern matches no leaf, listing the paths there are.

  >>> grad_norms(grads, {"Wq": r"query/kernel", "Wv": r"value/kernel"})  # doctest: +SKIP
  """
  if not isinstance(patterns, Mapping) or not patterns:
    raise ValueError(f"grad_norms: patterns must be a non-empty dict {{name: regex}}, got "
                     f"{patterns!r}.")
  leaves = [(path_str(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(grads)[0]
            if isinstance(leaf, (jax.Array, np.ndarray))]
  out = {}
  for name, pattern in patterns.items():
    regex = re.compile(pattern)
    hits = [jnp.asarray(leaf) for path, leaf in leaves if regex.search(path)]
    if not hits:
      shown = ", ".join(path for path, _ in leaves[:12]) + (" ..." if len(leaves) > 12 else "")
      raise ValueError(f"grad_norms: pattern {name}={pattern!r} matches no array leaf of "
                       f"grads; its paths: {shown or 'none'}.")
    if stacked and any(a.ndim < 1 for a in hits):
      raise ValueError(f"grad_norms: stacked=True needs a leading layer axis, but pattern "
                       f"{name}={pattern!r} matches a scalar leaf.")
    out[name] = jnp.concatenate([_frobenius(a, 1 if stacked else 0).reshape(-1) for a in hits])
  return out


# -- where the arrays come from ---------------------------------------------------------


class TransformerStates(NamedTuple):
  """A :class:`jaxbp.Transformer`'s hidden states and attention, from :func:`transformer_states`.

  Attributes:
    h: ``(depth + 1, batch, T, d_model)``: the first block's input (``x``, or the
      embedding's output with vocab), then every block's output.
    P: ``(depth, batch, heads, T, T)``: every block's attention probabilities.
  """
  h: jax.Array
  P: jax.Array


def _attention_P(kind: BlockKind, h, p):
  # BlockKind.run's caches: per sublayer (LN cache, f's cache); the attention's
  # is (its input, (q, k, v, P, o)) as jaxbp.core.attention.attention returns it.
  out, (c_attn, _) = kind.run(h, p)
  return out, c_attn[1][1][3]


def transformer_states(net, params, x) -> TransformerStates:
  """Every block's output and attention probabilities, by re-running the blocks.

  Works for every norm, causal or not, stacked or not, with or without vocab.
  ``token_cosine(states.h)`` is then ``(depth + 1, batch)``,
  ``attention_entropy(states.P)`` ``(depth, batch, heads)``.
  """
  if not hasattr(net, "block_groups") or not isinstance(getattr(net, "block_kind", None),
                                                         BlockKind):
    raise TypeError(f"transformer_states: net must be a jaxbp.Transformer, got "
                    f"{type(net).__name__}. For another model, mark its states with "
                    "jaxbp.tap and read them with tapped().")
  trace = net.trace(params, x)
  ins, entries, kind = net.layer_inputs(x, trace), net.split_params(params), net.block_kind
  hs, Ps = [], []
  for g in net.block_groups:
    if net.is_stacked(g):
      out, P = jax.vmap(lambda h, p: _attention_P(kind, h, p))(ins[g], entries[g])
    else:
      out, P = (a[None] for a in _attention_P(kind, ins[g], entries[g]))
    if not hs:
      hs.append(ins[g][:1] if net.is_stacked(g) else ins[g][None])
    hs.append(out)
    Ps.append(P)
  return TransformerStates(jnp.concatenate(hs), jnp.concatenate(Ps))


def _collect(plan, zs, out: dict):
  # The tap sites' values in execution order; a scan's come with its leading
  # iteration axis (in iteration order), a cond branch's as run (zero if not taken).
  for item, v in zip(plan.items, zs):
    if isinstance(item, Site):
      if item.kind == "tap":
        out.setdefault(item.path, []).append(v["z"])
    elif item.mode == "cond":
      for p, u in zip(item.branches, v):
        _collect(p, u, out)
    elif item.mode == "scan":
      inner: dict = {}
      _collect(item.plan, v, inner)
      for name, values in inner.items():
        for a in values:
          out.setdefault(name, []).append(a[::-1] if item.reverse else a)
    else:
      _collect(item.plan, v, out)


def tapped(fn: Callable[..., Any], *args):
  """Runs ``fn(*args)`` and returns ``(output, {name: value})`` for every
  ``jaxbp.tap(value, name)`` it runs.

  Works on any model (plain JAX, flax, equinox), through ``jit``, ``remat``,
  ``scan`` and ``cond``; jittable and differentiable, so
  ``jax.value_and_grad(lambda p: tapped(loss_fn, p, x), has_aux=True)`` gives
  the loss, the tapped states and the grads in one pass. A tap inside a
  ``scan`` gives its values stacked on a leading axis (per iteration); a name
  tapped several times (a tap in a Python loop over blocks) gives its values
  stacked on a new leading axis, in execution order; a tap in a ``cond`` branch
  that did not run reads zeros.

  >>> def f(x):
  ...   for l in range(3):
  ...     x = jaxbp.tap(jnp.tanh(x), "h")
  ...   return x.sum()
  >>> out, taps = tapped(f, jnp.ones((2, 4)))       # taps["h"]: (3, 2, 4)  # doctest: +SKIP
  """
  leaves, treedef = jax.tree_util.tree_flatten(args)
  data = [k for k, leaf in enumerate(leaves) if isinstance(leaf, (jax.Array, np.ndarray,
                                                                   np.generic))]

  def flat_fn(x):
    full = list(leaves)
    for k, v in zip(data, x):
      full[k] = v
    return fn(*jax.tree_util.tree_unflatten(treedef, full))

  specs = [jax.ShapeDtypeStruct(np.shape(leaves[k]), jnp.result_type(leaves[k])) for k in data]
  closed, out_shape = jax.make_jaxpr(flat_fn, return_shape=True)(specs)
  # Every input counts as data, none as params: no matmul is a layer, only the taps are sites.
  plan, _ = probing.analyse(closed.jaxpr, [Flag(data=True)] * len(data), [])
  outs, zs = probe_run.run(closed.jaxpr, closed.consts, [leaves[k] for k in data], plan,
                           probe_run.zero_probes(plan))
  found: dict = {}
  _collect(plan, zs, found)
  taps = {}
  for name, values in found.items():
    if len(values) == 1:
      taps[name] = values[0]
    elif len({v.shape for v in values}) == 1:
      taps[name] = jnp.stack(values)
    else:
      raise ValueError(f"tapped: tap {name!r} marks values of different shapes "
                       f"{[tuple(v.shape) for v in values]}; give each its own name.")
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs), taps
