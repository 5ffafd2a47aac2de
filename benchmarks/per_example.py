"""Section 5: per-example gradients, ``vmap(grad)`` against a Python loop of jitted grads.

Also times :func:`jaxbp.core.backprop.per_example_grads`: the same numbers from
one batched hand delta recursion and an outer product per layer
(``einsum("bi,bj->bij", h_{k-1}, delta_k)``), without the layout copies XLA
adds to ``vmap(grad)`` (see the HLO counts in the results).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxbp.core import backprop
from jaxbp.core.nets import objective
import benchmarks.common as common
import benchmarks.timing as timing
from benchmarks.config import Config

PER_EXAMPLE_LIB = "backprop.per_example_grads (hand deltas + einsum)"


def per_example(config: Config) -> dict:
  """Section 5: per-example gradients at one batch, three ways, timed interleaved."""
  width, batch = config.per_example_width, config.per_example_batch
  net = common.net(width, config.per_example_depth)
  params = net.init(jax.random.PRNGKey(config.seed), "lecun", dtype=common.F32)
  x, y = common.data(jax.random.PRNGKey(config.seed + 1), batch, width)
  grad = jax.grad(objective(net, "mse"))
  # One example is a batch of one inside vmap: x_i (width,) -> x_i[None].
  vmapped = jax.jit(jax.vmap(lambda p, xi, yi: grad(p, xi[None], yi[None]), (None, 0, 0)))
  one = jax.jit(grad)
  from_deltas = jax.jit(functools.partial(backprop.per_example_grads, net, "mse"))
  xs = [x[i:i + 1] for i in range(batch)]       # sliced before timing: no slicing in the loop
  ys = [y[i:i + 1] for i in range(batch)]

  def loop():
    gs = [one(params, xi, yi) for xi, yi in zip(xs, ys)]
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *gs)

  leaves = jax.tree_util.tree_leaves
  ref = leaves(vmapped(params, x, y))
  errors = {"loop of jitted grads": common.max_rel_err(ref, leaves(loop())),
            PER_EXAMPLE_LIB: common.max_rel_err(ref, leaves(from_deltas(params, x, y)))}
  times = timing.time_interleaved(
      {"vmap(grad)": lambda: vmapped(params, x, y), "loop of jitted grads": loop,
       PER_EXAMPLE_LIB: lambda: from_deltas(params, x, y)},
      config.repeats, config.warmup, config.min_time)
  vmap_s, loop_s = times["vmap(grad)"]["median_s"], times["loop of jitted grads"]["median_s"]
  lib_s = times[PER_EXAMPLE_LIB]["median_s"]
  out = {"width": width, "depth": config.per_example_depth, "batch": batch, "times": times,
         "max_rel_err": errors, "gradient_bytes": sum(a.size * 4 for a in ref),
         "speedup": loop_s / vmap_s, "per_example_grads_speedup": loop_s / lib_s,
         "per_example_grads_over_vmap_time": lib_s / vmap_s}
  if not config.quick:      # two more compilations, only to read their HLO
    out["hlo_vmap_grad"] = common.hlo_summary(vmapped.lower(params, x, y).compile())
    out["hlo_from_deltas"] = common.hlo_summary(from_deltas.lower(params, x, y).compile())
  return out
