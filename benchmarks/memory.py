"""Section 3: peak memory of one gradient step against depth, each point in a child process.

Variants (all stacked tanh nets): plain autodiff under ``lax.scan``, per-layer
remat, block remat (``MLP(remat=k)``) and the hand recursion. Each point runs in
``python -m benchmarks.memory_child`` (see that module for what is
measured), so that no earlier allocation of this process hides its peak.
"""
from __future__ import annotations

import functools
import json
import subprocess
import sys

import jax

from jaxbp.core import backprop
from jaxbp.core.nets import objective
import benchmarks.common as common
import benchmarks.timing as timing
from benchmarks.config import Config

MEMORY_VARIANTS = ("autodiff, scan", "autodiff, scan + remat", "autodiff, scan + block remat",
                   "hand recursion, scan")
CHILD_MODULE = "benchmarks.memory_child"
# The very deep point (Config.memory_deep): only the remat variants fit its memory.
DEEP_VARIANTS = ("autodiff, scan + block remat", "autodiff, scan + remat")

# Arrays of one h (batch x width) kept per layer, a little over what each variant
# keeps: plain autodiff 3 (h_in, tanh, 1 - tanh), the hand recursion 3 (z, h and
# a shifted copy of h), per-layer remat 1, block remat < 1.
H_PER_LAYER = {"autodiff, scan": 3.2, "autodiff, scan + remat": 1.2,
               "autodiff, scan + block remat": 1.0, "hand recursion, scan": 3.2}


def block_size(layers: int, h_bytes: int = 1, w_bytes: int = 0) -> int:
  """The divisor k of ``layers`` minimising what block remat holds at once.

  Block remat is the library's ``MLP(remat=k)``: the L stacked layers run as a
  scan over blocks of k, each under ``jax.checkpoint`` (Chen et al. 2016,
  "Training deep nets with sublinear memory cost"). It holds the saved block
  inputs (``layers / k`` arrays h), one block's recomputed residuals (~3 h per
  layer) and the block's weights and weight gradients, which are sliced into
  buffers per block (2 W per layer). With weights negligible the best k is
  ~sqrt(L / 3), O(sqrt L) memory; with wide layers (W = 4 h at width 1024,
  batch 256) smaller blocks win. A divisor, so that no shorter last block is needed.
  """
  divisors = [k for k in range(1, layers + 1) if layers % k == 0]
  cost = lambda k: layers / k * h_bytes + k * (3 * h_bytes + 2 * w_bytes)
  return min(divisors, key=lambda k: (cost(k), -k))   # ties: fewer, larger blocks


def memory_block(depth: int, width: int, batch: int) -> int:
  """Block remat's k for a net of ``depth`` hidden layers (``depth - 1`` of them stacked)."""
  return block_size(depth - 1, batch * width, width * width)


def remat_setting(variant: str, depth: int, width: int, batch: int):
  """The ``MLP(remat=...)`` of a memory variant: False, True (per layer) or k (blocks)."""
  if variant == "autodiff, scan + block remat":
    return memory_block(depth, width, batch)
  return variant == "autodiff, scan + remat"


def grad_program(variant: str, depth: int, width: int, batch: int):
  """(net, grad function) of one memory variant; all are stacked tanh nets."""
  net = common.net(width, depth, stack=True, remat=remat_setting(variant, depth, width, batch))
  if variant == "hand recursion, scan":
    return net, functools.partial(backprop.grad, net, "mse")
  return net, jax.grad(objective(net, "mse"))


def memory_estimate(variant: str, depth: int, width: int, batch: int) -> int:
  """Bytes a child needs: params + grads + its activations + 1 GiB (runtime, slack)."""
  params = (depth + 1) * (width * width + width) * 4
  return int(2 * params + H_PER_LAYER[variant] * depth * batch * width * 4 + 2 ** 30)


def run_child(specs, timeout_s: float) -> list:
  """Measures ``specs`` in one fresh Python process, in order; a failure is recorded per spec."""
  try:
    proc = subprocess.run([sys.executable, "-m", CHILD_MODULE, json.dumps(specs)],
                          capture_output=True, text=True, env=common.child_env(),
                          timeout=timeout_s)
  except subprocess.TimeoutExpired:
    return [{"skipped": f"skipped: over the {timeout_s:.0f} s timeout"}] * len(specs)
  if proc.returncode == -9:
    return [{"skipped": "failed: killed by SIGKILL (out of memory?)"}] * len(specs)
  if proc.returncode != 0:
    return [{"skipped": f"failed (exit {proc.returncode}): "
                        f"{proc.stderr.strip().splitlines()[-1:]}"}] * len(specs)
  return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_memory(config: Config) -> dict:
  """Section 3: every (variant, depth) point in a fresh subprocess, one after another.

  With ``memory_fresh_process=False`` (``--quick``) all points share one child,
  one after another, each measured from its own baseline after the allocator's
  free memory is returned to the OS.
  """
  rows = {v: {} for v in MEMORY_VARIANTS}
  points = [(d, v) for d in config.memory_depths for v in MEMORY_VARIANTS]
  groups = [[pt] for pt in points] if config.memory_fresh_process else [points]
  for group in groups:
    runnable = []
    for depth, variant in group:
      need = memory_estimate(variant, depth, config.memory_width, config.memory_batch)
      avail = timing.available_memory_bytes()
      # A margin: on a shared machine the kernel's OOM killer would pick a process
      # that may not be ours.
      if avail is not None and avail < 1.15 * need:
        rows[variant][depth] = {"skipped": f"skipped: needs ~{need / 2**30:.1f} GiB, "
                                           f"{avail / 2**30:.1f} GiB available"}
      else:
        runnable.append((depth, variant))
    if not runnable:
      continue
    specs = [{"variant": v, "depth": d, "width": config.memory_width,
              "batch": config.memory_batch} for d, v in runnable]
    for (depth, variant), r in zip(runnable, run_child(specs, config.memory_timeout_s)):
      rows[variant][depth] = r
      if "skipped" not in r:
        print(f"  memory {variant} depth {depth}: step +{r['step_extra'] / 2**20:.0f} MiB, "
              f"XLA temp {r['xla_temp'] / 2**20:.0f} MiB", flush=True)
  deep = {}
  if config.memory_deep is not None:
    depth, width, batch = config.memory_deep
    runnable = []
    for variant in DEEP_VARIANTS:
      base = {"variant": variant, "depth": depth, "width": width, "batch": batch}
      need = memory_estimate(variant, depth, width, batch)
      avail = timing.available_memory_bytes()
      if avail is not None and avail < 1.15 * need:
        deep[variant] = dict(base, skipped=f"skipped: needs ~{need / 2**30:.1f} GiB, "
                                           f"{avail / 2**30:.1f} GiB available")
      else:
        runnable.append(base)
    # A fresh process per variant, as for the other points (one for all in --quick).
    groups = [[b] for b in runnable] if config.memory_fresh_process else [runnable]
    for group in (g for g in groups if g):
      for base, r in zip(group, run_child(group, config.memory_timeout_s)):
        deep[base["variant"]] = dict(r, **base)
        if "skipped" not in r:
          print(f"  memory {base['variant']} depth {depth} width {width}: process peak "
                f"{r['peak_rss'] / 2**20:.0f} MiB", flush=True)
  return {"width": config.memory_width, "batch": config.memory_batch, "deep": deep,
          "fresh_process_per_point": config.memory_fresh_process,
          "h_bytes": config.memory_batch * config.memory_width * 4, "rows": rows}
