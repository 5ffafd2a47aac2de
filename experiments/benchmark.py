"""Speed, compile time and memory of jaxbp's gradients, beside PyTorch and NumPy.

    python experiments/benchmark.py --out runs/benchmark          # the full run
    python experiments/benchmark.py --out /tmp/bench --quick      # tiny sizes, < 60 s

writes ``results.json`` (every number), ``results.md`` (the tables, with the
machine: CPU, cores, jax / jaxlib / torch / numpy versions, device) and
``config.json``. One run measures, on the same shapes and data:

1. throughput: one gradient step of tanh MLPs with MSE (widths 64, 256, 1024;
   depth 10; batch 128 and 1024; float32): ``jit(grad(objective))`` (unrolled
   and under ``lax.scan``), jaxbp's hand recursion (jitted), PyTorch eager
   autograd (on all cores and on one), a NumPy backprop in seed 002's style,
   and as ceilings a large jitted matmul and one matmul of the step's shape. A
   step is ``6 * batch * sum(in * out)`` flops.
2. compile time against depth (10, 100, 1000): unrolled (``stack=False``),
   ``lax.scan`` (``stack=True``) and scan with ``remat=True``.
3. peak memory against depth (width 1024, batch 256): plain, per-layer remat,
   block remat (a prototype) and the hand recursion, each in a fresh
   subprocess (resident-set high-water mark over one step, minus the same
   process's resident set just before it), beside XLA's own accounting.
4. the depth sweep's grid (:func:`jaxbp.sweep.measure` over seeds x sigma_w^2
   x sigma_b^2): one vmapped program against a Python loop of jitted calls and
   the same loop in PyTorch; also on small nets, where dispatch dominates.
5. per-example gradients at batch 256: ``vmap(grad)`` against a Python loop
   (and a prototype from the hand recursion's deltas).

Each target of issue #6 is reported as met or missed with its measured ratio.
Timings on a shared machine are noisy: the methods of one comparison are timed
interleaved, so read the ratios, not the absolute times.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import time
from typing import NamedTuple, Optional, Tuple

# PyTorch's OpenMP threads spin-wait at barriers by default. On a machine whose
# cores are also busy with other processes, a 2-thread team then waits for a
# descheduled spinner at every op (measured here: 344 ms instead of 0.5 ms per
# step of a 32-wide net). Passive waiting removes that; set before torch loads
# (a value already in the environment wins), and recorded in results.md.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp
from jaxbp.core import backprop
from jaxbp.studies import benchmarking
from jaxbp import io as results
from jaxbp.core.nets import Dense

F32 = jnp.float32
SECTIONS = ("throughput", "compile", "memory", "sweep", "per_example")
MATMUL = "large matmul (ceiling)"
SHAPE_MATMUL = "one matmul of the step's shape"


class Grid(NamedTuple):
  """One shape of the depth sweep and its configurations."""
  seeds: int
  sigma_w2: Tuple[float, ...]
  sigma_b2: Tuple[float, ...]
  depth: int
  width: int
  batch: int


SWEEP_GRID = Grid(seeds=3, sigma_w2=(0.5, 1.5, 3.0), sigma_b2=(0.0, 0.1), depth=48, width=256,
                  batch=8)
SWEEP_SMALL_GRID = Grid(seeds=4, sigma_w2=(0.5, 1.0, 1.5, 2.0, 3.0, 4.0),
                        sigma_b2=(0.0, 0.05, 0.3), depth=8, width=16, batch=8)


@dataclasses.dataclass(frozen=True)
class Config:
  """Sizes and repeats of every section; ``quick()`` gives the tiny version."""
  quick: bool = False
  seed: int = 0
  sections: Tuple[str, ...] = SECTIONS
  torch: bool = True                 # False: record the torch columns as skipped
  # 1. throughput
  widths: Tuple[int, ...] = (64, 256, 1024)
  depth: int = 10
  batches: Tuple[int, ...] = (128, 1024)
  repeats: int = 7
  warmup: int = 2
  min_time: float = 0.3              # seconds per timed repeat (many calls if fast)
  matmul_n: int = 2048
  # 2. compile time
  compile_depths: Tuple[int, ...] = (10, 100, 1000)
  compile_width: int = 256
  compile_batch: int = 128
  compile_budget_s: float = 240.0    # unrolled nets predicted slower than this are skipped
  # 3. peak memory
  memory_depths: Tuple[int, ...] = (10, 100, 1000)
  memory_width: int = 1024
  memory_batch: int = 256
  memory_timeout_s: float = 1200.0
  memory_fresh_process: bool = True  # one child process per point (False: one for all)
  # 4. depth-sweep grids: jaxbp.sweep.QUICK's tanh gaussian grid at its deepest
  # depth, and the same grid shape on small nets (where dispatch, not compute, dominates)
  sweep_grid: Grid = SWEEP_GRID
  sweep_small_grid: Optional[Grid] = SWEEP_SMALL_GRID
  # 5. per-example gradients
  per_example_width: int = 64
  per_example_depth: int = 10
  per_example_batch: int = 256


def quick() -> Config:
  """Tiny sizes and few repeats: every section, in well under a minute."""
  return Config(quick=True, widths=(16,), depth=3, batches=(8, 32), repeats=3, warmup=1,
                min_time=0.01, matmul_n=256, compile_width=16, compile_batch=8,
                compile_budget_s=2.0, memory_depths=(10,), memory_width=32, memory_batch=16,
                memory_timeout_s=120.0, memory_fresh_process=False,
                sweep_grid=Grid(seeds=2, sigma_w2=(1.0, 2.0), sigma_b2=(0.0,), depth=4, width=8,
                                batch=4), sweep_small_grid=None,
                per_example_width=8, per_example_depth=3, per_example_batch=16)


def _torch():
  """The torch module, or None: the sections that need it then record why they skipped."""
  try:
    import torch
  except ImportError:
    return None
  torch.set_num_threads(benchmarking.cpu_count())   # same cores as XLA's thread pool
  return torch


def _one_thread(torch, fn):
  """``fn`` run with one torch thread (then back to all cores): torch's other baseline."""
  cores = benchmarking.cpu_count()

  def call():
    torch.set_num_threads(1)
    try:
      return fn()
    finally:
      torch.set_num_threads(cores)

  return call


def _one_blas_thread(fn):
  """``fn`` with NumPy's BLAS on one thread (threadpoolctl), or None without threadpoolctl.

  OpenBLAS's idle threads spin; timed in turn with XLA's and torch's pools on a
  busy 2-core machine, its 2-thread small matmuls can be 50x slower than on one.
  """
  try:
    import threadpoolctl
  except ImportError:
    return None
  controller = threadpoolctl.ThreadpoolController()

  def call():
    with controller.limit(limits=1, user_api="blas"):
      return fn()

  return call


def _torch_skip(config: Config) -> Optional[str]:
  if not config.torch:
    return "skipped: torch disabled (--no-torch)"
  return None if _torch() is not None else "skipped: torch not installed"


def _net(width, depth, **kwargs):
  # in = width = out: every layer is a width x width matmul, so the flop count
  # is (depth + 1) * width^2 per example and the ceiling comparison is clean.
  return jaxbp.MLP.uniform(width, width, depth, width, activation="tanh", **kwargs)


