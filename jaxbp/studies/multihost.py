"""A study across processes and hosts, on JAX's own multi-process runtime.

Launch the same command once per process (``--num-processes N --process-id i
--coordinator host:port``, or bare ``--distributed`` under SLURM, Open MPI or
a TPU pod, where :func:`jax.distributed.initialize` finds them itself). Then
:func:`resume`, in place of ``driver.start`` + ``driver.resume``:

1. process 0 opens ``out_dir`` (its lock, its store); every other process opens
   its own ``out_dir/process-<i>``, so no two processes share a lock or a file
   even when ``out_dir`` is on a shared filesystem;
2. process 0 tells every process which configurations its store already holds;
3. the remaining work is split into *units* (a study says which configurations
   must stay together: the depth sweep's compiled programs are per depth, so a
   unit is a depth; a width-sweep point is its own unit), the most costly first,
   each to the least loaded process; every process computes its share into its
   own store (so a killed run keeps its work on every host, and a rerun resumes);
4. the finished records travel to process 0 through the runtime's collectives
   (``process_allgather`` of their JSON; no shared filesystem is needed), which
   saves them in ``out_dir/store`` and writes the tables as one process would.

A unit runs exactly the program it would run in one process, and the records
travel as the store keeps them (JSON, whose floats round-trip exactly), so
``results.csv`` is bit for bit the one-process file.
"""
from __future__ import annotations

import heapq
import json
import os
from typing import Any, Callable, Hashable, Iterable, List, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxbp import io as _io
from jaxbp.studies import driver


def initialize(coordinator: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, auto: bool = False) -> None:
  """Starts JAX's multi-process runtime when more than one process is asked for.

  Args:
    coordinator: ``host:port`` of process 0's coordinator service.
    num_processes, process_id: this launch's size and this process's index.
    auto: let :func:`jax.distributed.initialize` detect all three (SLURM, Open
      MPI, TPU pods).

  Call it before any other JAX work. Nothing happens for a single process.

  Raises:
    ValueError: a partial or inconsistent set of arguments.
  """
  given = [v is not None for v in (coordinator, num_processes, process_id)]
  if auto:
    if any(given):
      raise ValueError("multihost: pass either --distributed (detect the cluster) or "
                       "--coordinator/--num-processes/--process-id, not both.")
    jax.distributed.initialize()
    return
  if not any(given) or (num_processes == 1 and coordinator is None):
    return
  if not all(given):
    raise ValueError("multihost: --coordinator host:port, --num-processes N and --process-id i "
                     "go together; got " + ", ".join(
                         f"{n}={v!r}" for n, v in (("coordinator", coordinator),
                                                   ("num_processes", num_processes),
                                                   ("process_id", process_id))))
  if not (isinstance(num_processes, int) and num_processes >= 1
          and isinstance(process_id, int) and 0 <= process_id < num_processes):
    raise ValueError(f"multihost: need num_processes >= 1 and 0 <= process_id < num_processes, "
                     f"got num_processes={num_processes!r}, process_id={process_id!r}.")
  jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)


def assign(units: Mapping[Hashable, float], processes: int) -> dict:
  """``unit -> process``: the most costly unit first, each to the least loaded process
  (ties to the lower index); deterministic, so every process computes the same split."""
  order = sorted(units, key=lambda u: (-float(units[u]), str(u)))
  heap = [(0.0, p) for p in range(processes)]
  out = {}
  for u in order:
    load, p = heapq.heappop(heap)
    out[u] = p
    heapq.heappush(heap, (load + float(units[u]), p))
  return out


def gather(obj: Any) -> List[Any]:
  """Every process's JSON-able ``obj``, in process order, on every process.

  Sent as UTF-8 JSON bytes through ``process_allgather`` (lengths first, then
  the bytes padded to the longest). Every process must call it, in the same order.
  """
  data = np.frombuffer(json.dumps(_io.jsonable(obj)).encode(), np.uint8)
  lengths = np.asarray(multihost_utils.process_allgather(np.asarray([data.size], np.int32)))
  longest = int(lengths.max())
  padded = np.zeros(max(longest, 1), np.uint8)
  padded[:data.size] = data
  every = np.asarray(multihost_utils.process_allgather(padded))
  return [json.loads(bytes(every[p, :int(lengths[p, 0])]).decode())
          for p in range(every.shape[0])]


def resume(config, out_dir, keys: Sequence[Mapping[str, Any]],
           compute: Callable[[List[Mapping[str, Any]]], Iterable[Tuple[Mapping, Any]]],
           unit: Callable[[Mapping], Hashable], cost: Callable[[Mapping], float] = lambda k: 1.0,
           desc: str = "") -> Tuple[driver.Session, Optional[List[Any]]]:
  """``driver.start`` + ``driver.resume`` over every process of the launch.

  Args:
    config, out_dir: as for :func:`jaxbp.studies.driver.start`.
    keys, compute, desc: as for :func:`jaxbp.studies.driver.resume`.
    unit: ``key -> unit``; the keys of one unit are computed by one process,
      in one ``compute`` call.
    cost: a key's relative cost, for balancing the units.

  Returns:
    ``(session, records)``: on process 0 the records aligned with ``keys`` (its
    store holding them all); on the others their own session (``computed``
    says how many they did) and None. With one process, exactly
    ``driver.start`` then ``driver.resume``.
  """
  processes, me = jax.process_count(), jax.process_index()
  if processes == 1:
    session = driver.start(config, out_dir)
    return session, driver.resume(session, keys, compute, desc=desc)
  mine_dir = out_dir if me == 0 else os.path.join(os.fspath(out_dir), f"process-{me}")
  session = driver.start(config, mine_dir)
  names = [_io.config_key(k) for k in keys]
  known = set(gather(sorted({n for n, k in zip(names, keys)
                             if me == 0 and session.store.done(k)}))[0])
  units = {}
  for n, k in zip(names, keys):
    if n not in known:
      units[unit(k)] = units.get(unit(k), 0.0) + float(cost(k))
  owner = assign(units, processes)
  share = [k for n, k in zip(names, keys) if n not in known and owner[unit(k)] == me]
  records = driver.resume(session, share, compute, desc=f"{desc} (process {me})")
  sent = gather({n: r for n, r in zip((_io.config_key(k) for k in share), records)})
  if me != 0:
    session.close()
    return session, None
  arrived = {n: r for part in sent for n, r in part.items()}
  return session, driver.resume(session, keys,
                                lambda pending: ((k, arrived[_io.config_key(k)]) for k in pending),
                                desc=f"{desc} (merging)")
