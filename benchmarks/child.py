"""The processes section's child: one method's gradient step, timed alone in a fresh process.

    python -m benchmarks.child "jaxbp autodiff" 256 128 --depth 10 \\
        --window 2 --ceiling-window 1 --matmul-n 2048

builds one of :data:`benchmarks.methods.METHODS` for the tanh MLP
(``depth`` hidden layers, in = width = out, MSE, float32), checks its gradient
against a float64 NumPy reference, and times it:

* ``first_call_s``: the first call, which includes tracing and compiling (for
  torch.compile, dynamo + inductor; for eager methods, just one step);
* ``warmup`` more untimed calls;
* a window of at least ``window`` seconds (and at least 3 calls), each call
  timed and waited for: the median, min, max and 10th / 90th percentiles.

Then, in the same process, a jitted ``(n, n) @ (n, n)`` float32 matmul, the
machine's ceiling, over ``ceiling_window`` seconds. It prints one JSON object
on its last line of output. A method whose framework is missing prints
``{"method": ..., "skipped": "skipped: ..."}`` and exits 0.

The process runs with the environment it was given: nothing here sets a
thread count or an ``OMP_*`` variable, except the labelled
``"torch eager, 1 thread"`` method itself.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax

import benchmarks.common as common
import benchmarks.methods as methods
import benchmarks.timing as timing

MIN_CALLS = timing.MIN_CALLS


def threads(method: str):
  """The method's thread count where its framework reports one (torch), else None."""
  if method.startswith("torch"):
    return methods.optional("torch").get_num_threads()
  return None


def measure(method: str, width: int, batch: int, depth: int = 10, window: float = 2.0,
            ceiling_window: float = 1.0, matmul_n: int = 2048, warmup: int = 2,
            seed: int = 0) -> dict:
  """One method at one size: gradient error, first-call time, timed window, matmul ceiling."""
  out = {"method": method, "width": width, "batch": batch, "depth": depth, "pid": os.getpid()}
  net, params, x, y = methods.problem(width, batch, depth, seed)
  t0 = time.perf_counter()
  try:
    step, flat = methods.build(method, net, params, x, y)
  except methods.Missing as e:
    return dict(out, skipped=str(e))
  t1 = time.perf_counter()
  grads = jax.block_until_ready(step())
  t2 = time.perf_counter()
  out.update(build_s=t1 - t0, first_call_s=t2 - t1,
             max_rel_err=common.max_rel_err(methods.reference_grads(params, x, y), flat(grads)))
  del grads
  for _ in range(warmup):
    timing.wait(step())
  out.update(timing.time_window(step, window))
  flops = timing.step_flops(net.sizes, batch)
  out.update(step_flops=flops, gflops=flops / out["median_s"] / 1e9, threads=threads(method))
  matmul, matmul_flops = timing.matmul(matmul_n)
  first = timing.call_seconds(matmul)      # compiles: its own figure, not in the window
  ceiling = timing.time_window(matmul, ceiling_window)
  ceiling.update(n=matmul_n, first_call_s=first,
                 gflops=matmul_flops / ceiling["median_s"] / 1e9)
  out.update(matmul=ceiling, fraction_of_matmul=out["gflops"] / ceiling["gflops"],
             peak_rss=timing.peak_rss_bytes())
  return out


def parse(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("method", choices=methods.METHODS)
  parser.add_argument("width", type=int)
  parser.add_argument("batch", type=int)
  parser.add_argument("--depth", type=int, default=10, help="hidden layers")
  parser.add_argument("--window", type=float, default=2.0, help="seconds of timed steps")
  parser.add_argument("--ceiling-window", type=float, default=1.0,
                      help="seconds of timed ceiling matmuls")
  parser.add_argument("--matmul-n", type=int, default=2048, help="the ceiling is n x n @ n x n")
  parser.add_argument("--warmup", type=int, default=2, help="untimed calls after the first")
  parser.add_argument("--seed", type=int, default=0)
  return parser.parse_args(argv)


def main(argv=None) -> None:
  a = parse(argv)
  print(json.dumps(measure(a.method, a.width, a.batch, a.depth, a.window, a.ceiling_window,
                           a.matmul_n, a.warmup, a.seed)), flush=True)


if __name__ == "__main__":
  main()
