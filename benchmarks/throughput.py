"""Section 1: time per gradient step and GFLOP/s, every method on the same shapes and data.

tanh MLPs with MSE: ``jit(grad(objective))`` (unrolled and under ``lax.scan``),
jaxbp's hand recursion (jitted), PyTorch eager autograd (on its default threads
and, labelled, on one), seed 002's NumPy backprop, and as ceilings a large
jitted matmul and one matmul of the step's shape. A step is
``6 * batch * sum(in * out)`` flops.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.core import backprop
from jaxbp.core.nets import objective
import benchmarks.baselines as baselines
import benchmarks.common as common
import benchmarks.timing as timing
from benchmarks.config import Config

MATMUL = "large matmul (ceiling)"
SHAPE_MATMUL = "one matmul of the step's shape"


def _methods(config: Config, torch, width: int, batch: int, pkey, dkey):
  """One size's net, params, (x, y), timed functions, their gradients' errors and the jitted
  autodiff and hand programs (whose HLO a full run reads)."""
  net = common.net(width, config.depth)
  scan_net = dataclasses.replace(net, stack=True)
  params = net.init(pkey, "lecun", dtype=common.F32)
  stacked = common.stacked(params)
  x, y = common.data(dkey, batch, width)
  autodiff = jax.jit(jax.grad(objective(net, "mse")))
  scan_autodiff = jax.jit(jax.grad(objective(scan_net, "mse")))
  hand = jax.jit(functools.partial(backprop.grad, net, "mse"))
  Ws = [np.concatenate([np.asarray(p.W), np.asarray(p.b)[None, :]], axis=0) for p in params]
  xn, yn = np.asarray(x), np.asarray(y)
  fns = {"jaxbp autodiff": lambda: autodiff(params, x, y),
         "jaxbp hand recursion": lambda: hand(params, x, y),
         "jaxbp autodiff, scan": lambda: scan_autodiff(stacked, x, y),
         "numpy (seed 002)": lambda: baselines.numpy_grad(Ws, xn, yn)}
  if torch is not None:
    fns["torch eager"] = baselines.torch_grad_fn(torch, params, x, y)

  # Every method must compute the same gradient before its speed means anything.
  leaves = jax.tree_util.tree_leaves
  ref = leaves(autodiff(params, x, y))
  errors = {"jaxbp autodiff": 0.0,
            "jaxbp hand recursion": common.max_rel_err(ref, leaves(hand(params, x, y))),
            "jaxbp autodiff, scan": common.max_rel_err(
                leaves(common.stacked(autodiff(params, x, y))),
                leaves(scan_autodiff(stacked, x, y))),
            "numpy (seed 002)": common.max_rel_err(
                ref, [a for g in baselines.numpy_grad(Ws, xn, yn) for a in (g[:-1], g[-1])])}
  if torch is not None:
    errors["torch eager"] = common.max_rel_err(ref, [t.numpy() for t in fns["torch eager"]()])
  programs = {"autodiff": autodiff, "hand": hand}
  return net, params, (x, y), fns, errors, programs


def _row(config: Config, torch, width: int, batch: int, keys, matmul, matmul_flops) -> dict:
  """One size's timings, gradient errors and ratios."""
  net, params, (x, y), fns, errors, programs = _methods(config, torch, width, batch, *keys)
  # The ceilings are timed in the same interleaved rounds as the methods they
  # bound: the large matmul, and one matmul of the step's own shape
  # (batch, width) @ (width, width), which the step does 3 x (depth + 1) times.
  shape_matmul = jax.jit(jnp.matmul)
  W0 = params[1].W
  fns[MATMUL] = matmul
  fns[SHAPE_MATMUL] = lambda: shape_matmul(x, W0)
  # No row here changes a thread count: every method in this process runs on its
  # defaults. torch on one thread is the processes section's labelled extra row,
  # in a process of its own.
  times = timing.time_interleaved(fns, config.repeats, config.warmup, config.min_time)
  flops = timing.step_flops(net.sizes, batch)
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
         "numpy_over_autodiff_time": methods["numpy (seed 002)"]["median_s"] / ad,
         "autodiff_fraction_of_matmul": methods["jaxbp autodiff"]["fraction_of_matmul"],
         "autodiff_fraction_of_shape_matmul": methods["jaxbp autodiff"]["gflops"]
                                              / methods[SHAPE_MATMUL]["gflops"]}
  if torch is not None:
    default = methods["torch eager"]["median_s"]   # torch on its default threads
    row["autodiff_speedup_over_torch"] = default / ad
    row["hand_speedup_over_torch"] = default / methods["jaxbp hand recursion"]["median_s"]
  else:
    row["torch eager"] = baselines.torch_skip(config)
  if width == max(config.widths) and batch == max(config.batches) and not config.quick:
    row["hlo_autodiff"] = common.hlo_summary(programs["autodiff"].lower(params, x, y).compile())
    row["hlo_hand"] = common.hlo_summary(programs["hand"].lower(params, x, y).compile())
  print(f"  throughput width {width} batch {batch}: " + ", ".join(
      f"{n} {m['median_s'] * 1e3:.3g} ms" for n, m in methods.items()), flush=True)
  return row


def throughput(config: Config) -> dict:
  """Section 1: time per gradient step and GFLOP/s, every method, every size."""
  matmul, matmul_flops = timing.matmul(config.matmul_n)
  skip = baselines.torch_skip(config)
  torch = None if skip else baselines.load_torch()
  rows = []
  key = jax.random.PRNGKey(config.seed)
  for width in config.widths:
    for batch in config.batches:
      key, pkey, dkey = jax.random.split(key, 3)
      rows.append(_row(config, torch, width, batch, (pkey, dkey), matmul, matmul_flops))
  out = {"matmul_n": config.matmul_n, "rows": rows, "torch": skip or "measured"}
  if torch is not None:
    out["torch_threads"] = torch.get_num_threads()
  return out
