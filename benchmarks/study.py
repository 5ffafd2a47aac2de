"""``run(config, out_dir)``: the chosen sections in order, then the targets and results.md.

Not a resumable study (timings are only comparable within one run), so it uses
the driver's checks and config dump but not its store.
"""
from __future__ import annotations

import os
import time

from jaxbp import io as _io
from jaxbp.studies import driver
import benchmarks.report as report
import benchmarks.timing as timing
from benchmarks.compile_time import compile_times
from benchmarks.config import Config
from benchmarks.memory import peak_memory
from benchmarks.monitor_overhead import monitor_overhead
from benchmarks.per_example import per_example
from benchmarks.processes import processes
from benchmarks.profile import profile
from benchmarks.rnn import rnn_section
from benchmarks.sweep_grid import sweep
from benchmarks.throughput import throughput
from benchmarks.transformer import transformer_section

SECTION_FUNCTIONS = {"processes": processes, "profile": profile, "monitor": monitor_overhead,
                     "throughput": throughput,
                     "compile": compile_times, "memory": peak_memory, "sweep": sweep,
                     "per_example": per_example, "rnn": rnn_section,
                     "transformer": transformer_section}


def run(config: Config, out_dir) -> dict:
  """Runs the chosen sections, writing results.json after each and results.md at the end.

  Args:
    config: a :class:`Config` (``quick()`` for the tiny one).
    out_dir: created if missing; gets ``config.json``, ``results.json`` (every
      number, rewritten after each section, so a killed run keeps what it
      finished) and ``results.md`` (the machine, the tables, the targets).

  Returns:
    The results as written to ``results.json``.

  Raises:
    ValueError: ``config`` is not a Config, or ``out_dir`` cannot be written.
  """
  if not isinstance(config, Config):
    raise ValueError(f"benchmark.run: config must be a benchmark Config, got "
                     f"{type(config).__name__}.")
  out_dir = driver.check_out_dir(out_dir)
  path = lambda name: os.path.join(out_dir, name)
  config_json = driver.config_dict(config)
  _io.write_json(path("config.json"), config_json)
  start = time.perf_counter()
  res = {"machine": timing.machine(), "config": config_json, "time": _io.provenance()["time"]}
  for name in config.sections:
    print(f"{name} ...", flush=True)
    t0 = time.perf_counter()
    res[name] = SECTION_FUNCTIONS[name](config)
    res[name]["section_s"] = time.perf_counter() - t0
    _io.write_json(path("results.json"), res)
  res["targets"] = report.targets(res)
  res["seconds"] = time.perf_counter() - start
  _io.write_json(path("results.json"), res)
  _io.write_text(path("results.md"), report.markdown(res))
  return res
