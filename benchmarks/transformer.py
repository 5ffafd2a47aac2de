"""Section "transformer": the Transformer's hand backward step against ``jax.value_and_grad``.

Issue #21's speed target: ``jaxbp.backprop.value_and_grad(net, "mse", ...)``,
jitted, within 1.2x the time of ``jax.jit(jax.value_and_grad(jaxbp.objective(net,
"mse")))``, the same network differentiated by JAX, at d_model 256, heads 4,
T 128, depth 12, batch 16, float32 (pre-LN, relu FFN of width 4 d_model); and
its peak memory no more than autodiff's. Both get the same float32 lecun params,
a standard-normal ``x`` ``(batch, T, d_model)`` and target ``y`` of the same shape.

The timing runs as the "rnn" section's does (:mod:`benchmarks.rnn`, whose
child, aggregation and op counts it shares): every (round, method) point is a
fresh ``python -m benchmarks.rnn_child --section benchmarks.transformer``
process, rounds alternate the methods' order, each cell is the median over
rounds with the min-max. Memory is XLA's own accounting of each compiled
program (``compiled.memory_analysis()``: the temporaries it allocates, beside
the arguments and outputs every method shares), read in this process: it is
what the program needs, not what a loaded machine happened to map.
"""
from __future__ import annotations

import functools
import os
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp
from jaxbp.core import backprop
import benchmarks.common as common
import benchmarks.rnn as rnn
from benchmarks.config import Config
from benchmarks.processes import schedule

HAND = "hand backward: backprop.value_and_grad"
AUTODIFF = "autodiff: jax.value_and_grad(objective)"
METHODS = (HAND, AUTODIFF)
TARGET = 1.2            # hand time <= TARGET x autodiff time
GRAD_RTOL = 1e-3        # float32 through 12 blocks of LayerNorm and softmax
# dL/dbk is zero in exact arithmetic (a row's softmax ignores a shift common to
# its logits, and q_i . bk is such a shift), so both methods give round-off
# there: a leaf is compared on at least this fraction of the largest gradient.
SCALE_FLOOR = 1e-2


class Size(NamedTuple):
  """The benchmarked transformer's shape."""
  d_model: int
  heads: int
  steps: int
  depth: int
  batch: int
  d_ff: int


def size_of(config: Config) -> Size:
  """The config's transformer shape."""
  return Size(config.transformer_d_model, config.transformer_heads, config.transformer_steps,
              config.transformer_depth, config.transformer_batch, config.transformer_d_ff)


def step_flops(s: Size) -> int:
  """Matmul flops of one value-and-grad step: 3x the forward's.

  Forward per block: four ``(T, d) @ (d, d)`` projections, ``q k^T`` and ``P v``
  (``2 T^2 d`` each), the FFN's two matmuls: ``b (8 T d^2 + 4 T^2 d + 4 T d d_ff)``.
  The backward forms each matmul's two gradients, twice the forward.
  """
  b, d, t = s.batch, s.d_model, s.steps
  return 3 * s.depth * b * (8 * t * d * d + 4 * t * t * d + 4 * t * d * s.d_ff)


def problem(s: Size, seed: int = 0):
  """``(net, params, x, y)``: a pre-LN relu transformer, float32 lecun params."""
  pkey, dkey = jax.random.split(jax.random.PRNGKey(seed))
  net = jaxbp.Transformer(s.d_model, s.heads, s.depth, s.d_ff, norm="pre")
  params = net.init(pkey, "lecun", dtype=common.F32)
  kx, ky = jax.random.split(dkey)
  x = jax.random.normal(kx, (s.batch, s.steps, s.d_model), common.F32)
  y = jax.random.normal(ky, (s.batch, s.steps, s.d_model), common.F32)
  return net, params, x, y