def _data(key, batch, width):
  kx, ky = jax.random.split(key)
  return (jax.random.normal(kx, (batch, width), F32), jax.random.normal(ky, (batch, width), F32))


def _stacked(params):
  """Unstacked ``Dense`` per layer -> (first, stacked hidden, last), the ``stack=True`` layout."""
  hidden = params[1:-1]
  return (params[0], Dense(jnp.stack([p.W for p in hidden]), jnp.stack([p.b for p in hidden])),
          params[-1])


def _max_rel_err(ref, other) -> float:
  """max |a - b| / max |a| over all leaves (both trees flattened in the same order)."""
  a = [np.asarray(v, np.float64) for v in ref]
  b = [np.asarray(v, np.float64) for v in other]
  assert [x.shape for x in a] == [x.shape for x in b], ([x.shape for x in a], [x.shape for x in b])
  scale = max(float(np.max(np.abs(x))) for x in a)
  return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b)) / scale


# -- 1. throughput -------------------------------------------------------------


def numpy_grad(Ws, x, y):
  """Seed 002's backprop in NumPy: biases as the last row of W, inputs padded with 1.

  Forward keeps every padded input and pre-activation; backward walks
  ``delta_{i} = (delta_{i+1} @ W_{i+1}[:-1].T) * S'(In_i)`` and takes each
  gradient as soon as its delta is known (seed 002: "so as not to store the
  delta array"). tanh hidden layers, identity output, mean squared error.
  """
  inputs, zs, h = [], [], x
  for k, W in enumerate(Ws):
    h_aug = np.concatenate([h, np.ones((h.shape[0], 1), h.dtype)], axis=1)
    z = h_aug @ W
    inputs.append(h_aug)
    zs.append(z)
    h = np.tanh(z) if k < len(Ws) - 1 else z
  delta = 2.0 * (h - y) / h.size          # d mean((h - y)^2) / dh, identity output
  grads = [None] * len(Ws)
  for k in reversed(range(len(Ws))):
    grads[k] = inputs[k].T @ delta
    if k > 0:
      delta = (delta @ Ws[k][:-1].T) * (1.0 - np.tanh(zs[k - 1]) ** 2)
  return grads


def torch_grad_fn(torch, params, x, y):
  """PyTorch eager autograd on the same params (``W`` as ``(in, out)``, ``addmm``)."""
  leaves = [torch.tensor(np.asarray(v)).requires_grad_() for p in params for v in (p.W, p.b)]
  tx, ty = torch.tensor(np.asarray(x)), torch.tensor(np.asarray(y))
  last = len(params) - 1

  def step():
    h = tx
    for k in range(len(params)):
      z = torch.addmm(leaves[2 * k + 1], h, leaves[2 * k])   # b + h @ W, one kernel
      h = torch.tanh(z) if k < last else z
    loss = torch.mean((h - ty) ** 2)
    return torch.autograd.grad(loss, leaves)

  return step


# "%name = f32[8,4]{1,0} dot(...": the op follows the shape (which may be a tuple).
_HLO_OP = re.compile(r" = (?:\(.*?\)|\S+) ([a-z][\w-]*)\(")


def _hlo_summary(compiled) -> dict:
  """Where the matmuls of an optimised CPU HLO module go, and what else it copies.

  XLA:CPU hands a dot to YNNPACK (a ``__ynn_fusion``) when it can; the others run
  in XLA's own dot emitter. Copies and transposes are memory traffic that a
  fused program would not need.
  """
  text = compiled.as_text()
  ynn, current = set(), None
  for line in text.splitlines():
    if "__ynn_fusion" in line and "calls=%" in line:
      ynn.add(line.split("calls=%", 1)[1].split(",", 1)[0].split(" ", 1)[0])
  counts = {"dots": 0, "dots_in_ynnpack": 0, "dots_in_xla": 0, "transposed_lhs_dots_in_xla": 0,
            "copies": 0, "transposes": 0, "while_loops": 0}
  for line in text.splitlines():
    stripped = line.strip()
    if stripped.endswith("{") and stripped.startswith(("%", "ENTRY")) and " = " not in stripped:
      current = ("ENTRY" if stripped.startswith("ENTRY")
                 else stripped.split(" ", 1)[0].lstrip("%"))
      continue
    m = _HLO_OP.search(stripped)
    if m is None:
      continue
    op = m.group(1)
    if op == "dot":
      counts["dots"] += 1
      if current in ynn:
        counts["dots_in_ynnpack"] += 1
      else:
        counts["dots_in_xla"] += 1
        # h^T @ delta: the LHS contracts its leading (batch) dimension, not its last
        # (rank 2: dim 0; rank 3 under vmap: dim 1 after the vmapped dim 0).
        if (("lhs_batch_dims" not in stripped and "lhs_contracting_dims={0}" in stripped)
            or "lhs_batch_dims={0}, lhs_contracting_dims={1}," in stripped):
          counts["transposed_lhs_dots_in_xla"] += 1
    elif op == "copy" or (op == "fusion" and "copy" in stripped.split(" = ", 1)[0]):
      counts["copies"] += 1
    elif op == "transpose":
      counts["transposes"] += 1
    elif op == "while":
      counts["while_loops"] += 1
  return counts


