"""Seed 000 §7.8: gradient descent on Himmelblau's function from the seed's starts
and from a grid, drawn on a contour plot.

From [1, 0], [-4, 0] and [4, 0] (lr 0.01, 200 steps) descent reaches three of
the four minima; a vmapped grid of starts finds all four
(:mod:`jaxbp.landscapes` holds the functions and the descent).

>>> import jax; jax.config.update("jax_enable_x64", True)
>>> summary = run(Config(), "/tmp/jaxbp_himmelblau")   # doctest: +SKIP
>>> summary["all_known_found"]                         # doctest: +SKIP
True
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import io as _io
from jaxbp.core import checks
import jaxbp.studies.cli as cli
import jaxbp.studies.driver as driver
from jaxbp.train import landscapes


@dataclasses.dataclass(frozen=True)
class Config:
  """The descent experiment. Checked on construction: a bad value raises a
  ValueError naming the field, before anything is computed or written.

  Attributes:
    function: a name in :data:`jaxbp.landscapes.FUNCTIONS`.
    learning_rate, steps: plain gradient descent ``p <- p - lr grad f(p)``.
    starts: the seed's starting points ``(x, y)``.
    grid: ``(low, high, n)``: n x n more starts on ``[low, high]^2``.
    extent: the plot's ``(x0, x1, y0, y1)``.
    grad_tol: an end point is a stationary point when ``||grad f|| <= grad_tol``.
  """
  function: str = "himmelblau"
  learning_rate: float = 0.01
  steps: int = 200
  starts: Tuple[Tuple[float, float], ...] = landscapes.SEED_STARTS
  grid: Tuple[float, float, int] = (-5.0, 5.0, 11)
  extent: Tuple[float, float, float, float] = (-6.0, 6.0, -6.0, 6.0)
  grad_tol: float = 1e-6

  def __post_init__(self):
    set_ = lambda name, value: object.__setattr__(self, name, value)
    if self.function not in landscapes.FUNCTIONS:
      raise ValueError(f"himmelblau Config: function: Unknown function {self.function!r}; "
                       f"valid names are {', '.join(landscapes.FUNCTIONS)}.")
    set_("learning_rate", _positive("learning_rate", self.learning_rate))
    set_("grad_tol", _positive("grad_tol", self.grad_tol))
    set_("steps", checks.positive_int(self.steps, "steps", "himmelblau Config"))
    starts = self.starts
    if isinstance(starts, (str, bytes)) or not isinstance(starts, Sequence) or not starts:
      raise ValueError(f"himmelblau Config: starts must be a non-empty list of (x, y) "
                       f"points, got {starts!r}.")
    set_("starts", tuple(_numbers("starts", s, 2) for s in starts))
    low, high, n = _numbers("grid", self.grid, 3, "(low, high, n)")
    if not (low < high and n >= 1 and float(n).is_integer()):
      raise ValueError(f"himmelblau Config: grid must be (low, high, n) with low < high and "
                       f"n an int >= 1, got {self.grid!r}.")
    set_("grid", (low, high, int(n)))
    x0, x1, y0, y1 = _numbers("extent", self.extent, 4, "(x0, x1, y0, y1)")
    if not (x0 < x1 and y0 < y1):
      raise ValueError(f"himmelblau Config: extent must be (x0, x1, y0, y1) with x0 < x1 "
                       f"and y0 < y1, got {self.extent!r}.")
    set_("extent", (x0, x1, y0, y1))

  @classmethod
  def from_dict(cls, config: Mapping) -> "Config":
    """From a mapping of field names; missing ones take the defaults, unknown ones
    are a ValueError. A Config passes through."""
    return cli.from_dict(cls, config, "himmelblau Config")


def _is_number(v) -> bool:
  return checks.is_real(v) and math.isfinite(v)


def _positive(name, v) -> float:
  if not _is_number(v) or v <= 0:
    raise ValueError(f"himmelblau Config: {name} must be a number > 0, got {v!r}.")
  return float(v)


def _numbers(name, values, count, shape="(x, y)") -> tuple:
  if (isinstance(values, (str, bytes)) or not isinstance(values, Sequence)
      or len(values) != count or not all(_is_number(v) for v in values)):
    raise ValueError(f"himmelblau Config: {name} must be {count} finite numbers {shape}, "
                     f"got {values!r}.")
  return tuple(float(v) for v in values)


def descents(config: Config) -> Tuple[landscapes.Trajectory, landscapes.Trajectory]:
  """The descent paths from the seed's starts and from the grid of starts."""
  f = landscapes.FUNCTIONS[config.function]
  low, high, n = config.grid
  seeded = landscapes.descend(f, jnp.asarray(config.starts, float), config.learning_rate,
                              config.steps)
  gridded = landscapes.descend(f, landscapes.grid(low, high, n), config.learning_rate,
                               config.steps)
  return seeded, gridded


