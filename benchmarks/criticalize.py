"""Row "criticalize": the time to criticalize a depth-100, width-256 tanh MLP on one batch of 128.

Issue #22's cost target: under 10 s on 2 cores, as a user meets it: a fresh
Python process that builds :class:`jaxbp.MLP` (stacked hidden layers, float32,
Gaussian init at ``sigma_w^2`` 4 and 0.5, ``sigma_b^2`` 0) and calls
``jax.jit(lambda p, x, y: jaxbp.criticalize(loss, p, x, y))`` once. Each round
is a new ``python -m benchmarks.criticalize --child`` process (so nothing is
cached between rounds); it reports the call's wall time (trace, compile and
run), the compile and run parts separately (timed on a second, ahead-of-time
compiled copy), the process's CPU seconds in the call (both cores' work, which
load from other processes inflates far less than wall time), the iterations
and the log_slope before and after. The row
gives per init the median over rounds and the min-max.

    python -m benchmarks.criticalize [--rounds 5] [--out experiments/results/benchmark/criticalize.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

DEPTH, WIDTH, BATCH, CLASSES = 100, 256, 128, 10
SIGMA_W2 = (4.0, 0.5)
TARGET_S = 10.0
DEFAULT_OUT = os.path.join("experiments", "results", "benchmark", "criticalize.json")


def child(sigma_w2: float) -> dict:
  """One fresh process's measurement (run by ``--child``)."""
  import jax
  import jax.numpy as jnp
  import jaxbp
  net = jaxbp.MLP(sizes=(WIDTH,) * (DEPTH + 1) + (CLASSES,), activation="tanh", stack=True)
  params = net.init(jax.random.PRNGKey(0), init=jaxbp.initializers.gaussian(
      sigma_w2=sigma_w2, sigma_b2=0.0), dtype=jnp.float32)
  x = jax.random.normal(jax.random.PRNGKey(1), (BATCH, WIDTH), jnp.float32)
  y = jax.nn.one_hot(jnp.arange(BATCH) % CLASSES, CLASSES, dtype=jnp.float32)
  loss = jaxbp.objective(net, "softmax_cross_entropy")
  jax.block_until_ready((params, x, y))
  t0, c0 = time.perf_counter(), time.process_time()
  new, info = jax.jit(lambda p, x, y: jaxbp.criticalize(loss, p, x, y))(params, x, y)
  jax.block_until_ready(new)
  total_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
  # The same call split into its parts, on a second function (its own trace and compile).
  t0 = time.perf_counter()
  compiled = jax.jit(lambda p, x, y: jaxbp.criticalize(loss, p, x, y)).lower(
      params, x, y).compile()
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  jax.block_until_ready(compiled(params, x, y))
  run_s = time.perf_counter() - t0
  return {"sigma_w2": sigma_w2, "seconds": total_s, "compile_s": compile_s, "run_s": run_s,
          "cpu_s": cpu_s, "iters": int(info.iters), "converged": bool(info.converged),
          "log_slope_before": float(info.before.log_slope),
          "log_slope_after": float(info.report.log_slope),
          "load_average": os.getloadavg()[0]}


def _spread(values) -> dict:
  return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run(rounds: int, out: str) -> dict:
  from benchmarks.timing import machine
  samples = {s: [] for s in SIGMA_W2}
  for r in range(rounds):
    for s in (SIGMA_W2 if r % 2 == 0 else SIGMA_W2[::-1]):
      proc = subprocess.run([sys.executable, "-m", "benchmarks.criticalize", "--child", str(s)],
                            capture_output=True, text=True, check=True)
      samples[s].append(json.loads(proc.stdout.strip().splitlines()[-1]))
  row = {"row": "criticalize", "model": f"tanh MLP depth {DEPTH} width {WIDTH}, stacked, "
         f"float32", "batch": BATCH, "rounds": rounds, "target_s": TARGET_S,
         "machine": machine(), "per_init": {}}
  for s, runs in samples.items():
    row["per_init"][f"sigma_w2={s}"] = {
        **{k: _spread([r[k] for r in runs]) for k in ("seconds", "cpu_s", "compile_s",
                                                       "run_s", "iters", "load_average")},
        "converged": all(r["converged"] for r in runs),
        "log_slope_before": runs[0]["log_slope_before"],
        "log_slope_after": _spread([r["log_slope_after"] for r in runs]),
        "under_target": statistics.median(r["seconds"] for r in runs) < TARGET_S}
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  tmp = out + ".tmp"
  with open(tmp, "w") as f:
    json.dump(row, f, indent=1)
  os.replace(tmp, out)
  return row


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--out", default=DEFAULT_OUT)
  parser.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child is not None:
    print(json.dumps(child(args.child)))
    return
  if args.rounds < 1:
    parser.error(f"--rounds must be >= 1, got {args.rounds}")
  row = run(args.rounds, args.out)
  for name, r in row["per_init"].items():
    print(f"{name}: {r['seconds']['median']:.2f} s (min {r['seconds']['min']:.2f}, max "
          f"{r['seconds']['max']:.2f}; CPU {r['cpu_s']['median']:.2f} s; compile {r['compile_s']['median']:.2f} s, run "
          f"{r['run_s']['median']:.2f} s), iters {r['iters']['median']}, load "
          f"{r['load_average']['median']:.1f}")
  print(f"written to {args.out}")


if __name__ == "__main__":
  main()
