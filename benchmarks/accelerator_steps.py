"""The accelerator check's measuring steps, each run in a process of its own.

    python -m benchmarks.accelerator_steps peak --out /tmp/acc [--smoke]

:mod:`benchmarks.accelerator` starts one such process per step, so that an
out-of-memory or a hang in one step loses none of the others, and each step
has the device's whole memory. A step writes what it has finished to
``<out>/steps/<step>.json`` after every piece (a matmul rate, a (width, batch)
row, a variant), so a step killed at its time limit keeps its finished pieces;
a piece that fails (out of memory, say) is recorded with its error and the step
goes on. Every timing is :func:`benchmarks.timing.time_window` after a warm-up
call, so compile time is its own figure.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp

from jaxbp import io as _io
from jaxbp.core.nets import objective
import benchmarks.common as common
import benchmarks.methods as methods
import benchmarks.timing as timing

MEASURED = ("peak", "jit_grad", "depth_sweep", "deep_net")
SIZES = {
    "full": {"peak_n": 8192, "widths": (1024, 4096, 8192), "batches": (1024, 8192),
             "sweep_width": 4096, "sweep_depth": 1000, "deep_depth": 10000, "deep_width": 256,
             "deep_batch": 256, "min_time": 1.0},
    "smoke": {"peak_n": 128, "widths": (16, 32), "batches": (8,), "sweep_width": 16,
              "sweep_depth": 20, "deep_depth": 200, "deep_width": 8, "deep_batch": 4,
              "min_time": 0.02},
}
# However long min_time is, a timed window stops after this many calls.
MAX_CALLS = 50


def step_path(out: str, step: str) -> str:
  """Where ``step`` keeps its result (and, while it runs, its finished pieces)."""
  return os.path.join(out, "steps", f"{step}.json")


def device() -> dict:
  """The default device, for the results."""
  d = jax.devices()[0]
  return {"platform": d.platform, "kind": d.device_kind, "count": jax.device_count(),
          "jax": jax.__version__}


def seconds(fn: Callable, min_time: float) -> dict:
  """``fn``'s first call (compile included) and then its median over ``min_time`` seconds."""
  first = timing.call_seconds(fn)
  t = timing.time_window(fn, min_time, max_calls=MAX_CALLS)
  return {"seconds": t["median_s"], "first_call_s": first, "calls": t["calls"]}


def piece(fn: Callable) -> dict:
  """``fn()``, or ``{"error": ...}`` naming what it raised (out of memory, say)."""
  try:
    return fn()
  except Exception as e:                  # noqa: BLE001 -- one piece failing ends nothing
    return {"error": f"{type(e).__name__}: {str(e)[:500]}"}