def throughput(config: Config) -> dict:
  """Section 1: time per gradient step and GFLOP/s, five ways, every size."""
  matmul, matmul_flops = benchmarking.matmul(config.matmul_n)
  shape_matmul = jax.jit(jnp.matmul)
  torch = None if _torch_skip(config) else _torch()
  rows = []
  key = jax.random.PRNGKey(config.seed)
  for width in config.widths:
    for batch in config.batches:
      key, pkey, dkey = jax.random.split(key, 3)
      net = _net(width, config.depth)
      scan_net = dataclasses.replace(net, stack=True)
      params = net.init(pkey, "lecun", dtype=F32)
      stacked = _stacked(params)
      x, y = _data(dkey, batch, width)
      autodiff = jax.jit(jax.grad(jaxbp.objective(net, "mse")))
      scan_autodiff = jax.jit(jax.grad(jaxbp.objective(scan_net, "mse")))
      hand = jax.jit(functools.partial(backprop.grad, net, "mse"))
      Ws = [np.concatenate([np.asarray(p.W), np.asarray(p.b)[None, :]], axis=0) for p in params]
      xn, yn = np.asarray(x), np.asarray(y)
      fns = {"jaxbp autodiff": lambda: autodiff(params, x, y),
             "jaxbp hand recursion": lambda: hand(params, x, y),
             "jaxbp autodiff, scan": lambda: scan_autodiff(stacked, x, y),
             "numpy (seed 002)": lambda: numpy_grad(Ws, xn, yn)}
      numpy_one = _one_blas_thread(fns["numpy (seed 002)"])
      if numpy_one is not None:
        fns["numpy (seed 002), 1 BLAS thread"] = numpy_one
      if torch is not None:
        fns["torch eager"] = torch_grad_fn(torch, params, x, y)
        fns["torch eager, 1 thread"] = _one_thread(torch, fns["torch eager"])

      # Every method must compute the same gradient before its speed means anything.
      ref = jax.tree_util.tree_leaves(autodiff(params, x, y))
      errors = {"jaxbp hand recursion": _max_rel_err(
                    ref, jax.tree_util.tree_leaves(hand(params, x, y))),
                "jaxbp autodiff, scan": _max_rel_err(
                    jax.tree_util.tree_leaves(_stacked(autodiff(params, x, y))),
                    jax.tree_util.tree_leaves(scan_autodiff(stacked, x, y))),
                "numpy (seed 002)": _max_rel_err(
                    ref, [a for g in numpy_grad(Ws, xn, yn) for a in (g[:-1], g[-1])])}
      if torch is not None:
        errors["torch eager"] = _max_rel_err(ref, [t.numpy() for t in fns["torch eager"]()])
      errors["jaxbp autodiff"] = 0.0
      for name in fns:      # a method on fewer threads computes what it computes on all
        errors.setdefault(name, errors[name.split(", 1 ")[0]])

      # The ceilings are timed in the same interleaved rounds as the methods they
      # bound: the large matmul, and one matmul of the step's own shape
      # (batch, width) @ (width, width), which the step does 3 x (depth + 1) times.
      fns[MATMUL] = matmul
      W0 = params[1].W
      fns[SHAPE_MATMUL] = lambda: shape_matmul(x, W0)
      times = benchmarking.time_interleaved(fns, config.repeats, config.warmup, config.min_time)
      flops = benchmarking.step_flops(net.sizes, batch)
      ceiling = matmul_flops / times[MATMUL]["median_s"] / 1e9
      own = {MATMUL: matmul_flops, SHAPE_MATMUL: 2 * batch * width * width}
      methods = {}
      for name, t in times.items():
        gflops = own.get(name, flops) / t["median_s"] / 1e9
        methods[name] = dict(t, gflops=gflops, fraction_of_matmul=gflops / ceiling,
                             max_rel_err=errors.get(name))
      ad = methods["jaxbp autodiff"]["median_s"]
      row = {"width": width, "batch": batch, "depth": config.depth, "flops": flops,
             "methods": methods, "matmul_gflops": ceiling,
             "hand_over_autodiff_time": methods["jaxbp hand recursion"]["median_s"] / ad,
             "scan_over_autodiff_time": methods["jaxbp autodiff, scan"]["median_s"] / ad,
             "numpy_over_autodiff_time": min(
                 t["median_s"] for n, t in methods.items() if n.startswith("numpy")) / ad,
             "autodiff_fraction_of_matmul": methods["jaxbp autodiff"]["fraction_of_matmul"],
             "autodiff_fraction_of_shape_matmul": methods["jaxbp autodiff"]["gflops"]
                                                  / methods[SHAPE_MATMUL]["gflops"]}
      if torch is not None:
        # The target's baseline is torch at its faster thread count on this
        # machine: the specified one (all cores) or one thread.
        tt = min(methods["torch eager"]["median_s"], methods["torch eager, 1 thread"]["median_s"])
        row["torch_best"] = ("torch eager" if tt == methods["torch eager"]["median_s"]
                             else "torch eager, 1 thread")
        row["autodiff_speedup_over_torch"] = tt / ad
        row["autodiff_speedup_over_torch_all_cores"] = methods["torch eager"]["median_s"] / ad
        row["hand_speedup_over_torch"] = tt / methods["jaxbp hand recursion"]["median_s"]
      else:
        row["torch eager"] = _torch_skip(config)
      if width == max(config.widths) and batch == max(config.batches) and not config.quick:
        row["hlo_autodiff"] = _hlo_summary(autodiff.lower(params, x, y).compile())
        row["hlo_hand"] = _hlo_summary(hand.lower(params, x, y).compile())
      rows.append(row)
      print(f"  throughput width {width} batch {batch}: " + ", ".join(
          f"{n} {m['median_s'] * 1e3:.3g} ms" for n, m in methods.items()), flush=True)
  return {"matmul_n": config.matmul_n, "rows": rows,
          "torch": "measured" if torch is not None else _torch_skip(config)}


# -- 2. compile time -----------------------------------------------------------

COMPILE_VARIANTS = {"unrolled": dict(stack=False), "scan": dict(stack=True),
                    "scan + remat": dict(stack=True, remat=True)}


def _compile_time(net, batch) -> dict:
  """Seconds to trace + lower, and to compile, ``jit(grad(objective))`` for ``net``.

  Shapes only (``jax.ShapeDtypeStruct``): compiling needs no arrays, so a
  1000-layer unrolled net costs no parameter memory here.
  """
  params = jax.eval_shape(lambda k: net.init(k, "lecun", dtype=F32), jax.random.PRNGKey(0))
  x = jax.ShapeDtypeStruct((batch, net.sizes[0]), F32)
  y = jax.ShapeDtypeStruct((batch, net.sizes[-1]), F32)
  fn = jax.jit(jax.grad(jaxbp.objective(net, "mse")))
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
  _compile_time(_net(config.compile_width, 2, stack=True, remat=True), config.compile_batch)
  rows = {}
  for name, kw in COMPILE_VARIANTS.items():
    rows[name] = {}
    last = None
    for depth in config.compile_depths:
      if last is not None and name == "unrolled":
        # Unrolled compile time grows at least linearly with depth: predict from
        # the last point and skip what cannot finish inside the budget.
        predicted = last[1]["total_s"] * depth / last[0]
        if predicted > config.compile_budget_s:
          rows[name][depth] = {
              "skipped": f"skipped: predicted >= {predicted:.0f} s (linear in depth from "
                         f"{last[1]['total_s']:.2f} s at depth {last[0]}) > budget "
                         f"{config.compile_budget_s:.0f} s"}
          continue
      r = _compile_time(_net(config.compile_width, depth, **kw), config.compile_batch)
      if r["total_s"] > config.compile_budget_s:
        r["over_budget"] = True
      rows[name][depth] = r
      last = (depth, r)
      print(f"  compile {name} depth {depth}: {r['total_s']:.2f} s", flush=True)
  return {"width": config.compile_width, "batch": config.compile_batch, "rows": rows}


# -- 3. peak memory ------------------------------------------------------------

MEMORY_VARIANTS = ("autodiff, scan", "autodiff, scan + remat", "autodiff, scan + block remat",
                   "hand recursion, scan")


def _block_size(layers: int, h_bytes: int = 1, w_bytes: int = 0) -> int:
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


def _memory_block(depth, width, batch) -> int:
  return _block_size(depth - 1, batch * width, width * width)


def _remat(variant: str, depth: int, width: int, batch: int):
  """The ``MLP(remat=...)`` of a memory variant: False, True (per layer) or k (blocks)."""
  if variant == "autodiff, scan + block remat":
    return _memory_block(depth, width, batch)
  return variant == "autodiff, scan + remat"


def _grad_program(variant: str, depth: int, width: int, batch: int):
  """(net, grad function) of one memory variant; all are stacked tanh nets."""
  net = _net(width, depth, stack=True, remat=_remat(variant, depth, width, batch))
  if variant == "hand recursion, scan":
    return net, functools.partial(backprop.grad, net, "mse")
  return net, jax.grad(jaxbp.objective(net, "mse"))


