"""Section 4: the depth sweep's grid as one compiled program, against loops of calls.

Every configuration is :func:`jaxbp.studies.depth_sweep.measure` (scale the
seed's unit sample, hand-recursion deltas, per-layer norms). The sweep's own
program runs the whole grid in one jitted call; the baselines are a Python loop
of one jitted call per configuration and the same loop in PyTorch eager. Also
on small nets, where dispatch, not compute, dominates.
"""
from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.studies import depth_sweep as sw
import benchmarks.baselines as baselines
import benchmarks.common as common
import benchmarks.timing as timing
from benchmarks.config import Config, Grid


def setup(grid: Grid):
  """The depth sweep's net, its seeds' samples and its items for one shape.

  Uses the sweep's own pieces: the grid and mean-field input scale of its
  gaussian tanh grid at one depth, :func:`~jaxbp.studies.depth_sweep.draw_samples`
  per seed (drawn once, shared by every configuration, as the sweep does), and
  items ``(seed index, sigma_w2, sigma_b2, v0)``.
  """
  cfg = sw.SweepConfig(activations=("tanh",), inits=("gaussian",), sigma_w2=grid.sigma_w2,
                       sigma_b2=grid.sigma_b2, depths=(grid.depth,), width=grid.width,
                       batch=grid.batch, seeds=tuple(range(grid.seeds)), dtype="float32")
  net = common.net(grid.width, grid.depth, stack=True)   # the sweep's net
  draw = jax.jit(jax.vmap(
      lambda s: sw.draw_samples(net, ("gaussian",), cfg.batch, s, common.F32)[0]))
  samples = jax.block_until_ready(draw(jnp.asarray(cfg.seeds, jnp.int32)))
  points = sw.grid(cfg)
  items = [(i, p.sigma_w2, p.sigma_b2, t.v0) for p, t in zip(points, sw.theory(points))
           for i in range(len(cfg.seeds))]
  return net, samples, items


def sweep_grid(config: Config, g: Grid) -> dict:
  """One grid of section 4: the sweep's one program vs a loop of jitted calls vs torch.

  The "vmapped program" is the sweep's own:
  :func:`~jaxbp.studies.depth_sweep.measure_groups`, one jitted program for the
  whole grid, in which each seed's configurations run as one row-stacked net
  (:func:`~jaxbp.studies.depth_sweep.measure_rows`: the C configurations'
  batches stacked into C * batch rows, the sigma scales on the rows, the seed's
  unscaled weights shared, so every matmul is ``(C * batch, n) @ (n, n)``), the
  seeds vmapped (they fit in memory, as the sweep would choose). Its results
  are put back in item order and compared with the loops'.
  """
  net, samples, items = setup(g)

  def one(samples, i, sw2, sb2, v0):
    return sw.measure(net, jax.tree_util.tree_map(lambda a: a[i], samples), sw2, sb2, v0)

  cols = list(zip(*items))
  args = [jnp.asarray(cols[0], jnp.int32)] + [jnp.asarray(c, common.F32) for c in cols[1:]]
  # One group per seed, holding all its configurations.
  (index, *gcols), first = sw.group_items(items, len(items) // g.seeds)
  gargs = [jnp.asarray(index)] + [jnp.asarray(c, common.F32) for c in gcols]
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
  ref = [vm.log_delta_sq, vm.log_weight_sq]
  errors = {"loop of jitted calls": common.max_rel_err(
      ref, [jnp.stack([m.log_delta_sq for m in lp]), jnp.stack([m.log_weight_sq for m in lp])])}
  torch_note = baselines.torch_skip(config)
  if torch_note is None:
    torch = baselines.load_torch()
    fns["torch loop"] = baselines.torch_measure_loop(torch, net, samples, items)
    tm = fns["torch loop"]()
    errors["torch loop"] = common.max_rel_err(
        ref, [np.stack([m[0].numpy() for m in tm]), np.stack([m[1].numpy() for m in tm])])
  times = timing.time_interleaved(fns, config.repeats, config.warmup, config.min_time)
  vmapped_s = times["vmapped program"]["median_s"]
  out = {"configs": len(items), **g.to_dict(), "times": times,
         "vmapped_first_call_s": grid_first, "max_rel_err": errors,
         # Forward and the deltas' backward: 4 flops per weight and example (no dW).
         "item_flops": timing.step_flops(net.sizes, g.batch) * 4 // 6,
         "vmapped_speedup_over_loop": times["loop of jitted calls"]["median_s"] / vmapped_s}
  if torch_note is None:
    out["vmapped_speedup_over_torch"] = times["torch loop"]["median_s"] / vmapped_s
  else:
    out["torch loop"] = torch_note
  return out


def sweep(config: Config) -> dict:
  """Section 4: the sweep's grid (and, for contrast, the same grid on small nets)."""
  out = {"grid": sweep_grid(config, config.sweep_grid)}
  if config.sweep_small_grid is not None:
    out["small_nets"] = sweep_grid(config, config.sweep_small_grid)
  return out
