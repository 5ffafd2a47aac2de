"""Section "rnn": the RNN's hand BPTT step against ``jax.value_and_grad`` through ``lax.scan``.

Issue #20's speed target: ``jaxbp.backprop.value_and_grad(rnn, "mse", ...)``,
jitted, within 1.2x the time of ``jax.jit(jax.value_and_grad(loss))`` where
``loss`` is the same Elman network written as a user would, a plain
``lax.scan`` loop (:func:`elman_loss`)::

    h_t = tanh(x_t @ W_in + h_{t-1} @ W + b),  h_0 = 0
    loss = mean((h_T @ W_out + b_out - y)^2)

Both get the same float32 :class:`jaxbp.RNN` params (lecun) and the same
standard-normal ``x`` ``(batch, T, input_size)`` and ``y`` ``(batch, output_size)``.
As in the "processes" section, every (round, method) point is a fresh
``python -m benchmarks.rnn_child`` process with the user's environment; rounds
alternate the order of the two methods. Per method the report gives the median
over rounds of each child's median step time and their min-max; the ratio is
hand / autodiff of the medians, with the same ratio's min-max round by round.

Each child also computes the other method's loss and gradients once, after its
timed window, and reports the largest per-leaf relative difference
(``max |a - b| / max |b|`` per parameter, the worst parameter): the two must
agree to float32 round-off (:data:`GRAD_RTOL`) for the row to count.

To say where the time goes, the section counts the matmuls (``dot_general``)
and all primitives of each program's jaxpr, outside and inside every
``lax.scan`` body (per step), and, outside ``--quick``, the optimised HLO's op
counts (:func:`benchmarks.common.hlo_summary`).
"""
from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
from typing import Callable, List, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp
from jaxbp.core import backprop
import benchmarks.common as common
from benchmarks.config import Config
from benchmarks.processes import schedule

CHILD_MODULE = "benchmarks.rnn_child"
HAND = "hand BPTT: backprop.value_and_grad"
AUTODIFF = "autodiff: jax.value_and_grad through lax.scan"
METHODS = (HAND, AUTODIFF)
TARGET = 1.2            # hand time <= TARGET x autodiff time
GRAD_RTOL = 1e-4        # float32: the two differ by summation order only


class Size(NamedTuple):
  """The benchmarked RNN's shape."""
  input_size: int
  hidden_size: int
  steps: int
  batch: int
  output_size: int


def size_of(config: Config) -> Size:
  """The config's RNN shape."""
  return Size(config.rnn_input_size, config.rnn_hidden_size, config.rnn_steps,
              config.rnn_batch, config.rnn_output_size)


def step_flops(s: Size) -> int:
  """Matmul flops of one value-and-grad step.

  Per time step, forward ``x_t @ W_in`` and ``h @ W`` (``2 b (in h + h h)``),
  backward ``delta @ W^T``, ``h^T delta`` and ``x_t^T delta`` (``2 b (2 h h +
  in h)``; ``dL/dx`` is not formed); the readout forward and backward ``6 b h
  out``. Elementwise work is not counted.
  """
  b, i, h = s.batch, s.input_size, s.hidden_size
  return s.steps * b * (4 * i * h + 6 * h * h) + 6 * b * h * s.output_size


def problem(s: Size, seed: int = 0):
  """``(rnn, params, x, y)``: a tanh Elman RNN, readout "last", float32 lecun params."""
  pkey, dkey = jax.random.split(jax.random.PRNGKey(seed))
  rnn = jaxbp.RNN(s.input_size, s.hidden_size, s.output_size, activation="tanh",
                  readout="last")
  params = rnn.init(pkey, "lecun", dtype=common.F32)
  kx, ky = jax.random.split(dkey)
  x = jax.random.normal(kx, (s.batch, s.steps, s.input_size), common.F32)
  y = jax.random.normal(ky, (s.batch, s.output_size), common.F32)
  return rnn, params, x, y


