"""Section "processes": every method timed alone, in its own fresh process, in alternating rounds.

Two frameworks timed in one process share its cores and its thread pools, and
the ratio measured there says more about that contention than about either
(issue #15: 0.94-1.04x in one process, 1.5-2.2x apart). Here each (method,
size) point is a separate ``python -m benchmarks.child`` run with
the environment as the user has it; the child also times the machine's matmul
ceiling, so each point's "% of matmul" uses a ceiling measured minutes, not
hours, away. Rounds repeat the whole grid; within a round each size runs its
methods back to back, in an order rotated by one every round, so that slow
drifts of the machine's load fall on every method alike.

Per (method, size) the report gives the median over rounds of each child's
median step time and the min-max of those medians; ratios are ratios of the
medians, with the min-max of the same ratio taken round by round. First-call
(compile) times are reported apart from step times.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from typing import Callable, Iterable, List, Sequence, Tuple

import benchmarks.common as common
from benchmarks.config import Config

CHILD_MODULE = "benchmarks.child"
AUTODIFF, HAND = "jaxbp autodiff", "jaxbp hand recursion"
# (name, numerator method, denominator method): time of the first over time of the second,
# so a value above 1 is jaxbp autodiff's speedup (or, for hand, its slowdown).
RATIOS = (("autodiff speedup over torch eager", "torch eager", AUTODIFF),
          ("autodiff speedup over torch eager, 1 thread", "torch eager, 1 thread", AUTODIFF),
          ("autodiff speedup over torch.compile", "torch.compile", AUTODIFF),
          ("hand / autodiff time", HAND, AUTODIFF),
          ("flax / autodiff time", "flax.linen", AUTODIFF),
          ("equinox / autodiff time", "equinox", AUTODIFF),
          ("raw jax / autodiff time", "raw jax", AUTODIFF),
          ("numpy / autodiff time", "numpy (seed 002)", AUTODIFF))


def child_command(method: str, width: int, batch: int, config: Config) -> List[str]:
  """The child's command line for one point."""
  return [sys.executable, "-m", CHILD_MODULE, method, str(width), str(batch),
          "--depth", str(config.depth), "--window", repr(config.process_window_s),
          "--ceiling-window", repr(config.process_ceiling_s), "--matmul-n", str(config.matmul_n),
          "--warmup", str(config.warmup), "--seed", str(config.seed)]


def run_child(method: str, width: int, batch: int, config: Config) -> dict:
  """One point in a fresh process; a failure or timeout is returned as ``{"skipped": why}``."""
  base = {"method": method, "width": width, "batch": batch}
  try:
    proc = subprocess.run(child_command(method, width, batch, config), capture_output=True,
                          text=True, env=common.child_env(),
                          timeout=config.process_timeout_s)
  except subprocess.TimeoutExpired:
    return dict(base, skipped=f"failed: over the {config.process_timeout_s:.0f} s timeout")
  if proc.returncode != 0:
    return dict(base, skipped=f"failed (exit {proc.returncode}): "
                              f"{' | '.join(proc.stderr.strip().splitlines()[-2:])}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def schedule(methods: Sequence[str], sizes: Sequence[Tuple[int, int]],
             rounds: int) -> List[Tuple[int, int, int, str]]:
  """``(round, width, batch, method)`` in run order: each round every size, methods rotated."""
  order = []
  for r in range(rounds):
    shift = r % len(methods)
    rotated = list(methods[shift:]) + list(methods[:shift])
    for width, batch in sizes:
      order += [(r, width, batch, m) for m in rotated]
  return order


def _spread(values: Sequence[float]) -> dict:
  return {"median": statistics.median(values), "min": min(values), "max": max(values),
          "n": len(values)}


def aggregate(records: Iterable[dict], methods: Sequence[str]) -> List[dict]:
  """Rows per (width, batch): each method's spread over rounds, ratios, compile times.

  ``records`` are the children's outputs, each with its ``"round"``.
  """
  by_size = {}
  for rec in records:
    by_size.setdefault((rec["width"], rec["batch"]), []).append(rec)
  rows = []
  for (width, batch), recs in sorted(by_size.items()):
    row = {"width": width, "batch": batch, "methods": {}, "ratios": {}, "skipped": {}}
    per_round = {}
    for m in methods:
      ok = [r for r in recs if r["method"] == m and "skipped" not in r]
      bad = [r["skipped"] for r in recs if r["method"] == m and "skipped" in r]
      if bad:
        row["skipped"][m] = bad[0] if not ok else f"{len(bad)} of {len(bad) + len(ok)} " \
                                                  f"rounds: {bad[0]}"
      if not ok:
        continue
      per_round[m] = {r["round"]: r["median_s"] for r in ok}
      row["methods"][m] = {
          "step_s": _spread([r["median_s"] for r in ok]),
          "first_call_s": _spread([r["first_call_s"] for r in ok]),
          "fraction_of_matmul": _spread([r["fraction_of_matmul"] for r in ok]),
          "gflops": _spread([r["gflops"] for r in ok]),
          "matmul_gflops": _spread([r["matmul"]["gflops"] for r in ok]),
          "max_rel_err": max(r["max_rel_err"] for r in ok),
          "threads": ok[0].get("threads"), "peak_rss": max(r["peak_rss"] for r in ok)}
    for name, num, den in RATIOS:
      if num in row["methods"] and den in row["methods"]:
        both = sorted(set(per_round[num]) & set(per_round[den]))
        by_round = [per_round[num][r] / per_round[den][r] for r in both]
        row["ratios"][name] = {
            "of_medians": row["methods"][num]["step_s"]["median"]
                          / row["methods"][den]["step_s"]["median"],
            "round_min": min(by_round) if by_round else None,
            "round_max": max(by_round) if by_round else None}
    if row["methods"]:
      row["step_flops"] = next(r["step_flops"] for r in recs if "step_flops" in r)
    rows.append(row)
  return rows


def processes(config: Config, runner: Callable[..., dict] = run_child) -> dict:
  """The section: every (round, size, method) in its own process, then the aggregates."""
  sizes = [(w, b) for w in config.widths for b in config.batches]
  methods = config.process_methods
  if not config.torch:       # --no-torch
    methods = tuple(m for m in methods if not m.startswith("torch"))
  records = []
  for r, width, batch, method in schedule(methods, sizes, config.process_rounds):
    rec = dict(runner(method, width, batch, config), round=r)
    records.append(rec)
    print(f"  processes round {r} width {width} batch {batch} {method}: " + (
        rec["skipped"] if "skipped" in rec else
        f"{rec['median_s'] * 1e3:.3g} ms, first call {rec['first_call_s']:.2f} s, "
        f"{rec['fraction_of_matmul']:.0%} of matmul"), flush=True)
  return {"methods": list(methods), "rounds": config.process_rounds, "depth": config.depth,
          "window_s": config.process_window_s, "ceiling_window_s": config.process_ceiling_s,
          "matmul_n": config.matmul_n, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY",
                                                                          "unset"),
          "records": records, "rows": aggregate(records, methods)}

