"""Runs the selected examples in float64 and, given a directory, writes the table."""
from __future__ import annotations

import time
from typing import Callable

import jax
import numpy as np

from jaxbp.studies import driver
import jaxbp.studies.seed_examples.report as report
import jaxbp.studies.seed_examples.seed000 as seed000
import jaxbp.studies.seed_examples.seed001 as seed001
import jaxbp.studies.seed_examples.seed002 as seed002
import jaxbp.studies.seed_examples.seed003 as seed003
import jaxbp.studies.seed_examples.seed004 as seed004
from jaxbp.studies.seed_examples.common import Config, Row, float64

# Every example, in seed order: (name, function of the config returning rows).
EXAMPLES: tuple[tuple[str, Callable[[Config], list[Row]]], ...] = (
    seed000.EXAMPLES + seed001.EXAMPLES + seed002.EXAMPLES + seed003.EXAMPLES + seed004.EXAMPLES)


def _on_host(row: Row) -> Row:
  # Rows outlive the float64 context: as numpy arrays their dtype no longer
  # depends on the x64 flag of whoever reads them.
  return jax.tree_util.tree_map(lambda v: np.asarray(v) if isinstance(v, jax.Array) else v, row)


def run(config: Config = Config(), out_dir=None) -> list[Row]:
  """The rows of every example that ``config`` selects, in seed order.

  The examples run in float64 (:func:`float64`): the x64 flag is set for the
  run only and is as it was on return. Given ``out_dir``, also writes
  ``config.json``, ``rows.json``, ``report.md`` and ``provenance.json`` there
  (see :func:`report.write_files`); the directory is checked before any compute.

  Raises:
    TypeError: if ``config`` is not a :class:`Config`.
    ValueError: if ``out_dir`` cannot be written, or holds another config's results.
  """
  if not isinstance(config, Config):
    raise TypeError(f"run: config must be a seed_examples.Config, got {type(config).__name__}.")
  if out_dir is not None:
    out_dir = driver.check_out_dir(out_dir)
    driver.check_config(out_dir, config)   # one config's results per directory, as every study
  started = time.time()
  with float64():
    rows = [_on_host(row) for name, fn in EXAMPLES if config.selects(name) for row in fn(config)]
    if out_dir is not None:
      report.write_files(out_dir, config, rows, started)
  return rows