def program(method: str, net) -> Callable:
  """The method's jitted ``(params, x, y) -> (loss, grads)``."""
  if method == HAND:
    return jax.jit(functools.partial(backprop.value_and_grad, net, "mse"))
  if method == AUTODIFF:
    return jax.jit(jax.value_and_grad(jaxbp.objective(net, "mse")))
  raise ValueError(f"benchmark transformer: method must be one of {', '.join(METHODS)}, got "
                   f"{method!r}.")


def grad_difference(grads, ref) -> dict:
  """Per parameter leaf ``max |g - ref| / scale``, and the worst of them.

  ``scale`` is the leaf's largest reference gradient, but at least
  :data:`SCALE_FLOOR` of the largest of all leaves (see there).
  """
  flat_g = jax.tree_util.tree_flatten_with_path(grads)[0]
  flat_r, tree_r = jax.tree_util.tree_flatten_with_path(ref)
  if jax.tree_util.tree_structure(grads) != tree_r:
    raise ValueError("benchmark transformer: the gradients' tree differs from the reference's.")
  top = max(float(np.max(np.abs(np.asarray(r, np.float64)))) for _, r in flat_r)
  per = {}
  for (path, g), (_, r) in zip(flat_g, flat_r):
    g, r = np.asarray(g, np.float64), np.asarray(r, np.float64)
    scale = max(float(np.max(np.abs(r))), SCALE_FLOOR * top) or 1.0
    per[jax.tree_util.keystr(path)] = float(np.max(np.abs(g - r))) / scale
  return {"per_param": per, "max_rel_err": max(per.values())}


def memory(net, params, x, y) -> dict:
  """XLA's memory accounting of each method's compiled step (bytes)."""
  out = {}
  for m in METHODS:
    mem = program(m, net).lower(params, x, y).compile().memory_analysis()
    if mem is None:
      return {}
    out[m] = {"temp": int(mem.temp_size_in_bytes), "argument": int(mem.argument_size_in_bytes),
              "output": int(mem.output_size_in_bytes)}
  return out


def transformer_section(config: Config, runner: Callable[..., dict] = rnn.run_child) -> dict:
  """The section: each (round, method) in its own process, then aggregates, memory, op counts."""
  s = size_of(config)
  records = []
  for r, _, _, method in schedule(METHODS, [(0, 0)], config.transformer_rounds):
    rec = dict(runner(method, s, config, section=__name__, window_s=config.transformer_window_s,
                      timeout_s=config.transformer_timeout_s), round=r)
    records.append(rec)
    print(f"  transformer round {r} {method}: " + (
        rec["skipped"] if "skipped" in rec else
        f"{rec['median_s'] * 1e3:.4g} ms, first call {rec['first_call_s']:.2f} s, "
        f"grad rel diff {rec['check']['max_rel_err']:.1e}, load {rec['loadavg'][0]:.1f}"),
        flush=True)
  net, params, x, y = problem(s, config.seed)
  return {"size": s._asdict(), "rounds": config.transformer_rounds,
          "window_s": config.transformer_window_s, "methods_order": list(METHODS),
          "step_flops": step_flops(s), "cores": os.cpu_count(),
          "loadavg": [r["loadavg"] for r in records if "loadavg" in r], "records": records,
          "memory": memory(net, params, x, y),
          "ops": {m: rnn.op_counts(program(m, net), params, x, y) for m in METHODS},
          **rnn.aggregate(records, METHODS, HAND, AUTODIFF, GRAD_RTOL)}


