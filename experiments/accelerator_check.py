"""One command for an accelerator: tests, matmul peak, jit(grad) as % of peak, deep nets.

    python experiments/accelerator_check.py --out experiments/results/accelerator   # one GPU, < 8 min
    python experiments/accelerator_check.py --out /tmp/acc --smoke                  # CPU, tiny sizes

writes ``results.json`` (every number, rewritten after each step) and
``results.md`` into ``--out``. Steps, each in its own process with its own time
box, so that a failure, a hang or an out-of-memory in one loses none of the others:

1. ``tests``: the core-gradient and sweep-equality tests (``pytest -q
   tests/test_backprop.py tests/test_depth_sweep.py -k ...``) on the default
   device (the accelerator when there is one);
2. ``peak``: the float32 (default and highest precision) and bfloat16 matmul
   rates of one ``(n, n) @ (n, n)``;
3. ``jit_grad``: ``jit(grad(objective))`` of the depth-10 tanh MLP (MSE,
   float32) at widths up to 8192 and batches up to 8192, as % of the float32
   peak measured in the same process;
4. ``depth_sweep``: :func:`jaxbp.studies.depth_sweep.run` at width 4096, depth
   1000 (one critical tanh configuration, one seed, float32);
5. ``deep_net``: one gradient step of a depth-10,000 stacked tanh MLP, plain and
   with per-layer remat, with the device's peak memory.

The whole run is kept under ``--budget`` seconds (480 by default): a step gets
its own limit or what is left, whichever is smaller. ``--smoke`` runs every step
at tiny sizes on whatever device there is (the CPU in CI).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Tests that compare the hand recursion with autodiff and finite differences,
# and the sweep's row-stacked program with its per-configuration reference.
TEST_K = ("matches_autodiff or matches_finite_differences or deltas_are_dloss_dz or "
          "row_stacked_program_equals_measure or tiny_memory_budget")
SMOKE_TEST_K = "deltas_are_dloss_dz"
STEPS = ("tests", "peak", "jit_grad", "depth_sweep", "deep_net")
# Seconds per step on one GPU; they add up to under the 480 s budget.
LIMITS = {"tests": 150, "peak": 40, "jit_grad": 90, "depth_sweep": 110, "deep_net": 80}
SIZES = {
    "full": {"peak_n": 8192, "widths": (1024, 4096, 8192), "batches": (1024, 8192),
             "sweep_width": 4096, "sweep_depth": 1000, "deep_depth": 10000, "deep_width": 256,
             "deep_batch": 256, "min_time": 1.0},
    "smoke": {"peak_n": 128, "widths": (16, 32), "batches": (8,), "sweep_width": 16,
              "sweep_depth": 20, "deep_depth": 200, "deep_width": 8, "deep_batch": 4,
              "min_time": 0.02},
}


def _timed(fn, min_time: float) -> float:
  """Median seconds per call of ``fn`` (compiled and warm), over about ``min_time`` seconds."""
  import jax
  jax.block_until_ready(fn())
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  once = max(time.perf_counter() - t0, 1e-6)
  n = max(3, min(50, int(min_time / once)))
  times = []
  for _ in range(n):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return sorted(times)[len(times) // 2]


def _device() -> dict:
  import jax
  d = jax.devices()[0]
  return {"platform": d.platform, "kind": d.device_kind, "count": jax.device_count(),
          "jax": jax.__version__}


def _matmul_rate(n: int, dtype, precision, min_time: float) -> dict:
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
  f = jax.jit(functools.partial(jnp.matmul, precision=precision))
  s = _timed(lambda: f(a, b), min_time)
  return {"n": n, "dtype": jnp.dtype(dtype).name, "precision": str(precision), "seconds": s,
          "tflops": 2 * n ** 3 / s / 1e12}


def step_peak(sizes: dict) -> dict:
  """float32 (default and highest precision) and bfloat16 matmul rates."""
  import jax.numpy as jnp
  n, t = sizes["peak_n"], sizes["min_time"]
  return {"device": _device(),
          "float32": _matmul_rate(n, jnp.float32, None, t),
          "float32_highest": _matmul_rate(n, jnp.float32, "highest", t),
          "bfloat16": _matmul_rate(n, jnp.bfloat16, None, t)}


def step_jit_grad(sizes: dict) -> dict:
  """jit(grad) of the depth-10 tanh MLP per (width, batch), as % of the float32 peak."""
  import jax
  import jax.numpy as jnp
  from jaxbp.core.nets import objective
  from jaxbp.studies.benchmark import methods, timing
  peak = _matmul_rate(sizes["peak_n"], jnp.float32, None, sizes["min_time"])
  rows = []
  for width in sizes["widths"]:
    for batch in sizes["batches"]:
      net, params, x, y = methods.problem(width, batch, 10)
      fn = jax.jit(jax.grad(objective(net, "mse")))
      t0 = time.perf_counter()
      jax.block_until_ready(fn(params, x, y))
      first = time.perf_counter() - t0
      s = _timed(lambda: fn(params, x, y), sizes["min_time"])
      tflops = timing.step_flops(net.sizes, batch) / s / 1e12
      rows.append({"width": width, "batch": batch, "seconds": s, "first_call_s": first,
                   "tflops": tflops, "fraction_of_peak": tflops / peak["tflops"]})
      del params, x, y, fn
  return {"device": _device(), "peak_float32": peak, "rows": rows}


def step_depth_sweep(sizes: dict, out: str) -> dict:
  """The depth sweep's own run at one deep, wide configuration."""
  import jax
  from jaxbp.studies import depth_sweep
  cfg = depth_sweep.SweepConfig(activations=("tanh",), inits=("critical",), sigma_b2=(0.05,),
                                depths=(sizes["sweep_depth"],), width=sizes["sweep_width"],
                                batch=8, seeds=(0,), skip=5, dtype="float32", memory_gb=20.0)
  t0 = time.perf_counter()
  summary = depth_sweep.run(cfg, os.path.join(out, "depth_sweep"), figures=False)
  stats = jax.devices()[0].memory_stats() or {}
  return {"device": _device(), "config": cfg.to_dict(), "seconds": time.perf_counter() - t0,
          "summary": json.loads(json.dumps(summary, default=str)),
          "peak_bytes_in_use": stats.get("peak_bytes_in_use")}


