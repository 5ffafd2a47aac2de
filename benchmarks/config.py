"""The benchmark's one config: sizes and repeats of every section, checked at construction."""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional, Tuple

from jaxbp.core import checks

SECTIONS = ("processes", "profile", "monitor", "throughput", "compile", "memory", "sweep",
            "per_example", "rnn", "transformer")
# The in-process "throughput" section times frameworks side by side in one process,
# where they contend for the cores: "processes" replaces it in a default run.
DEFAULT_SECTIONS = ("processes", "profile", "monitor", "compile", "memory", "sweep",
                    "per_example", "rnn", "transformer")
# Kept in step with methods.METHODS (which imports the frameworks' glue, so not from here).
PROCESS_METHODS = ("jaxbp autodiff", "jaxbp hand recursion", "flax.linen", "equinox", "raw jax",
                   "numpy (seed 002)", "torch eager", "torch eager, 1 thread", "torch.compile")


class Grid(NamedTuple):
  """One shape of the depth sweep and its configurations."""
  seeds: int
  sigma_w2: Tuple[float, ...]
  sigma_b2: Tuple[float, ...]
  depth: int
  width: int
  batch: int

  def to_dict(self) -> dict:
    """The fields by name."""
    return dict(zip(self._fields, self))


SWEEP_GRID = Grid(seeds=3, sigma_w2=(0.5, 1.5, 3.0), sigma_b2=(0.0, 0.1), depth=48, width=256,
                  batch=8)
SWEEP_SMALL_GRID = Grid(seeds=4, sigma_w2=(0.5, 1.0, 1.5, 2.0, 3.0, 4.0),
                        sigma_b2=(0.0, 0.05, 0.3), depth=8, width=16, batch=8)


WHERE = "benchmark Config"


def _fail(name: str, expected: str, value: Any):
  raise ValueError(f"{WHERE}: {name} must be {expected}, got {value!r}.")


def _int(name: str, v, lo: int) -> int:
  return checks.int_at_least(v, lo, name, WHERE)


def _positive(name: str, v, allow_zero: bool = False) -> float:
  return checks.finite(v, name, WHERE, low=0, open_low=not allow_zero)


def _ints(name: str, v, lo: int) -> Tuple[int, ...]:
  if (isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)) or not v
      or not all(checks.is_int(x) and x >= lo for x in v)):
    _fail(name, f"a non-empty list of ints >= {lo}", v)
  return tuple(int(x) for x in v)


def _flag(name: str, v) -> bool:
  return checks.boolean(v, name, WHERE)


def _grid(name: str, g) -> Grid:
  """A Grid from a Grid, a mapping of its fields or a sequence of them (as config.json has it)."""
  try:
    g = Grid(**g) if isinstance(g, dict) else Grid(*g)
  except TypeError:
    _fail(name, f"a Grid({', '.join(Grid._fields)})", g)
  variances = []
  for field, lo_ok in (("sigma_w2", False), ("sigma_b2", True)):
    values = getattr(g, field)
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)) or not values:
      _fail(f"{name}.{field}", "a non-empty list of numbers", values)
    variances.append(tuple(_positive(f"{name}.{field}", v, allow_zero=lo_ok) for v in values))
  return Grid(seeds=_int(f"{name}.seeds", g.seeds, 1), sigma_w2=variances[0],
              sigma_b2=variances[1], depth=_int(f"{name}.depth", g.depth, 1),
              width=_int(f"{name}.width", g.width, 1), batch=_int(f"{name}.batch", g.batch, 1))