def target(sec: dict) -> dict:
  """Issue #21's target: hand time <= 1.2x autodiff's, agreeing gradients, memory no more."""
  s = Size(**sec["size"])
  name = (f"Transformer hand backward time <= {TARGET}x jax.value_and_grad, temporaries no "
          f"more (d_model {s.d_model}, heads {s.heads}, T {s.steps}, depth {s.depth}, batch "
          f"{s.batch}, separate processes)")
  ratio, check, mem = sec.get("ratio"), sec.get("grad_check"), sec.get("memory") or {}
  if ratio is None:
    return {"target": name, "measured": None, "threshold": TARGET, "met": False,
            "note": "not measured: " + "; ".join(f"{m}: {w}" for m, w in sec["skipped"].items())}
  v = ratio["of_medians"]
  margin = (f"met with {TARGET / v - 1:.0%} to spare" if v <= TARGET
            else f"missed by {v / TARGET - 1:.0%}")
  grads_ok = check is not None and check["passed"]
  mem_ok = bool(mem) and mem[HAND]["temp"] <= mem[AUTODIFF]["temp"]
  note = (f"{margin}; per-round {ratio['round_min']:.2f}-{ratio['round_max']:.2f}; CPU time "
          f"per step {ratio['of_cpu_medians']:.2f}; {ratio['rounds_compared']} rounds; "
          + (f"temporaries {_mib(mem[HAND]['temp'])} vs {_mib(mem[AUTODIFF]['temp'])} MiB"
             if mem else "memory not measured")
          + "; gradients " + (f"agree ({check['max_rel_err']:.1e} <= {GRAD_RTOL:g})" if grads_ok
                              else "**differ** or were not checked"))
  return {"target": name, "measured": v, "threshold": TARGET,
          "met": bool(v <= TARGET and grads_ok and mem_ok), "note": note}


def _mib(n) -> str:
  return f"{n / 2 ** 20:.1f}"


def transformer_md(sec: dict) -> list:
  """results.md's transformer section."""
  s = Size(**sec["size"])
  lines = ["## 7. Transformer: hand backward against autodiff", "",
           f"Pre-LN relu transformer, MSE on every token, float32: d_model {s.d_model}, heads "
           f"{s.heads}, T {s.steps}, depth {s.depth}, batch {s.batch}, d_ff {s.d_ff} "
           f"({sec['step_flops'] / 1e9:.3g} GFLOP of matmuls per step). *{HAND}*: "
           "`jax.jit(partial(jaxbp.backprop.value_and_grad, net, \"mse\"))`; "
           f"*{AUTODIFF}*: `jax.jit(jax.value_and_grad(jaxbp.objective(net, \"mse\")))`. Each "
           f"(round, method) is a fresh process timing steps for {sec['window_s']:g} s after "
           f"warm-up; {sec['rounds']} rounds, the order alternated; median over rounds "
           "(min–max).", "",
           "| method | ms/step | CPU ms/step | GFLOP/s | first call s | XLA temporaries MiB |",
           "|---|---:|---:|---:|---:|---:|"]
  mem = sec.get("memory") or {}
  for m in [m for m in sec["methods_order"] if m in sec["methods"]]:
    v, fc = sec["methods"][m], sec["methods"][m]["first_call_s"]
    lines.append(f"| {m} | {rnn._ms(v['step_s'])} | {rnn._ms(v['cpu_s'])} | "
                 f"{v['gflops']['median']:.1f} | {fc['median']:.2f} | "
                 f"{_mib(mem[m]['temp']) if m in mem else 'n/a'} |")
  for m, why in sec["skipped"].items():
    lines.append(f"| {m} | {why} | | | | |")
  r, c = sec.get("ratio"), sec.get("grad_check")
  if r:
    lines += ["", f"**hand / autodiff time: {r['of_medians']:.2f}** (per round "
              f"{r['round_min']:.2f}–{r['round_max']:.2f}); target ≤ {TARGET}. CPU time per "
              f"step, hand / autodiff: {r['of_cpu_medians']:.2f}."]
  if c:
    worst = max(c["per_param"], key=c["per_param"].get)
    lines += ["", f"Gradient check: max per-leaf relative difference {c['max_rel_err']:.1e} "
              f"(at `{worst}`), loss {c['max_loss_rel_diff']:.1e}; tolerance {c['rtol']:g}: "
              + ("**passed**." if c["passed"] else "**FAILED**.")]
  lines += ["", "Where the work is (jaxpr of each program; a scan's ops are per step):", ""]
  lines += [f"* {m}: {rnn._scans(sec['ops'][m])}" for m in sec["methods_order"]]
  lines.append("")
  return lines