def step_deep_net(sizes: dict) -> dict:
  """One gradient step of a very deep stacked tanh MLP, plain and with per-layer remat."""
  import jax
  from jaxbp.core.nets import objective
  from jaxbp.studies.benchmark import common
  depth, width, batch = sizes["deep_depth"], sizes["deep_width"], sizes["deep_batch"]
  out = {"device": _device(), "depth": depth, "width": width, "batch": batch, "variants": {}}
  x, y = common.data(jax.random.PRNGKey(1), batch, width)
  # The device's peak cannot be reset: the smaller program first, so each peak is its own.
  for name, remat in (("scan + remat", True), ("scan", False)):
    net = common.net(width, depth, stack=True, remat=remat)
    params = net.init(jax.random.PRNGKey(0), "lecun", dtype=common.F32)
    fn = jax.jit(jax.grad(objective(net, "mse")))
    t0 = time.perf_counter()
    compiled = fn.lower(params, x, y).compile()
    compile_s = time.perf_counter() - t0
    grads = jax.block_until_ready(compiled(params, x, y))
    finite = bool(all(jax.numpy.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads)))
    del grads
    s = _timed(lambda: compiled(params, x, y), 0.0)
    mem = compiled.memory_analysis()
    stats = jax.devices()[0].memory_stats() or {}
    out["variants"][name] = {"compile_s": compile_s, "seconds": s, "finite": finite,
                             "xla_temp_bytes": getattr(mem, "temp_size_in_bytes", None),
                             "peak_bytes_in_use": stats.get("peak_bytes_in_use")}
    del params
  return out


def run_step(step: str, smoke: bool, out: str) -> dict:
  """One step in this process (the child side)."""
  sizes = SIZES["smoke" if smoke else "full"]
  if step == "peak":
    return step_peak(sizes)
  if step == "jit_grad":
    return step_jit_grad(sizes)
  if step == "depth_sweep":
    return step_depth_sweep(sizes, out)
  if step == "deep_net":
    return step_deep_net(sizes)
  raise ValueError(f"unknown step {step!r}")


def _env(step: str) -> dict:
  env = dict(os.environ)
  env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
  if step == "depth_sweep":
    # Width 4096, depth 1000 is 67 GB of float32 weights: more than JAX's default
    # 75% pool of a 141 GB GPU leaves room for.
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
  return env


def launch(step: str, smoke: bool, out: str, timeout: float) -> dict:
  """One step in a fresh process, time-boxed; its outcome whatever happens."""
  if step == "tests":
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "tests/test_backprop.py", "tests/test_depth_sweep.py",
           "-k", SMOKE_TEST_K if smoke else TEST_K]
  else:
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--step", step, "--out", out]
    cmd += ["--smoke"] if smoke else []
  t0 = time.perf_counter()
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(step),
                          timeout=timeout)
  except subprocess.TimeoutExpired as e:
    tail = (e.stdout or b"")[-2000:]
    return {"status": "timeout", "seconds": time.perf_counter() - t0, "limit_s": timeout,
            "output_tail": tail.decode(errors="replace") if isinstance(tail, bytes) else tail}
  rec = {"seconds": time.perf_counter() - t0, "limit_s": timeout, "returncode": proc.returncode}
  if step == "tests":
    lines = proc.stdout.strip().splitlines()
    return dict(rec, status="ok" if proc.returncode == 0 else "failed",
                summary=lines[-1] if lines else "", output_tail=proc.stdout[-3000:])
  if proc.returncode != 0:
    return dict(rec, status="failed", error=proc.stderr[-3000:])
  return dict(rec, status="ok", result=json.loads(proc.stdout.strip().splitlines()[-1]))