def _lean_init(net, key):
  """Lecun-normal params of a stacked net, drawn one layer at a time under ``lax.map``.

  ``net.init`` draws the whole ``(L, n, n)`` stack in one call; at depth 1000,
  width 1024 its random bits are a second 4 GB buffer. Layer by layer, setup
  needs no more than the parameters themselves (the values differ; the memory
  and time of a step do not depend on them).
  """
  def layer(k, fan_in, fan_out):
    kw, kb = jax.random.split(k)
    return Dense(jax.random.normal(kw, (fan_in, fan_out), F32) / math.sqrt(fan_in),
                 jnp.zeros((fan_out,), F32))

  params = []
  for g, (n, fan_in, fan_out) in enumerate(net.groups):
    key, k = jax.random.split(key)
    if net.is_stacked(g):
      params.append(jax.lax.map(lambda k: layer(k, fan_in, fan_out), jax.random.split(k, n)))
    else:
      params.append(layer(k, fan_in, fan_out))
  return tuple(params)


def memory_child(spec: dict) -> dict:
  """Runs in a fresh process: the extra resident memory of one gradient step.

  Setup (parameters, data, compilation) first; then the baseline is the current
  resident set, the high-water mark is reset to it, one step runs, and the new
  high-water mark is the peak. Also reports XLA's own accounting of the compiled
  program (``memory_analysis``: temporaries = everything but arguments and
  outputs) and, for autodiff, the residuals it saves for the backward pass
  (``jax.ad_checkpoint.saved_residuals``, minus the arguments themselves).
  """
  variant, depth, width, batch = spec["variant"], spec["depth"], spec["width"], spec["batch"]
  net, grad_fn = _grad_program(variant, depth, width, batch)
  params = jax.jit(lambda k: _lean_init(net, k))(jax.random.PRNGKey(0))
  x, y = _data(jax.random.PRNGKey(1), batch, width)
  compiled = jax.jit(grad_fn).lower(params, x, y).compile()
  analysis = compiled.memory_analysis()
  saved = None
  if variant != "hand recursion, scan":
    try:
      from jax.ad_checkpoint import saved_residuals
    except ImportError:       # jax 0.10 keeps it private; print_saved_residuals is its printer
      from jax._src.ad_checkpoint import saved_residuals
    f = jaxbp.objective(net, "mse")
    # Arguments, and reshapes of them (views, bitcasts in XLA), are not extra memory.
    saved = sum(int(np.prod(aval.shape)) * aval.dtype.itemsize
                for aval, why in saved_residuals(f, params, x, y)
                if "from the argument" not in why and "output of reshape" not in why)
  jax.block_until_ready((params, x, y))
  gc.collect()
  benchmarking.release_free_memory()           # setup's (or an earlier point's) freed buffers
  device = jax.devices()[0].memory_stats()     # None on CPU; bytes in use/peak on GPU, TPU
  baseline = benchmarking.rss_bytes()
  reset = benchmarking.reset_peak_rss()
  t0 = time.perf_counter()
  grads = jax.block_until_ready(compiled(params, x, y))
  seconds = time.perf_counter() - t0
  peak = benchmarking.peak_rss_bytes()
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
          "block": _memory_block(depth, width, batch) if "block" in variant else None}


# Arrays of one h (batch x width) kept per layer, a little over what each variant
# was measured to keep: plain autodiff 3 (h_in, tanh, 1 - tanh), the hand
# recursion 3 (z, h and a shifted copy of h), per-layer remat 1, block remat < 1.
_H_PER_LAYER = {"autodiff, scan": 3.2, "autodiff, scan + remat": 1.2,
                "autodiff, scan + block remat": 1.0, "hand recursion, scan": 3.2}


def _memory_estimate(variant, depth, width, batch) -> int:
  """Bytes a child needs: params + grads + its activations + 1 GiB (runtime, slack)."""
  params = (depth + 1) * (width * width + width) * 4
  return int(2 * params + _H_PER_LAYER[variant] * depth * batch * width * 4 + 2 ** 30)


def _run_child(specs, env, timeout_s) -> list:
  """Runs :func:`memory_child` on ``specs`` in one fresh Python process, in order."""
  try:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child",
                           json.dumps(specs)], capture_output=True, text=True, env=env,
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
  env = dict(os.environ)
  root = str(pathlib.Path(jaxbp.__file__).resolve().parents[1])
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  rows = {v: {} for v in MEMORY_VARIANTS}
  points = [(d, v) for d in config.memory_depths for v in MEMORY_VARIANTS]
  groups = [[pt] for pt in points] if config.memory_fresh_process else [points]
  for group in groups:
    runnable = []
    for depth, variant in group:
      need = _memory_estimate(variant, depth, config.memory_width, config.memory_batch)
      avail = benchmarking.available_memory_bytes()
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
    for (depth, variant), r in zip(runnable, _run_child(specs, env, config.memory_timeout_s)):
      rows[variant][depth] = r
      if "skipped" not in r:
        print(f"  memory {variant} depth {depth}: step +{r['step_extra'] / 2**20:.0f} MiB, "
              f"XLA temp {r['xla_temp'] / 2**20:.0f} MiB", flush=True)
  return {"width": config.memory_width, "batch": config.memory_batch,
          "fresh_process_per_point": config.memory_fresh_process,
          "h_bytes": config.memory_batch * config.memory_width * 4, "rows": rows}


# -- 4. depth-sweep grid -------------------------------------------------------


def _sweep_setup(grid: Grid):
  """The depth sweep's net, its seeds' samples and its items for one shape.

  Uses :mod:`jaxbp.sweep`'s own pieces: the grid and mean-field input scale of
  its gaussian tanh grid at one depth, :func:`jaxbp.sweep.draw_samples` per seed
  (drawn once, shared by every configuration, as the sweep does), and items
  ``(seed index, sigma_w2, sigma_b2, v0)``.
  """
  from jaxbp.studies.depth_sweep import sweep as sw
  cfg = sw.SweepConfig(activations=("tanh",), inits=("gaussian",), sigma_w2=grid.sigma_w2,
                       sigma_b2=grid.sigma_b2, depths=(grid.depth,), width=grid.width,
                       batch=grid.batch, seeds=tuple(range(grid.seeds)), dtype="float32")
  net = _net(grid.width, grid.depth, stack=True)   # the sweep's net
  draw = jax.jit(jax.vmap(lambda s: sw.draw_samples(net, ("gaussian",), cfg.batch, s, F32)[0]))
  samples = jax.block_until_ready(draw(jnp.asarray(cfg.seeds, jnp.int32)))
  points = sw.grid(cfg)
  items = [(i, p.sigma_w2, p.sigma_b2, t.v0) for p, t in zip(points, sw.theory(points))
           for i in range(len(cfg.seeds))]
  return net, samples, items