def elman_loss(params, x, y):
  """The same network and MSE written out as a plain ``lax.scan`` loop (no jaxbp).

  ``params`` is a :class:`jaxbp.RNNParams` (read by field), ``x`` ``(batch, T, in)``.
  """
  def step(h, x_t):     # biases broadcast explicitly: the tests forbid rank promotion
    return jnp.tanh(x_t @ params.W_in + h @ params.W + params.b[None, :]), None

  h0 = jnp.zeros((x.shape[0], params.W.shape[0]), x.dtype)
  h_T, _ = jax.lax.scan(step, h0, jnp.swapaxes(x, 0, 1))
  return jnp.mean((h_T @ params.W_out + params.b_out[None, :] - y) ** 2)


def program(method: str, rnn) -> Callable:
  """The method's jitted ``(params, x, y) -> (loss, grads)``."""
  if method == HAND:
    return jax.jit(functools.partial(backprop.value_and_grad, rnn, "mse"))
  if method == AUTODIFF:
    return jax.jit(jax.value_and_grad(elman_loss))
  raise ValueError(f"benchmark rnn: method must be one of {', '.join(METHODS)}, got "
                   f"{method!r}.")


def grad_difference(grads, ref) -> dict:
  """Per parameter ``max |g - ref| / max |ref|``, and the worst of them.

  Per parameter rather than over all leaves, so that a wrong small gradient (a
  bias) is not hidden by the scale of a large one.
  """
  per = {}
  for name, g, r in zip(ref._fields, grads, ref):
    g, r = np.asarray(g, np.float64), np.asarray(r, np.float64)
    if g.shape != r.shape:
      raise ValueError(f"benchmark rnn: gradient {name} has shape {g.shape}, the reference "
                       f"{r.shape}.")
    scale = float(np.max(np.abs(r)))
    per[name] = float(np.max(np.abs(g - r))) / (scale if scale > 0 else 1.0)
  return {"per_param": per, "max_rel_err": max(per.values())}


def _sub_jaxprs(eqn):
  for v in eqn.params.values():
    for item in (v if isinstance(v, (tuple, list)) else (v,)):
      inner = getattr(item, "jaxpr", item)
      if hasattr(inner, "eqns"):
        yield inner


def op_counts(fn: Callable, *args) -> dict:
  """Matmuls and primitives of ``fn``'s jaxpr: outside any scan, and per step of each scan.

  Returns ``{"outside": {"dots", "ops"}, "scans": [{"length", "reverse", "dots",
  "ops"}, ...]}`` in program order (a scan's body counts everything nested in it).
  """
  scans, outside = [], {"dots": 0, "ops": 0}

  def walk(jaxpr, into, in_scan):
    for eqn in jaxpr.eqns:
      name = eqn.primitive.name
      if name == "scan" and not in_scan:
        body = {"length": int(eqn.params["length"]), "reverse": bool(eqn.params["reverse"]),
                "dots": 0, "ops": 0}
        scans.append(body)
        for sub in _sub_jaxprs(eqn):
          walk(sub, body, True)
        continue
      subs = list(_sub_jaxprs(eqn))
      if subs:                              # pjit, custom_jvp, ...: count what is inside
        for sub in subs:
          walk(sub, into, in_scan)
        continue
      into["ops"] += 1
      into["dots"] += name == "dot_general"

  walk(jax.make_jaxpr(fn)(*args).jaxpr, outside, False)
  return {"outside": outside, "scans": scans}


def child_command(method: str, s: Size, config: Config, section: str = __name__,
                  window_s: float = None) -> List[str]:
  """The child's command line for one point (``section``: the module that builds it)."""
  window_s = config.rnn_window_s if window_s is None else window_s
  return [sys.executable, "-m", CHILD_MODULE, method, *[str(v) for v in s],
          "--window", repr(window_s), "--warmup", str(config.warmup),
          "--seed", str(config.seed), "--section", section]


