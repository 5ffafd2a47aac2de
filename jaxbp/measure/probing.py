"""Finds the layers of any traced JAX function and re-runs its jaxpr with zero
probes added at their pre-activations.

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
normalised value is a second site of kind ``"norm"``. A ``jaxbp.tap`` (a ``jit`` named
``jaxbp_tap:<name>``) marks any other point. ``scan`` bodies are analysed once
and every iteration becomes its own layer; every branch of a ``cond``/``switch``
is analysed, its layers reported whether taken or not; ``jit``/``pjit``,
``remat``, ``custom_jvp`` and ``custom_vjp`` bodies are looked through.

:func:`run` evaluates the jaxpr with ``z <- z + probe`` at every site, so that
``d loss / d probe = d loss / d z = delta`` for all layers in one reverse pass.
A sub-jaxpr with no site is bound unchanged (keeping custom rules and ``jit``);
one with sites is interpreted, a ``remat`` body under ``jax.checkpoint`` again
(so memory stays as the model asked) and a ``scan`` body under ``lax.scan``,
its probes scanned alongside its ``xs``; a ``cond`` under ``lax.switch`` with
every branch's probes, the branches not taken giving zero ``z`` and delta and
``taken = False``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

TAP_PREFIX = "jaxbp_tap:"
LAYER_PRIMITIVES = ("dot_general", "conv_general_dilated")
_CALLS = ("jit", "pjit", "closed_call", "core_call")
_CUSTOM = ("custom_jvp_call", "custom_vjp_call")
_REMAT = ("remat2", "checkpoint")
_RELAYOUT = ("transpose", "reshape", "squeeze", "broadcast_in_dim", "expand_dims", "copy",
             "copy_p", "convert_element_type")


class Flag(NamedTuple):
  """Where a variable's value comes from."""
  param: bool = False
  data: bool = False
  origin: frozenset = frozenset()  # indices of the param leaves it reads

  def __or__(self, other):
    return Flag(self.param or other.param, self.data or other.data, self.origin | other.origin)


NONE = Flag()


@dataclasses.dataclass(frozen=True)
class Site:
  """One layer: a probe goes on ``z`` (the op's output, or its bias add)."""
  path: str    # the weight's parameter path ("" for a tap)
  kind: str    # "dot_general", "conv_general_dilated", "norm" or "tap"
  shape: tuple
  dtype: Any
  activation: Optional[str] = None  # the elementwise op applied to z, when recognised


@dataclasses.dataclass
class Plan:
  """The sites of one jaxpr, in execution order.

  ``items`` holds Sites and Nested sub-plans; ``sites`` maps the probed
  variable to its item index, ``nested`` an equation index to its item index.
  ``weights`` and ``biases`` map an equation index to ``(item index, operand)``
  where a layer reads its weight or bias (for the mean-field estimates).
  """
  items: list = dataclasses.field(default_factory=list)
  sites: dict = dataclasses.field(default_factory=dict)
  nested: dict = dataclasses.field(default_factory=dict)
  weights: dict = dataclasses.field(default_factory=dict)
  biases: dict = dataclasses.field(default_factory=dict)

  def add_site(self, var, site):
    self.sites[var] = len(self.items)
    self.items.append(site)


@dataclasses.dataclass
class Nested:
  """A sub-jaxpr with sites: ``mode`` is "inline", "remat", "scan" or "cond"
  (whose ``branches`` hold one plan per branch; ``plan`` is then None)."""
  mode: str
  plan: Optional[Plan]
  length: int = 1
  reverse: bool = False
  branches: tuple = ()


@dataclasses.dataclass
class Notes:
  """What an analysis saw that was not a layer, for the "no layer found" error."""
  constant_operand: int = 0  # matmuls/convs of a param-only weight and a constant
  opaque: set = dataclasses.field(default_factory=set)  # sub-jaxprs not looked into


