"""Finds the layers of any traced JAX function: where inspect puts its zero
probes.

:func:`analyse` walks a jaxpr once, marking every variable as derived from the
params, from the data, or both. A *layer* is a ``dot_general`` or
``conv_general_dilated`` whose one operand comes from the params alone (the
weight) and whose other comes from the data; its ``z`` is that op's output, or
the following ``add`` of a params-only vector (the bias). Between the op and its
bias there may be the moves that ``vmap`` and equinox put there (transpose,
squeeze, reshapes and broadcasts that only add or drop unit axes, float
conversions): ``z`` is taken after them, so it has the model's own layout. Where
``z`` is then normalised by its own statistics (batch or layer norm,
``(z - mean) * rsqrt(var + eps)``; RMS norm; then any scale and shift), the
normalised value is a second site of kind ``"norm"``. A ``jaxbp.tap`` (a ``jit``
named ``jaxbp_tap:<name>``) marks any other point. ``scan`` bodies are analysed once
and every iteration becomes its own layer; every branch of a ``cond``/``switch``
is analysed, its layers reported whether taken or not; ``jit``/``pjit``,
``remat``, ``custom_jvp`` and ``custom_vjp`` bodies are looked through.

The sites go into a :class:`~jaxbp.measure.sites.Plan`;
:mod:`jaxbp.measure.probe_run` runs the jaxpr with probes there.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

from jax.extend import core as jcore

from jaxbp.measure.sites import (CALLS, CUSTOM, LAYER_PRIMITIVES, NONE, REMAT, TAP_PREFIX,
                                 Nested, Notes, Plan, Site, has_sub_jaxpr, is_float, is_relayout,
                                 is_tap, size, sub_jaxpr, uses_of)


def analyse(jaxpr, in_flags, leaf_names, notes: Optional[Notes] = None) -> tuple[Plan, list]:
  """The sites of ``jaxpr`` and the flags of its outputs.

  Args:
    jaxpr: an open jaxpr (constvars count as neither params nor data).
    in_flags: one :class:`Flag` per invar.
    leaf_names: the param leaves' paths, indexed by ``Flag.origin``.
    notes: collects what was seen but not taken as a layer (for error messages).
  """
  notes = Notes() if notes is None else notes
  flags = dict(zip(jaxpr.invars, in_flags))
  plan, uses = Plan(), uses_of(jaxpr)
  # The end of a site's chain that may still move (past a relayout, its bias,
  # a norm's scale and shift): var -> (item index, the steps still allowed).
  pending: dict = {}
  tags: dict = {}   # var -> (item index, role in a normalisation of that item's z)
  normed: set = set()

  def flag(a):
    return NONE if isinstance(a, jcore.Literal) else flags.get(a, NONE)

  for i, eqn in enumerate(jaxpr.eqns):
    fin = [flag(a) for a in eqn.invars]
    union = NONE
    for f in fin:
      union = union | f
    outs = [union] * len(eqn.outvars)
    name = eqn.primitive.name
    if is_tap(eqn):
      label = str(eqn.params["name"])[len(TAP_PREFIX):]
      site = Site(label, "tap", tuple(eqn.outvars[0].aval.shape), eqn.outvars[0].aval.dtype)
      src = eqn.invars[0]
      k = pending.get(src, (None,))[0] if uses.get(src) == 1 else None
      if k is not None and plan.items[k].kind == "norm":
        # A tap right on a detected normalisation marks the same point: keep one row, the tap's.
        del plan.sites[src], pending[src]
        plan.items[k] = site
        plan.sites[eqn.outvars[0]] = k
      else:
        plan.add_site(eqn.outvars[0], site)
    elif name in CALLS + CUSTOM + REMAT:
      sub, _ = sub_jaxpr(eqn)
      subplan, outs = analyse(sub, fin, leaf_names, notes)
      if subplan.items:
        plan.nested[i] = len(plan.items)
        plan.items.append(Nested("remat" if name in REMAT else "inline", subplan))
    elif name == "scan":
      outs = _analyse_scan(eqn, fin, leaf_names, plan, i, notes)
    elif name == "cond":
      outs = _analyse_cond(eqn, fin, leaf_names, plan, i, notes)
    elif name == "while":
      if any((f.param or f.data) and is_float(a.aval) for f, a in zip(fin, eqn.invars)):
        raise ValueError(
            "jaxbp.inspect: the model runs a lax.while_loop over values that depend on the "
            "params or data (a while_loop, or a fori_loop with traced bounds, whose trip "
            "count is known only at run time). That is not supported: its layers cannot be "
            "listed before it runs, and reverse-mode autodiff cannot go through it. Use "
            "lax.scan, or fori_loop with Python int bounds.")
    elif name in LAYER_PRIMITIVES:
      a, b = fin[:2]
      # The weight comes from the params alone and the other operand from the data:
      # q @ k.T of two data-derived values, or a data-dependent scale times a
      # weight, is not a layer.
      weight = a if (a.param and not a.data and b.data) else (
          b if (b.param and not b.data and a.data) else None)
      if weight is not None:
        path = "+".join(leaf_names[k] for k in sorted(weight.origin))
        var = eqn.outvars[0]
        plan.add_site(var, Site(path, name, tuple(var.aval.shape), var.aval.dtype))
        pending[var] = (plan.sites[var], {"relayout", "bias"})
        plan.weights[i] = (plan.sites[var], 0 if weight is a else 1)
      elif any(f.param and not f.data for f in (a, b)) and any(f == NONE for f in (a, b)):
        notes.constant_operand += 1
    elif has_sub_jaxpr(eqn):
      notes.opaque.add(name)
    if not _extend(i, eqn, fin, plan, pending, uses):
      _track_norm(eqn, plan, pending, tags, normed)
    for v, f in zip(eqn.outvars, outs):
      flags[v] = f
  _name_activations(jaxpr, plan)
  return plan, [flag(v) for v in jaxpr.outvars]


def _move(plan, pending, src, dst, steps):
  k = pending.pop(src)[0]
  del plan.sites[src]
  plan.sites[dst] = k
  plan.items[k] = dataclasses.replace(plan.items[k], shape=tuple(dst.aval.shape),
                                      dtype=dst.aval.dtype)
  pending[dst] = (k, steps)
  return k


def _extend(i, eqn, fin, plan, pending, uses) -> bool:
  # Moves a site's probe one step along its chain, when eqn is the next step and
  # nothing else reads the value before it (else the probe would miss that use).
  # A layer's z goes past relayouts and one bias add (params only, same shape as
  # z: the full pre-activation, as jaxbp.MLP's trace defines it); a norm's past
  # relayouts, one scale (mul) and one shift (add) by params-only values.
  name = eqn.primitive.name
  out = eqn.outvars[0] if len(eqn.outvars) == 1 else None
  if out is None:
    return False
  for k, z in enumerate(eqn.invars):
    if isinstance(z, jcore.Literal) or z not in pending or uses.get(z) != 1:
      continue
    steps = pending[z][1]
    if is_relayout(eqn):
      _move(plan, pending, z, out, steps)
      return True
    other = fin[1 - k] if len(fin) == 2 else None
    if (other is None or not (other.param and not other.data)
        or tuple(out.aval.shape) != tuple(z.aval.shape) or out.aval.dtype != z.aval.dtype):
      return False
    # After a bias or shift nothing more folds in; after a scale, a shift may.
    for step, prim, left in (("bias", "add", {"relayout"}), ("shift", "add", {"relayout"}),
                             ("scale", "mul", {"relayout", "shift"})):
      if step in steps and name == prim:
        idx = _move(plan, pending, z, out, steps & left)
        if step == "bias":
          plan.biases[i] = (idx, 1 - k)
        return True
    return False
  return False


_REDUCE = ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin")


def _track_norm(eqn, plan, pending, tags, normed):
  # Follows a layer's z into a normalisation by its own statistics,
  # (z - mean(z)) * rsqrt(var(z) + eps) or (z - mean) / sqrt(var + eps), over any
  # axes (batch norm, layer norm), or z * rsqrt(mean(z^2) + eps) (RMS norm),
  # tagging values by their role: "z" (z moved only), "stat" (reduced from z),
  # "root" (rsqrt of a stat), "sqrt", "centred", and the "normed" result, which
  # becomes a site of kind "norm". A softmax's z - max(z) is "centred" too, but
  # exp() of it is no longer z's scale, so it never becomes "normed".
  ins = []
  for a in eqn.invars:
    if isinstance(a, jcore.Literal):
      ins.append(None)
    elif a in tags:
      ins.append(tags[a])
    elif a in plan.sites and plan.items[plan.sites[a]].kind in LAYER_PRIMITIVES:
      ins.append((plan.sites[a], "z"))
    else:
      ins.append(None)
  owners = {t[0] for t in ins if t}
  if len(owners) != 1 or not eqn.outvars:
    return
  (k,) = owners
  role = [t[1] if t else None for t in ins]
  known = [r for r in role if r]
  name, out = eqn.primitive.name, eqn.outvars[0]
  if not is_float(out.aval):
    return
  zsize = math.prod(plan.items[k].shape)
  if name in _REDUCE:
    tag = "stat"
  elif is_relayout(eqn) or (name == "broadcast_in_dim" and role[0] in ("stat", "root", "sqrt")):
    tag = role[0]
  elif name == "sub" and role == ["z", "stat"]:
    tag = "centred"
  elif (name == "mul" and sorted(map(str, role)) in (["centred", "root"], ["root", "z"])) or (
      name == "div" and role in (["centred", "sqrt"], ["z", "sqrt"])):
    tag = "normed"
  elif name in ("rsqrt", "sqrt") and role[0] == "stat":
    tag = "root" if name == "rsqrt" else "sqrt"
  elif name == "div" and role == [None, "sqrt"]:
    tag = "root"
  elif size(out.aval) < zsize:
    same = len(set(known)) == 1 and known[0] in ("root", "sqrt") and name in ("mul", "div")
    tag = known[0] if same else "stat"
  else:
    tag = "other"
  if tag == "normed" and k not in normed and len(eqn.outvars) == 1:
    normed.add(k)
    parent = plan.items[k]
    plan.add_site(out, Site(parent.path, "norm", tuple(out.aval.shape), out.aval.dtype))
    pending[out] = (plan.sites[out], {"relayout", "scale", "shift"})
    return
  for v in eqn.outvars:
    tags[v] = (k, tag)


def _activation(eqn) -> Optional[str]:
  name = eqn.primitive.name
  if name in ("tanh", "logistic"):
    return {"tanh": "tanh", "logistic": "sigmoid"}[name]
  if name in CALLS + CUSTOM:
    if str(eqn.params.get("name")) == "relu":
      return "relu"
    sub, _ = sub_jaxpr(eqn)  # jax.nn.relu: custom_jvp around jit around max(z, 0)
    return _activation(sub.eqns[0]) if len(sub.eqns) == 1 else None
  if name == "max" and any(isinstance(a, jcore.Literal) and a.val == 0 for a in eqn.invars):
    return "relu"
  return None


def _name_activations(jaxpr, plan):
  # The op that consumes z, if it is an activation mean-field theory knows. The
  # theory holds for a plain chain only: z used twice, or phi(z) added to
  # something (a skip connection, h + phi(z)), gets none.
  consumers = {}
  for eqn in jaxpr.eqns:
    for a in eqn.invars:
      if not isinstance(a, jcore.Literal):
        consumers.setdefault(a, []).append(eqn)
  for var, k in plan.sites.items():
    eqns = consumers.get(var, [])
    if len(eqns) != 1 or var in jaxpr.outvars or plan.items[k].kind == "tap":
      continue
    after = [e.primitive.name for v in eqns[0].outvars for e in consumers.get(v, [])]
    if not ({"add", "sub", "add_any"} & set(after)):
      plan.items[k] = dataclasses.replace(plan.items[k], activation=_activation(eqns[0]))


def _analyse_scan(eqn, fin, leaf_names, plan, i, notes):
  p = eqn.params
  body, nc, ncar = p["jaxpr"].jaxpr, p["num_consts"], p["num_carry"]
  carry = list(fin[nc:nc + ncar])
  # The carry's flags at iteration t depend on earlier iterations: iterate to a
  # fixed point (flags only grow, so a few passes suffice).
  for _ in range(len(carry) + 2):
    subplan, outs = analyse(body, fin[:nc] + carry + fin[nc + ncar:], leaf_names, notes)
    grown = [c | o for c, o in zip(carry, outs[:ncar])]
    if grown == carry:
      break
    carry = grown
  if subplan.items:
    plan.nested[i] = len(plan.items)
    plan.items.append(Nested("scan", subplan, int(p["length"]), bool(p["reverse"])))
  return carry + list(outs[ncar:])


def _analyse_cond(eqn, fin, leaf_names, plan, i, notes):
  # Every branch's layers are listed (which runs is known only at run time); the
  # outputs carry every branch's flags and the index's (a branch chosen by the
  # data makes its result data-dependent).
  plans, outs = [], None
  for branch in eqn.params["branches"]:
    subplan, o = analyse(branch.jaxpr, fin[1:], leaf_names, notes)
    plans.append(subplan)
    outs = o if outs is None else [a | b for a, b in zip(outs, o)]
  if any(p.items for p in plans):
    plan.nested[i] = len(plan.items)
    plan.items.append(Nested("cond", None, branches=tuple(plans)))
  return [f | fin[0] for f in outs]