@dataclasses.dataclass(frozen=True)
class Config:
  """Sizes and repeats of every section; :func:`quick` gives the tiny version.

  Validated on construction: a bad value raises ``ValueError`` naming the field
  and what it must be, before any compute. Lists become tuples.

  Attributes:
    quick: tiny sizes (marked in results.md as not for reading); also skips the
      extra compilations that only read optimised HLO.
    seed: PRNG seed of the parameters and data.
    sections: which of ``SECTIONS`` to run, in order (default ``DEFAULT_SECTIONS``:
      all but the in-process "throughput").
    torch: False records the PyTorch columns as skipped (in-process sections;
      "processes" runs only ``process_methods``).
    widths, depth, batches: the throughput nets (``depth`` hidden layers, >= 2 so
      that the scan variant has a stack) and batch sizes, of "processes" and "throughput".
    process_methods: the methods "processes" times, each in its own process.
    process_rounds: rounds over every (method, size); medians and min-max are over rounds.
    process_window_s, process_ceiling_s: seconds of timed steps, and of timed
      ceiling matmuls, per child process.
    process_timeout_s: per child process (torch.compile compiles for tens of seconds).
    profile_width, profile_batch: the "profile" section's net (depth ``depth``).
    repeats, warmup: timed repeats (the median is reported) and untimed calls first.
    min_time: seconds per timed repeat (many calls per repeat when a call is fast).
    matmul_n: the large-matmul ceiling is ``(n, n) @ (n, n)``.
    compile_depths, compile_width, compile_batch: section 2's nets.
    compile_budget_s: unrolled nets predicted to compile slower than this are skipped.
    memory_depths, memory_width, memory_batch: section 3's nets (depth >= 2).
    memory_timeout_s: per child process.
    memory_deep: ``(depth, width, batch)`` of one very deep point (block remat and
      per-layer remat, each in a fresh process), or None to skip it.
    monitor_width, monitor_batch, monitor_fit_steps: the "monitor" section's net
      (depth ``depth``) and the length of its timed ``fit`` runs.
    memory_fresh_process: one child process per point (False: one for all).
    sweep_grid: the depth sweep's tanh gaussian grid at its deepest depth.
    sweep_small_grid: the same grid shape on small nets, where dispatch, not
      compute, dominates; None to skip.
    per_example_width, per_example_depth, per_example_batch: section 5's net.
    rnn_input_size, rnn_hidden_size, rnn_steps, rnn_batch, rnn_output_size: the
      "rnn" section's Elman RNN (issue #20: hidden 256, T 200, batch 64).
    rnn_rounds, rnn_window_s, rnn_timeout_s: its rounds (each method a fresh
      process per round), seconds of timed steps per process, and each process's timeout.
    transformer_d_model, transformer_heads, transformer_steps, transformer_depth,
      transformer_batch, transformer_d_ff: the "transformer" section's pre-LN
      transformer (issue #21: d_model 256, heads 4, T 128, depth 12, batch 16).
    transformer_rounds, transformer_window_s, transformer_timeout_s: as the rnn's.
  """
  quick: bool = False
  seed: int = 0
  sections: Tuple[str, ...] = DEFAULT_SECTIONS
  torch: bool = True
  # throughput: "processes" and the in-process "throughput"
  widths: Tuple[int, ...] = (64, 256, 1024)
  depth: int = 10
  batches: Tuple[int, ...] = (128, 1024)
  repeats: int = 7
  warmup: int = 2
  min_time: float = 0.3
  matmul_n: int = 2048
  process_methods: Tuple[str, ...] = PROCESS_METHODS
  process_rounds: int = 3
  process_window_s: float = 2.0
  process_ceiling_s: float = 1.0
  process_timeout_s: float = 900.0
  profile_width: int = 64
  profile_batch: int = 128
  # 2. compile time
  compile_depths: Tuple[int, ...] = (10, 100, 1000)
  compile_width: int = 256
  compile_batch: int = 128
  compile_budget_s: float = 240.0
  # 3. peak memory
  memory_depths: Tuple[int, ...] = (10, 100, 1000)
  memory_width: int = 1024
  memory_batch: int = 256
  memory_timeout_s: float = 1200.0
  memory_fresh_process: bool = True
  memory_deep: Optional[Tuple[int, int, int]] = (10000, 256, 128)
  # monitoring overhead
  monitor_width: int = 256
  monitor_batch: int = 128
  monitor_fit_steps: int = 50
  # 4. depth-sweep grids
  sweep_grid: Grid = SWEEP_GRID
  sweep_small_grid: Optional[Grid] = SWEEP_SMALL_GRID
  # 5. per-example gradients
  per_example_width: int = 64
  per_example_depth: int = 10
  per_example_batch: int = 256
  # 6. the RNN's hand BPTT against autodiff through lax.scan
  rnn_input_size: int = 256
  rnn_hidden_size: int = 256
  rnn_steps: int = 200
  rnn_batch: int = 64
  rnn_output_size: int = 10
  rnn_rounds: int = 5
  rnn_window_s: float = 3.0
  rnn_timeout_s: float = 600.0
  # 7. the transformer's hand backward against autodiff
  transformer_d_model: int = 256
  transformer_heads: int = 4
  transformer_steps: int = 128
  transformer_depth: int = 12
  transformer_batch: int = 16
  transformer_d_ff: int = 1024
  transformer_rounds: int = 5
  transformer_window_s: float = 3.0
  transformer_timeout_s: float = 600.0

  def __post_init__(self):
    set_ = lambda name, value: object.__setattr__(self, name, value)
    for name in ("quick", "torch", "memory_fresh_process"):
      set_(name, _flag(name, getattr(self, name)))
    set_("seed", _int("seed", self.seed, 0))
    if self.seed >= 2 ** 31 - 1:
      _fail("seed", "an int in [0, 2^31 - 1)", self.seed)
    sections = self.sections
    if (isinstance(sections, (str, bytes)) or not isinstance(sections, (list, tuple))
        or not sections or any(s not in SECTIONS for s in sections)
        or len(set(sections)) != len(sections)):
      _fail("sections", f"a non-empty list of distinct names from {', '.join(SECTIONS)}",
            sections)
    set_("sections", tuple(sections))
    pm = self.process_methods
    if (isinstance(pm, (str, bytes)) or not isinstance(pm, (list, tuple)) or not pm
        or any(m not in PROCESS_METHODS for m in pm) or len(set(pm)) != len(pm)):
      _fail("process_methods", f"a non-empty list of distinct names from "
            f"{', '.join(PROCESS_METHODS)}", pm)
    set_("process_methods", tuple(pm))
    for name, lo in (("widths", 1), ("batches", 1)):
      set_(name, _ints(name, getattr(self, name), lo))
    # The unrolled nets' compile time is predicted from the previous, shallower point.
    set_("compile_depths", tuple(sorted(set(_ints("compile_depths", self.compile_depths, 1)))))
    set_("memory_depths", _ints("memory_depths", self.memory_depths, 2))
    for name, lo in (("depth", 2), ("repeats", 1), ("warmup", 0), ("matmul_n", 1),
                     ("compile_width", 1), ("compile_batch", 1), ("memory_width", 1),
                     ("memory_batch", 1), ("per_example_width", 1), ("per_example_depth", 1),
                     ("per_example_batch", 1), ("process_rounds", 1), ("profile_width", 1),
                     ("profile_batch", 1), ("monitor_width", 1), ("monitor_batch", 1),
                     ("monitor_fit_steps", 1), ("rnn_input_size", 1), ("rnn_hidden_size", 1),
                     ("rnn_steps", 1), ("rnn_batch", 1), ("rnn_output_size", 1),
                     ("rnn_rounds", 1), ("transformer_d_model", 1), ("transformer_heads", 1),
                     ("transformer_steps", 1), ("transformer_depth", 1),
                     ("transformer_batch", 1), ("transformer_d_ff", 1),
                     ("transformer_rounds", 1)):
      set_(name, _int(name, getattr(self, name), lo))
    set_("min_time", _positive("min_time", self.min_time, allow_zero=True))
    if self.transformer_d_model % self.transformer_heads:
      _fail("transformer_d_model", f"a multiple of transformer_heads={self.transformer_heads}",
            self.transformer_d_model)
    for name in ("process_window_s", "process_ceiling_s", "rnn_window_s",
                 "transformer_window_s"):
      set_(name, _positive(name, getattr(self, name), allow_zero=True))
    for name in ("compile_budget_s", "memory_timeout_s", "process_timeout_s", "rnn_timeout_s",
                 "transformer_timeout_s"):
      set_(name, _positive(name, getattr(self, name)))
    if self.memory_deep is not None:
      deep = _ints("memory_deep", self.memory_deep, 1)
      if len(deep) != 3 or deep[0] < 2:
        _fail("memory_deep", "None or (depth >= 2, width, batch)", self.memory_deep)
      set_("memory_deep", deep)
    set_("sweep_grid", _grid("sweep_grid", self.sweep_grid))
    if self.sweep_small_grid is not None:
      set_("sweep_small_grid", _grid("sweep_small_grid", self.sweep_small_grid))