def _sub_jaxpr(eqn):
  sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
  if isinstance(sub, jcore.ClosedJaxpr):
    return sub.jaxpr, sub.consts
  return sub, ()


def _is_tap(eqn):
  return (eqn.primitive.name in _CALLS
          and str(eqn.params.get("name", "")).startswith(TAP_PREFIX))


def _is_float(aval):
  return hasattr(aval, "dtype") and jnp.issubdtype(aval.dtype, jnp.inexact)


def _has_sub_jaxpr(eqn):
  return any(isinstance(v, (jcore.Jaxpr, jcore.ClosedJaxpr)) or (
      isinstance(v, (tuple, list)) and v and isinstance(v[0], (jcore.Jaxpr, jcore.ClosedJaxpr)))
             for v in eqn.params.values())


def _uses(jaxpr):
  counts = {}
  for eqn in jaxpr.eqns:
    for a in eqn.invars:
      if not isinstance(a, jcore.Literal):
        counts[a] = counts.get(a, 0) + 1
  for a in jaxpr.outvars:
    if not isinstance(a, jcore.Literal):
      counts[a] = counts.get(a, 0) + 1
  return counts


def _size(aval):
  return math.prod(aval.shape)


def _is_relayout(eqn):
  # An op that moves z's elements without changing or repeating any: what vmap
  # and equinox put between a matmul/conv and its bias (a transpose of a
  # batch-last dot, a conv's squeezed unit batch). Reshapes and broadcasts only
  # count when they add or drop unit axes, so z keeps its batch and features.
  name = eqn.primitive.name
  if name not in _RELAYOUT or len(eqn.outvars) != 1 or not eqn.invars:
    return False
  if name == "reshape" and len(eqn.invars) != 1:
    return False
  a, out = eqn.invars[0].aval, eqn.outvars[0].aval
  if not (_is_float(a) and _is_float(out)) or _size(a) != _size(out):
    return False
  if name in ("reshape", "broadcast_in_dim", "expand_dims"):
    return [d for d in a.shape if d != 1] == [d for d in out.shape if d != 1]
  return True


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
  plan, uses = Plan(), _uses(jaxpr)
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
    if _is_tap(eqn):
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
    elif name in _CALLS + _CUSTOM + _REMAT:
      sub, _ = _sub_jaxpr(eqn)
      subplan, outs = analyse(sub, fin, leaf_names, notes)
      if subplan.items:
        plan.nested[i] = len(plan.items)
        plan.items.append(Nested("remat" if name in _REMAT else "inline", subplan))
    elif name == "scan":
      outs = _analyse_scan(eqn, fin, leaf_names, plan, i, notes)
    elif name == "cond":
      outs = _analyse_cond(eqn, fin, leaf_names, plan, i, notes)
    elif name == "while":
      if any((f.param or f.data) and _is_float(a.aval) for f, a in zip(fin, eqn.invars)):
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
    elif _has_sub_jaxpr(eqn):
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
    if _is_relayout(eqn):
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
  if not _is_float(out.aval):
    return
  zsize = math.prod(plan.items[k].shape)
  if name in _REDUCE:
    tag = "stat"
  elif _is_relayout(eqn) or (name == "broadcast_in_dim" and role[0] in ("stat", "root", "sqrt")):
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
  elif _size(out.aval) < zsize:
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
  if name in _CALLS + _CUSTOM:
    if str(eqn.params.get("name")) == "relu":
      return "relu"
    sub, _ = _sub_jaxpr(eqn)  # jax.nn.relu: custom_jvp around jit around max(z, 0)
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


# --- Running the jaxpr with probes.

def zero_probes(plan: Plan) -> list:
  """Zeros for every site: ``(shape)`` per Site, a leading ``length`` axis per
  scan, one list per branch of a cond."""
  out = []
  for item in plan.items:
    if isinstance(item, Site):
      out.append(jnp.zeros(item.shape, item.dtype))
    elif item.mode == "cond":
      out.append([zero_probes(p) for p in item.branches])
    else:
      inner = zero_probes(item.plan)
      if item.mode == "scan":
        inner = jax.tree_util.tree_map(
            lambda a, n=item.length: jnp.broadcast_to(a, (n,) + a.shape), inner)
      out.append(inner)
  return out


