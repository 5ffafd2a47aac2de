"""Result files: atomic JSON/CSV, a resumable store, provenance, plots, TensorBoard.

Every write goes to a temporary file in the target's directory, is fsynced,
then ``os.replace``d over the target: a reader (or a rerun after a crash) sees
the old file or the new one, never half of one. The store keeps one JSON file
per finished configuration, named by a hash of the config, so an interrupted
sweep resumes where it stopped::

    store = ResultStore("out/sweep")
    for config in configs:
      if not store.done(config):
        store.save(config, {"grad_norms": run(config)})

matplotlib (plots), tqdm (progress bars) and tensorboardX (event files, seed
000 §7.9) are optional and imported only when used.
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
import tempfile
import warnings
from typing import Any, Mapping

import numpy as np

_UMASK = os.umask(0o022)   # read the process umask (the only way is to set it) ...
os.umask(_UMASK)           # ... and put it back


# -- atomic files --------------------------------------------------------------


def _atomic_write(path, data: bytes) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  # Same directory, so os.replace is a rename within one filesystem: atomic.
  fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path), suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_UMASK)   # mkstemp makes 0600; give the usual mode
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _jsonable(obj):
  """Arrays to lists, NamedTuples to dicts; NaN and inf to None (JSON has neither)."""
  if hasattr(obj, "_asdict"):
    obj = obj._asdict()
  if isinstance(obj, Mapping):
    return {str(k): _jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_jsonable(v) for v in obj]
  if hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
    obj = np.asarray(obj)
    return _jsonable(obj.tolist()) if obj.ndim else _jsonable(obj.item())
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def _asdict(history) -> dict:
  return history._asdict() if hasattr(history, "_asdict") else dict(history)


def write_json(path, obj) -> None:
  """Writes ``obj`` as JSON, atomically. Arrays become lists, NaN/inf become null.

  >>> write_json("/tmp/jaxbp_doc.json", {"loss": np.array([1.0, 0.5])})
  >>> read_json("/tmp/jaxbp_doc.json")
  {'loss': [1.0, 0.5]}
  """
  text = json.dumps(_jsonable(obj), indent=1, sort_keys=True, allow_nan=False)
  _atomic_write(path, (text + "\n").encode())


def write_text(path, text: str) -> None:
  """Writes ``text`` (UTF-8), atomically: a report, a table."""
  _atomic_write(path, text.encode())


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
  _atomic_write(path, buf.getvalue().encode())


def read_csv(path) -> dict:
  """The columns of a :func:`write_csv` file, as float arrays."""
  with open(path, newline="") as f:
    rows = list(csv.reader(f)) or [[]]
  body = np.array(rows[1:], dtype=float).reshape(len(rows) - 1, len(rows[0]))
  return {name: body[:, i] for i, name in enumerate(rows[0])}


# -- a resumable store ---------------------------------------------------------


def config_key(config: Mapping) -> str:
  """A stable 16-hex-digit hash of a config: sha256 of its sorted-key JSON."""
  text = json.dumps(_jsonable(config), sort_keys=True, separators=(",", ":"), allow_nan=False)
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
    config = None if isinstance(key, str) else _jsonable(key)
    record = _jsonable(record)
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
  import jax
  import jaxlib
  import jaxbp
  device = jax.devices()[0]
  return {
      "jaxbp": getattr(jaxbp, "__version__", "unknown"), "jax": jax.__version__,
      "jaxlib": jaxlib.__version__, "numpy": np.__version__,
      "platform": device.platform, "device_kind": device.device_kind,
      "device_count": jax.device_count(), "python": platform.python_version(),
      "machine": platform.machine(), "x64": bool(jax.config.jax_enable_x64),
      "time": _iso(None),
      **({"started": _iso(started), "finished": _iso(None)} if started is not None else {}),
  }


def _iso(t) -> str:
  t = datetime.datetime.now(datetime.timezone.utc) if t is None else \
      datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
  return t.isoformat(timespec="seconds")


# -- plots, progress, TensorBoard ----------------------------------------------


def pyplot():
  """``matplotlib.pyplot`` on the Agg backend (files only, no display needed)."""
  try:
    import matplotlib
  except ImportError:
    raise ImportError("Plots need matplotlib: pip install 'jaxbp[experiments]'.") from None
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def save_figure(fig, path) -> None:
  """Saves a matplotlib figure as PNG, atomically, and closes it."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
  pyplot().close(fig)
  _atomic_write(path, buf.getvalue())


