"""Result files: atomic JSON/CSV, a resumable store, provenance, user config files.

Every write goes to a temporary file in the target's directory, is fsynced,
then ``os.replace``d over the target: a reader (or a rerun after a crash) sees
the old file or the new one, never half of one. The store keeps one JSON file
per finished configuration, named by a hash of the config, so an interrupted
sweep resumes where it stopped::

    store = ResultStore("out/sweep")
    for config in configs:
      if not store.done(config):
        store.save(config, {"grad_norms": run(config)})
"""
from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import math
import os
import platform
import tomllib
import secrets
import warnings
from importlib import metadata
from typing import Any, Mapping

import jax
import jaxlib
import numpy as np

import jaxbp.io.lock as _lock


# -- atomic files --------------------------------------------------------------


def atomic_write(path, data: bytes) -> None:
  """Writes ``data`` to ``path`` so that a reader sees the old file or the new one.

  A failed write (disk full, quota, I/O error, an interrupt) removes its
  temporary file and leaves the old ``path``, if any, untouched; the OSError
  keeps its errno and names ``path``.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  # Same directory, so os.replace is a rename within one filesystem: atomic.
  # os.open with mode 0o666 lets the process umask set the final mode, as a
  # plain open() would (mkstemp's 0600 would need the umask, and reading it means
  # setting it).
  tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    try:
      view = memoryview(data)
      while view:                 # os.write may write less than asked
        view = view[os.write(fd, view):]
      os.fsync(fd)
    finally:
      os.close(fd)
    os.replace(tmp, path)
  except BaseException as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    if isinstance(e, OSError) and e.errno is not None:
      raise OSError(e.errno, f"{e.strerror}: could not write {path}; nothing of it was "
                    "written and the previous file, if any, is intact", os.fspath(path)) from e
    raise


def remove_partial_files(directory) -> list:
  """Deletes the temporary files that dead writers left in ``directory`` (killed
  mid-write), and returns their names.

  A writer is known by the pid in the file's name (:func:`atomic_write`); files of
  live processes on this host, this one included, are left alone. Another host's
  pids cannot be checked, so call it while holding the directory's
  :class:`jaxbp.io.lock.DirLock`.
  """
  gone = []
  for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
    parts = name.rsplit(".", 3)
    if not (name.startswith(".") and name.endswith(".tmp") and len(parts) == 4
            and parts[1].isdigit()):
      continue
    pid = int(parts[1])
    if pid != os.getpid() and not _lock.pid_alive(pid):
      try:
        os.remove(os.path.join(directory, name))
        gone.append(name)
      except FileNotFoundError:
        pass
  return gone


def jsonable(obj):
  """Arrays to lists, NamedTuples to dicts; NaN and inf to None (JSON has neither)."""
  if hasattr(obj, "_asdict"):
    obj = obj._asdict()
  if isinstance(obj, Mapping):
    return {str(k): jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [jsonable(v) for v in obj]
  if hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
    obj = np.asarray(obj)
    return jsonable(obj.tolist()) if obj.ndim else jsonable(obj.item())
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def asdict(history) -> dict:
  """A NamedTuple (such as a training history) or mapping as a dict."""
  return history._asdict() if hasattr(history, "_asdict") else dict(history)


def write_json(path, obj) -> None:
  """Writes ``obj`` as JSON, atomically. Arrays become lists, NaN/inf become null.

  >>> write_json("/tmp/jaxbp_doc.json", {"loss": np.array([1.0, 0.5])})
  >>> read_json("/tmp/jaxbp_doc.json")
  {'loss': [1.0, 0.5]}
  """
  text = json.dumps(jsonable(obj), indent=1, sort_keys=True, allow_nan=False)
  atomic_write(path, (text + "\n").encode())


def write_text(path, text: str) -> None:
  """Writes ``text`` (UTF-8), atomically: a report, a table."""
  atomic_write(path, text.encode())


def _reject_constant(name):
  raise ValueError(f"non-standard JSON constant {name}")


def read_json(path):
  """Reads strict JSON (no NaN/Infinity); a damaged file raises a ValueError naming it."""
  with open(path, "rb") as f:
    data = f.read()
  try:
    return json.loads(data.decode(), parse_constant=_reject_constant)
  except (ValueError, UnicodeDecodeError) as e:
    raise ValueError(
        f"{path} is not valid JSON ({e}). It was not written by write_json, or was "
        "damaged after; delete it and rerun the configuration that made it.") from None


def write_csv(path, columns: Mapping[str, Any]) -> None:
  """Writes equal-length 1-D columns under a header row, atomically; floats as
  ``repr``, so ``nan`` and ``inf`` survive the round trip."""
  cols = {k: np.asarray(v).reshape(-1) for k, v in columns.items()}
  lengths = {k: len(v) for k, v in cols.items()}
  if len(set(lengths.values())) > 1:
    raise ValueError(f"write_csv: columns must have equal lengths, got {lengths}.")
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(cols)
  for row in zip(*cols.values()):
    writer.writerow([repr(v.item()) if isinstance(v, np.floating) else v for v in row])
  atomic_write(path, buf.getvalue().encode())


def read_csv(path) -> dict:
  """The columns of a :func:`write_csv` file, as float arrays."""
  with open(path, newline="") as f:
    rows = list(csv.reader(f)) or [[]]
  body = np.array(rows[1:], dtype=float).reshape(len(rows) - 1, len(rows[0]))
  return {name: body[:, i] for i, name in enumerate(rows[0])}


# -- a resumable store ---------------------------------------------------------


def config_key(config: Mapping) -> str:
  """A stable 16-hex-digit hash of a config: sha256 of its sorted-key JSON."""
  text = json.dumps(jsonable(config), sort_keys=True, separators=(",", ":"), allow_nan=False)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


class ResultStore:
  """One JSON file per finished configuration, in ``root``: ``<config_key>.json``.

  ``key`` is a config mapping (hashed with :func:`config_key`) or a key string.
  A file holds ``{"config": ..., "record": ..., "sha256": ...}``, the checksum
  taken over the canonical JSON of config and record. It appears only once the
  record is complete (atomic write), so ``done`` after a crash means really done.
  A file that does not parse, lacks its checksum or fails it (truncated,
  edited, damaged on disk) is never used: ``done`` warns, moves it aside to
  ``<name>.json.damaged`` and answers False, so the configuration is recomputed.

  >>> store = ResultStore("/tmp/jaxbp_doc_store")
  >>> store.save({"depth": 10}, {"norm": 0.5})
  >>> store.done({"depth": 10}), store.load({"depth": 10})
  (True, {'norm': 0.5})
  """

  def __init__(self, root):
    self.root = os.fspath(root)
    os.makedirs(self.root, exist_ok=True)

  def lock(self) -> _lock.DirLock:
    """The store's lock file, ``root/.lock``, taken: raises :class:`jaxbp.io.lock.LockHeld`
    naming the holder when another live process has it. Release it when done."""
    return _lock.DirLock(os.path.join(self.root, ".lock")).acquire()

  def path(self, key) -> str:
    name = key if isinstance(key, str) else config_key(key)
    return os.path.join(self.root, name + ".json")

  def _read(self, path):
    """The entry at ``path``, or None (with a warning, the file moved aside) if damaged."""
    try:
      entry = read_json(path)
      ok = (isinstance(entry, dict) and set(entry) == {"config", "record", "sha256"}
            and entry["sha256"] == _checksum(entry["config"], entry["record"]))
      problem = "its checksum does not match its contents"
    except ValueError as e:
      ok, problem = False, f"it does not parse ({str(e).split(' (')[0]})"
    if ok:
      return entry
    aside = path + ".damaged"
    os.replace(path, aside)
    warnings.warn(f"ResultStore: {path} is damaged: {problem}. Moved it to {aside}; its "
                  "configuration will be recomputed.", RuntimeWarning, stacklevel=3)
    return None

  def done(self, key) -> bool:
    """True if a complete, intact result for ``key`` is on disk."""
    path = self.path(key)
    return os.path.exists(path) and self._read(path) is not None

  def save(self, key, record) -> None:
    config = None if isinstance(key, str) else jsonable(key)
    record = jsonable(record)
    write_json(self.path(key), {"config": config, "record": record,
                                "sha256": _checksum(config, record)})

  def load(self, key):
    path = self.path(key)
    entry = self._read(path) if os.path.exists(path) else None
    if entry is None:
      raise KeyError(f"no intact result for {key!r} in {self.root}; check store.done(key) "
                     "first.")
    return entry["record"]

  def items(self):
    """``(config, record)`` for every intact finished configuration, in file-name order
    (damaged files are warned about and moved aside, as in ``done``)."""
    for name in sorted(os.listdir(self.root)):
      if name.endswith(".json") and not name.startswith("."):
        entry = self._read(os.path.join(self.root, name))
        if entry is not None:
          yield entry["config"], entry["record"]


def _checksum(config, record) -> str:
  text = json.dumps({"config": config, "record": record}, sort_keys=True,
                    separators=(",", ":"), allow_nan=False)
  return hashlib.sha256(text.encode()).hexdigest()


def provenance(started: float | None = None) -> dict:
  """Versions, device and time, to save beside every result.

  ``time`` is now (UTC, ISO 8601); given ``started`` (a ``time.time()`` value),
  ``started`` and ``finished`` are recorded too.
  """
  device = jax.devices()[0]
  return {
      "jaxbp": _version(), "jax": jax.__version__,
      "jaxlib": jaxlib.__version__, "numpy": np.__version__,
      "platform": device.platform, "device_kind": device.device_kind,
      "device_count": jax.device_count(), "python": platform.python_version(),
      "machine": platform.machine(), "x64": bool(jax.config.jax_enable_x64),
      "time": _iso(None),
      **({"started": _iso(started), "finished": _iso(None)} if started is not None else {}),
  }


def _version() -> str:
  try:
    return metadata.version("jaxbp")
  except metadata.PackageNotFoundError:   # run from a source tree, not installed
    return "unknown"


def _iso(t) -> str:
  t = datetime.datetime.now(datetime.timezone.utc) if t is None else \
      datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
  return t.isoformat(timespec="seconds")


# -- user config files ---------------------------------------------------------


def read_config(path) -> dict:
  """A user's config file as a dict, parsed as data: ``.json`` or ``.toml``.

  No eval, exec or unpickling: a config is text, and a string that looks like
  code stays a string. Anything but a JSON or TOML table is refused.
  """
  suffix = os.path.splitext(str(path))[1].lower()
  with open(path, "rb") as f:
    raw = f.read()
  try:
    if suffix == ".json":
      config = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    elif suffix == ".toml":
      config = tomllib.loads(raw.decode("utf-8"))
    else:
      raise ValueError(f"config file {path} must end in .json or .toml, got {suffix or 'no suffix'!r}.")
  except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"config file {path} is not valid {suffix[1:].upper()}: {e}") from None
  if not isinstance(config, dict):
    raise ValueError(f"config file {path} must hold a table/object at the top, got "
                     f"{type(config).__name__}.")
  return config