def minima(config: Config, seeded: landscapes.Trajectory,
           gridded: landscapes.Trajectory) -> dict:
  """Where every seed start ended, the distinct minima all starts found, which
  known minima they match, and how many grid starts ended in each basin."""
  f, known = landscapes.FUNCTIONS[config.function], landscapes.MINIMA[config.function]
  ends = np.asarray(seeded.points[:, -1])
  grid_ends = np.asarray(gridded.points[:, -1])
  found = landscapes.distinct(np.concatenate([ends, grid_ends]), f, config.grad_tol)
  matched = landscapes.nearest(found, known)
  basin = landscapes.nearest(grid_ends, known)
  summary = {
      "seed_starts": [
          {"start": list(s), "end": e.tolist(), "f": float(v), "minimum": int(k)}
          for s, e, v, k in zip(config.starts, ends, np.asarray(seeded.values[:, -1]),
                                landscapes.nearest(ends, known))],
      "grid_starts": config.grid[2] ** 2,
      # how many grid starts ended at each known minimum: the basins' shares
      "grid_counts": [int(np.sum(basin == k)) for k in range(len(known))],
      "grid_diverged": int(np.sum(~np.isfinite(np.asarray(gridded.values[:, -1])))),
      "found": found.tolist(),
      "known_minima": known.tolist(),
      "known_found": sorted({int(k) for k in matched if k >= 0}),
  }
  summary["all_known_found"] = len(summary["known_found"]) == len(known)
  return summary


def plot(f, trajectories, path, extent=(-6.0, 6.0, -6.0, 6.0), minima=None, others=None,
         title=None) -> None:
  """Contour plot of ``f`` with descent paths, written as a PNG.

  Args:
    trajectories: ``(m, steps + 1, 2)`` paths drawn in colour with their starts.
    others: more paths, drawn thin and grey (e.g. a grid of starts).
    minima: ``(k, 2)`` points marked with stars.
  """
  plt = _io.pyplot()
  x0, x1, y0, y1 = extent
  xs, ys = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
  zs = np.asarray(f(jnp.stack([jnp.asarray(xs), jnp.asarray(ys)], axis=-1)))
  fig, ax = plt.subplots(figsize=(6.4, 5.6))
  # log levels: Himmelblau spans 0 .. 2000 on [-6, 6]^2; linear levels hide the minima.
  cs = ax.contourf(xs, ys, np.log1p(zs), levels=30, cmap="viridis")
  fig.colorbar(cs, ax=ax, label="log(1 + f)")
  for line in ([] if others is None else np.asarray(others)):
    ax.plot(line[:, 0], line[:, 1], color="0.85", lw=0.5, alpha=0.6)
  for traj in np.asarray(trajectories):
    line, = ax.plot(traj[:, 0], traj[:, 1], lw=1.6, marker=".", ms=2)
    start = tuple(np.round(traj[0], 2).tolist())
    ax.plot(*traj[0], "o", color=line.get_color(), label=f"start {start}")
  if minima is not None and len(minima):
    m = np.asarray(minima)
    ax.plot(m[:, 0], m[:, 1], "*", color="red", ms=12, ls="", label="minima found")
  ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="x", ylabel="y", title=title or "")
  ax.legend(loc="lower left", fontsize=7)
  _io.save_figure(fig, path)


def report(config: Config, summary: Mapping) -> str:
  """``report.md``: where each seed start ended and which minima the grid found."""
  lines = [f"# Gradient descent on {config.function}", "",
           f"lr {config.learning_rate:g}, {config.steps} steps, from the seed's starts and "
           f"a {config.grid[2]} x {config.grid[2]} grid on [{config.grid[0]:g}, "
           f"{config.grid[1]:g}]^2.", "",
           "| start | end | f | known minimum |", "|---|---|---|---|"]
  for s in summary["seed_starts"]:
    end = ", ".join(f"{v:.6f}" for v in s["end"])
    lines.append(f"| {tuple(s['start'])} | ({end}) | {s['f']:.3g} | "
                 f"{s['minimum'] if s['minimum'] >= 0 else 'none'} |")
  lines += ["", f"Known minima found: {summary['known_found']} of "
            f"{len(summary['known_minima'])}; grid starts per known minimum "
            f"{summary['grid_counts']}, diverged {summary['grid_diverged']}. "
            "Figure: `contour.png`.", ""]
  return "\n".join(lines)


def run(config, out_dir) -> dict:
  """Descends from the seed's starts and from a grid; saves the plot and the minima.

  Args:
    config: a :class:`Config` (or a mapping for :meth:`Config.from_dict`).
    out_dir: the output directory.

  Writes to ``out_dir``: ``config.json``, ``provenance.json``, ``minima.json``
  (:func:`minima`), ``contour.png`` and ``report.md``; the minima are kept in
  ``out_dir/store``. Returns the minima summary.
  """
  config = Config.from_dict(config)
  session = driver.start(config, out_dir)
  # The figure needs every path, which are n^2 x steps points: too many to
  # store, and a few milliseconds to redraw, so only the summary is stored.
  paths = {}

  def compute(pending):
    for key in pending:
      paths["seeded"], paths["gridded"] = descents(config)
      yield key, minima(config, paths["seeded"], paths["gridded"])

  key = {"study": "himmelblau", "x64": bool(jax.config.jax_enable_x64),
         **driver.config_dict(config)}
  (summary,) = driver.resume(session, [key], compute, desc="descent")
  if not paths:
    paths["seeded"], paths["gridded"] = descents(config)
  _io.write_json(session.path("minima.json"), summary)
  plot(landscapes.FUNCTIONS[config.function], paths["seeded"].points,
       session.path("contour.png"), config.extent, np.asarray(summary["found"]),
       others=paths["gridded"].points,
       title=f"{config.function}: gradient descent, lr {config.learning_rate:g}, "
             f"{config.steps} steps")
  driver.finish(session, report(config, summary))
  return summary
