"""The benchmark's measuring tools: the one timer, flop counts, peak memory, the machine.

The benchmark, its child processes and the accelerator check
(``experiments/accelerator_check.py``) all time with :func:`call_seconds`, in a
window (:func:`time_window`, one process per method) or round-robin
(:func:`time_interleaved`, methods sharing a process). Timings are medians over
repeats, after warm-up, with every result waited for (``jax.block_until_ready``):
JAX dispatches asynchronously, so a timer that does not wait measures the
dispatch, not the computation. Competing methods in one process are timed
*interleaved* (one repeat of each in turn) so that load from other processes on
a shared machine falls on all of them alike and their ratios stay meaningful.

Peak memory is the process's resident set, read from ``/proc/self/status``:
``VmHWM`` (the high-water mark) can be reset by writing ``5`` to
``/proc/self/clear_refs`` (Linux >= 4.0), so a child process can measure one
computation after its setup. Python's ``tracemalloc`` cannot be used: XLA's
buffers are allocated outside the Python heap.

>>> t = time_interleaved({"sum": lambda: jnp.ones(1000).sum()}, repeats=3)
>>> sorted(t["sum"])
['max_s', 'median_s', 'min_s', 'number', 'repeats']
"""
from __future__ import annotations

import ctypes
import os
import platform
import resource
import statistics
import time
from typing import Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

# The fewest calls a timed window makes, however long each takes.
MIN_CALLS = 3


def step_flops(sizes: Sequence[int], batch: int) -> int:
  """Flops of one gradient step of an MLP: ``6 * batch * sum_k in_k * out_k``.

  Each layer's ``h @ W`` costs ``2 batch in out`` forward; its backward does two
  matmuls of the same size (``delta @ W^T`` and ``h^T @ delta``), hence 6.
  Elementwise work (activations, biases, the loss) is not counted.
  """
  return 6 * batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def wait(out):
  """``out`` once computed: JAX arrays are waited for; torch (CPU eager) and NumPy
  results are computed already."""
  jax.block_until_ready(out)
  return out


def call_seconds(fn: Callable, number: int = 1) -> float:
  """Mean seconds per call over ``number`` calls of ``fn``, each result waited for.

  The one clock of the benchmark and the accelerator check: every timing below
  is made of these.
  """
  t0 = time.perf_counter()
  for _ in range(number):
    wait(fn())
  return (time.perf_counter() - t0) / number


def summary(samples: Sequence[float]) -> dict:
  """Median, min, max and 10th / 90th percentiles of per-call seconds."""
  q = np.percentile(samples, [10, 90])
  return {"median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples),
          "p10_s": float(q[0]), "p90_s": float(q[1])}


def time_window(fn: Callable, window: float, min_calls: int = MIN_CALLS,
                max_calls: Optional[int] = None) -> dict:
  """Per-call seconds of ``fn`` over at least ``window`` seconds (and ``min_calls`` calls),
  stopping at ``max_calls``: :func:`summary` plus ``calls`` and ``window_s``.

  Warm ``fn`` up first (its first call compiles): every call here is timed.
  """
  samples = []
  start = time.perf_counter()
  while len(samples) < min_calls or (time.perf_counter() - start < window
                                     and (max_calls is None or len(samples) < max_calls)):
    samples.append(call_seconds(fn))
  return dict(summary(samples), calls=len(samples), window_s=time.perf_counter() - start)


def time_interleaved(fns: Mapping[str, Callable], repeats: int = 5, warmup: int = 1,
                     min_time: float = 0.0) -> dict:
  """Median seconds per call of each zero-argument function, timed round-robin.

  Args:
    fns: name -> function; each call's result is waited for before the clock stops.
    repeats: timed repeats per function (the median is reported).
    warmup: untimed calls first (compilation, caches, allocator).
    min_time: a repeat makes ``number`` calls lasting at least this long and
      reports their mean, so that calls of a few microseconds are not lost in
      the timer's resolution.

  Returns:
    name -> ``{"median_s", "min_s", "max_s", "repeats", "number"}``.
  """
  for fn in fns.values():
    for _ in range(warmup):
      wait(fn())
  # How many calls make one repeat last at least min_time seconds.
  numbers = {name: max(1, int(np.ceil(min_time / max(call_seconds(fn), 1e-7))))
             for name, fn in fns.items()}
  samples = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      samples[name].append(call_seconds(fn, numbers[name]))
  return {name: {"median_s": statistics.median(s), "min_s": min(s), "max_s": max(s),
                 "repeats": repeats, "number": numbers[name]} for name, s in samples.items()}


def matmul(n: int = 2048, dtype=jnp.float32):
  """The machine's large-matmul ceiling as a timeable call: ``(fn, flops)``.

  ``fn()`` runs a jitted ``(n, n) @ (n, n)`` (``2 n^3`` flops). Time it in the
  same :func:`time_interleaved` call as the methods it bounds: on a shared
  machine the rate measured a minute earlier can be off by a factor of two.
  """
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
  f = jax.jit(jnp.matmul)
  return (lambda: f(a, b)), 2 * n ** 3


def _status_bytes(field: str) -> Optional[int]:
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) * 1024     # the file counts kB
  except OSError:
    pass
  return None


def rss_bytes() -> Optional[int]:
  """The current resident set size (``VmRSS``), or None off Linux."""
  return _status_bytes("VmRSS")


def release_free_memory() -> bool:
  """Returns the C heap's free pages to the OS (glibc ``malloc_trim``); False where unavailable.

  XLA's CPU buffers come from ``malloc``: freed ones can stay resident, and a
  later allocation that reuses them does not raise the resident set, so a peak
  measured after earlier work would miss it.
  """
  try:
    return bool(ctypes.CDLL("libc.so.6").malloc_trim(0) or True)
  except (OSError, AttributeError):
    return False


def reset_peak_rss() -> bool:
  """Resets the resident-set high-water mark to the current RSS; False if unsupported."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return _status_bytes("VmHWM") is not None
  except OSError:
    return False


def peak_rss_bytes() -> int:
  """The resident-set high-water mark: ``VmHWM`` if readable, else ``ru_maxrss``.

  ``ru_maxrss`` is in kB on Linux and bytes on macOS, and cannot be reset.
  """
  hwm = _status_bytes("VmHWM")
  if hwm is not None:
    return hwm
  maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return maxrss if platform.system() == "Darwin" else maxrss * 1024


def available_memory_bytes() -> Optional[int]:
  """``MemAvailable`` from ``/proc/meminfo``: what a new process can use without swapping."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def cpu_count() -> int:
  """Cores this process may run on (the affinity mask where the OS has one)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def machine() -> dict:
  """CPU model, core count, library versions and the JAX device, for the results table."""
  try:
    import torch
    torch_version, torch_threads = torch.__version__, torch.get_num_threads()
  except ImportError:
    torch_version, torch_threads = "not installed", None
  device = jax.devices()[0]
  return {"cpu": _cpu_model(), "cores": cpu_count(), "jax": jax.__version__,
          "jaxlib": jaxlib.__version__, "torch": torch_version, "numpy": np.__version__,
          "python": platform.python_version(), "device": f"{device.platform}:{device.device_kind}",
          "device_count": jax.device_count(), "torch_threads": torch_threads,
          # How torch's OpenMP threads wait at barriers (spinning or sleeping) changes
          # its speed on a busy machine; the benchmark leaves it as the user set it.
          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset")}