def plot_history(history, path, title: str = "") -> None:
  """Curves of a :class:`jaxbp.training.StepInfo` history (loss, accuracy, grad norm)."""
  plt = pyplot()
  h = {k: np.asarray(v) for k, v in _asdict(history).items()}
  names = [k for k in ("loss", "accuracy", "grad_norm") if k in h and np.isfinite(h[k]).any()]
  fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False,
                           layout="constrained")   # leaves room for the suptitle
  for ax, name in zip(axes[0], names):
    ax.plot(np.arange(len(h[name])), h[name], lw=1)
    ax.set(xlabel="step", title=name)
    if name != "accuracy" and (h[name][np.isfinite(h[name])] > 0).all():
      ax.set_yscale("log")
  fig.suptitle(title)
  save_figure(fig, path)


def progress(iterable, total=None, desc=None):
  """A tqdm progress bar over ``iterable``: off when stderr is not a terminal,
  and a plain pass-through when tqdm is not installed."""
  try:
    from tqdm.auto import tqdm
  except ImportError:
    return iterable
  return tqdm(iterable, total=total, desc=desc, disable=None)  # None: off on non-TTY


def named_leaves(tree, prefix: str = "") -> dict:
  """``{"layer0/W": array, ...}`` for a params-like pytree (tuple of Dense)."""
  import jax
  # SequenceKey(idx) -> "layer<idx>"; GetAttrKey(name) / DictKey(key) -> the name.
  def part(p):
    return f"layer{p.idx}" if hasattr(p, "idx") else str(getattr(p, "name", getattr(p, "key", p)))
  return {prefix + "/".join(map(part, path)): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def write_tensorboard(logdir, history=None, grads=None, images=None, step: int = 0) -> str:
  """TensorBoard event files via tensorboardX (seed 000 §7.9: curves and images).

  Args:
    history: a StepInfo (or mapping) of per-step arrays: one scalar series each.
    grads: a params-shaped gradient pytree: one histogram per layer and leaf,
      tagged ``grad/layer0/W`` and so on, at ``step``.
    images: ``{tag: png_path}``: each PNG as an image summary at ``step``.

  Returns the event file's path. View with ``tensorboard --logdir LOGDIR``.
  """
  try:
    from tensorboardX import SummaryWriter
  except ImportError:
    raise ImportError("TensorBoard logs need tensorboardX: pip install "
                      "'jaxbp[tensorboard]'.") from None
  writer = SummaryWriter(logdir=os.fspath(logdir))
  try:
    for name, values in ({} if history is None else _asdict(history)).items():
      for t, v in enumerate(np.asarray(values, dtype=float).reshape(-1)):
        if math.isfinite(v):   # the NaN rows after an early stop are not data
          writer.add_scalar(name, v, t)
    for tag, leaf in ({} if grads is None else named_leaves(grads, "grad/")).items():
      writer.add_histogram(tag, leaf.reshape(-1), step)
    for tag, png in (images or {}).items():
      writer.add_image(tag, pyplot().imread(png)[..., :3], step, dataformats="HWC")
  finally:
    writer.close()
  events = [os.path.join(logdir, n) for n in os.listdir(logdir) if n.startswith("events.out")]
  return max(events, key=os.path.getmtime)


def save_run(out_dir, config: Mapping, history, summary=None, grads=None,
             tensorboard: bool = False, started: float | None = None) -> None:
  """Writes one run: ``config.json``, ``provenance.json`` (with ``started``, a
  ``time.time()`` value, the start and end times), ``history.csv``,
  ``history.json``, ``curves.png``, ``summary.json`` (if given) and, with
  ``tensorboard=True``, event files under ``out_dir/tensorboard``."""
  os.makedirs(out_dir, exist_ok=True)
  join = lambda name: os.path.join(out_dir, name)
  write_json(join("config.json"), config)
  write_json(join("provenance.json"), provenance(started))
  h = _asdict(history)
  write_csv(join("history.csv"), {"step": np.arange(len(np.asarray(h["loss"]))), **h})
  write_json(join("history.json"), h)
  if summary is not None:
    write_json(join("summary.json"), summary)
  plot_history(history, join("curves.png"), title=str(config.get("name", "")))
  if tensorboard:
    write_tensorboard(join("tensorboard"), history, grads, {"curves": join("curves.png")})


# -- user config files ---------------------------------------------------------


def read_config(path) -> dict:
  """A user's config file as a dict, parsed as data: ``.json`` or ``.toml``.

  No eval, exec or unpickling: a config is text, and a string that looks like
  code stays a string. Anything but a JSON or TOML table is refused.
  """
  import tomllib  # Python 3.11+

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
