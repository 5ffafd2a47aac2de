"""What every seed module shares: the row, the config, the tolerances, the
row builders and float64.

A row's ``agreement`` starts with one of :data:`KINDS`; the builders below are
the only places that write them, so the wording stays uniform.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxbp.core import checks

if hasattr(jax, "enable_x64"):
  def float64():
    """A context in which JAX computes in float64; the flag it found is back on exit."""
    return jax.enable_x64(True)
else:
  # Older jax has only the experimental context manager (deprecated once
  # jax.enable_x64 became a context manager, and later removed).
  from jax.experimental import enable_x64 as float64

PRINTED_2 = 5e-3   # half a unit in the second decimal
PRINTED_4 = 5e-5   # half a unit in the fourth decimal
EXACT = 1e-12      # float64 agreement where both sides are exact formulas

KINDS = ("yes", "seed wrong", "seed inconsistent", "note", "NO")

# The examples, in seed order: each seed module's EXAMPLES, concatenated, have
# exactly these names. ``Config.only`` must select at least one of them.
EXAMPLE_NAMES = (
    "000 GradientTape", "000 activations", "000 MSE gradient", "000 TF softmax + MSE",
    "000 softmax derivative", "000 perceptron", "000 Himmelblau",
    "001 gates", "001 sigmoid neuron", "001 unary gates", "001 staged backprop",
    "001 matrix product", "001 input scaling", "001 convexity",
    "002 one_hot", "002 softmax", "002 softmax grad", "002 losses", "002 augmented net",
    "003 computational graph", "003 scalar chain", "003 output gradients",
    "003 PyTorch MSE example",
    "004 x**3", "004 printed numbers", "004 network", "004 gradient direction",
)


class Row(NamedTuple):
  """One line of the side-by-side table.

  Attributes:
    example: seed number and example, e.g. ``"001 sigmoid neuron"``.
    quantity: what is compared.
    seed: the seed's number (as printed, or its formula/code evaluated), or text.
    jaxbp: jaxbp's (or jax.grad's) number.
    agreement: ``yes ...``, ``NO ...``, ``seed wrong: ...``,
      ``seed inconsistent: ...`` or ``note: ...``.
  """
  example: str
  quantity: str
  seed: Any
  jaxbp: Any
  agreement: str


@dataclasses.dataclass(frozen=True)
class Config:
  """What a run of the seed examples depends on.

  Attributes:
    seed: seed (an int >= 0) of the numpy generators for the data the seeds
      leave random.
    torch: compare with PyTorch (float64) where the seed uses it, if importable.
    only: run only the examples whose name contains this (``""``: all); it must
      select at least one of :data:`EXAMPLE_NAMES`.

  Raises:
    ValueError: naming the field and what it expects, for a bad value.
  """
  seed: int = 0
  torch: bool = True
  only: str = ""

  def __post_init__(self):
    object.__setattr__(self, "seed", checks.int_at_least(self.seed, 0, "seed", "Config"))
    object.__setattr__(self, "torch", checks.boolean(self.torch, "torch", "Config"))
    if not isinstance(self.only, str):
      raise ValueError(f"Config: only must be a string (part of an example's name), "
                       f"got {self.only!r}.")
    if not any(self.only in name for name in EXAMPLE_NAMES):
      raise ValueError(f"Config: only={self.only!r} selects no example; give part of one of "
                       f"these names (e.g. 004 or graph): {', '.join(EXAMPLE_NAMES)}.")

  def selects(self, name: str) -> bool:
    """Whether the example called ``name`` is run."""
    return self.only in name


# -- row builders ----------------------------------------------------------------


def maxdiff(a, b) -> float:
  """max |a - b| over equal-shaped arrays (0 for empty ones), in float64."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f"cannot compare shapes {a.shape} and {b.shape}")
  return float(np.max(np.abs(a - b))) if a.size else 0.0


def compare(example, quantity, seed, ours, atol) -> Row:
  """A row that agrees (``yes``) when max |seed - ours| <= ``atol``, else ``NO``."""
  d = maxdiff(seed, ours)
  verdict = "yes" if d <= atol else "NO"
  return Row(example, quantity, seed, ours, f"{verdict} |d|={d:.1e} (tol {atol:.0e})")


def seed_wrong(example, quantity, seed, ours, why) -> Row:
  """A row for a mistake of the seed: ``seed wrong: why``.

  A claimed mistake must show in the numbers, else the claim is the bug: when
  seed and ours agree to 1e-9 the row is ``NO``.
  """
  d = maxdiff(seed, ours)
  if d <= 1e-9:
    return Row(example, quantity, seed, ours, f"NO: expected the seed to differ ({why})")
  return Row(example, quantity, seed, ours, f"seed wrong: {why}")


def note(example, quantity, seed, ours, what) -> Row:
  """A row that compares nothing: a convention, or a number the seed does not print."""
  return Row(example, quantity, seed, ours, f"note: {what}")


def check(example, quantity, seed, ours, ok, why) -> Row:
  """A row for a yes/no fact: ``yes (why)`` or ``NO``."""
  return Row(example, quantity, seed, ours, f"yes ({why})" if ok else "NO")


# -- shared inputs ---------------------------------------------------------------


def example_rng(config: Config, example: int) -> np.random.Generator:
  """One independent generator per example, from the config's seed."""
  return np.random.default_rng([config.seed, example])


def torch_or_none(config: Config):
  """The torch module when ``config.torch`` and torch is importable, else None."""
  if not config.torch:
    return None
  try:
    import torch   # optional and heavy: imported only when asked for
  except ImportError:
    return None
  return torch


def sigmoid_np(x):
  """The logistic sigmoid in numpy, as the seeds write it."""
  return 1.0 / (1.0 + np.exp(-x))


def flat(tree) -> np.ndarray:
  """Every leaf of a pytree, raveled and concatenated into one numpy vector."""
  return np.concatenate([np.ravel(np.asarray(a)) for a in jax.tree_util.tree_leaves(tree)])
