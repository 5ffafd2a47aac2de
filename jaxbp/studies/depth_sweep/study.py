"""The depth sweep's driver: grid -> resumable store -> rows -> files and figures."""
from __future__ import annotations

import time

import jax

from jaxbp import io as _io
from jaxbp.studies import multihost
import jaxbp.studies.depth_sweep.report as _report
import jaxbp.studies.depth_sweep.schedule as schedule
from jaxbp.studies.depth_sweep.config import SweepConfig, grid, store_key, theory
from jaxbp.studies.depth_sweep.records import as_float, finite_mean, summarise

Config = SweepConfig   # every study's config is ``studies.X.Config``


def run(config, out_dir: str, devices=None, figures: bool = True) -> dict:
  """Runs (or resumes) the sweep and writes its results to ``out_dir``.

  Writes ``results.csv`` (one row per configuration), ``results.json`` (the
  rows, the mean profiles, the config, seeds and provenance), ``config.json``,
  ``provenance.json``, ``profiles.png``, ``slopes.png``, ``phase.png``,
  ``report.md``, and one file per finished configuration under ``store/``.

  Args:
    config: a :class:`SweepConfig` or a mapping of its fields.
    out_dir: the output directory; a rerun into it skips finished configurations.
    devices: the devices to shard over; default every local device.
    figures: whether to draw the PNGs (the numbers and report are always written).

  Returns:
    A summary: counts, runtime, and the agreement with theory per activation.

  Under :func:`jaxbp.studies.multihost.initialize` (several processes, one per
  host or more), each process computes whole depths of the grid on its own
  devices and process 0 merges them and writes everything
  (:func:`jaxbp.studies.multihost.resume`); the others return
  ``{"process": i, "computed": n}``.
  """
  config = SweepConfig.from_dict(config)
  if config.dtype == "float64" and not jax.config.jax_enable_x64:
    raise ValueError("SweepConfig: dtype='float64' needs jax.config.update('jax_enable_x64', "
                     "True) before any computation, or use dtype='float32'.")
  devices = list(devices or jax.local_devices())
  points = grid(config)
  theories = theory(points)
  keys = [store_key(config, p, t) for p, t in zip(points, theories)]
  theory_of = {_io.config_key(k): t for k, t in zip(keys, theories)}

  def compute(pending):
    # Grouped by shape, in grid order: one compiled program per group.
    by_shape = {}
    for k in pending:
      by_shape.setdefault((k["activation"], k["weights"], k["depth"]), []).append(
          (k, theory_of[_io.config_key(k)]))
    return schedule.compute(config, by_shape, devices)

  # A depth is one unit of work: its samples are drawn once for every activation.
  session, records = multihost.resume(config, out_dir, keys, compute, unit=lambda k: k["depth"],
                                      cost=lambda k: k["depth"], desc="depth sweep")
  if records is None:   # not process 0: its share is in process 0's store now
    return {"process": jax.process_index(), "computed": session.computed}
  compute_seconds = time.time() - session.started

  rows = [summarise(p, t, rec, config) for p, t, rec in zip(points, theories, records)]
  profiles = {}
  for k, rec, row in zip(keys, records, rows):
    row["key"] = _io.config_key(k)
    profiles[row["key"]] = {"log_delta_sq_mean": finite_mean(as_float(rec["log_delta_sq"])),
                            "log_weight_sq_mean": finite_mean(as_float(rec["log_weight_sq"]))}
  summary = _report.agreement(rows, config)
  summary.update(configurations=len(rows), distinct=len({r["key"] for r in rows}),
                 computed=session.computed, compute_seconds=round(compute_seconds, 2),
                 devices=len(devices))
  _report.write_outputs(out_dir, config, rows, profiles, summary, figures, session.started)
  summary["seconds"] = round(time.time() - session.started, 2)
  return summary
