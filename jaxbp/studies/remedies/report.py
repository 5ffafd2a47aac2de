"""The remedies study's figures and ``report.md``.

matplotlib is imported (through :func:`jaxbp.io.pyplot`) only when a figure is drawn.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from jaxbp import io as _io
import jaxbp.studies.remedies.training as training


def _grid_axes(plt, n, size=(3.2, 2.5)):
  """Up to 5 panels a row; the unused ones hidden."""
  cols = min(n, 5)
  rows = -(-n // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False,
                           layout="constrained")
  for ax in axes.flat[n:]:
    ax.set_visible(False)
  return fig, axes.flat


def plot_curves(config, ds: str, records: Mapping, path) -> None:
  """One panel per setting: the median-over-seeds windowed batch loss per depth;
  ``records`` maps ``(dataset, setting, depth)`` to a stored record."""
  plt = _io.pyplot()
  fig, axes = _grid_axes(plt, len(config.settings))
  for ax, name in zip(axes, config.settings):
    for i, depth in enumerate(config.depths):
      r = records[ds, name, depth]
      curve = np.asarray(r["curve"], dtype=float)
      with np.errstate(all="ignore"):
        ax.plot(r["curve_steps"], np.median(curve, axis=0), color=f"C{i}", label=f"L={depth}")
    ax.set(title=name, yscale="log", xlabel="step")
  axes[0].set_ylabel("batch loss (median of seeds)")
  axes[0].legend(fontsize=7)
  fig.suptitle(f"{ds}: training loss (gaps: overflow)")
  _io.save_figure(fig, path)


def plot_accuracy(config, ds: str, rows: Sequence[Mapping], path) -> None:
  """Median test accuracy against depth, one line per setting, the threshold dotted."""
  plt = _io.pyplot()
  fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
  for i, name in enumerate(config.settings):
    rs = [r for r in rows if r["dataset"] == ds and r["setting"] == name]
    ax.plot([r["depth"] for r in rs], [r["test_accuracy"] for r in rs], marker="o",
            color=f"C{i % 10}", ls="-" if i < 10 else "--", label=name)
  ax.axhline(config.thresholds[ds], color="k", lw=0.8, ls=":", label="threshold")
  ax.set_xscale("log")
  ax.set_xticks(config.depths, [str(d) for d in config.depths])
  ax.minorticks_off()
  ax.set(xlabel="depth (hidden layers)", ylabel="test accuracy (median)",
         title=f"{ds}: final test accuracy vs depth", ylim=(0, 1.02))
  ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
  _io.save_figure(fig, path)


def plot_profiles(config, ds: str, records: Mapping, path) -> None:
  """One panel per setting: median ``||dL/dW_k||`` against layer k, at init (solid)
  and after training (dashed), per depth."""
  plt = _io.pyplot()
  fig, axes = _grid_axes(plt, len(config.settings))
  for ax, name in zip(axes, config.settings):
    for i, depth in enumerate(config.depths):
      r = records[ds, name, depth]
      for key, ls in (("grad_norms_start", "-"), ("grad_norms_end", "--")):
        g = np.asarray(r[key], dtype=float)
        if not np.isfinite(g).all():
          continue   # an overflowed run has no finite end profile
        ax.plot(np.arange(1, g.shape[1] + 1), np.median(g, axis=0), ls=ls, color=f"C{i}",
                label=f"L={depth}" if ls == "-" else None)
    ax.set(title=name, yscale="log", xlabel="layer k", xscale="log")
  axes[0].set_ylabel("||dL/dW_k||")
  axes[0].legend(fontsize=7)
  fig.suptitle(f"{ds}: per-layer gradient norms, at init (solid) and after training (dashed)")
  _io.save_figure(fig, path)


def markdown(config, rows: Sequence[Mapping]) -> str:
  """``report.md``: the settings, per dataset the accuracy and loss/gradient tables,
  and which depths each setting trains at."""
  lines = [
      "# Remedies for vanishing and exploding gradients (seed 003 §4.4)",
      "",
      f"MLPs of width {config.width} with `depth` hidden layers, {config.steps} steps of SGD + "
      f"momentum {config.momentum} (lr {config.learning_rate}, batch {config.batch_size}), "
      f"{config.seeds} seeds each. A setting *trains* at a depth when the median test "
      "accuracy over seeds reaches the threshold ("
      + ", ".join(f"{d}: {config.thresholds[d]:g}" for d in config.datasets) + ").",
      "",
      "| setting | what |",
      "|---|---|",
  ]
  lines += [f"| {n} | {training.get(n).about} |" for n in config.settings]
  for ds in config.datasets:
    rs = {(r["setting"], r["depth"]): r for r in rows if r["dataset"] == ds}
    lines += ["", f"## {ds}", "", "Median test accuracy (seeds reaching the threshold; "
              "`!` = overflow in some seed):", "",
              "| setting | " + " | ".join(f"L={d}" for d in config.depths) + " | trains at |",
              "|---|" + "---|" * (len(config.depths) + 1)]
    for name in config.settings:
      cells = []
      for d in config.depths:
        r = rs[name, d]
        mark = "**" if r["trains"] else ""
        bang = " !" if r["overflows"] else ""
        cells.append(f"{mark}{r['test_accuracy']:.3f}{mark} ({r['seeds_trained']}/{r['seeds']}){bang}")
      ok = [str(d) for d in config.depths if rs[name, d]["trains"]]
      lines.append(f"| {name} | " + " | ".join(cells) + f" | {', '.join(ok) or 'none'} |")
    lines += ["", "Training loss at init -> after training, and the gradient ratio "
              "||dL/dW_1|| / ||dL/dW_K|| at init -> after training (medians over seeds):", "",
              "| setting | " + " | ".join(f"L={d}" for d in config.depths) + " |",
              "|---|" + "---|" * len(config.depths)]
    for name in config.settings:
      cells = []
      for d in config.depths:
        r = rs[name, d]
        end = "overflow" if r["overflows"] else f"{r['final_loss']:.3g}"
        cells.append(f"{r['initial_loss']:.3g} -> {end}; "
                     f"{r['grad_ratio_start']:.1e} -> {r['grad_ratio_end']:.1e}")
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines += ["", "## Which depths train", ""]
  for ds in config.datasets:
    for name in config.settings:
      ok = [r["depth"] for r in rows if r["dataset"] == ds and r["setting"] == name and r["trains"]]
      lines.append(f"- {ds}, {name}: {'depths ' + ', '.join(map(str, ok)) if ok else 'no depth'}")
  lines += ["", "Figures: `loss_curves_<dataset>.png`, `accuracy_vs_depth_<dataset>.png`, "
            "`grad_profiles_<dataset>.png`.", ""]
  return "\n".join(lines)
