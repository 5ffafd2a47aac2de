"""Finds the layers of any traced JAX function and re-runs its jaxpr with zero
probes added at their pre-activations.

:func:`analyse` walks a jaxpr once, marking every variable as derived from the
params, from the data, or both. A *layer* is a ``dot_general`` or
``conv_general_dilated`` whose one operand comes from the params alone (the
weight) and whose other comes from the data; its ``z`` is that op's output, or
the following ``add`` of a params-only vector (the bias). A ``jaxbp.tap``
(a ``jit`` named ``jaxbp_tap:<name>``) marks any other point. ``scan`` bodies are
analysed once and every iteration becomes its own layer; ``jit``/``pjit``,
``remat``, ``custom_jvp`` and ``custom_vjp`` bodies are looked through.

:func:`run` evaluates the jaxpr with ``z <- z + probe`` at every site, so that
``d loss / d probe = d loss / d z = delta`` for all layers in one reverse pass.
A sub-jaxpr with no site is bound unchanged (keeping custom rules and ``jit``);
one with sites is interpreted, a ``remat`` body under ``jax.checkpoint`` again
(so memory stays as the model asked) and a ``scan`` body under ``lax.scan``,
its probes scanned alongside its ``xs``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

TAP_PREFIX = "jaxbp_tap:"
LAYER_PRIMITIVES = ("dot_general", "conv_general_dilated")
_CALLS = ("jit", "pjit", "closed_call", "core_call")
_CUSTOM = ("custom_jvp_call", "custom_vjp_call")
_REMAT = ("remat2", "checkpoint")


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
  kind: str    # "dot_general", "conv_general_dilated" or "tap"
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
  """A sub-jaxpr with sites: ``mode`` is "inline", "remat" or "scan"."""
  mode: str
  plan: Plan
  length: int = 1
  reverse: bool = False


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


def analyse(jaxpr, in_flags, leaf_names) -> tuple[Plan, list]:
  """The sites of ``jaxpr`` and the flags of its outputs.

  Args:
    jaxpr: an open jaxpr (constvars count as neither params nor data).
    in_flags: one :class:`Flag` per invar.
    leaf_names: the param leaves' paths, indexed by ``Flag.origin``.
  """
  flags = dict(zip(jaxpr.invars, in_flags))
  plan, uses, pending = Plan(), _uses(jaxpr), {}

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
      plan.add_site(eqn.outvars[0], Site(label, "tap", tuple(eqn.outvars[0].aval.shape),
                                                eqn.outvars[0].aval.dtype))
    elif name in _CALLS + _CUSTOM + _REMAT:
      sub, _ = _sub_jaxpr(eqn)
      subplan, outs = analyse(sub, fin, leaf_names)
      if subplan.items:
        plan.nested[i] = len(plan.items)
        plan.items.append(Nested("remat" if name in _REMAT else "inline", subplan))
    elif name == "scan":
      outs = _analyse_scan(eqn, fin, leaf_names, plan, i)
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
      weight = a if (a.param and not a.data and b.data) else (
          b if (b.param and not b.data and a.data) else None)
      if weight is not None:
        path = "+".join(leaf_names[k] for k in sorted(weight.origin))
        var = eqn.outvars[0]
        plan.add_site(var, Site(path, name, tuple(var.aval.shape), var.aval.dtype))
        pending[var] = plan.sites[var]
        plan.weights[i] = (plan.sites[var], 0 if weight is a else 1)
    elif name == "add" and len(eqn.invars) == 2:
      _take_bias(i, eqn, fin, plan, pending, uses)
    for v, f in zip(eqn.outvars, outs):
      flags[v] = f
  _name_activations(jaxpr, plan)
  return plan, [flag(v) for v in jaxpr.outvars]


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


def _take_bias(i, eqn, fin, plan, pending, uses):
  # z = op output + a params-only vector: move the probe past the bias add, so
  # that z is the full pre-activation (as jaxbp.MLP's trace defines it).
  for k in (0, 1):
    z, other = eqn.invars[k], fin[1 - k]
    if (not isinstance(z, jcore.Literal) and z in pending and uses.get(z) == 1
        and other.param and not other.data
        and tuple(eqn.outvars[0].aval.shape) == tuple(z.aval.shape)):
      idx = pending.pop(z)
      del plan.sites[z]
      plan.sites[eqn.outvars[0]] = idx
      plan.biases[i] = (idx, 1 - k)
      return


def _analyse_scan(eqn, fin, leaf_names, plan, i):
  p = eqn.params
  body, nc, ncar = p["jaxpr"].jaxpr, p["num_consts"], p["num_carry"]
  carry = list(fin[nc:nc + ncar])
  # The carry's flags at iteration t depend on earlier iterations: iterate to a
  # fixed point (flags only grow, so a few passes suffice).
  for _ in range(len(carry) + 2):
    subplan, outs = analyse(body, fin[:nc] + carry + fin[nc + ncar:], leaf_names)
    grown = [c | o for c, o in zip(carry, outs[:ncar])]
    if grown == carry:
      break
    carry = grown
  if subplan.items:
    plan.nested[i] = len(plan.items)
    plan.items.append(Nested("scan", subplan, int(p["length"]), bool(p["reverse"])))
  return carry + list(outs[ncar:])


# --- Running the jaxpr with probes.

def zero_probes(plan: Plan) -> list:
  """Zeros for every site: ``(shape)`` per Site, a leading ``length`` axis per scan."""
  out = []
  for item in plan.items:
    if isinstance(item, Site):
      out.append(jnp.zeros(item.shape, item.dtype))
    else:
      inner = zero_probes(item.plan)
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
        # Weight statistics: nan for a tap (it has no weight); no bias is sigma_b2 = 0.
        nan = jnp.asarray(jnp.nan if plan.items[k].kind == "tap" else 0.0, val.dtype)
        zs[k] = {"z": val, "sigma_w2": stats.get((k, "sigma_w2"), nan),
                 "sigma_b2": stats.get((k, "sigma_b2"), nan)}
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


# --- Per-layer values, in execution order.

def per_layer(plan: Plan, values, reduce) -> jax.Array:
  """``reduce(value)`` for every layer, flattened in execution order: ``(L,)``.
  A scan's iterations come one after another (in reverse for ``reverse=True``)."""
  parts = []
  for item, v in zip(plan.items, values):
    if isinstance(item, Site):
      parts.append(jnp.reshape(reduce(v), (1,)))
    elif item.mode == "scan":
      r = jax.vmap(lambda u, item=item: per_layer(item.plan, u, reduce))(v)
      parts.append((r[::-1] if item.reverse else r).reshape(-1))
    else:
      parts.append(per_layer(item.plan, v, reduce))
  return jnp.concatenate(parts) if parts else jnp.zeros((0,))


def layer_sites(plan: Plan, index: str = "") -> list:
  """``(name, kind, shape, activation)`` for every layer, in :func:`per_layer`'s order; a
  layer inside a scan gets its iteration, ``path[i]``."""
  out = []
  for item in plan.items:
    if isinstance(item, Site):
      out.append((item.path + index, item.kind, item.shape, item.activation))
    else:
      steps = range(item.length)
      for t in (reversed(steps) if item.reverse else steps) if item.mode == "scan" else [None]:
        out.extend(layer_sites(item.plan, index if t is None else f"{index}[{t}]"))
  return out


def count(plan: Optional[Plan]) -> int:
  return len(layer_sites(plan)) if plan is not None else 0