def run_child(method: str, s: Size, config: Config, section: str = __name__,
              window_s: float = None, timeout_s: float = None) -> dict:
  """One point in a fresh process; a failure or timeout is returned as ``{"skipped": why}``."""
  timeout_s = config.rnn_timeout_s if timeout_s is None else timeout_s
  try:
    proc = subprocess.run(child_command(method, s, config, section, window_s),
                          capture_output=True, text=True, env=common.child_env(),
                          timeout=timeout_s)
  except subprocess.TimeoutExpired:
    return {"method": method, "skipped": f"failed: over the {timeout_s:.0f} s timeout"}
  if proc.returncode != 0:
    return {"method": method, "skipped": f"failed (exit {proc.returncode}): "
                                         f"{' | '.join(proc.stderr.strip().splitlines()[-2:])}"}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _spread(values) -> dict:
  return {"median": statistics.median(values), "min": min(values), "max": max(values),
          "n": len(values)}


def aggregate(records, methods=METHODS, hand: str = HAND, autodiff: str = AUTODIFF,
              rtol: float = GRAD_RTOL) -> dict:
  """Each method's spread over rounds, the hand / autodiff ratio and the gradient check.

  The methods and tolerance default to this section's; the transformer section
  passes its own.
  """
  out = {"methods": {}, "skipped": {}}
  per_round = {}
  for m in methods:
    ok = [r for r in records if r["method"] == m and "skipped" not in r]
    bad = [r["skipped"] for r in records if r["method"] == m and "skipped" in r]
    if bad:
      out["skipped"][m] = f"{len(bad)} of {len(bad) + len(ok)} rounds: {bad[0]}"
    if not ok:
      continue
    per_round[m] = {r["round"]: r["median_s"] for r in ok}
    out["methods"][m] = {"step_s": _spread([r["median_s"] for r in ok]),
                         "best_step_s": min(r["min_s"] for r in ok),
                         "cpu_s": _spread([r["cpu"]["median_s"] for r in ok]),
                         "first_call_s": _spread([r["first_call_s"] for r in ok]),
                         "gflops": _spread([r["gflops"] for r in ok]),
                         "calls": sum(r["calls"] for r in ok),
                         "peak_rss": max(r["peak_rss"] for r in ok)}
  checked = [r for r in records if "skipped" not in r]
  if checked:
    worst = max(checked, key=lambda r: r["check"]["max_rel_err"])
    out["grad_check"] = {"max_rel_err": worst["check"]["max_rel_err"],
                         "per_param": worst["check"]["per_param"],
                         "max_loss_rel_diff": max(r["check"]["loss_rel_diff"] for r in checked),
                         "rtol": rtol, "children": len(checked)}
    out["grad_check"]["passed"] = bool(out["grad_check"]["max_rel_err"] <= rtol
                                       and out["grad_check"]["max_loss_rel_diff"] <= rtol)
  if hand in per_round and autodiff in per_round:
    both = sorted(set(per_round[hand]) & set(per_round[autodiff]))
    by_round = [per_round[hand][r] / per_round[autodiff][r] for r in both]
    out["ratio"] = {"of_medians": out["methods"][hand]["step_s"]["median"]
                                  / out["methods"][autodiff]["step_s"]["median"],
                    "round_min": min(by_round) if by_round else None,
                    "round_max": max(by_round) if by_round else None,
                    "rounds_compared": len(by_round),
                    # Under load a call is only ever slowed down: the fastest call of all
                    # rounds is the least disturbed, a check on the ratio of medians.
                    "of_best_steps": out["methods"][hand]["best_step_s"]
                                     / out["methods"][autodiff]["best_step_s"],
                    "of_cpu_medians": out["methods"][hand]["cpu_s"]["median"]
                                      / out["methods"][autodiff]["cpu_s"]["median"]}
  return out