def torch_measure_loop(torch, net, samples, items):
  """``jaxbp.sweep.measure`` in PyTorch eager, one configuration after another.

  On the same unit-scale samples (so the same numbers): ``W = sqrt(sigma_w2)
  W_unit``, ``b = sqrt(sigma_b2) b_unit``, ``x = sqrt(v0) x_unit``, tanh hidden
  layers, the random readout loss ``sum(y * h_K)``. Like ``measure`` it asks
  only for the deltas (``autograd.grad`` with respect to every z: no dW is
  computed) and takes ``||dW_k||_F^2 = sum((h h^T) * (delta delta^T))`` from
  batch x batch Gram matrices; per layer ln mean_batch ||delta_l||^2,
  ln ||dW_l||^2, ln ||db_l||^2 and whether h_l is finite.
  """
  per_seed = []
  for i in range(samples.x.shape[0]):
    layers = jaxbp.unstack(jax.tree_util.tree_map(lambda a: a[i], samples.params), net)
    per_seed.append(([torch.tensor(np.asarray(p.W)) for p in layers],
                     [torch.tensor(np.asarray(p.b)) for p in layers],
                     torch.tensor(np.asarray(samples.x[i])),
                     torch.tensor(np.asarray(samples.y[i]))))
  last = net.num_layers - 1

  def run():
    out = []
    for i, sw2, sb2, v0 in items:
      Wu, bu, xu, y = per_seed[i]
      Ws = [(math.sqrt(sw2) * W).requires_grad_() for W in Wu]
      bs = [(math.sqrt(sb2) * b).requires_grad_() for b in bu]
      h = math.sqrt(v0) * xu
      h_ins, zs, finite = [], [], []
      for k, (W, b) in enumerate(zip(Ws, bs)):
        h_ins.append(h)
        z = torch.addmm(b, h, W)
        zs.append(z)
        h = torch.tanh(z) if k < last else z
        finite.append(torch.isfinite(h).all())
      deltas = torch.autograd.grad(torch.sum(y * h), zs)
      with torch.no_grad():
        out.append((
            torch.stack([torch.log(torch.mean(torch.sum(d ** 2, 1))) for d in deltas]),
            torch.stack([torch.log(torch.sum((a @ a.T) * (d @ d.T)))
                         for a, d in zip(h_ins, deltas)]),
            torch.stack([torch.log(torch.sum(torch.sum(d, 0) ** 2)) for d in deltas]),
            torch.stack(finite)))
    return out

  return run


def _sweep_grid(config: Config, g: Grid) -> dict:
  """One grid of section 4: the sweep's one program vs a loop of jitted calls vs torch.

  The loops run :func:`jaxbp.sweep.measure` once per configuration (scale the
  seed's sample, hand-recursion deltas, per-layer norms). The "vmapped program"
  is the sweep's own: :func:`jaxbp.sweep.measure_groups`, one jitted program for
  the whole grid, in which each seed's configurations run as one row-stacked net
  (:func:`jaxbp.sweep.measure_rows`: the C configurations' batches stacked into
  C * batch rows, the sigma scales on the rows, the seed's unscaled weights
  shared, so every matmul is ``(C * batch, n) @ (n, n)``), the seeds vmapped
  (they fit in memory, as the sweep would choose). Its results are put back in
  item order and compared with the loops'.
  """
  from jaxbp.studies.depth_sweep import sweep as sw
  net, samples, items = _sweep_setup(g)

  def one(samples, i, sw2, sb2, v0):
    return sw.measure(net, jax.tree_util.tree_map(lambda a: a[i], samples), sw2, sb2, v0)

  cols = list(zip(*items))
  args = [jnp.asarray(cols[0], jnp.int32)] + [jnp.asarray(c, F32) for c in cols[1:]]
  # One group per seed, holding all its configurations.
  (index, *gcols), first = sw.group_items(items, len(items) // g.seeds)
  gargs = [jnp.asarray(index)] + [jnp.asarray(c, F32) for c in gcols]
  grid = jax.jit(functools.partial(sw.measure_groups, net, batch_size=len(index)))

  def in_item_order(m):
    return sw.Measurement(*(np.asarray(a).reshape((-1,) + a.shape[2:])[first] for a in m))

  single = jax.jit(one)
  # Items as device scalars before timing: the loop pays only its dispatches,
  # no host-to-device copies of its arguments.
  per_item = [tuple(a[i] for a in args) for i in range(len(items))]

  def loop():
    return [single(samples, *item) for item in per_item]

  t0 = time.perf_counter()
  vm = in_item_order(jax.block_until_ready(grid(samples, *gargs)))
  grid_first = time.perf_counter() - t0
  fns = {"vmapped program": lambda: grid(samples, *gargs), "loop of jitted calls": loop}
  lp = loop()
  errors = {"loop of jitted calls": _max_rel_err(
      [vm.log_delta_sq, vm.log_weight_sq],
      [jnp.stack([m.log_delta_sq for m in lp]), jnp.stack([m.log_weight_sq for m in lp])])}
  torch_note = _torch_skip(config)
  if torch_note is None:
    torch = _torch()
    fns["torch loop"] = torch_measure_loop(torch, net, samples, items)
    fns["torch loop, 1 thread"] = _one_thread(torch, fns["torch loop"])
    tm = fns["torch loop"]()
    errors["torch loop"] = _max_rel_err(
        [vm.log_delta_sq, vm.log_weight_sq],
        [np.stack([m[0].numpy() for m in tm]), np.stack([m[1].numpy() for m in tm])])
  times = benchmarking.time_interleaved(fns, config.repeats, config.warmup, config.min_time)
  out = {"configs": len(items), **g._asdict(), "times": times,
         "vmapped_first_call_s": grid_first, "max_rel_err": errors,
         # Forward and the deltas' backward: 4 flops per weight and example (no dW).
         "item_flops": benchmarking.step_flops(net.sizes, g.batch) * 4 // 6,
         "vmapped_speedup_over_loop": times["loop of jitted calls"]["median_s"]
                                      / times["vmapped program"]["median_s"]}
  if torch_note is None:
    out["vmapped_speedup_over_torch"] = (
        min(times["torch loop"]["median_s"], times["torch loop, 1 thread"]["median_s"])
        / times["vmapped program"]["median_s"])
  else:
    out["torch loop"] = torch_note
  return out


def sweep(config: Config) -> dict:
  """Section 4: the sweep's grid (and, for contrast, the same grid on small nets)."""
  out = {"grid": _sweep_grid(config, config.sweep_grid)}
  if config.sweep_small_grid is not None:
    out["small_nets"] = _sweep_grid(config, config.sweep_small_grid)
  return out


# -- 5. per-example gradients --------------------------------------------------

PER_EXAMPLE_LIB = "backprop.per_example_grads (hand deltas + einsum)"


def per_example(config: Config) -> dict:
  """Section 5: per-example gradients, ``vmap(grad)`` against a loop of jitted grads.

  Also times ``jaxbp.backprop.per_example_grads``: the same numbers from one
  batched hand delta recursion and an outer product per layer
  (``einsum("bi,bj->bij", h_{k-1}, delta_k)``), without the layout copies XLA
  adds to ``vmap(grad)`` (see the HLO counts in the results).
  """
  width, batch = config.per_example_width, config.per_example_batch
  net = _net(width, config.per_example_depth)
  params = net.init(jax.random.PRNGKey(config.seed), "lecun", dtype=F32)
  x, y = _data(jax.random.PRNGKey(config.seed + 1), batch, width)
  grad = jax.grad(jaxbp.objective(net, "mse"))
  # One example is a batch of one inside vmap: x_i (width,) -> x_i[None].
  vmapped = jax.jit(jax.vmap(lambda p, xi, yi: grad(p, xi[None], yi[None]), (None, 0, 0)))
  one = jax.jit(grad)
  from_deltas = jax.jit(functools.partial(backprop.per_example_grads, net, "mse"))
  xs = [x[i:i + 1] for i in range(batch)]       # sliced before timing: no slicing in the loop
  ys = [y[i:i + 1] for i in range(batch)]

  def loop():
    gs = [one(params, xi, yi) for xi, yi in zip(xs, ys)]
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *gs)

  ref = jax.tree_util.tree_leaves(vmapped(params, x, y))
  errors = {"loop of jitted grads": _max_rel_err(ref, jax.tree_util.tree_leaves(loop())),
            PER_EXAMPLE_LIB: _max_rel_err(
                ref, jax.tree_util.tree_leaves(from_deltas(params, x, y)))}
  times = benchmarking.time_interleaved(
      {"vmap(grad)": lambda: vmapped(params, x, y), "loop of jitted grads": loop,
       PER_EXAMPLE_LIB: lambda: from_deltas(params, x, y)},
      config.repeats, config.warmup, config.min_time)
  out = {"width": width, "depth": config.per_example_depth, "batch": batch, "times": times,
         "max_rel_err": errors, "gradient_bytes": sum(a.size * 4 for a in ref),
         "speedup": times["loop of jitted grads"]["median_s"] / times["vmap(grad)"]["median_s"],
         "per_example_grads_speedup": times["loop of jitted grads"]["median_s"]
                                      / times[PER_EXAMPLE_LIB]["median_s"],
         "per_example_grads_over_vmap_time": times[PER_EXAMPLE_LIB]["median_s"]
                                             / times["vmap(grad)"]["median_s"]}
  if not config.quick:      # two more compilations, only to read their HLO
    out["hlo_vmap_grad"] = _hlo_summary(vmapped.lower(params, x, y).compile())
    out["hlo_from_deltas"] = _hlo_summary(from_deltas.lower(params, x, y).compile())
  return out