def _gib(b) -> str:
  return "-" if b is None else f"{b / 2**30:.2f}"


def markdown(res: dict) -> str:
  """results.md: one short section per step."""
  lines = ["# Accelerator check", "", f"{res['mode']} run, {res['seconds']:.0f} s of a "
           f"{res['budget_s']:.0f} s budget.", "", "| step | status | seconds |",
           "|---|---|---:|"]
  for step, rec in res["steps"].items():
    lines.append(f"| {step} | {rec['status']} | {rec['seconds']:.1f} |")
  steps = res["steps"]
  t = steps.get("tests")
  if t:
    lines += ["", f"Tests: `{t.get('summary', t['status'])}`."]
  p = steps.get("peak", {}).get("result")
  if p:
    d = p["device"]
    lines += ["", f"Device: {d['platform']} {d['kind']} (x{d['count']}), jax {d['jax']}.", "",
              "| matmul | n | TFLOP/s |", "|---|---:|---:|"]
    for k in ("float32", "float32_highest", "bfloat16"):
      lines.append(f"| {k} | {p[k]['n']} | {p[k]['tflops']:.1f} |")
  g = steps.get("jit_grad", {}).get("result")
  if g:
    lines += ["", f"`jit(grad)`, tanh MLP depth 10, MSE, float32; float32 peak "
              f"{g['peak_float32']['tflops']:.1f} TFLOP/s.", "",
              "| width | batch | ms/step | TFLOP/s | % of peak | first call s |",
              "|---:|---:|---:|---:|---:|---:|"]
    for r in g["rows"]:
      lines.append(f"| {r['width']} | {r['batch']} | {r['seconds'] * 1e3:.3g} | "
                   f"{r['tflops']:.2f} | {r['fraction_of_peak']:.0%} | {r['first_call_s']:.1f} |")
  s = steps.get("depth_sweep", {}).get("result")
  if s:
    c = s["config"]
    lines += ["", f"Depth sweep: width {c['width']}, depth {c['depths'][0]}: "
              f"{s['seconds']:.1f} s, device peak {_gib(s['peak_bytes_in_use'])} GiB "
              "(- where the device does not report it)."]
  n = steps.get("deep_net", {}).get("result")
  if n:
    lines += ["", f"Depth {n['depth']}, width {n['width']}, batch {n['batch']}:", "",
              "| variant | compile s | step s | finite | XLA temp GiB | device peak GiB |",
              "|---|---:|---:|---|---:|---:|"]
    for name, v in n["variants"].items():
      lines.append(f"| {name} | {v['compile_s']:.1f} | {v['seconds']:.3g} | {v['finite']} | "
                   f"{_gib(v['xla_temp_bytes'])} | {_gib(v['peak_bytes_in_use'])} |")
  for step, rec in steps.items():
    if rec["status"] != "ok":
      why = rec.get("error") or rec.get("output_tail") or ""
      lines += ["", f"**{step}: {rec['status']}**", "", "```", why[-1500:].strip(), "```"]
  return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--smoke", action="store_true", help="tiny sizes (CPU, CI)")
  parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole run")
  parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
  parser.add_argument("--step", choices=STEPS[1:], help=argparse.SUPPRESS)   # the child side
  args = parser.parse_args(argv)
  out = str(pathlib.Path(args.out).resolve())
  if args.step:
    print(json.dumps(run_step(args.step, args.smoke, out)), flush=True)
    return {}
  os.makedirs(out, exist_ok=True)
  start = time.perf_counter()
  res = {"mode": "smoke" if args.smoke else "full", "budget_s": args.budget, "steps": {},
         "sizes": SIZES["smoke" if args.smoke else "full"]}
  for step in args.steps:
    left = args.budget - (time.perf_counter() - start)
    if left < 5:
      res["steps"][step] = {"status": "skipped: out of budget", "seconds": 0.0}
    else:
      res["steps"][step] = launch(step, args.smoke, out, min(LIMITS[step], left))
    print(f"{step}: {res['steps'][step]['status']} ({res['steps'][step]['seconds']:.1f} s)",
          flush=True)
    res["seconds"] = time.perf_counter() - start
    pathlib.Path(out, "results.json").write_text(json.dumps(res, indent=1, default=str))
  res["seconds"] = time.perf_counter() - start
  pathlib.Path(out, "results.json").write_text(json.dumps(res, indent=1, default=str))
  pathlib.Path(out, "results.md").write_text(markdown(res))
  return res


if __name__ == "__main__":
  main()
