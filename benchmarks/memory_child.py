"""Section 3's child process: the extra resident memory of one gradient step per spec.

    python -m benchmarks.memory_child '[{"variant": "autodiff, scan",
        "depth": 10, "width": 32, "batch": 16}]'

prints one JSON list, a record per spec, on its last line of output. The
section (:mod:`benchmarks.memory`) starts it; nothing imports this
module at package import, so running it with ``-m`` loads it only once.
"""
from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.core.nets import Dense, objective
import benchmarks.common as common
import benchmarks.memory as memory
import benchmarks.timing as timing

try:
  from jax.ad_checkpoint import saved_residuals
except ImportError:   # jax releases that export only its printer keep it here
  from jax._src.ad_checkpoint import saved_residuals


def lean_init(net, key):
  """Lecun-normal params of a stacked net, drawn one layer at a time under ``lax.map``.

  ``net.init`` draws the whole ``(L, n, n)`` stack in one call; at depth 1000,
  width 1024 its random bits are a second 4 GB buffer. Layer by layer, setup
  needs no more than the parameters themselves (the values differ; the memory
  and time of a step do not depend on them). Jitted on the layer shapes alone,
  so the variants of one depth share one compiled initialiser.
  """
  layout = tuple((n, fan_in, fan_out, net.is_stacked(g))
                 for g, (n, fan_in, fan_out) in enumerate(net.groups))
  return _lean_params(layout, key)


@functools.partial(jax.jit, static_argnums=0)
def _lean_params(layout, key):
  def layer(k, fan_in, fan_out):
    kw, _ = jax.random.split(k)
    return Dense(jax.random.normal(kw, (fan_in, fan_out), common.F32) / math.sqrt(fan_in),
                 jnp.zeros((fan_out,), common.F32))

  params = []
  for n, fan_in, fan_out, stacked in layout:
    key, k = jax.random.split(key)
    if stacked:
      params.append(jax.lax.map(lambda k: layer(k, fan_in, fan_out), jax.random.split(k, n)))
    else:
      params.append(layer(k, fan_in, fan_out))
  return tuple(params)


def _saved_bytes(net, params, x, y) -> int:
  """Bytes autodiff saves for the backward pass, the arguments and views of them excluded."""
  f = objective(net, "mse")
  # Reshapes of arguments are views (bitcasts in XLA), not extra memory.
  return sum(int(np.prod(aval.shape)) * aval.dtype.itemsize
             for aval, why in saved_residuals(f, params, x, y)
             if "from the argument" not in why and "output of reshape" not in why)


def measure_step(spec: dict) -> dict:
  """The extra resident memory of one gradient step, after its setup.

  Setup (parameters, data, compilation) first; then the baseline is the current
  resident set, the high-water mark is reset to it, one step runs, and the new
  high-water mark is the peak. Also reports XLA's own accounting of the compiled
  program (``memory_analysis``: temporaries = everything but arguments and
  outputs) and, for autodiff, the residuals it saves for the backward pass
  (``saved_residuals``, minus the arguments themselves).

  Args:
    spec: ``{"variant", "depth", "width", "batch"}``, a variant from
      :data:`benchmarks.memory.MEMORY_VARIANTS`.
  """
  variant, depth, width, batch = spec["variant"], spec["depth"], spec["width"], spec["batch"]
  net, grad_fn = memory.grad_program(variant, depth, width, batch)
  params = lean_init(net, jax.random.PRNGKey(0))
  x, y = common.data(jax.random.PRNGKey(1), batch, width)
  compiled = jax.jit(grad_fn).lower(params, x, y).compile()
  analysis = compiled.memory_analysis()
  saved = None if variant == "hand recursion, scan" else _saved_bytes(net, params, x, y)
  jax.block_until_ready((params, x, y))
  gc.collect()
  timing.release_free_memory()           # setup's (or an earlier point's) freed buffers
  device = jax.devices()[0].memory_stats()     # None on CPU; bytes in use/peak on GPU, TPU
  baseline = timing.rss_bytes()
  reset = timing.reset_peak_rss()
  t0 = time.perf_counter()
  grads = jax.block_until_ready(compiled(params, x, y))
  seconds = time.perf_counter() - t0
  peak = timing.peak_rss_bytes()
  device_extra = None
  if device and "peak_bytes_in_use" in device:
    # The device peak cannot be reset: it tells the step's extra only if the step raised it.
    after = jax.devices()[0].memory_stats()["peak_bytes_in_use"]
    if after > device["peak_bytes_in_use"]:
      device_extra = after - device["bytes_in_use"]
  del grads
  param_bytes = sum(a.size * a.dtype.itemsize for a in jax.tree_util.tree_leaves(params))
  return {"baseline_rss": baseline, "peak_rss": peak, "step_extra": peak - baseline,
          "peak_method": "VmHWM reset before the step" if reset else
                         "ru_maxrss over the whole process (could not reset)",
          "param_bytes": param_bytes, "xla_temp": analysis.temp_size_in_bytes,
          "xla_output": analysis.output_size_in_bytes,
          "xla_argument": analysis.argument_size_in_bytes,
          "saved_residuals": saved, "step_s": seconds, "device_step_extra": device_extra,
          "block": memory.memory_block(depth, width, batch) if "block" in variant else None}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("specs", help="JSON list of {variant, depth, width, batch}")
  args = parser.parse_args(argv)
  print(json.dumps([measure_step(spec) for spec in json.loads(args.specs)]))


if __name__ == "__main__":
  main()
