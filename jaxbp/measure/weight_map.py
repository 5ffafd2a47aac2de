"""Which weight leaf, and which slice of it, feeds each layer that
:func:`jaxbp.inspect` reports: what :func:`jaxbp.criticalize` rescales.

The layers come from :func:`jaxbp.measure.probing.analyse`, in the order of
:func:`jaxbp.measure.probe_run.layer_sites` (the report's rows). Here the jaxpr
is walked once more beside that plan, following each param leaf forward: a
value *is a view of leaf k* while only moves (convert, copy, transpose, reshape,
slice...) or products with a constant have touched it, so scaling leaf k by
``s`` scales that value by ``s``. Inside ``lax.scan``, a leaf passed as ``xs``
while still in its own layout is sliced along its leading axis, one slice per
iteration: a stacked ``(L, n, n)`` weight gives each scanned layer its own
slice ``W[t]``. A leaf passed as a scan constant (an RNN's recurrent weight) is
one weight shared by every iteration. A layer whose weight is not a view of a
single leaf (two leaves multiplied, an ``exp`` of a log-parameter, a weight
carried through a loop) has no scale: :data:`NO_GROUP`.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

import jaxbp.measure.probing as probing
from jaxbp.measure.inspect import flat_call
from jaxbp.measure.sites import (CALLS, CUSTOM, LAYER_PRIMITIVES, REMAT, Flag, Nested, Notes,
                                 Plan, Site, sub_jaxpr)

# Ops under which a view of a leaf stays one: scaling the leaf scales the result.
_LAYOUT_KEEPING = ("convert_element_type", "copy", "copy_p", "reduce_precision", "neg")
_MOVES = _LAYOUT_KEEPING + ("transpose", "reshape", "squeeze", "broadcast_in_dim",
                            "expand_dims", "slice", "dynamic_slice", "rev", "pad")
_SCALING = ("mul", "div")
NO_GROUP = None


class Src(NamedTuple):
  """A value that is a view of param leaf ``leaf``: sliced along its leading axes
  by the iteration index of the scans listed in ``levels`` (outermost first),
  ``intact`` while its remaining axes are still the leaf's own (so a scan over
  it slices the next axis)."""
  leaf: int
  levels: tuple
  intact: bool


MIXED = "mixed"  # derived from the params, but not a view of one leaf


class Row(NamedTuple):
  """One report row: its name (as the report's), kind, and the scale group it
  belongs to: ``(leaf, slice index tuple)`` or :data:`NO_GROUP`."""
  name: str
  kind: str
  group: Optional[tuple]


def _join(srcs):
  found = {s for s in srcs if s is not None}
  return None if not found else MIXED


def _eqn_srcs(eqn, ins):
  name = eqn.primitive.name
  views = [s for s in ins if isinstance(s, Src)]
  others = [s for s in ins if not isinstance(s, Src)]
  if len(views) == 1 and not any(s is not None for s in others):
    v = views[0]
    if name in _MOVES and ins[0] is v:
      return [v._replace(intact=v.intact and name in _LAYOUT_KEEPING)] * len(eqn.outvars)
    if name in _SCALING and (name == "mul" or ins[0] is v):
      return [v._replace(intact=False)] * len(eqn.outvars)
  return [_join(ins)] * len(eqn.outvars)


def sources(jaxpr, plan: Optional[Plan], in_srcs, found: dict, level: int = 0):
  """Walks ``jaxpr`` with its invars' sources; records in ``found`` the weight
  source of every layer site, keyed ``(id(plan), item index)``; returns the
  outvars' sources."""
  env = dict(zip(jaxpr.invars, in_srcs))

  def read(a):
    return None if isinstance(a, jcore.Literal) else env.get(a)

  for i, eqn in enumerate(jaxpr.eqns):
    ins = [read(a) for a in eqn.invars]
    name = eqn.primitive.name
    if plan is not None and i in plan.weights:
      k, pos = plan.weights[i]
      found[id(plan), k] = ins[pos]
    item = plan.items[plan.nested[i]] if plan is not None and i in plan.nested else None
    if name == "scan":
      outs = _scan(eqn, ins, item, found, level)
    elif name == "cond":
      for b, branch in enumerate(eqn.params["branches"]):
        sources(branch.jaxpr, item.branches[b] if item else None, ins[1:], found, level)
      outs = [_join(ins)] * len(eqn.outvars)
    elif name in CALLS + CUSTOM + REMAT:
      sub, _ = sub_jaxpr(eqn)
      outs = sources(sub, item.plan if item else None, ins, found, level)
    elif name in LAYER_PRIMITIVES:
      outs = [_join(ins)] * len(eqn.outvars)
    else:
      outs = _eqn_srcs(eqn, ins)
    for v, s in zip(eqn.outvars, outs):
      env[v] = s
  return [read(v) for v in jaxpr.outvars]


def _scan(eqn, ins, item: Optional[Nested], found, level):
  p = eqn.params
  nc, ncar = p["num_consts"], p["num_carry"]
  # A weight carried from one iteration to the next may change on the way: no view.
  carry = [MIXED if s is not None else None for s in ins[nc:nc + ncar]]
  xs = [Src(s.leaf, s.levels + (level,), True) if isinstance(s, Src) and s.intact
        else (MIXED if s is not None else None) for s in ins[nc + ncar:]]
  sources(p["jaxpr"].jaxpr, item.plan if item else None, list(ins[:nc]) + carry + xs,
          found, level + 1)
  return [_join(ins)] * len(eqn.outvars)


def rows(plan: Plan, found: dict, index: str = "", iters: tuple = ()) -> list:
  """A :class:`Row` per report row, in :func:`~jaxbp.measure.probe_run.layer_sites`'s
  order (the same walk, with each row's scale group beside its name)."""
  out = []
  for k, item in enumerate(plan.items):
    if isinstance(item, Site):
      src = found.get((id(plan), k))
      group = (src.leaf, tuple(iters[lv] for lv in src.levels)) if isinstance(src, Src) \
          and item.kind in LAYER_PRIMITIVES else NO_GROUP
      out.append(Row(item.path + index, item.kind, group))
    elif item.mode == "cond":
      for b, p in enumerate(item.branches):
        out.extend(rows(p, found, f"{index} (branch {b})", iters))
    elif item.mode == "scan":
      steps = range(item.length)
      for t in (reversed(steps) if item.reverse else steps):
        out.extend(rows(item.plan, found, f"{index}[{t}]", iters + (t,)))
    else:
      out.extend(rows(item.plan, found, index, iters))
  return out


class Layout(NamedTuple):
  """The report's rows and the scale groups that :func:`apply` scales.

  A group is one scalar: ``(leaf, index)`` scales ``leaf[index]`` (the whole leaf
  for ``index == ()``). ``row_group[r]`` is row r's group, -1 for a row without
  one. Each ``(pair_prev[i], pair_row[i])`` is a step of the backward chain that
  group ``pair_group[i]``'s scale sets: the row before it in execution order,
  or, for a group of several rows (a weight shared by the iterations of a scan),
  each member and the member before it."""
  names: tuple
  kinds: tuple
  row_group: np.ndarray
  groups: tuple          # (position among the float leaves, slice index tuple) per group
  pair_prev: np.ndarray
  pair_row: np.ndarray
  pair_group: np.ndarray
  wrt: tuple             # the float leaves' positions among all the leaves


def layout(loss_fn, params, args, where: str) -> Layout:
  """Traces ``loss_fn(params, *args)`` as :func:`jaxbp.inspect` does and maps
  every layer it finds to its scale group."""
  flat = flat_call(loss_fn, params, args, where)
  closed = jax.make_jaxpr(flat.fn)(*flat.spec())
  in_flags = ([Flag(param=True, origin=frozenset([k])) for k in range(len(flat.wrt))]
              + [Flag(data=True)] * len(flat.data))
  plan, _ = probing.analyse(closed.jaxpr, in_flags, flat.names, Notes())
  found: dict = {}
  sources(closed.jaxpr, plan,
          [Src(k, (), True) for k in range(len(flat.wrt))] + [None] * len(flat.data),
          found)
  found_rows = rows(plan, found)
  if not found_rows:
    raise ValueError(
        f"{where}: no layer found in loss_fn, so there is no weight to rescale. A layer is "
        "a dot_general or conv_general_dilated between a weight from the params and a value "
        "from the data (see jaxbp.inspect); pass the data as arguments, "
        f"{where}(loss_fn, params, x, y), not closed over in loss_fn.")
  # A leaf seen both whole and sliced is scaled whole: one group for all its rows.
  depth: dict = {}
  for r in found_rows:
    if r.group is not None:
      depth.setdefault(r.group[0], set()).add(len(r.group[1]))
  keys = [None if r.group is None else
          (r.group if len(depth[r.group[0]]) == 1 else (r.group[0], ())) for r in found_rows]
  groups = tuple(dict.fromkeys(k for k in keys if k is not None))
  index = {g: j for j, g in enumerate(groups)}
  row_group = np.array([-1 if k is None else index[k] for k in keys], np.int32)
  prev, row, grp = [], [], []
  for j in range(len(groups)):
    members = np.flatnonzero(row_group == j)
    if len(members) >= 2:
      pairs = list(zip(members[:-1], members[1:]))
    else:
      pairs = [(members[0] - 1, members[0])] if members[0] >= 1 else []
    for p, r in pairs:
      prev.append(p)
      row.append(r)
      grp.append(j)
  return Layout(tuple(f"{r.name} · {r.kind}" for r in found_rows), tuple(r.kind for r in found_rows),
                row_group, groups, np.array(prev, np.int32), np.array(row, np.int32),
                np.array(grp, np.int32), tuple(flat.wrt))


def apply(lay: Layout, params, log_s2):
  """``params`` with group g's leaf slice multiplied by ``exp(log_s2[g] / 2)``;
  every leaf keeps its dtype and shape, the tree its structure."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  by_leaf: dict = {}
  for j, (pos, idx) in enumerate(lay.groups):
    by_leaf.setdefault(pos, []).append((j, idx))
  for pos, members in by_leaf.items():
    k = lay.wrt[pos]
    leaf = leaves[k]
    d = len(members[0][1])
    s = jnp.exp(0.5 * log_s2[np.array([j for j, _ in members])])
    if d == 0:
      mult = s[0]
    else:
      at = tuple(np.array([idx[i] for _, idx in members]) for i in range(d))
      mult = jnp.ones(np.shape(leaf)[:d], s.dtype).at[at].set(s)
      mult = mult.reshape(mult.shape + (1,) * (np.ndim(leaf) - d))
    leaves[k] = (leaf * mult).astype(jnp.result_type(leaf))
  return jax.tree_util.tree_unflatten(treedef, leaves)