# -- targets and the report ----------------------------------------------------


def _target(name, measured, threshold, met, note=""):
  return {"target": name, "measured": measured, "threshold": threshold, "met": bool(met),
          "note": note}


def targets(res: dict) -> list:
  """Issue #6's targets, each met or missed with the measured ratio."""
  out = []
  tp = res.get("throughput")
  if tp:
    rows = tp["rows"]
    if "autodiff_speedup_over_torch" in rows[0]:
      worst = min(rows, key=lambda r: r["autodiff_speedup_over_torch"])
      torch_frac = worst["methods"][worst["torch_best"]]["fraction_of_matmul"]
      all_cores = min(r["autodiff_speedup_over_torch_all_cores"] for r in rows)
      out.append(_target(
          "jaxbp autodiff >= 1.5x PyTorch eager at every size (vs torch's faster thread count)",
          worst["autodiff_speedup_over_torch"], 1.5, worst["autodiff_speedup_over_torch"] >= 1.5,
          f"worst at width {worst['width']} batch {worst['batch']}, where {worst['torch_best']} "
          f"runs at {torch_frac:.0%} of the matmul rate: 1.5x would need autodiff at "
          f"{1.5 * torch_frac:.0%}; vs torch on all cores only, worst {all_cores:.2f}x"))
    else:
      out.append(_target("jaxbp autodiff >= 1.5x PyTorch eager at every size", None, 1.5, False,
                         tp["torch"]))
    big = max(rows, key=lambda r: (r["width"], r["batch"]))
    out.append(_target(
        f"width {big['width']} batch {big['batch']}: autodiff >= 75% of the matmul rate",
        big["autodiff_fraction_of_matmul"], 0.75, big["autodiff_fraction_of_matmul"] >= 0.75,
        f"{big['methods']['jaxbp autodiff']['gflops']:.0f} of {big['matmul_gflops']:.0f} "
        f"GFLOP/s ({tp['matmul_n']}^2 matmul, timed interleaved); of one matmul of the step's "
        f"shape ({big['batch']}x{big['width']} @ {big['width']}x{big['width']}): "
        f"{big['autodiff_fraction_of_shape_matmul']:.0%}"))
    worst = max(rows, key=lambda r: r["hand_over_autodiff_time"])
    out.append(_target(
        "hand recursion time <= 1.05x autodiff at every size", worst["hand_over_autodiff_time"],
        1.05, worst["hand_over_autodiff_time"] <= 1.05,
        f"worst at width {worst['width']} batch {worst['batch']}"))
  comp = res.get("compile")
  if comp:
    scan = comp["rows"]["scan"]
    lo, hi = min(scan), max(scan)
    ratio = scan[hi]["total_s"] / scan[lo]["total_s"]
    out.append(_target(f"scan compile at depth {hi} <= 1.5x depth {lo}", ratio, 1.5, ratio <= 1.5,
                       f"{scan[hi]['total_s']:.2f} s vs {scan[lo]['total_s']:.2f} s"))
  mem = res.get("memory")
  if mem:
    plain, remat = mem["rows"]["autodiff, scan"], mem["rows"]["autodiff, scan + remat"]
    block = mem["rows"]["autodiff, scan + block remat"]
    depths = [d for d in plain if "skipped" not in plain[d] and "skipped" not in remat[d]]
    if depths:
      d = max(depths)
      ratio = remat[d]["step_extra"] / plain[d]["step_extra"]
      act = remat[d]["xla_temp"] / plain[d]["xla_temp"]
      note = (f"depth {d}: step peak +{remat[d]['step_extra'] / 2**20:.0f} vs "
              f"+{plain[d]['step_extra'] / 2**20:.0f} MiB, of which the gradients "
              f"(output) are {plain[d]['xla_output'] / 2**20:.0f} MiB; XLA temporaries "
              f"(activations) {remat[d]['xla_temp'] / 2**20:.0f} vs "
              f"{plain[d]['xla_temp'] / 2**20:.0f} MiB = {act:.2f}")
      if "skipped" not in block[d]:
        note += (f"; block remat (k={block[d]['block']}): temporaries "
                 f"{block[d]['xla_temp'] / 2**20:.0f} MiB = "
                 f"{block[d]['xla_temp'] / plain[d]['xla_temp']:.3f}, step peak ratio "
                 f"{block[d]['step_extra'] / plain[d]['step_extra']:.2f}")
      note += (f"; the gradients (= parameter size) alone are "
               f"{plain[d]['param_bytes'] / plain[d]['step_extra']:.2f} of the no-remat peak, "
               "a floor no remat can go below")
      out.append(_target(f"remat peak memory at depth {d} <= 1/4 of without", ratio, 0.25,
                         ratio <= 0.25, note))
    else:
      out.append(_target("remat peak memory at the deepest depth <= 1/4 of without", None, 0.25,
                         False, "not measured: " + "; ".join(
                             str(v.get("skipped")) for v in plain.values() if "skipped" in v)))
  if res.get("sweep"):
    sw, small = res["sweep"]["grid"], res["sweep"].get("small_nets")
    note = (f"{sw['configs']} configs, depth {sw['depth']}, width {sw['width']}, batch "
            f"{sw['batch']}: {sw['item_flops'] / 1e6:.0f} MFLOP per config, loop "
            f"{sw['times']['loop of jitted calls']['median_s'] / sw['configs'] * 1e3:.2f} "
            "ms per call")
    if small:
      note += (f"; small nets (width {small['width']}, depth {small['depth']}, {small['configs']} "
               f"configs): {small['vmapped_speedup_over_loop']:.1f}x")
    note += ("; the ceiling is the matmul shape: a seed's configurations give "
             f"{sw['batch']} x (configs per seed) rows per matmul, far below the ~400 rows at "
             "which this CPU's matmuls reach most of their large-matrix rate")
    out.append(_target("vmapped sweep >= 5x faster than the per-config loop",
                       sw["vmapped_speedup_over_loop"], 5.0, sw["vmapped_speedup_over_loop"] >= 5,
                       note))
  pe = res.get("per_example")
  if pe:
    note = f"batch {pe['batch']}, width {pe['width']}, depth {pe['depth']}"
    if "per_example_grads_speedup" in pe:
      note += (f"; backprop.per_example_grads (hand deltas + einsum): "
               f"{pe['per_example_grads_speedup']:.1f}x the loop, "
               f"{pe['per_example_grads_over_vmap_time']:.2f} of vmap(grad)'s time")
    out.append(_target("vmap(grad) >= 20x faster than the loop", pe["speedup"], 20.0,
                       pe["speedup"] >= 20, note))
  return out


