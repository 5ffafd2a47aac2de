"""The remedies study: its :class:`Config` and :func:`run`.

Every setting (a :class:`~jaxbp.studies.remedies.training.Remedy` by name) is
trained at every depth on every dataset, several seeds at once. A setting
*trains* at a depth when the median test accuracy over seeds reaches the
dataset's threshold.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Mapping, Sequence, Tuple

import jax
import numpy as np

from jaxbp.core import checks
from jaxbp.studies import cli
from jaxbp.studies import driver
import jaxbp.studies.remedies.report as _report
import jaxbp.studies.remedies.training as training
from jaxbp.train import data as _data
from jaxbp.train import training as _optim

_W = "remedies Config"   # what every Config error begins with


def _default_thresholds():
  # "trains" = median test accuracy over seeds >= this (chance: 0.1 and 0.5).
  return {"digits": 0.8, "spirals": 0.8}


@dataclasses.dataclass(frozen=True)
class Config:
  """The remedies study's grid and optimiser. Checked on construction: a bad value
  raises a ValueError naming the field, before any data is loaded or net compiled.

  Attributes:
    datasets: any of ``"digits"``, ``"spirals"``.
    settings: names in :data:`~jaxbp.studies.remedies.training.REMEDIES`.
    depths: hidden layers, each an int >= 1.
    width: the width of every hidden layer.
    steps, batch_size, learning_rate, momentum: SGD + momentum.
    sigma_b2: the bias variance of the critical tanh settings (>= 0).
    seeds: nets per (dataset, setting, depth), trained at once; seed: the first.
    thresholds: ``{dataset: accuracy in (0, 1]}``, one for every dataset.
    curve_points: windows the stored loss curve is averaged over.
  """
  datasets: Tuple[str, ...] = training.DATASETS
  settings: Tuple[str, ...] = tuple(training.REMEDIES)
  depths: Tuple[int, ...] = (2, 5, 10, 20, 50)
  width: int = 64
  steps: int = 1500
  batch_size: int = 64
  learning_rate: float = 0.01
  momentum: float = 0.9
  sigma_b2: float = 1e-3
  seeds: int = 3
  seed: int = 0
  thresholds: Any = dataclasses.field(default_factory=_default_thresholds)
  curve_points: int = 60

  def __post_init__(self):
    set_ = lambda name, value: object.__setattr__(self, name, value)
    for name in ("datasets", "settings", "depths"):
      value = getattr(self, name)
      if isinstance(value, (str, bytes, int)) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"remedies Config: {name} must be a non-empty list, got {value!r}; "
                         "the grid would be empty.")
      set_(name, tuple(value))
    for name in self.settings:
      if not isinstance(name, str):   # names: they key the store and label the report
        raise ValueError(f"remedies Config: settings are names from "
                         f"{', '.join(training.REMEDIES)}, got {name!r}; call "
                         "training.train() directly to try a custom Remedy.")
      _field("settings", training.get, name)
    for name in self.datasets:
      if name not in training.DATASETS:
        raise ValueError(f"remedies Config: datasets: Unknown dataset {name!r}; valid names "
                         f"are {', '.join(training.DATASETS)}.")
    set_("depths", tuple(checks.positive_int(d, "depths: every depth", _W)
                         for d in self.depths))
    for name in ("width", "steps", "batch_size", "seeds", "curve_points"):
      set_(name, checks.positive_int(getattr(self, name), name, _W))
    set_("seed", checks.int_at_least(self.seed, 0, "seed", _W))
    for name, zero_ok in (("learning_rate", False), ("sigma_b2", True), ("momentum", True)):
      v = getattr(self, name)
      if not checks.is_real(v) or not math.isfinite(v) or not (v > 0 or zero_ok and v == 0):
        raise ValueError(f"remedies Config: {name} must be a number {'>=' if zero_ok else '>'} "
                         f"0, got {v!r}.")
      set_(name, float(v))
    self._check_thresholds()
    # The optimiser and the tanh critical point fail here too, not mid-sweep.
    for name in self.settings:
      remedy = training.get(name)
      _field("sigma_b2", training.initializer, remedy, self.sigma_b2)
      _field(f"settings ({name})", _optim.optimizer, "momentum", self.learning_rate,
             self.momentum, clip_norm=remedy.clip_norm, weight_decay=remedy.weight_decay)

  def _check_thresholds(self):
    t = self.thresholds
    if not isinstance(t, Mapping):
      raise ValueError(f"remedies Config: thresholds must be {{dataset: accuracy}}, got {t!r}.")
    missing = [d for d in self.datasets if d not in t]
    if missing:
      raise ValueError(f"remedies Config: thresholds has no entry for {missing}; give one "
                       "accuracy in (0, 1] per dataset.")
    for d, v in t.items():
      if not checks.is_real(v) or not 0 < v <= 1:
        raise ValueError(f"remedies Config: thresholds[{d!r}] must be an accuracy in (0, 1], "
                         f"got {v!r}.")
    object.__setattr__(self, "thresholds", {str(d): float(v) for d, v in t.items()})

  @classmethod
  def quick(cls, **overrides) -> "Config":
    """The small preset: digits only, depths 5 and 20, width 32, 300 steps, 2 seeds
    (about 2 minutes on 2 cores), with ``overrides``. A classmethod, not a
    constant: checking a Config solves for tanh's critical point, which
    importing the module should not do."""
    return cls(**{"datasets": ("digits",), "depths": (5, 20), "width": 32, "steps": 300,
                  "seeds": 2, **overrides})

  @classmethod
  def from_dict(cls, config: Mapping) -> "Config":
    """From a mapping of field names (a JSON/TOML file's keys); missing ones take
    the defaults, unknown ones are a ValueError. A Config passes through."""
    return cli.from_dict(cls, config, "remedies Config")

  def to_dict(self) -> dict:
    """The fields as a dict (mutable copies), e.g. to merge overrides into."""
    return driver.config_dict(self)


def _field(name, check, *args, **kwargs):
  """``check(...)``, with a ValueError's message prefixed by the field it concerns."""
  try:
    return check(*args, **kwargs)
  except (TypeError, ValueError) as e:
    raise ValueError(f"remedies Config: {name}: {e}") from None


def store_key(config: Config, dataset: str, setting: str, depth: int) -> dict:
  """The store key of one (dataset, setting, depth): everything its numbers depend on
  (the remedy's definition, not only its name, and the precision)."""
  keep = ("width", "steps", "batch_size", "learning_rate", "momentum", "sigma_b2", "seeds",
          "seed", "curve_points")
  return {"dataset": dataset, "setting": setting, "definition": training.get(setting)._asdict(),
          "depth": depth, "x64": bool(jax.config.jax_enable_x64),
          **{k: getattr(config, k) for k in keep}}


def summarise(record: Mapping, threshold: float) -> dict:
  """Median test accuracy, whether it ``trains`` (median >= threshold), how many
  seeds reach the threshold, the median initial and final training loss and loss
  fall ``1 - final/initial`` (NaN if any seed overflowed), overflows, and the median
  first-to-last layer gradient ratio ``||dL/dW_1|| / ||dL/dW_K||`` at start and end."""
  acc = np.asarray(record["test_accuracy"], dtype=float)
  l0 = np.asarray(record["initial_loss"], dtype=float)
  l1 = np.asarray(record["final_loss"], dtype=float)
  with np.errstate(all="ignore"):
    fall = np.where(np.isfinite(l1), 1 - l1 / l0, np.nan)
    ratio = lambda g: np.asarray(g, dtype=float)[:, 0] / np.asarray(g, dtype=float)[:, -1]
    r0, r1 = ratio(record["grad_norms_start"]), ratio(record["grad_norms_end"])
  med = lambda a: float(np.median(a)) if np.all(np.isfinite(a)) else float("nan")
  # A ratio is NaN for an overflowed seed, or 0/0 for a net whose ReLUs all died:
  # the median of the others (NaN if none).
  nanmed = lambda a: float(np.nanmedian(a)) if np.isfinite(a).any() else float("nan")
  return {"test_accuracy": float(np.median(acc)), "trains": bool(np.median(acc) >= threshold),
          "seeds_trained": int(np.sum(acc >= threshold)), "seeds": int(acc.size),
          "initial_loss": med(l0), "final_loss": med(l1), "loss_fall": med(fall),
          "overflows": int(sum(s == "overflow" for s in record["status"])),
          "grad_ratio_start": nanmed(r0), "grad_ratio_end": nanmed(r1)}


def run(config, out_dir) -> dict:
  """Trains every dataset x setting x depth; writes results, plots and report.md.

  Args:
    config: a :class:`Config` (or a mapping for :meth:`Config.from_dict`).
    out_dir: the output directory; a rerun into it resumes.

  Writes to ``out_dir``: ``config.json``, ``provenance.json``, ``summary.json``
  and ``summary.csv`` (one row per dataset, setting, depth), per dataset
  ``loss_curves_<dataset>.png``, ``accuracy_vs_depth_<dataset>.png`` and
  ``grad_profiles_<dataset>.png``, and ``report.md``. Each finished
  configuration is kept in ``out_dir/store``. Returns ``{"rows": [...],
  "report": str}``.

  >>> out = run(Config.quick(), "/tmp/jaxbp_remedies")  # doctest: +SKIP
  """
  config = Config.from_dict(config)
  session = driver.start(config, out_dir)
  grid = [(ds, name, depth) for ds in config.datasets for depth in config.depths
          for name in config.settings]

  def compute(pending):
    data = {}
    for key in pending:
      ds = key["dataset"]
      if ds not in data:
        data[ds] = _data.load(ds, 0)
      start = time.perf_counter()
      record = training.train(key["setting"], ds, key["depth"], config.width, config.steps,
                              config.seeds, config.learning_rate, config.momentum,
                              config.batch_size, config.sigma_b2, config.seed,
                              config.curve_points, data=data[ds])
      record["seconds"] = time.perf_counter() - start   # compile included
      yield key, record

  found = driver.resume(session, [store_key(config, *g) for g in grid], compute,
                        desc="remedies")
  records = dict(zip(grid, found))
  rows = [{"dataset": ds, "setting": name, "depth": depth,
           **summarise(records[ds, name, depth], config.thresholds[ds])}
          for ds, name, depth in grid]
  driver.write_table(session, "summary", rows)
  for ds in config.datasets:
    _report.plot_curves(config, ds, records, session.path(f"loss_curves_{ds}.png"))
    _report.plot_accuracy(config, ds, rows, session.path(f"accuracy_vs_depth_{ds}.png"))
    _report.plot_profiles(config, ds, records, session.path(f"grad_profiles_{ds}.png"))
  text = _report.markdown(config, rows)
  driver.finish(session, text)
  return {"rows": rows, "report": text}