def _absent(plan: Plan) -> list:
  # What run returns for the sites of a branch that did not run: zero z, no
  # weight statistics, taken False (the same structure as a run that did).
  out = []
  for item in plan.items:
    if isinstance(item, Site):
      nan = jnp.full((), jnp.nan, item.dtype)
      out.append({"z": jnp.zeros(item.shape, item.dtype), "sigma_w2": nan, "sigma_b2": nan,
                  "taken": jnp.asarray(False)})
    elif item.mode == "cond":
      out.append([_absent(p) for p in item.branches])
    else:
      inner = _absent(item.plan)
      if item.mode == "scan":
        inner = jax.tree_util.tree_map(
            lambda a, n=item.length: jnp.broadcast_to(a, (n,) + a.shape), inner)
      out.append(inner)
  return out


def run(jaxpr, consts, args, plan: Plan, probes) -> tuple[list, list]:
  """Evaluates ``jaxpr`` with ``z + probe`` at every site: ``(outputs, zs)``,
  ``zs`` shaped like ``probes``."""
  env = dict(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  zs: list[Any] = [None] * len(plan.items)
  stats: dict = {}

  def read(a):
    return a.val if isinstance(a, jcore.Literal) else env[a]

  for i, eqn in enumerate(jaxpr.eqns):
    invals = [read(a) for a in eqn.invars]
    if i in plan.weights:
      k, pos = plan.weights[i]
      stats[k, "sigma_w2"] = _sigma_w2(eqn, pos, invals[pos])
    if i in plan.biases:
      k, pos = plan.biases[i]
      stats[k, "sigma_b2"] = jnp.mean(jnp.square(invals[pos]))
    k = plan.nested.get(i)
    if k is not None:
      outs, zs[k] = _run_nested(plan.items[k], eqn, invals, probes[k])
    else:
      ans = _bind(eqn, invals)
      outs = ans if eqn.primitive.multiple_results else [ans]
    for v, val in zip(eqn.outvars, outs):
      k = plan.sites.get(v)
      if k is not None:
        val = val + probes[k]
        # Weight statistics: nan for a tap or norm (no weight); no bias is sigma_b2 = 0.
        # In z's dtype, so that every branch of a cond returns the same types.
        nan = jnp.nan if plan.items[k].kind in ("tap", "norm") else 0.0
        zs[k] = {"z": val, "taken": jnp.asarray(True),
                 **{s: jnp.asarray(stats.get((k, s), nan), val.dtype)
                    for s in ("sigma_w2", "sigma_b2")}}
      env[v] = val
  return [read(v) for v in jaxpr.outvars], zs


def _sigma_w2(eqn, pos, w):
  # fan_in * mean(W^2): the sigma_w2 of W ~ N(0, sigma_w2 / fan_in), fan_in being
  # every weight axis but the output features (the contracted axes of a matmul).
  if eqn.primitive.name == "dot_general":
    contract, _ = eqn.params["dimension_numbers"]
    fan_in = 1
    for d in contract[pos]:
      fan_in *= w.shape[d]
  else:
    out_axis = eqn.params["dimension_numbers"].rhs_spec[0] if pos == 1 else 0
    fan_in = w.size // w.shape[out_axis]
  return fan_in * jnp.mean(jnp.square(w))


def _bind(eqn, invals):
  # As jax.core.eval_jaxpr binds an equation; older jax returned (subfuns, params).
  params = eqn.primitive.get_bind_params(eqn.params)
  subfuns = ()
  if isinstance(params, tuple):
    subfuns, params = params
  with eqn.ctx.manager:
    return eqn.primitive.bind(*subfuns, *invals, **params)


def _run_nested(item: Nested, eqn, invals, probes):
  if item.mode == "cond":
    return _run_cond(item, eqn, invals, probes)
  sub, consts = _sub_jaxpr(eqn)
  if item.mode == "inline":
    return run(sub, consts, invals, item.plan, probes)
  if item.mode == "remat":
    fn = jax.checkpoint(lambda a, p: tuple(run(sub, consts, a, item.plan, p)),
                        prevent_cse=eqn.params.get("prevent_cse", True),
                        policy=eqn.params.get("policy"))
    outs, zs = fn(invals, probes)
    return list(outs), zs
  p = eqn.params
  nc, ncar = p["num_consts"], p["num_carry"]
  body = p["jaxpr"]
  const_vals, init, xs = invals[:nc], invals[nc:nc + ncar], invals[nc + ncar:]

  def step(carry, x):
    x_t, p_t = x
    outs, zs = run(body.jaxpr, body.consts, const_vals + list(carry) + list(x_t),
                   item.plan, p_t)
    return list(outs[:ncar]), (list(outs[ncar:]), zs)

  carry, (ys, zs) = jax.lax.scan(step, list(init), (list(xs), probes), length=item.length,
                                 reverse=item.reverse, unroll=p.get("unroll", 1))
  return list(carry) + list(ys), zs


def _run_cond(item: Nested, eqn, invals, probes):
  # lax.switch over the same branches, each given every branch's probes: the one
  # taken runs with its own, the others' z come back as _absent, and their
  # deltas are zero because no path leads from their probes to the loss.
  index, operands = invals[0], list(invals[1:])
  branches = eqn.params["branches"]

  def branch(k):
    def fn(operands, probes):
      outs, zs = run(branches[k].jaxpr, branches[k].consts, list(operands),
                     item.branches[k], probes[k])
      return outs, [zs if j == k else _absent(p) for j, p in enumerate(item.branches)]
    return fn

  outs, zs = jax.lax.switch(index, [branch(k) for k in range(len(branches))], operands, probes)
  return list(outs), zs


# --- Per-layer values, in execution order.

def per_layer(plan: Plan, values, reduce) -> jax.Array:
  """``reduce(value)`` for every layer, flattened in execution order: ``(L,)``.
  A scan's iterations come one after another (in reverse for ``reverse=True``)."""
  parts = []
  for item, v in zip(plan.items, values):
    if isinstance(item, Site):
      parts.append(jnp.reshape(reduce(v), (1,)))
    elif item.mode == "cond":
      parts.extend(per_layer(p, u, reduce) for p, u in zip(item.branches, v) if p.items)
    elif item.mode == "scan":
      r = jax.vmap(lambda u, item=item: per_layer(item.plan, u, reduce))(v)
      parts.append((r[::-1] if item.reverse else r).reshape(-1))
    else:
      parts.append(per_layer(item.plan, v, reduce))
  return jnp.concatenate(parts) if parts else jnp.zeros((0,))


def layer_sites(plan: Plan, index: str = "") -> list:
  """``(name, kind, shape, activation)`` for every layer, in :func:`per_layer`'s order; a
  layer inside a scan gets its iteration, ``path[i]``, one in a cond its branch,
  ``path (branch k)`` (for ``lax.cond``, branch 0 is the false one)."""
  out = []
  for item in plan.items:
    if isinstance(item, Site):
      out.append((item.path + index, item.kind, item.shape, item.activation))
    elif item.mode == "cond":
      for k, p in enumerate(item.branches):
        out.extend(layer_sites(p, f"{index} (branch {k})"))
    else:
      steps = range(item.length)
      for t in (reversed(steps) if item.reverse else steps) if item.mode == "scan" else [None]:
        out.extend(layer_sites(item.plan, index if t is None else f"{index}[{t}]"))
  return out


def count(plan: Optional[Plan]) -> int:
  return len(layer_sites(plan)) if plan is not None else 0
