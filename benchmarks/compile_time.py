"""Section 2: compile time of ``jit(grad(objective))`` against depth.

Unrolled (``stack=False``), ``lax.scan`` (``stack=True``) and scan with
``remat=True``. Unrolled compile time grows at least linearly with depth, so
points predicted to exceed the budget are skipped with the prediction recorded.
"""
from __future__ import annotations

import time

import jax

from jaxbp.core.nets import objective
import benchmarks.common as common
from benchmarks.config import Config

COMPILE_VARIANTS = {"unrolled": dict(stack=False), "scan": dict(stack=True),
                    "scan + remat": dict(stack=True, remat=True)}


def compile_time(net, batch: int) -> dict:
  """Seconds to trace + lower, and to compile, ``jit(grad(objective))`` for ``net``.

  Shapes only (``jax.ShapeDtypeStruct``): compiling needs no arrays, so a
  1000-layer unrolled net costs no parameter memory here.
  """
  params = jax.eval_shape(lambda k: net.init(k, "lecun", dtype=common.F32),
                          jax.random.PRNGKey(0))
  x = jax.ShapeDtypeStruct((batch, net.sizes[0]), common.F32)
  y = jax.ShapeDtypeStruct((batch, net.sizes[-1]), common.F32)
  fn = jax.jit(jax.grad(objective(net, "mse")))
  t0 = time.perf_counter()
  lowered = fn.lower(params, x, y)
  t1 = time.perf_counter()
  lowered.compile()
  t2 = time.perf_counter()
  return {"lower_s": t1 - t0, "compile_s": t2 - t1, "total_s": t2 - t0}


def compile_times(config: Config) -> dict:
  """Section 2: compile time against depth for the unrolled, scan and scan+remat nets."""
  # The first compilation of a process pays one-off costs (backend start-up):
  # take them here, not in the first measured point.
  compile_time(common.net(config.compile_width, 2, stack=True, remat=True), config.compile_batch)
  rows = {}
  for name, kw in COMPILE_VARIANTS.items():
    rows[name] = {}
    last = None
    for depth in config.compile_depths:
      if last is not None and name == "unrolled":
        predicted = last[1]["total_s"] * depth / last[0]
        if predicted > config.compile_budget_s:
          rows[name][depth] = {
              "skipped": f"skipped: predicted >= {predicted:.0f} s (linear in depth from "
                         f"{last[1]['total_s']:.2f} s at depth {last[0]}) > budget "
                         f"{config.compile_budget_s:.0f} s"}
          continue
      r = compile_time(common.net(config.compile_width, depth, **kw), config.compile_batch)
      if r["total_s"] > config.compile_budget_s:
        r["over_budget"] = True
      rows[name][depth] = r
      last = (depth, r)
      print(f"  compile {name} depth {depth}: {r['total_s']:.2f} s", flush=True)
  return {"width": config.compile_width, "batch": config.compile_batch, "rows": rows}
