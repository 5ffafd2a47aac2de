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

What a run can meet, and what it does:

* another process running in the same ``out_dir``: ``start`` raises
  :class:`jaxbp.io.lock.LockHeld` naming it (pid, host, command); a lock left by a
  dead process on this host is taken over with a warning;
* an ``out_dir`` holding another config's results: ``start`` raises a ValueError
  naming the fields that differ (results are never mixed);
* SIGTERM or SIGINT while computing: the record being written is dropped, every
  finished one is kept, and a :class:`Interrupted` (a ``KeyboardInterrupt``) says so;
* a failed write (disk full): the OSError names the file and says what is kept.

A rerun with the same config resumes in every case.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
import weakref
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Sequence, Tuple

from jaxbp import io as _io
from jaxbp.io.lock import LockHeld  # noqa: F401  (what start raises; catch it from here)
from jaxbp.io.files import remove_partial_files


@dataclasses.dataclass
class Session:
  """One run of a study into ``out_dir``.

  Attributes:
    out_dir: where everything is written.
    store: the resumable store under ``out_dir/store``.
    started: ``time.time()`` at the start.
    computed: how many records this run computed (the rest were on disk).
    lock: the store's :class:`jaxbp.io.lock.DirLock`.

  The lock is held from :func:`start` to the end of :func:`resume`: while the
  config is checked and records are computed. What a study writes after (tables,
  report, figures) follows from the config and the store alone, so a second run
  arriving then recomputes nothing and writes the same files, atomically.
  """
  out_dir: str
  store: _io.ResultStore
  started: float
  computed: int = 0
  lock: Any = dataclasses.field(default=None, repr=False, compare=False)

  def path(self, name: str) -> str:
    return os.path.join(self.out_dir, name)

  def close(self) -> None:
    """Releases the lock on ``out_dir`` if this session holds it (idempotent)."""
    if self.lock is not None:
      self.lock.release()


class Interrupted(KeyboardInterrupt):
  """SIGTERM arrived while a study computed; ``signum`` says which signal."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum


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


def check_config(out_dir, config, may_differ: Sequence[str] = ()) -> None:
  """Raises a ValueError if ``out_dir/config.json`` holds another config than ``config``.

  A rerun must ask for the same thing to resume; fields in ``may_differ`` (how
  the work is done, not what it computes) may change between runs.
  """
  path = os.path.join(os.fspath(out_dir), "config.json")
  if not os.path.exists(path):
    return
  new = _io.jsonable(config_dict(config))
  old = _io.read_json(path)
  if not isinstance(old, dict):
    raise ValueError(f"{path} is not a study config; use another output directory.")
  missing = object()
  diff = [k for k in sorted(set(old) | set(new), key=str) if k not in may_differ
          and old.get(k, missing) != new.get(k, missing)]
  if diff:
    show = lambda d, k: repr(d[k]) if k in d else "(absent)"
    changes = "; ".join(f"{k}: {show(old, k)} there, {show(new, k)} now" for k in diff[:4])
    more = f" (and {len(diff) - 4} more)" if len(diff) > 4 else ""
    raise ValueError(
        f"{out_dir} holds the results of another config ({changes}{more}); rerun with "
        "the same config to resume, or use another output directory. Its store keeps "
        f"every finished configuration under its own key: to reuse them on purpose, "
        f"delete {path}.")


def start(config, out_dir, may_differ: Sequence[str] = ()) -> Session:
  """Checks ``out_dir``, takes its lock, checks that a rerun asks for the same config,
  clears files half-written by a killed run, writes ``config.json`` and a first
  ``provenance.json``, and opens the store.

  Raises:
    ValueError: ``out_dir`` cannot be written, or it holds another config's
      results (see :func:`check_config`).
    jaxbp.io.lock.LockHeld: another live process is running in ``out_dir``.
  """
  out_dir = check_out_dir(out_dir)
  store = _io.ResultStore(os.path.join(out_dir, "store"))
  lock = store.lock()
  try:
    check_config(out_dir, config, may_differ)
    for directory in (out_dir, store.root):
      remove_partial_files(directory)
    session = Session(out_dir, store, time.time(), lock=lock)
    _io.write_json(session.path("config.json"), config_dict(config))
    _io.write_json(session.path("provenance.json"), _io.provenance(session.started))
  except BaseException:
    lock.release()
    raise
  weakref.finalize(session, lock.release)   # a study stopped between start and resume
  return session


@contextlib.contextmanager
def _sigterm_raises():
  # SIGTERM's default ends the process at once, perhaps mid-write; as an exception
  # it unwinds like Ctrl-C, so atomic writes clean up and the lock is released.
  # Signal handlers can only be set from the main thread, and SIG_IGN is respected.
  if (threading.current_thread() is not threading.main_thread()
      or signal.getsignal(signal.SIGTERM) == signal.SIG_IGN):
    yield
    return

  def handler(signum, frame):
    raise Interrupted(signum)

  previous = signal.signal(signal.SIGTERM, handler)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


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
    The records, aligned with ``keys``. The session's lock is released on the way
    out, computed or not (see :class:`Session`).
  """
  if session.lock is not None and session.lock.token is None:
    session.lock.acquire()   # released by an earlier resume of this session
  try:
    pending: Dict[str, Mapping] = {}
    for key in keys:
      name = _io.config_key(key)
      if name not in pending and not session.store.done(key):
        pending[name] = key
    if pending:
      _compute_pending(session, pending, compute, desc)
    return [session.store.load(key) for key in keys]
  finally:
    session.close()


def _compute_pending(session, pending, compute, desc):
  try:
    with _sigterm_raises():
      saved = _saving(session, compute(list(pending.values())))
      for _ in _io.progress(saved, total=len(pending), desc=desc):
        pass
  except (KeyboardInterrupt, OSError) as e:
    why = (f"interrupted by {e.args[0] if isinstance(e, Interrupted) else 'SIGINT'}"
           if isinstance(e, KeyboardInterrupt) else "stopped by this error")
    e.add_note(f"{desc or 'the study'} {why} after computing {session.computed} of "
               f"{len(pending)} pending configurations: those and every one finished "
               f"before are kept in {session.store.root}; rerun the same command to resume.")
    raise


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
  """Writes ``report.md`` and the final ``provenance.json`` (start and end times), and
  releases ``out_dir``."""
  _io.write_text(session.path("report.md"), report)
  _io.write_json(session.path("provenance.json"), _io.provenance(session.started))
  session.close()
