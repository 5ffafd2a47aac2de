"""The side-by-side table: the text the script prints, and the files of a run.

Each row is one line (or, when its numbers are long, four): the quantity, the
seed's number, jaxbp's, and the agreement, under one heading per example.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from jaxbp import io as results
import jaxbp.studies.seed_examples.seed003 as seed003
from jaxbp.studies.seed_examples.common import KINDS, Config, Row, torch_or_none

GRAPH_EXAMPLE = "003 computational graph"   # the example whose node table follows the rows


def _fmt(v) -> str:
  if v is None:
    return "-"
  if isinstance(v, str):
    return v
  if isinstance(v, (list, tuple)) and any(e is None for e in v):
    return "[" + ", ".join(_fmt(e) for e in v) + "]"
  a = np.asarray(v)
  if a.ndim == 0:
    return f"{float(a):.6g}" if a.dtype.kind == "f" else str(a.item())
  text = np.array2string(a, precision=4, suppress_small=True, separator=", ", threshold=12,
                         edgeitems=3, max_line_width=10 ** 6)
  return " ".join(text.split())


def format_rows(rows: Sequence[Row]) -> str:
  """The side-by-side table, one section per example."""
  lines = ["Each row: quantity, the seed's number (in an 'A vs B' row: A), jaxbp's (B), "
           "agreement."]
  current = None
  for r in rows:
    if r.example != current:
      current = r.example
      lines.append(f"\n== {current} ==")
    seed, ours = _fmt(r.seed), _fmt(r.jaxbp)
    if max(len(seed), len(ours)) <= 22 and len(r.quantity) <= 56:
      lines.append(f"  {r.quantity:<56} seed {seed:<22} jaxbp {ours:<22} {r.agreement}")
    else:
      lines.append(f"  {r.quantity}")
      lines.append(f"      seed : {seed}")
      lines.append(f"      jaxbp: {ours}")
      lines.append(f"      -> {r.agreement}")
  return "\n".join(lines)


def summary(rows: Sequence[Row]) -> str:
  """``N rows: a yes, b seed wrong, ...``: how many rows of each kind."""
  counts = {k: sum(r.agreement.startswith(k) for r in rows) for k in KINDS}
  return f"{len(rows)} rows: " + ", ".join(f"{v} {k}" for k, v in counts.items())


def disagreements(rows: Sequence[Row]) -> list[Row]:
  """The rows that read ``NO``: a bug in jaxbp or in the examples."""
  return [r for r in rows if r.agreement.startswith("NO")]


def report_text(rows: Sequence[Row], config: Config) -> str:
  """What the script prints: the table, seed 003's graph when its example ran, the
  summary, and a line when PyTorch was wanted but is not importable."""
  parts = [format_rows(rows)]
  if config.selects(GRAPH_EXAMPLE):
    parts.append(f"\nseed 003's graph at {seed003.SEED003_POINT}, with its grad_table:")
    parts.append(seed003.graph_table(config))
  parts.append("\n" + summary(rows))
  if config.torch and torch_or_none(config) is None:
    parts.append("(PyTorch is not importable: its rows were skipped)")
  return "\n".join(parts)


def write_files(out_dir: str, config: Config, rows: Sequence[Row], started: float) -> None:
  """``config.json``, ``rows.json`` (every row, arrays as lists, NaN as null),
  ``report.md`` (the printed text) and ``provenance.json`` in ``out_dir``."""
  results.write_json(os.path.join(out_dir, "config.json"), dataclasses.asdict(config))
  results.write_json(os.path.join(out_dir, "rows.json"), [r._asdict() for r in rows])
  text = report_text(rows, config)
  results.write_text(os.path.join(out_dir, "report.md"),
                     f"# The seeds' worked examples, jaxbp beside them\n\n```text\n{text}\n```\n")
  results.write_json(os.path.join(out_dir, "provenance.json"), results.provenance(started))
