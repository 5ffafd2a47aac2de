"""The depth sweep's grid: its config, its points and their mean-field theory."""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from jaxbp.core import activations as _act
from jaxbp.core import checks
from jaxbp.studies.depth_sweep.measure import RANDOM_READOUT
from jaxbp.studies.depth_sweep.records import fit_window
from jaxbp.theory import meanfield as _mf

VERSION = 1   # bump when a change alters the numbers, so stored records are not reused
ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu")
# Named schemes as (weights, sigma_w2, sigma_b2) for the sweep's square layers:
# Glorot's 2 / (fan_in + fan_out) is 1 / n, He's is 2 / n, Saxe's orthogonal has gain 1.
NAMED_INITS = {"xavier": ("gaussian", 1.0, 0.0), "he": ("gaussian", 2.0, 0.0),
               "orthogonal": ("orthogonal", 1.0, 0.0)}
# Grid inits: "gaussian" spans sigma_w2 x sigma_b2; "critical" puts sigma_w2 on
# chi_1 = 1 for every sigma_b2 (meanfield.critical_sigma_w2); "orthogonal_critical"
# uses orthogonal weights at that sigma_w2 (gain^2 = sigma_w2).
INITS = ("gaussian", "critical", "orthogonal_critical") + tuple(NAMED_INITS)
DTYPES = ("float32", "float64")
_Q_FLOOR = 1e-8   # q* below this is q* = 0 (the solver stops at ~1e-16, not at 0)
_CRITICAL_MAX = 256.0   # the critical line's bracket [0, 256]: sigmoid's root is ~103


def _default_sigma_w2():
  # sigmoid' <= 1/4, so its interesting range sits ~16x higher than tanh's.
  return {"sigmoid": (1.0, 4.0, 16.0, 32.0, 64.0), "tanh": (0.5, 1.0, 1.5, 2.0, 3.0, 4.0),
          "relu": (1.0, 1.5, 2.0, 2.5, 3.0), "leaky_relu": (1.0, 1.5, 2.0, 2.5, 3.0)}


