"""Compute organised for the compiler: one program per shape, configurations as rows,
seeds mapped, groups sharded over the local devices."""
from __future__ import annotations

import functools
import time
from typing import Dict, List

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxbp.studies.depth_sweep.measure import Measurement, draw_samples, measure_groups, sweep_net
from jaxbp.studies.depth_sweep.records import record


def _bytes_per_row(depth, width, itemsize):
  # One row (an example of one configuration) of a group's caches: the layer
  # outputs h, their inputs, the pre-activations z and the deltas, (depth + 1, n)
  # each, plus a few (n,) temporaries. The weights are the shared samples,
  # never copied, and dW is never formed.
  return itemsize * width * (4 * (depth + 1) + 4)


@functools.lru_cache(maxsize=None)
def _sampler(depth, width, batch, families, dtype):
  """Samples of many seeds and families at once, concatenated family by family:
  one program per depth, shared by every activation."""
  net = sweep_net("identity", depth, width)

  def draw(seeds):
    per_family = jax.vmap(lambda s: draw_samples(net, families, batch, s, dtype))(seeds)
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *per_family)

  return jax.jit(draw)


@functools.lru_cache(maxsize=None)
def _measurer(activation, depth, width, per_batch, devices):
  """The compiled measurement of G row-stacked groups: ``(samples, index (G,),
  sigma_w2, sigma_b2, v0 (G, C)) -> Measurement`` of ``(G, C, K)`` arrays
  (:func:`measure_groups`, ``per_batch`` groups vmapped at a time on each
  device), and the input shardings (None for one device)."""
  net = sweep_net(activation, depth, width)
  local = functools.partial(measure_groups, net, batch_size=per_batch)
  if len(devices) == 1:
    return jax.jit(local), None, None
  mesh = Mesh(np.array(devices), ("items",))
  spec = PartitionSpec("items")
  # Groups are independent: each device maps over its own shard, the samples
  # replicated, so no device talks to another.
  sharded = jax.shard_map(local, mesh=mesh, in_specs=(PartitionSpec(),) + (spec,) * 4,
                          out_specs=spec)
  return jax.jit(sharded), NamedSharding(mesh, spec), NamedSharding(mesh, PartitionSpec())


def group_items(items, per_group: int, multiple: int = 1):
  """Items ``[(sample index, sigma_w2, sigma_b2, v0)]`` as row-stacked groups.

  Each group holds ``per_group`` configurations of one sample (its last one
  repeated where a sample has fewer left); the groups are padded to a multiple
  of ``multiple`` (the devices) with repeats of the last one.

  Returns:
    ``(index (G,), sigma_w2 (G, C), sigma_b2 (G, C), v0 (G, C))`` as numpy
    arrays, and ``first``: for every item, its position in the flattened
    ``(G * C)`` results.
  """
  by_sample: Dict[int, List[int]] = {}
  for pos, item in enumerate(items):
    by_sample.setdefault(int(item[0]), []).append(pos)
  groups = []
  for positions in by_sample.values():
    for r in range(0, len(positions), per_group):
      run = positions[r:r + per_group]
      groups.append(run + [run[-1]] * (per_group - len(run)))
  groups += [groups[-1]] * (-len(groups) % multiple)
  pos = np.asarray(groups, np.int64)
  index = np.asarray([items[g[0]][0] for g in groups], np.int32)
  cols = [np.asarray([[items[p][q] for p in g] for g in groups], float) for q in (1, 2, 3)]
  _, first = np.unique(pos.ravel(), return_index=True)   # sorted by item position
  return (index, *cols), first


def _compute(config, activation, depth, samples, items, devices, per_group):
  """Measures ``items`` = [(sample index, sigma_w2, sigma_b2, v0)] in row-stacked
  groups of ``per_group`` configurations (:func:`group_items`); returns a
  :class:`Measurement` with one ``(K,)`` row per item, in order."""
  dtype = jnp.dtype(config.dtype)
  (index, *cols), first = group_items(items, per_group, len(devices))
  # As many groups at once (vmapped) as memory_gb holds: one batched dot over
  # the groups' weights beats one group after another.
  rows = config.memory_gb * 1e9 // _bytes_per_row(depth, config.width, dtype.itemsize)
  per_batch = int(max(1, min(len(index) // len(devices), rows // (per_group * config.batch))))
  fn, sharded, replicated = _measurer(activation, depth, config.width, per_batch, tuple(devices))
  args = [index] + [c.astype(dtype) for c in cols]
  if sharded is not None:
    samples = jax.device_put(samples, replicated)
    args = [jax.device_put(a, sharded) for a in args]
  out = fn(samples, *args)
  return Measurement(*(np.asarray(a).reshape((-1,) + a.shape[2:])[first] for a in out))


def compute(config, pending, devices):
  """Computes the pending configurations, yielding ``(key, record)`` for each as it
  finishes (the driver saves it at once).

  Args:
    config: the :class:`SweepConfig`.
    pending: ``{(activation, weights, depth): [(store key, Theory), ...]}``.
    devices: the devices to shard over.

  Loops over depths: the seeds' samples (of every weight family needed) are
  drawn once per depth and shared by every activation and configuration.
  """
  S, ndev = len(config.seeds), len(devices)
  dtype = jnp.dtype(config.dtype)
  seeds = np.asarray(config.seeds, np.int32)
  blocks: Dict[int, Dict[str, Dict[str, list]]] = {}
  for (activation, weights, depth), entries in pending.items():
    blocks.setdefault(depth, {}).setdefault(activation, {})[weights] = list(entries)
  for depth, by_act in blocks.items():
    families = sorted({w for per_w in by_act.values() for w in per_w})
    families = tuple(families)
    samples = _sampler(depth, config.width, config.batch, families, dtype.name)(seeds)
    offset = {w: i * S for i, w in enumerate(families)}   # family w, seed j: sample offset + j
    # Configurations of one sample share its weights: C of them run as one
    # row-stacked net of C * batch rows (measure_rows), C as large as memory allows.
    rows = int(config.memory_gb * 1e9 // _bytes_per_row(depth, config.width, dtype.itemsize))
    c_max = max(1, rows // config.batch)
    for activation, per_w in by_act.items():
      for w in families:
        entries = per_w.get(w, [])
        if not entries:
          continue
        n = len(entries)
        # q groups per seed and call, so that every device has a group to run;
        # calls of equal size (the last padded), so one program serves them all.
        q = max(1, min(n, -(-ndev // S)))
        calls = -(-n // (q * c_max))
        per_call = -(-n // calls)
        per_group = -(-per_call // q)
        for i in range(0, n, per_call):
          chunk = entries[i:i + per_call]
          padded = chunk + [chunk[-1]] * (per_call - len(chunk))
          items = [(offset[w] + j, k["sigma_w2"], k["sigma_b2"], t.v0)
                   for k, t in padded for j in range(S)]
          tic = time.time()
          m = _compute(config, activation, depth, samples, items, devices, per_group)
          seconds = (time.time() - tic) / len(chunk)
          for c, (k, _) in enumerate(chunk):
            part = Measurement(*(a[c * S:(c + 1) * S] for a in m))
            yield k, record(part, seconds)
    del samples