def rnn_section(config: Config, runner: Callable[..., dict] = run_child) -> dict:
  """The section: each (round, method) in its own process, then the aggregates and op counts."""
  s = size_of(config)
  records = []
  for r, _, _, method in schedule(METHODS, [(0, 0)], config.rnn_rounds):
    rec = dict(runner(method, s, config), round=r)
    records.append(rec)
    print(f"  rnn round {r} {method}: " + (
        rec["skipped"] if "skipped" in rec else
        f"{rec['median_s'] * 1e3:.4g} ms, first call {rec['first_call_s']:.2f} s, "
        f"grad rel diff {rec['check']['max_rel_err']:.1e}, load {rec['loadavg'][0]:.1f}"),
        flush=True)
  rnn, params, x, y = problem(s, config.seed)
  ops = {m: op_counts(program(m, rnn), params, x, y) for m in METHODS}
  out = {"size": s._asdict(), "rounds": config.rnn_rounds, "window_s": config.rnn_window_s,
         "methods_order": list(METHODS), "step_flops": step_flops(s), "cores": os.cpu_count(),
         "loadavg": [r["loadavg"] for r in records if "loadavg" in r],
         "records": records, "ops": ops, **aggregate(records)}
  if not config.quick:      # two more compilations, only to read their HLO
    out["hlo"] = {m: common.hlo_summary(program(m, rnn).lower(params, x, y).compile())
                  for m in METHODS}
  return out


def target(sec: dict) -> dict:
  """Issue #20's target: hand BPTT time <= 1.2x autodiff's, with gradients that agree."""
  s = Size(**sec["size"])
  name = (f"RNN hand BPTT time <= {TARGET}x jax.value_and_grad through lax.scan (input "
          f"{s.input_size}, hidden {s.hidden_size}, T {s.steps}, batch {s.batch}, separate "
          "processes)")
  ratio, check = sec.get("ratio"), sec.get("grad_check")
  if ratio is None:
    return {"target": name, "measured": None, "threshold": TARGET, "met": False,
            "note": "not measured: " + "; ".join(f"{m}: {w}" for m, w in sec["skipped"].items())}
  v = ratio["of_medians"]
  margin = (f"met with {TARGET / v - 1:.0%} to spare" if v <= TARGET
            else f"missed by {v / TARGET - 1:.0%}")
  spread = ("" if ratio["round_min"] is None
            else f"; per-round {ratio['round_min']:.2f}-{ratio['round_max']:.2f}")
  grads_ok = check is not None and check["passed"]
  best = ratio.get("of_best_steps")
  best = "" if best is None else f"; fastest step / fastest step {best:.2f}"
  if ratio.get("of_cpu_medians") is not None:
    best += f"; CPU time per step {ratio['of_cpu_medians']:.2f}"
  note = (f"{margin}{spread}{best}; {ratio['rounds_compared']} rounds; gradients "
          + (f"agree (max per-parameter rel diff {check['max_rel_err']:.1e} <= {GRAD_RTOL:g})"
             if grads_ok else "**differ**: "
             + ("not checked" if check is None else f"{check['max_rel_err']:.1e}")))
  return {"target": name, "measured": v, "threshold": TARGET,
          "met": bool(v <= TARGET and grads_ok), "note": note}


def _ms(sp):
  return f"{sp['median'] * 1e3:.4g} ({sp['min'] * 1e3:.4g}–{sp['max'] * 1e3:.4g})"


def _scans(c: dict) -> str:
  outside = f"outside scans: {c['outside']['dots']} matmuls, {c['outside']['ops']} ops"
  return "; ".join([outside] + [
      f"{'reverse ' if b['reverse'] else ''}scan of {b['length']}: {b['dots']} matmuls, "
      f"{b['ops']} ops per step" for b in c["scans"]])


