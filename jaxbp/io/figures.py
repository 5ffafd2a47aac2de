"""Figures, progress bars, TensorBoard and whole-run output.

matplotlib (plots), tqdm (progress bars) and tensorboardX (event files, seed
000 §7.9) are optional: each is imported only when used, so that importing
this module costs nothing.
"""
from __future__ import annotations

import io
import math
import os
from typing import Mapping

import jax
import numpy as np

from jaxbp.io.files import asdict, atomic_write, provenance, write_csv, write_json


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
  atomic_write(path, buf.getvalue())


def plot_history(history, path, title: str = "") -> None:
  """Curves of a :class:`jaxbp.training.StepInfo` history (loss, accuracy, grad norm)."""
  plt = pyplot()
  h = {k: np.asarray(v) for k, v in asdict(history).items()}
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
    for name, values in ({} if history is None else asdict(history)).items():
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
  h = asdict(history)
  write_csv(join("history.csv"), {"step": np.arange(len(np.asarray(h["loss"]))), **h})
  write_json(join("history.json"), h)
  if summary is not None:
    write_json(join("summary.json"), summary)
  plot_history(history, join("curves.png"), title=str(config.get("name", "")))
  if tensorboard:
    write_tensorboard(join("tensorboard"), history, grads, {"curves": join("curves.png")})
