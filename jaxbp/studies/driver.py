"""The one driver every study runs on: config -> resumable store -> rows -> files.

A study is a ``Config`` dataclass (checked in ``__post_init__``) and a
``run(config, out_dir)`` that does::

    session = driver.start(config, out_dir)          # config.json, provenance.json, store/
    records = driver.resume(session, keys, compute, desc="...")   # only the missing ones
    rows = [summarise(k, r) for k, r in zip(keys, records)]
    driver.write_table(session, "results", rows)     # results.csv + results.json
    driver.finish(session, report_text)              # report.md, provenance with end time

``compute(pending_keys)`` yields ``(key, record)`` pairs in any order and in any
grouping (one job at a time, or a compiled batch of them): each record is saved
to the store the moment it is yielded, so a run that is killed keeps everything
it finished, and a rerun computes only what is missing.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Sequence, Tuple

from jaxbp import io as _io


@dataclasses.dataclass
class Session:
  """One run of a study into ``out_dir``.

  Attributes:
    out_dir: where everything is written.
    store: the resumable store under ``out_dir/store``.
    started: ``time.time()`` at the start.
    computed: how many records this run computed (the rest were on disk).
  """
  out_dir: str
  store: _io.ResultStore
  started: float
  computed: int = 0

  def path(self, name: str) -> str:
    return os.path.join(self.out_dir, name)


def config_dict(config) -> dict:
  """A study config as a plain dict (dataclasses and mappings alike)."""
  if dataclasses.is_dataclass(config):
    return dataclasses.asdict(config)
  return dict(config)


def check_out_dir(out_dir) -> str:
  """Creates ``out_dir`` and checks that it takes files, before any compute.

  Raises:
    ValueError: naming the directory and the reason, when it cannot be created
      or written to.
  """
  out_dir = os.fspath(out_dir)
  try:
    os.makedirs(out_dir, exist_ok=True)
    probe = os.path.join(out_dir, f".write_test.{os.getpid()}")
    with open(probe, "wb"):
      pass
    os.remove(probe)
  except OSError as e:
    raise ValueError(f"output directory {out_dir!r} cannot be written ({e.strerror}); "
                     "pass an --out / out_dir you can write to.") from None
  return out_dir


def start(config, out_dir) -> Session:
  """Checks ``out_dir``, writes ``config.json`` and a first ``provenance.json``,
  opens the store."""
  out_dir = check_out_dir(out_dir)
  session = Session(out_dir, _io.ResultStore(os.path.join(out_dir, "store")), time.time())
  _io.write_json(session.path("config.json"), config_dict(config))
  _io.write_json(session.path("provenance.json"), _io.provenance(session.started))
  return session


def resume(session: Session, keys: Sequence[Mapping[str, Any]],
           compute: Callable[[List[Mapping[str, Any]]], Iterable[Tuple[Mapping, Any]]],
           desc: str = "") -> List[Any]:
  """Every key's record, computing only those not in the store.

  Args:
    session: from :func:`start`.
    keys: one JSON-able mapping per configuration: everything its numbers depend on.
      Duplicates are computed once.
    compute: ``pending -> iterator of (key, record)``; called once with the
      distinct pending keys (none when every key is done). Each yielded record is
      saved at once.
    desc: the progress bar's label.

  Returns:
    The records, aligned with ``keys``.
  """
  pending: Dict[str, Mapping] = {}
  for key in keys:
    name = _io.config_key(key)
    if name not in pending and not session.store.done(key):
      pending[name] = key
  if pending:
    saved = _saving(session, compute(list(pending.values())))
    for _ in _io.progress(saved, total=len(pending), desc=desc):
      pass
  return [session.store.load(key) for key in keys]


def _saving(session: Session, results: Iterable[Tuple[Mapping, Any]]) -> Iterator[Mapping]:
  for key, record in results:
    session.store.save(key, record)
    session.computed += 1
    yield key


def write_table(session: Session, name: str, rows: Sequence[Mapping[str, Any]],
                columns: Sequence[str] | None = None) -> None:
  """``name.json`` (every field of every row) and ``name.csv`` (``columns``, by
  default every key of the first row)."""
  _io.write_json(session.path(f"{name}.json"), list(rows))
  columns = list(columns or (rows[0].keys() if rows else ()))
  _io.write_csv(session.path(f"{name}.csv"), {c: [r.get(c) for r in rows] for c in columns})


def finish(session: Session, report: str) -> None:
  """Writes ``report.md`` and the final ``provenance.json`` (start and end times)."""
  _io.write_text(session.path("report.md"), report)
  _io.write_json(session.path("provenance.json"), _io.provenance(session.started))