def quick(**overrides) -> Config:
  """Tiny sizes and few repeats: every section, in well under a minute.

  ``overrides`` replace any field of the quick config.
  """
  return Config(**{**dict(
      quick=True, widths=(16,), depth=3, batches=(8, 32), repeats=3, warmup=1, min_time=0.01,
      matmul_n=256, compile_width=16, compile_batch=8, compile_budget_s=2.0, memory_depths=(10,),
      memory_width=32, memory_batch=16, memory_timeout_s=120.0, memory_fresh_process=False,
      sweep_grid=Grid(seeds=2, sigma_w2=(1.0, 2.0), sigma_b2=(0.0,), depth=4, width=8, batch=4),
      sweep_small_grid=None, per_example_width=8, per_example_depth=3, per_example_batch=16,
      sections=SECTIONS, process_methods=("jaxbp autodiff", "jaxbp hand recursion", "torch eager"),
      process_rounds=1, process_window_s=0.05, process_ceiling_s=0.02, process_timeout_s=300.0,
      profile_width=16, profile_batch=8, memory_deep=(40, 8, 4), monitor_width=16,
      monitor_batch=8, monitor_fit_steps=5, rnn_input_size=8, rnn_hidden_size=16, rnn_steps=6,
      rnn_batch=4, rnn_output_size=3, rnn_rounds=1, rnn_window_s=0.05, rnn_timeout_s=300.0,
      transformer_d_model=8, transformer_heads=2, transformer_steps=5, transformer_depth=2,
      transformer_batch=3, transformer_d_ff=16, transformer_rounds=1, transformer_window_s=0.05,
      transformer_timeout_s=300.0),
      **overrides})