def matmul_rate(n: int, dtype, precision, min_time: float) -> dict:
  """One ``(n, n) @ (n, n)`` (``2 n^3`` flops) in ``dtype`` at ``precision``."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
  f = jax.jit(functools.partial(jnp.matmul, precision=precision))
  t = seconds(lambda: f(a, b), min_time)
  return dict(t, n=n, dtype=jnp.dtype(dtype).name, precision=str(precision),
              tflops=2 * n ** 3 / t["seconds"] / 1e12)


def step_peak(sizes: dict, save: Callable) -> dict:
  """float32 (default and highest precision) and bfloat16 matmul rates."""
  res = {"device": device()}
  for name, dtype, precision in (("float32", jnp.float32, None),
                                 ("float32_highest", jnp.float32, "highest"),
                                 ("bfloat16", jnp.bfloat16, None)):
    res[name] = piece(lambda: matmul_rate(sizes["peak_n"], dtype, precision, sizes["min_time"]))
    save(res)
  return res


def step_jit_grad(sizes: dict, save: Callable) -> dict:
  """jit(grad) of the depth-10 tanh MLP per (width, batch), as a fraction of the float32 peak."""
  peak = matmul_rate(sizes["peak_n"], jnp.float32, None, sizes["min_time"])
  res = {"device": device(), "peak_float32": peak, "rows": []}

  def row(width, batch):
    net, params, x, y = methods.problem(width, batch, 10)
    fn = jax.jit(jax.grad(objective(net, "mse")))
    t = seconds(lambda: fn(params, x, y), sizes["min_time"])
    tflops = timing.step_flops(net.sizes, batch) / t["seconds"] / 1e12
    return dict(t, tflops=tflops, fraction_of_peak=tflops / peak["tflops"])

  for width in sizes["widths"]:
    for batch in sizes["batches"]:
      res["rows"].append(dict(piece(lambda: row(width, batch)), width=width, batch=batch))
      save(res)
  return res


def sweep_depth(width: int, depth: int, bytes_limit) -> int:
  """``depth``, or the depth whose float32 weights fill a quarter of the device's memory
  pool (``bytes_limit``, None where the device does not say) if that is less.

  The sweep holds the unit Gaussian draw, its scaled copy and the row-stacked
  program's buffers at once: weights of a third of the pool or more run out of
  memory, and a step that fails brings back nothing.
  """
  if not bytes_limit:
    return depth
  return max(2, min(depth, int(bytes_limit // 4 // (4 * width * width))))


def step_depth_sweep(sizes: dict, save: Callable, out: str) -> dict:
  """The depth sweep's own run at one deep, wide configuration."""
  from jaxbp.studies import depth_sweep      # the heaviest import, for this step alone
  width, depth = sizes["sweep_width"], sizes["sweep_depth"]
  depth_run = sweep_depth(width, depth, (jax.devices()[0].memory_stats() or {}).get("bytes_limit"))
  cfg = depth_sweep.SweepConfig(activations=("tanh",), inits=("critical",), sigma_b2=(0.05,),
                                depths=(depth_run,), width=width,
                                batch=8, seeds=(0,), skip=5, dtype="float32", memory_gb=20.0)
  res = {"device": device(), "config": cfg.to_dict(), "depth_asked": depth}
  save(res)
  t0 = time.perf_counter()
  summary = depth_sweep.run(cfg, os.path.join(out, "depth_sweep"), figures=False)
  stats = jax.devices()[0].memory_stats() or {}
  summary = _io.jsonable(json.loads(json.dumps(summary, default=str)))
  return dict(res, seconds=time.perf_counter() - t0, summary=summary,
              peak_bytes_in_use=stats.get("peak_bytes_in_use"))


def step_deep_net(sizes: dict, save: Callable) -> dict:
  """One gradient step of a very deep stacked tanh MLP, plain and with per-layer remat."""
  depth, width, batch = sizes["deep_depth"], sizes["deep_width"], sizes["deep_batch"]
  res = {"device": device(), "depth": depth, "width": width, "batch": batch, "variants": {}}
  x, y = common.data(jax.random.PRNGKey(1), batch, width)

  def variant(remat):
    net = common.net(width, depth, stack=True, remat=remat)
    params = net.init(jax.random.PRNGKey(0), "lecun", dtype=common.F32)
    t0 = time.perf_counter()
    compiled = jax.jit(jax.grad(objective(net, "mse"))).lower(params, x, y).compile()
    compile_s = time.perf_counter() - t0
    grads = timing.wait(compiled(params, x, y))
    finite = bool(all(jnp.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads)))
    del grads
    t = timing.time_window(lambda: compiled(params, x, y), 0.0, max_calls=MAX_CALLS)
    mem = compiled.memory_analysis()
    stats = jax.devices()[0].memory_stats() or {}
    return {"compile_s": compile_s, "seconds": t["median_s"], "finite": finite,
            "xla_temp_bytes": getattr(mem, "temp_size_in_bytes", None),
            "peak_bytes_in_use": stats.get("peak_bytes_in_use")}

  # The device's peak cannot be reset: the smaller program first, so each peak is its own.
  for name, remat in (("scan + remat", True), ("scan", False)):
    res["variants"][name] = piece(lambda: variant(remat))
    save(res)
  return res


def run_step(step: str, smoke: bool, out: str) -> dict:
  """Runs ``step`` in this process, saving it to :func:`step_path` as it goes."""
  sizes = SIZES["smoke" if smoke else "full"]
  path = step_path(out, step)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  save = functools.partial(_io.write_json, path)
  if step == "peak":
    res = step_peak(sizes, save)
  elif step == "jit_grad":
    res = step_jit_grad(sizes, save)
  elif step == "depth_sweep":
    res = step_depth_sweep(sizes, save, out)
  elif step == "deep_net":
    res = step_deep_net(sizes, save)
  else:
    raise ValueError(f"accelerator step must be one of {MEASURED}, got {step!r}.")
  save(dict(res, complete=True))
  return res


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("step", choices=MEASURED)
  parser.add_argument("--out", required=True, help="the check's output directory")
  parser.add_argument("--smoke", action="store_true", help="tiny sizes")
  args = parser.parse_args(argv)
  run_step(args.step, args.smoke, args.out)


if __name__ == "__main__":
  main()
