"""Runs a jaxpr with a zero probe added at every site of its
:class:`~jaxbp.measure.sites.Plan` (:mod:`jaxbp.measure.probing` finds them), and
reads per-layer values back in execution order.

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

from typing import Any, Optional

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

from jaxbp.measure.sites import Nested, Plan, Site, sub_jaxpr


def zero_probes(plan: Plan) -> list:
  """Zeros for every site: ``(shape)`` per Site, a leading ``length`` axis per
  scan, one list per branch of a cond."""
  return _per_site(plan, lambda site: jnp.zeros(site.shape, site.dtype))


def _absent(plan: Plan) -> list:
  # What run returns for the sites of a branch that did not run: zero z, no
  # weight statistics, taken False (the same structure as a run that did).
  def leaf(site):
    nan = jnp.full((), jnp.nan, site.dtype)
    return {"z": jnp.zeros(site.shape, site.dtype), "sigma_w2": nan, "sigma_b2": nan,
            "taken": jnp.asarray(False)}
  return _per_site(plan, leaf)


def _per_site(plan: Plan, leaf) -> list:
  """``leaf(site)`` for every site, in the plan's nesting: a list per cond branch,
  a leading ``length`` axis per scan."""
  out = []
  for item in plan.items:
    if isinstance(item, Site):
      out.append(leaf(item))
    elif item.mode == "cond":
      out.append([_per_site(p, leaf) for p in item.branches])
    else:
      inner = _per_site(item.plan, leaf)
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
  sub, consts = sub_jaxpr(eqn)
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