def rnn_md(sec: dict) -> list:
  """results.md's RNN section."""
  s = Size(**sec["size"])
  loads = [a for pair in sec["loadavg"] for a in pair]
  load = ""
  if loads:
    busy = ("more runnable threads than cores: the machine was shared and heavily loaded "
            "while this ran, so" if max(loads) > sec["cores"] else "so on a shared machine")
    load = (f" The 1-minute load average read by the children, before and after each window, "
            f"ranged {min(loads):.1f}–{max(loads):.1f} on {sec['cores']} cores ({busy} read "
            "the ratio and its round-by-round spread, not the absolute times).")
  lines = ["## 6. RNN: hand BPTT against autodiff through lax.scan", "",
           f"tanh Elman RNN, readout on h_T, MSE, float32: input {s.input_size}, hidden "
           f"{s.hidden_size}, T {s.steps}, batch {s.batch}, output {s.output_size} "
           f"({sec['step_flops'] / 1e9:.3g} GFLOP of matmuls per step). *{HAND}*: "
           "`jax.jit(partial(jaxbp.backprop.value_and_grad, rnn, \"mse\"))`; "
           f"*{AUTODIFF}*: `jax.jit(jax.value_and_grad(loss))` of the same loss written as a "
           "plain `lax.scan` loop, `h = tanh(x_t @ W_in + h @ W + b)`. Same params and data. "
           f"Each (round, method) is a fresh `python -m {CHILD_MODULE}` process timing steps "
           f"for {sec['window_s']:g} s after warm-up (median per step); {sec['rounds']} "
           f"round{'s' if sec['rounds'] != 1 else ''}, the two methods' order alternated; "
           "each cell is the median over rounds with the min–max in brackets." + load, "",
           "| method | ms/step | CPU ms/step | GFLOP/s | first call s | timed calls |",
           "|---|---:|---:|---:|---:|---:|"]
  order = [m for m in sec["methods_order"] if m in sec["methods"]]   # as run, not as JSON sorts
  for m in order:
    v, fc = sec["methods"][m], sec["methods"][m]["first_call_s"]
    lines.append(f"| {m} | {_ms(v['step_s'])} | {_ms(v['cpu_s'])} | {v['gflops']['median']:.1f} | "
                 f"{fc['median']:.2f} ({fc['min']:.2f}–{fc['max']:.2f}) | {v['calls']} |")
  for m, why in sec["skipped"].items():
    lines.append(f"| {m} | {why} | | | | |")
  r = sec.get("ratio")
  if r:
    spread = "" if r["round_min"] is None else f" (per round {r['round_min']:.2f}–" \
                                                f"{r['round_max']:.2f})"
    lines += ["", f"**hand / autodiff time: {r['of_medians']:.2f}**{spread}; target "
              f"≤ {TARGET}. The fastest single step of all rounds, hand / autodiff: "
              f"{r['of_best_steps']:.2f} ({sec['methods'][HAND]['best_step_s'] * 1e3:.4g} / "
              f"{sec['methods'][AUTODIFF]['best_step_s'] * 1e3:.4g} ms; load only slows a call "
              "down, so the fastest is the least disturbed, but it is one call of many). CPU "
              f"time per step (*CPU ms/step*: the same calls' `time.process_time`, all the "
              f"process's threads), hand / autodiff: {r['of_cpu_medians']:.2f}; other "
              "processes take cores away from a step but do not add to its CPU time."]
  c = sec.get("grad_check")
  if c:
    lines += ["", f"Gradient check (each child computes the other method once, after its "
              f"timing): max per-parameter relative difference {c['max_rel_err']:.1e} ("
              + ", ".join(f"{k} {c['per_param'][k]:.1e}" for k in jaxbp.RNNParams._fields
                          if k in c["per_param"])
              + f"), loss {c['max_loss_rel_diff']:.1e}; tolerance {c['rtol']:g}: "
              + ("**passed**." if c["passed"] else "**FAILED**.")]
  lines += ["", "Where the work is (jaxpr of each program; a scan's ops are per step):", ""]
  lines += [f"* {m}: {_scans(sec['ops'][m])}" for m in sec["methods_order"]]
  if sec.get("hlo"):
    lines += [f"* optimised HLO, {m}: {sec['hlo'][m]}" for m in sec["methods_order"]]
  lines.append("")
  return lines