@dataclasses.dataclass(frozen=True)
class SweepConfig:
  """A depth sweep's grid. Validated on construction: a bad one fails before any compute.

  Attributes:
    activations: hidden activations, names from :mod:`jaxbp.activations`.
    inits: any of ``INITS``: ``"gaussian"`` (the sigma_w2 x sigma_b2 grid),
      ``"critical"`` and ``"orthogonal_critical"`` (chi_1 = 1 at every sigma_b2),
      ``"xavier"``, ``"he"``, ``"orthogonal"`` (gain 1).
    sigma_w2: the gaussian grid's weight variances: one list for every
      activation, or ``{activation: list}``.
    sigma_b2: bias variances of the gaussian and critical grids.
    depths: numbers of hidden layers, each >= 1.
    width: the width of every layer (>= 500 for 0.01-nat agreement).
    batch: examples per net; ``||delta_l||^2`` is averaged over them.
    seeds: one random net (weights, inputs, targets) per seed and configuration;
      seed s draws the same standard-normal sample for every configuration.
    skip: transient layers left out of the slope fit at each end, at every depth;
      ``grid`` warns at depths too shallow for it (fewer than two layers would
      stay) and fits those over ``skip = (depth - 2) // 2``. None (the default):
      ``max_skip``, fewer where a depth is too shallow, without a warning.
    max_skip: with ``skip`` None, the most layers left out at each end.
    dtype: ``"float64"`` (needs ``jax_enable_x64``) or ``"float32"``.
    memory_gb: how much memory the row-stacked groups computed at once may take:
      their forward and backward caches, ``4 (depth + 1) width`` values per row of
      ``configurations x batch`` rows (besides the shared samples: one
      ``(depth + 1, width, width)`` stack per seed and family, never copied).
  """
  activations: Tuple[str, ...] = ACTIVATIONS
  inits: Tuple[str, ...] = ("gaussian", "xavier", "he", "orthogonal", "critical")
  sigma_w2: Any = dataclasses.field(default_factory=_default_sigma_w2)
  sigma_b2: Tuple[float, ...] = (0.0, 0.05, 0.3)
  depths: Tuple[int, ...] = (2, 10, 50, 100, 200)
  width: int = 500
  batch: int = 8
  seeds: Tuple[int, ...] = (0, 1, 2, 3)
  skip: Optional[int] = None
  max_skip: int = 5
  dtype: str = "float64"
  memory_gb: float = 2.0

  def __post_init__(self):
    set_ = lambda name, value: object.__setattr__(self, name, value)
    for name in ("activations", "inits", "sigma_b2", "depths", "seeds"):
      value = getattr(self, name)
      if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"SweepConfig: {name} must be a list, got {value!r}.")
      if not value:
        raise ValueError(f"SweepConfig: {name} is empty, so the grid is empty; give at "
                         f"least one value (defaults: {getattr(SweepConfig, name, None)!r}).")
      set_(name, tuple(value))
    for a in self.activations:
      if not isinstance(a, str) or a.lower() not in _act.names() or not _act.get(a).elementwise:
        raise ValueError(f"SweepConfig: unknown activation {a!r}; valid names are "
                         f"{', '.join(n for n in _act.names() if n != 'softmax')}.")
    for i in self.inits:
      if i not in INITS:
        raise ValueError(f"SweepConfig: unknown init {i!r}; valid inits are {', '.join(INITS)}.")
    for d in self.depths:
      if not checks.is_int(d) or d < 1:
        raise ValueError(f"SweepConfig: every depth must be an int >= 1 (hidden layers), "
                         f"got depths={self.depths!r}.")
    set_("depths", tuple(sorted(set(int(d) for d in self.depths))))
    for s in self.seeds:
      if not checks.is_int(s) or not 0 <= s < 2 ** 31:
        raise ValueError(f"SweepConfig: seeds must be ints in [0, 2^31), got {self.seeds!r}.")
    if len(set(self.seeds)) != len(self.seeds):
      raise ValueError(f"SweepConfig: seeds repeat: {self.seeds!r}.")
    set_("seeds", tuple(int(s) for s in self.seeds))
    set_("sigma_b2", tuple(_check_variance("sigma_b2", v) for v in self.sigma_b2))
    sw = self.sigma_w2
    if not isinstance(sw, Mapping):
      if isinstance(sw, (str, bytes)) or not isinstance(sw, Sequence):
        raise ValueError(f"SweepConfig: sigma_w2 must be a list or {{activation: list}}, got {sw!r}.")
      sw = {a: sw for a in self.activations}
    grid = {a: tuple(_check_variance(f"sigma_w2[{a!r}]", v) for v in sw.get(a, ()))
            for a in self.activations}
    set_("sigma_w2", grid)
    for a in self.activations:
      if set(self.inits) == {"gaussian"} and not grid[a]:
        raise ValueError(f"SweepConfig: the grid has no configurations for {a!r}: inits is "
                         f"only 'gaussian' and sigma_w2 has no values for it.")
    for name, lo in (("width", 1), ("batch", 1), ("skip", 0), ("max_skip", 0)):
      if name != "skip" or self.skip is not None:
        set_(name, checks.int_at_least(getattr(self, name), lo, name, "SweepConfig"))
    if self.dtype not in DTYPES:
      raise ValueError(f"SweepConfig: dtype must be one of {DTYPES}, got {self.dtype!r}.")
    if not (checks.is_real(self.memory_gb) and self.memory_gb > 0):
      raise ValueError(f"SweepConfig: memory_gb must be a number > 0, got {self.memory_gb!r}.")

  @property
  def fit_skip(self) -> int:
    """The layers left out at each end where the depth allows: ``skip``, or ``max_skip``."""
    return self.max_skip if self.skip is None else self.skip

  @classmethod
  def quick(cls, **overrides) -> "SweepConfig":
    """The README's main command (``depth_sweep.py --quick``): every axis of the study,
    small enough for two CPU cores; ``overrides`` replace fields."""
    return cls(**{**_QUICK, **overrides})

  @classmethod
  def from_dict(cls, config: Mapping) -> "SweepConfig":
    """From a mapping (e.g. a JSON file); unknown keys are an error, missing ones default."""
    if isinstance(config, cls):
      return config
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(config) - set(names))
    if unknown:
      raise ValueError(f"SweepConfig: unknown keys {unknown}; valid keys are {', '.join(names)}.")
    return cls(**config)

  def to_dict(self) -> dict:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _check_variance(name, v):
  if not checks.is_real(v) or not math.isfinite(v) or v < 0:
    raise ValueError(f"SweepConfig: {name} values must be finite numbers >= 0, got {v!r}.")
  return float(v)


# The README's main command: every axis of the study, small enough for two CPU cores.
# At depth 2 no layer can be left out (two must stay to fit), at 16 and 48 four are.
_QUICK = dict(
    sigma_w2={"sigmoid": (4.0, 16.0, 64.0), "tanh": (0.5, 1.5, 3.0),
              "relu": (1.0, 2.0, 3.0), "leaky_relu": (1.0, 2.0, 3.0)},
    sigma_b2=(0.0, 0.1), depths=(2, 16, 48), width=256, batch=8, seeds=(0, 1, 2), max_skip=4)
QUICK = SweepConfig.quick()
FULL = SweepConfig()


# -- the grid ----------------------------------------------------------------------


class Point(NamedTuple):
  """One configuration of the grid (``init`` is the label it was asked for)."""
  activation: str
  init: str
  weights: str          # "gaussian" | "orthogonal"
  sigma_w2: float
  sigma_b2: float
  depth: int


class Theory(NamedTuple):
  """Mean-field numbers of a point: q*, chi_1, ln chi_1, the input second moment v0,
  and whether the inputs put z_1 at q* (False where q* is 0 or infinite)."""
  q_star: float
  chi1: float
  slope: float
  v0: float
  at_fixed_point: bool


