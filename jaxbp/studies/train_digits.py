"""One training run: an MLP on the 8x8 digits (or two spirals), saved with its curves.

The README's figure: ``(64, 64, 10)`` ReLU, He init, SGD + momentum 0.9,
lr 0.05, batches of 32, 20 epochs (880 steps) reach about 97.8% test accuracy
on scikit-learn's digits in about a second of CPU, compile included.

>>> import jax; jax.config.update("jax_enable_x64", True)
>>> summary = run(Config(epochs=20), "/tmp/jaxbp_digits")  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Mapping, Optional, Sequence, Tuple

import jax
import numpy as np

from jaxbp import io as _io
from jaxbp.core import activations as _act
from jaxbp.core import checks
from jaxbp.core import initializers as _init
from jaxbp.core import losses as _losses
from jaxbp.core.nets import MLP
from jaxbp.core.nets import objective
import jaxbp.studies.cli as cli
import jaxbp.studies.driver as driver
from jaxbp.train import data as _data
from jaxbp.train import training as _training


@dataclasses.dataclass(frozen=True)
class Config:
  """One training run. Checked on construction: a bad value raises a ValueError
  naming the field, before any data is loaded or net compiled.

  Attributes:
    name: the run's label (the curves' title).
    dataset: ``"digits"`` or ``"spirals"`` (:func:`jaxbp.data.load`).
    sizes: layer widths, from the dataset's features to its classes.
    activation, init, loss: names from :mod:`jaxbp.activations`,
      :mod:`jaxbp.initializers`, :mod:`jaxbp.losses`.
    optimizer, learning_rate, momentum, clip_norm, weight_decay: see
      :func:`jaxbp.training.optimizer`.
    batch_size: examples per step (None: the whole training set).
    epochs: passes over the training set (``epochs * (n // batch_size)`` steps).
    seed: init and batch order.
    grad_method: ``"autodiff"`` or ``"backprop"`` (the hand recursion).
    tensorboard: also write TensorBoard event files under ``out_dir/tensorboard``.
  """
  name: str = "digits"
  dataset: str = "digits"
  sizes: Tuple[int, ...] = (64, 64, 10)
  activation: str = "relu"
  init: str = "he"
  loss: str = "softmax_cross_entropy"
  optimizer: str = "momentum"
  learning_rate: float = 0.05
  momentum: Optional[float] = 0.9
  clip_norm: Optional[float] = None
  weight_decay: Optional[float] = None
  batch_size: Optional[int] = 32
  epochs: int = 20
  seed: int = 0
  grad_method: str = "autodiff"
  tensorboard: bool = False

  def __post_init__(self):
    if not isinstance(self.name, str):
      raise ValueError(f"train_digits Config: name must be a string, got {self.name!r}.")
    if self.dataset not in _data.DATASETS:
      raise ValueError(f"train_digits Config: dataset: Unknown dataset {self.dataset!r}; "
                       f"valid names are {', '.join(_data.DATASETS)}.")
    sizes = self.sizes
    if (isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or len(sizes) < 2
        or any(not checks.is_int(s) or s < 1 for s in sizes)):
      raise ValueError(f"train_digits Config: sizes must be a list of at least two ints >= 1 "
                       f"(inputs, ..., outputs), got {sizes!r}.")
    features, classes = _data.SHAPES[self.dataset]
    if sizes[0] != features or sizes[-1] != classes:
      raise ValueError(f"train_digits Config: sizes must run from the {self.dataset} set's "
                       f"{features} features to its {classes} classes, got {list(sizes)}.")
    object.__setattr__(self, "sizes", tuple(int(s) for s in sizes))
    for name, lookup in (("activation", _act.get), ("init", _init.get), ("loss", _losses.get)):
      _field(name, lookup, getattr(self, name))
    _field("optimizer", _training.optimizer, self.optimizer, self.learning_rate, self.momentum,
           clip_norm=self.clip_norm, weight_decay=self.weight_decay)
    if self.batch_size is not None:
      _check_int("batch_size", self.batch_size, 1, " or None (the whole training set)")
    _check_int("epochs", self.epochs, 1)
    _check_int("seed", self.seed, 0)
    if self.grad_method not in _training.GRAD_METHODS:
      raise ValueError(f"train_digits Config: grad_method must be one of "
                       f"{', '.join(_training.GRAD_METHODS)}, got {self.grad_method!r}.")
    checks.boolean(self.tensorboard, "tensorboard", "train_digits Config")

  @classmethod
  def from_dict(cls, config: Mapping) -> "Config":
    """From a mapping of field names; missing ones take the defaults, unknown ones
    are a ValueError. A Config passes through."""
    return cli.from_dict(cls, config, "train_digits Config")


def _field(name, check, *args, **kwargs):
  try:
    return check(*args, **kwargs)
  except (TypeError, ValueError) as e:
    raise ValueError(f"train_digits Config: {name}: {e}") from None


def _check_int(name, v, low, alternative=""):
  if not checks.is_int(v) or v < low:
    raise ValueError(f"train_digits Config: {name} must be an int >= {low}{alternative}, "
                     f"got {v!r}.")


# The summary's fields, in the order they are printed and saved.
SUMMARY = ("steps", "seconds", "n_train", "train_loss", "train_accuracy", "test_loss",
           "test_accuracy")


def store_key(config: Config) -> dict:
  """What the run's numbers depend on: every field but the label, and the precision."""
  fields = {k: v for k, v in driver.config_dict(config).items() if k != "name"}
  return {"study": "train_digits", "x64": bool(jax.config.jax_enable_x64), **fields}


def train(config: Config) -> dict:
  """Trains the run's MLP with :func:`jaxbp.training.fit`.

  Returns ``{"summary", "history", "grads"}``: the summary (steps, seconds with
  compilation, training set size, train/test loss and accuracy), the per-step
  :class:`jaxbp.training.StepInfo` history as a dict, and, with
  ``config.tensorboard``, the final full-batch gradient (for per-layer
  histograms; None otherwise).
  """
  d = _data.load(config.dataset, config.seed)
  net = MLP(config.sizes, config.activation)
  init_key, shuffle_key = jax.random.split(jax.random.PRNGKey(config.seed))
  params = net.init(init_key, config.init)
  tx = _training.optimizer(config.optimizer, config.learning_rate, config.momentum,
                           clip_norm=config.clip_norm, weight_decay=config.weight_decay)
  n = d.x_train.shape[0]
  bs = config.batch_size or n
  start = time.perf_counter()
  out = _training.fit(net, config.loss, params, d.x_train, d.y_train, tx,
                      steps=config.epochs * (n // bs), batch_size=bs, key=shuffle_key,
                      grad_method=config.grad_method)
  jax.block_until_ready(out.params)
  summary = {"steps": int(out.num_steps), "seconds": time.perf_counter() - start,
             "n_train": int(n)}
  for part, (xs, ys) in {"train": d[:2], "test": d[2:]}.items():
    summary[f"{part}_loss"], summary[f"{part}_accuracy"] = map(
        float, _training.evaluate(net, config.loss, out.params, xs, ys))
  grads = None
  if config.tensorboard:
    grads = jax.jit(jax.grad(objective(net, config.loss)))(out.params, d.x_train, d.y_train)
  return {"summary": summary, "history": out.history._asdict(), "grads": grads}


def report(config: Config, summary: Mapping) -> str:
  """``report.md``: the net, the optimiser and the final losses and accuracies."""
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else str(v)
  lines = [f"# Training run: {config.name}", "",
           f"MLP {list(config.sizes)}, {config.activation}, {config.init} init, "
           f"{config.loss}; {config.optimizer} (lr {config.learning_rate:g}, momentum "
           f"{config.momentum}), batch {config.batch_size}, {config.epochs} epochs on "
           f"{config.dataset}, gradients by {config.grad_method}.", "",
           "| | loss | accuracy |", "|---|---|---|"]
  for part in ("train", "test"):
    lines.append(f"| {part} | {fmt(summary[f'{part}_loss'])} | "
                 f"{fmt(summary[f'{part}_accuracy'])} |")
  lines += ["", f"{summary['steps']} steps on {summary['n_train']} training examples in "
            f"{summary['seconds']:.2f} s (compilation included). Curves: `curves.png`, "
            "`history.csv`.", ""]
  return "\n".join(lines)


def run(config, out_dir) -> dict:
  """Trains the run (:func:`train`) and saves it; returns its summary.

  Args:
    config: a :class:`Config` (or a mapping for :meth:`Config.from_dict`).
    out_dir: the output directory; a rerun into it loads the stored run.

  Writes to ``out_dir``: ``config.json``, ``provenance.json``, ``history.csv``,
  ``history.json``, ``curves.png``, ``summary.json`` (losses, accuracies,
  seconds), ``report.md`` and, with ``tensorboard``, event files under
  ``out_dir/tensorboard``. The finished run is kept in ``out_dir/store``.
  """
  config = Config.from_dict(config)
  session = driver.start(config, out_dir)

  def compute(pending):
    for key in pending:
      yield key, train(config)

  (record,) = driver.resume(session, [store_key(config)], compute, desc="train")
  # The store sorts keys; the files keep the order of StepInfo and SUMMARY.
  history = {k: np.asarray(record["history"][k], dtype=float)
             for k in _training.StepInfo._fields}
  summary = {k: record["summary"][k] for k in SUMMARY}
  steps = np.arange(len(history["loss"]))
  _io.write_csv(session.path("history.csv"), {"step": steps, **history})
  _io.write_json(session.path("history.json"), history)
  _io.write_json(session.path("summary.json"), summary)
  _io.plot_history(history, session.path("curves.png"), title=config.name)
  if config.tensorboard:
    # The stored gradient is params-shaped: one {"W", "b"} per layer.
    grads = [{k: np.asarray(v, dtype=float) for k, v in layer.items()}
             for layer in record["grads"]]
    _io.write_tensorboard(session.path("tensorboard"), history, grads,
                          {"curves": session.path("curves.png")})
  driver.finish(session, report(config, summary))
  return summary
