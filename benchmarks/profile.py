"""Section "profile": where a small net's gradient step spends its time.

At width 64 a step is ~0.3 ms and runs at a fifth of the matmul rate (issue
#15). Three jitted programs over the same arguments, timed interleaved in one
process (a decomposition of one method, not a comparison of frameworks):

* *dispatch*: a program that takes the step's arguments (every ``W``, ``b``,
  ``x`` and ``y``) and returns one element: the fixed cost of calling a jitted
  function with that pytree and waiting for it;
* *matmuls*: the step's ``3 (depth + 1)`` matmuls alone, in the step's order
  and shapes (forward ``h @ W``, backward ``delta @ W^T`` and ``h^T @ delta``),
  no bias, activation or loss;
* *step*: ``jit(grad(objective))``, and the hand recursion beside it.

So ``dispatch``, ``matmuls - dispatch`` (matmul compute) and ``step -
matmuls`` (elementwise work: bias, tanh and its derivative, the loss, the bias
gradients, and whatever the fusions around the matmuls cost) add up to a step.
"""
from __future__ import annotations

import functools

import jax

from jaxbp.core import backprop
from jaxbp.core.nets import objective
import benchmarks.methods as methods
import benchmarks.timing as timing
from benchmarks.config import Config


def noop(params, x, y):
  """Reads nothing but one element: the cost of a call with the step's arguments."""
  return x[0, 0]


def matmuls(params, x, y):
  """The gradient step's matmuls in its order and shapes, nothing else."""
  hs, h = [], x
  for p in params:
    hs.append(h)
    h = h @ p.W
  delta, grads = y, []
  for p, h_in in zip(reversed(params), reversed(hs)):
    grads.append(h_in.T @ delta)
    delta = delta @ p.W.T
  return grads


def programs(net):
  """name -> the jitted program, all called as ``f(params, x, y)``."""
  return {"dispatch (no-op call)": jax.jit(noop), "matmuls alone": jax.jit(matmuls),
          "step: jaxbp autodiff": jax.jit(jax.grad(objective(net, "mse"))),
          "step: jaxbp hand recursion": jax.jit(functools.partial(backprop.grad, net, "mse"))}


def profile(config: Config) -> dict:
  """The section: the three programs' times and the step's time split into its parts."""
  width, batch = config.profile_width, config.profile_batch
  net, params, x, y = methods.problem(width, batch, config.depth, config.seed)
  fns = {name: functools.partial(f, params, x, y) for name, f in programs(net).items()}
  times = timing.time_interleaved(fns, config.repeats, config.warmup, config.min_time)
  t = {name: v["median_s"] for name, v in times.items()}
  dispatch, mm = t["dispatch (no-op call)"], t["matmuls alone"]
  split = {}
  for step in ("step: jaxbp autodiff", "step: jaxbp hand recursion"):
    total = t[step]
    parts = {"dispatch": dispatch, "matmul compute": max(mm - dispatch, 0.0),
             "elementwise and the rest": max(total - mm, 0.0)}
    split[step] = {"total_s": total, "parts_s": parts,
                   "shares": {k: v / total for k, v in parts.items()}}
  flops, dots = timing.step_flops(net.sizes, batch), 3 * len(params)
  compute = max(mm - dispatch, 1e-12)
  return {"width": width, "batch": batch, "depth": config.depth, "times": times, "split": split,
          "step_flops": flops, "dots": dots, "seconds_per_dot": compute / dots,
          "matmul_gflops": flops / compute / 1e9}