def _ms(s):
  return f"{s * 1e3:.3g}"


def _mib(b):
  if b is None:
    return "-"
  return f"{b / 2**20:,.0f}" if abs(b) >= 10 * 2**20 else f"{b / 2**20:.2f}"


def markdown(res: dict) -> str:
  """results.md: the machine, one table per section, the targets."""
  m = res["machine"]
  lines = ["# jaxbp benchmark", "",
           f"Run {res['time']}"
           f"{' (--quick: tiny sizes, not for reading)' if res['config']['quick'] else ''}"
           f", {res['seconds']:.0f} s. Median of repeats after warm-up, methods timed interleaved; "
           "float32.", "",
           "| CPU | cores | device | jax | jaxlib | torch | numpy | python | OMP_WAIT_POLICY |",
           "|---|---|---|---|---|---|---|---|---|",
           f"| {m['cpu']} | {m['cores']} | {m['device']} | {m['jax']} | {m['jaxlib']} | "
           f"{m['torch']} | {m['numpy']} | {m['python']} | {m['omp_wait_policy']} |", ""]
  tp = res.get("throughput")
  if tp:
    n = tp["matmul_n"]
    lines += ["## 1. Gradient step throughput",
              "", f"tanh MLP, MSE, depth {tp['rows'][0]['depth']} (in = width = out), one step = "
              "6 · batch · Σ in·out flops. The ceiling is a jitted "
              f"{n}×{n} float32 matmul (2·{n}³ flops), timed in the same interleaved rounds as "
              "each row's methods; *% of matmul* is relative to that row's ceiling. "
              f"torch: {tp['torch']}.", "",
              "| width | batch | method | ms/step | GFLOP/s | % of matmul | speed vs best torch "
              "| max rel err |",
              "|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in tp["rows"]:
      tt = r["methods"][r["torch_best"]]["median_s"] if "torch_best" in r else None
      for name, t in r["methods"].items():
        vs = f"{tt / t['median_s']:.2f}x" if tt and name not in (MATMUL, SHAPE_MATMUL) else "-"
        lines.append(f"| {r['width']} | {r['batch']} | {name} | {_ms(t['median_s'])} | "
                     f"{t['gflops']:.1f} | {t['fraction_of_matmul']:.0%} | {vs} | "
                     f"{'-' if t['max_rel_err'] is None else format(t['max_rel_err'], '.1e')} |")
    lines += ["", "| width | batch | autodiff / best torch speed | autodiff / torch (all cores) "
              "| hand / autodiff time | scan / unrolled time | best numpy / autodiff time "
              "| autodiff % of large matmul | autodiff % of step-shape matmul |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in tp["rows"]:
      sp = r.get("autodiff_speedup_over_torch")
      sp2 = r.get("autodiff_speedup_over_torch_all_cores")
      lines.append(f"| {r['width']} | {r['batch']} | {'-' if sp is None else f'{sp:.2f}x'} | "
                   f"{'-' if sp2 is None else f'{sp2:.2f}x'} | "
                   f"{r['hand_over_autodiff_time']:.2f} | {r['scan_over_autodiff_time']:.2f} | "
                   f"{r['numpy_over_autodiff_time']:.2f} | "
                   f"{r['autodiff_fraction_of_matmul']:.0%} | "
                   f"{r['autodiff_fraction_of_shape_matmul']:.0%} |")
    for r in tp["rows"]:
      if "hlo_autodiff" in r:
        lines += ["", f"Optimised HLO at width {r['width']} batch {r['batch']} (op counts): "
                  f"autodiff {r['hlo_autodiff']}; hand recursion {r['hlo_hand']}."]
    lines.append("")
  comp = res.get("compile")
  if comp:
    depths = sorted({int(d) for v in comp["rows"].values() for d in v})
    lines += ["## 2. Compile time against depth", "",
              f"`jit(grad(objective))`, width {comp['width']}, batch {comp['batch']}: "
              "trace + lower + XLA compile, seconds (lower / compile in brackets).", "",
              "| variant | " + " | ".join(f"depth {d}" for d in depths) + " |",
              "|---|" + "---:|" * len(depths)]
    for name, row in comp["rows"].items():
      cells = []
      for d in depths:
        r = row.get(d, row.get(str(d)))
        if r is None:
          cells.append("-")
        elif "skipped" in r:
          cells.append(r["skipped"])
        else:
          cells.append(f"{r['total_s']:.2f} ({r['lower_s']:.2f} / {r['compile_s']:.2f})")
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
  mem = res.get("memory")
  if mem:
    lines += ["## 3. Peak memory against depth", "",
              f"Width {mem['width']}, batch {mem['batch']}, one `jit` gradient step per fresh "
              "subprocess. *step peak*: resident-set high-water mark during the step minus the "
              "resident set just before it (parameters, data and the compiled program already "
              "there); it includes the gradients themselves (= parameter size). *XLA temp*: the "
              "compiled program's temporary buffers (activations kept for the backward pass and "
              "scratch). *saved residuals*: what autodiff stores for the backward pass "
              f"(`saved_residuals`, arguments excluded). One h is {_mib(mem['h_bytes'])} MiB. "
              "*block remat (k)* is `MLP(stack=True, remat=k)`: the stacked layers checkpointed "
              "in blocks of k, only every k-th activation saved (k minimises saved block inputs "
              "+ one block's recomputed activations + one block's sliced weights and weight "
              "gradients; ~sqrt(depth / 3) if the weights were negligible). The two ratio "
              "columns divide by *autodiff, scan* (no remat) at the same depth: *peak ratio* "
              "the whole step peak, *activation ratio* the XLA temporaries. The gradients are "
              "part of every step's peak and are as large as the parameters, so remat cannot "
              "bring the total below (parameter size) / (no-remat peak): that floor is the "
              "*gradient floor* column, and only the activation ratio can approach 0.", "",
              "| variant | depth | params MiB | step peak MiB | XLA temp MiB "
              "| XLA temp / (depth·h) | saved residuals MiB | XLA output MiB | step s "
              "| peak ratio | activation ratio | gradient floor |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    plain_rows = mem["rows"].get("autodiff, scan", {})
    for name, row in mem["rows"].items():
      for d, r in row.items():
        if "skipped" in r:
          lines.append(f"| {name} | {d} | {r['skipped']} | | | | | | | | | |")
          continue
        label = name + (f" (k={r['block']})" if r.get("block") else "")
        base = plain_rows.get(d)
        if base and "skipped" not in base:
          ratios = (f"{r['step_extra'] / base['step_extra']:.2f} | "
                    f"{r['xla_temp'] / base['xla_temp']:.3f} | "
                    f"{r['param_bytes'] / base['step_extra']:.2f}")
        else:
          ratios = "- | - | -"
        lines.append(f"| {label} | {d} | {_mib(r['param_bytes'])} | {_mib(r['step_extra'])} | "
                     f"{_mib(r['xla_temp'])} | {r['xla_temp'] / (int(d) * mem['h_bytes']):.2f} | "
                     f"{_mib(r['saved_residuals'])} | "
                     f"{_mib(r['xla_output'])} | {r['step_s']:.2f} | {ratios} |")
    lines.append("")
  if res.get("sweep"):
    lines += ["## 4. Depth-sweep grid", "",
              "`jaxbp.sweep.measure` per configuration: scale the seed's unit sample (drawn "
              "once per seed beforehand, as the sweep does), hand-recursion deltas, per-layer "
              "‖δ‖², ‖dW‖², ‖db‖² (‖dW‖ from Gram matrices, dW never formed). The sweep's "
              "own program (`jaxbp.sweep.measure_groups`: a seed's configurations stacked as "
              "rows of one net on the seed's shared weights, seeds vmapped, one jitted call) "
              "against a Python loop of one jitted `measure` call per configuration, against "
              "the same loop in PyTorch eager.", ""]
    for key, title in (("grid", "The sweep's grid"), ("small_nets", "Small nets, same grid shape")):
      sw = res["sweep"].get(key)
      if not sw:
        continue
      lines += [f"{title}: {sw['seeds']} seeds × {len(sw['sigma_w2'])} σ_w² × "
                f"{len(sw['sigma_b2'])} σ_b² = {sw['configs']} configurations, tanh, depth "
                f"{sw['depth']}, width {sw['width']}, batch {sw['batch']} "
                f"({sw['item_flops'] / 1e6:.2g} MFLOP each). First vmapped call (with compile) "
                f"{sw['vmapped_first_call_s']:.2f} s. Max relative difference from the vmapped "
                "results: " + ", ".join(f"{k} {v:.1e}" for k, v in sw["max_rel_err"].items()) + ".",
                "", "| method | ms per grid | time / vmapped |", "|---|---:|---:|"]
      v = sw["times"]["vmapped program"]["median_s"]
      for name, t in sw["times"].items():
        lines.append(f"| {name} | {_ms(t['median_s'])} | {t['median_s'] / v:.2f} |")
      if "torch loop" in sw:
        lines.append(f"| torch loop | {sw['torch loop']} | |")
      lines.append("")
  pe = res.get("per_example")
  if pe:
    lines += ["## 5. Per-example gradients", "",
              f"tanh MLP depth {pe['depth']}, width {pe['width']}, batch {pe['batch']}.", "",
              "| method | ms per batch | time / vmap(grad) | speedup over the loop |",
              "|---|---:|---:|---:|"]
    v = pe["times"]["vmap(grad)"]["median_s"]
    loop_s = pe["times"]["loop of jitted grads"]["median_s"]
    for name, t in pe["times"].items():
      lines.append(f"| {name} | {_ms(t['median_s'])} | {t['median_s'] / v:.2f} | "
                   f"{loop_s / t['median_s']:.1f}x |")
    hlo = (f" Optimised HLO (counts): vmap(grad) {pe['hlo_vmap_grad']}; from deltas "
           f"{pe['hlo_from_deltas']}." if "hlo_vmap_grad" in pe else "")
    lines += ["", f"The per-example gradients are {_mib(pe['gradient_bytes'])} MiB.{hlo} "
              "Max relative difference from vmap(grad): " + ", ".join(
                  f"{k} {e:.1e}" for k, e in pe["max_rel_err"].items()) + ".", ""]
  lines += ["## Targets", "", "| target | measured | threshold | met | note |",
            "|---|---:|---:|---|---|"]
  for t in res["targets"]:
    meas = "-" if t["measured"] is None else f"{t['measured']:.3g}"
    lines.append(f"| {t['target']} | {meas} | {t['threshold']} | "
                 f"{'met' if t['met'] else '**missed**'} | {t['note']} |")
  return "\n".join(lines) + "\n"


def run(config: Config, out_dir) -> dict:
  """Runs the chosen sections, writing results.json after each and results.md at the end."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  results.write_json(out_dir / "config.json", dataclasses.asdict(config))
  start = time.perf_counter()
  res = {"machine": benchmarking.machine(), "config": dataclasses.asdict(config),
         "time": results.provenance()["time"]}
  sections = {"throughput": throughput, "compile": compile_times, "memory": peak_memory,
              "sweep": sweep, "per_example": per_example}
  for name in config.sections:
    print(f"{name} ...", flush=True)
    t0 = time.perf_counter()
    res[name] = sections[name](config)
    res[name]["section_s"] = time.perf_counter() - t0
    results.write_json(out_dir / "results.json", res)
  res["targets"] = targets(res)
  res["seconds"] = time.perf_counter() - start
  results.write_json(out_dir / "results.json", res)
  (out_dir / "results.md").write_text(markdown(res))
  return res


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", help="output directory (results.json, results.md, config.json)")
  parser.add_argument("--quick", action="store_true", help="tiny sizes, few repeats (< 60 s)")
  parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
  parser.add_argument("--repeats", type=int, help="timed repeats per measurement")
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baselines")
  parser.add_argument("--memory-child", help=argparse.SUPPRESS)   # internal: one section-3 point
  args = parser.parse_args(argv)
  if args.memory_child:
    print(json.dumps([memory_child(spec) for spec in json.loads(args.memory_child)]))
    return
  if not args.out:
    parser.error("--out DIR is required")
  config = quick() if args.quick else Config()
  config = dataclasses.replace(config, sections=tuple(args.sections), torch=not args.no_torch,
                               **({"repeats": args.repeats} if args.repeats else {}))
  res = run(config, args.out)
  print((pathlib.Path(args.out) / "results.md").read_text())
  missed = [t["target"] for t in res["targets"] if not t["met"]]
  print(f"{len(res['targets']) - len(missed)} of {len(res['targets'])} targets met.")


if __name__ == "__main__":
  main()
