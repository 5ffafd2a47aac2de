"""Writes what :func:`jaxbp.measure.monitor.run` recorded: a CSV and TensorBoard.

The reports come back from the device once, after the run; this module only
turns their stacked arrays into files (through :mod:`jaxbp.io`).
"""
from __future__ import annotations

import os

import numpy as np

from jaxbp.io.figures import write_tensorboard
from jaxbp.io.files import write_csv
from jaxbp.measure.report import LayerReport


def monitor_columns(reports: LayerReport, every: int = 1) -> dict:
  """``{column: (steps,) array}``: step, loss, log_slope, ``delta_sq/NNN``,
  ``q/NNN`` per layer (NNN = 1-based index in ``reports.names``) and
  ``grad_sq/<leaf path>`` per param leaf."""
  delta = np.asarray(reports.delta_sq)
  if delta.ndim != 2:
    raise ValueError("monitor_columns: expected reports stacked over steps, (steps, layers); "
                     f"got delta_sq of shape {delta.shape}. Pass what monitor.run returned.")
  steps = np.arange(delta.shape[0]) * every
  cols = {"step": steps, "loss": np.asarray(reports.loss),
          "log_slope": np.asarray(reports.log_slope)}
  q = np.asarray(reports.q)
  for l in range(delta.shape[1]):
    cols[f"delta_sq/{l + 1:03d}"] = delta[:, l]
    cols[f"q/{l + 1:03d}"] = q[:, l]
  for name, g in sorted(reports.grad_sq.items()):
    cols[f"grad_sq/{name}"] = np.asarray(g)
  return cols


def write_monitor(reports: LayerReport, out_dir, every: int = 1) -> dict:
  """Writes ``monitor.csv``, ``layers.txt`` (index -> layer name) and TensorBoard
  events under ``out_dir/tensorboard``: every column as a scalar series (its
  step the recorded report's index), and histograms ``grad/ln_delta_sq`` (per
  layer) and ``grad/ln_grad_sq`` (per leaf) at the last recorded training step.

  Returns ``{"csv", "layers", "tensorboard"}`` paths.
  """
  os.makedirs(out_dir, exist_ok=True)
  cols = monitor_columns(reports, every)
  csv_path = os.path.join(out_dir, "monitor.csv")
  write_csv(csv_path, cols)
  names_path = os.path.join(out_dir, "layers.txt")
  with open(names_path, "w") as f:
    f.writelines(f"{l + 1:03d}\t{name}\n" for l, name in enumerate(reports.names))
  # One writer call: event files are named by the second they are opened in, so
  # a second call could overwrite the first.
  delta, grads = np.asarray(reports.delta_sq), reports.grad_sq
  last = delta.shape[0] - 1
  with np.errstate(divide="ignore"):
    hist = {"ln_delta_sq": np.log(delta[last]),
            "ln_grad_sq": np.log(np.array([np.asarray(g)[last] for g in grads.values()]))}
  event = write_tensorboard(os.path.join(out_dir, "tensorboard"),
                            history={k: v for k, v in cols.items() if k != "step"},
                            grads={k: v[np.isfinite(v)] for k, v in hist.items()},
                            step=int(last * every))
  return {"csv": csv_path, "layers": names_path, "tensorboard": event}