def critical_line(activation, sigma_b2) -> np.ndarray:
  """The grid's critical sigma_w2 for each sigma_b2: :func:`jaxbp.meanfield.critical_sigma_w2`
  on the bracket ``[0, 256]`` (wide enough for sigmoid's ~103), as numpy; nan where
  chi_1 - 1 does not change sign there."""
  sigma_b2 = np.atleast_1d(np.asarray(sigma_b2, float))
  return np.asarray(_mf.critical_sigma_w2(activation, sigma_b2, lo=0.0, hi=_CRITICAL_MAX))


def _critical(activation, sigma_b2) -> List[float]:
  crit = critical_line(activation, sigma_b2)
  for b, c in zip(sigma_b2, crit):
    if not np.isfinite(c):
      raise ValueError(
          f"init 'critical': meanfield.critical_sigma_w2({activation!r}, sigma_b2={b}) has no "
          f"root in sigma_w2 in [0, {_CRITICAL_MAX}] (chi_1 never reaches 1 there); "
          f"drop 'critical' for {activation!r} or that sigma_b2.")
  return [float(c) for c in crit]


def narrowed_skip(config: SweepConfig) -> Dict[int, Tuple[int, int]]:
  """``{depth: (first, last)}`` for the depths too shallow to leave ``config.fit_skip``
  layers out at each end and keep two to fit: the window :func:`fit_window` fits there
  instead."""
  windows = {d: fit_window(d, config.fit_skip) for d in config.depths}
  return {d: w for d, w in windows.items() if w[0] - 1 < config.fit_skip}


def grid(config: SweepConfig) -> List[Point]:
  """Every point of the sweep, in a stable order (activation, init, sigma_b2, sigma_w2, depth).

  Warns when a ``skip`` asked for cannot be honoured at some depth, saying what is
  fitted there (with ``skip`` None the window narrows as documented, silently).
  """
  narrowed = narrowed_skip(config)
  if narrowed and config.skip is not None:
    warnings.warn(
        f"SweepConfig: skip={config.skip} would leave fewer than two layers to fit at depth "
        f"{', '.join(map(str, narrowed))}; fitting "
        + "; ".join(f"depth {d} over layers [{a}, {b}] (skip {a - 1})"
                    for d, (a, b) in narrowed.items()) + " instead.", UserWarning, stacklevel=2)
  points = []
  for a in config.activations:
    crit = _critical(a, config.sigma_b2) if {"critical", "orthogonal_critical"} & set(config.inits) else []
    for init in config.inits:
      if init == "gaussian":
        pairs = [("gaussian", w, b) for b in config.sigma_b2 for w in config.sigma_w2[a]]
      elif init in ("critical", "orthogonal_critical"):
        weights = "gaussian" if init == "critical" else "orthogonal"
        pairs = [(weights, c, b) for b, c in zip(config.sigma_b2, crit)]
      else:
        pairs = [NAMED_INITS[init]]
      points += [Point(a, init, wt, w, b, d) for wt, w, b in pairs for d in config.depths]
  return points


def theory(points: Sequence[Point]) -> List[Theory]:
  """Mean-field q*, chi_1, ln chi_1 and input scale v0 for every point (vectorised per activation)."""
  out = [None] * len(points)
  by_act: Dict[str, List[int]] = {}
  for i, p in enumerate(points):
    by_act.setdefault(p.activation, []).append(i)
  for a, idx in by_act.items():
    sw = np.array([points[i].sigma_w2 for i in idx])
    sb = np.array([points[i].sigma_b2 for i in idx])
    q = np.asarray(_mf.fixed_point(a, sw, sb), float)
    chi = np.asarray(_mf.chi1(a, sw, sb), float)
    # sigma_w2 v0 + sigma_b2 = q*: z_1 starts at the fixed point. Without a
    # finite q* (relu with chi_1 >= 1 and biases: q grows forever) or with
    # q* = 0 (no biases, ordered phase: q_l decays to 0, and zero inputs would
    # leave relu nets dead) use v0 = 1 and let the variance map run.
    ok = np.isfinite(q) & (sw > 0) & (q > _Q_FLOOR)
    v0 = np.where(ok, np.maximum(q - sb, 0.0) / np.where(sw > 0, sw, 1.0), 1.0)
    for j, i in enumerate(idx):
      with np.errstate(divide="ignore", invalid="ignore"):
        out[i] = Theory(float(q[j]), float(chi[j]), float(np.log(chi[j])),
                        float(f"{v0[j]:.12g}"), bool(ok[j]))
  return out


def store_key(config: SweepConfig, point: Point, th: Theory) -> dict:
  """What determines a point's numbers: the store's key (the init label is not in it,
  so e.g. "he" and gaussian(2, 0) are computed once)."""
  return {"experiment": "depth_sweep", "version": VERSION, "activation": point.activation,
          "weights": point.weights, "sigma_w2": point.sigma_w2, "sigma_b2": point.sigma_b2,
          "depth": point.depth, "width": config.width, "batch": config.batch,
          "seeds": list(config.seeds), "dtype": config.dtype, "input_v0": th.v0,
          "loss": RANDOM_READOUT.name}
