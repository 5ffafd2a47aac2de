"""Training a deep vanilla tanh CNN on the 8x8 digits: critical delta-orthogonal
init against off-critical Gaussian init (Xiao et al. 2018, at digit scale).

Each net is ``depth`` circular 3x3 convolutions of ``channels`` channels with
tanh (no residual, no normalisation), then a global average pool and a dense
readout to the 10 classes (``ConvNet(outputs=10)``), trained with SGD +
momentum on softmax cross-entropy by ``training.fit`` (one compiled loop). A
*setting* is an init and its sigma_w^2 ("critical": the chi_1 = 1 value at the
config's sigma_b^2). Besides the accuracies, each run records how the
gradient reaches the input at init: ``log10 ||dL/dW_1|| / ||dL/dW_depth||``.

>>> import jax; jax.config.update("jax_enable_x64", True)
>>> rows = run(Config(depth=4, channels=4, epochs=1), "/tmp/ct")   # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.core import initializers as _init
from jaxbp.core.convnets import ConvNet
from jaxbp.core.nets import objective
import jaxbp.studies.driver as driver
from jaxbp.theory import meanfield
from jaxbp.train import data as _data
from jaxbp.train import training as _training

INITS = ("delta_orthogonal", "gaussian")
SETTINGS = (("delta_orthogonal", "critical"), ("gaussian", "critical"), ("gaussian", 0.5),
            ("gaussian", 4.0))


def _setting(s) -> Tuple[str, object]:
  ok = (isinstance(s, (list, tuple)) and len(s) == 2 and s[0] in INITS
        and (s[1] == "critical" or (isinstance(s[1], (int, float)) and not isinstance(s[1], bool)
                                    and math.isfinite(s[1]) and s[1] > 0)))
  if not ok:
    raise ValueError(f"conv_train Config: each setting must be (init, sigma_w2) with init in "
                     f"{INITS} and sigma_w2 a number > 0 or 'critical', got {s!r}.")
  return (s[0], s[1] if s[1] == "critical" else float(s[1]))


@dataclasses.dataclass(frozen=True)
class Config:
  """Checked on construction: a bad value is a ValueError naming the field.

  Attributes:
    settings: ``(init, sigma_w2)`` pairs; sigma_w2 ``"critical"`` or a number.
    sigma_b2: the bias variance of every setting.
    depth, channels, kernel_size: ``depth`` tanh convolutions of ``channels``
      channels (the first from the digits' one channel).
    padding: ``"same"`` (zeros: the borders tell the net where it is, so a
      nearly linear net can still read the digit through the global pool) or
      ``"circular"`` (shift-invariant: through the pool, a linear net would see
      only the mean intensity).
    epochs, batch_size, learning_rate, momentum: SGD with momentum.
    seeds: one init and batch order per seed (the train/test split is fixed).
  """
  settings: Tuple[Tuple[str, object], ...] = SETTINGS
  sigma_b2: float = 1e-3
  depth: int = 100
  channels: int = 16
  kernel_size: int = 3
  padding: str = "same"
  epochs: int = 8
  batch_size: int = 32
  learning_rate: float = 0.01
  momentum: float = 0.9
  seeds: Tuple[int, ...] = (0, 1, 2)

  def __post_init__(self):
    set_ = lambda name, value: object.__setattr__(self, name, value)
    if isinstance(self.settings, (str, bytes)) or not isinstance(self.settings, (list, tuple)) \
        or not self.settings:
      raise ValueError(f"conv_train Config: settings must be a non-empty list of (init, "
                       f"sigma_w2) pairs, got {self.settings!r}.")
    set_("settings", tuple(_setting(s) for s in self.settings))
    # depth >= 2: the gradient ratio compares the first and the last convolution.
    for name, lo in (("depth", 2), ("channels", 1), ("kernel_size", 1), ("epochs", 1),
                     ("batch_size", 1)):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"conv_train Config: {name} must be an int >= {lo}, got {v!r}.")
      set_(name, int(v))
    if self.kernel_size % 2 == 0:
      raise ValueError(f"conv_train Config: kernel_size must be odd, got {self.kernel_size}.")
    if self.padding not in ("same", "circular"):
      raise ValueError(f"conv_train Config: padding must be 'same' or 'circular', got "
                       f"{self.padding!r}.")
    for name, ok, want in (("sigma_b2", lambda v: v >= 0, ">= 0"),
                           ("learning_rate", lambda v: v > 0, "> 0"),
                           ("momentum", lambda v: 0 <= v < 1, "in [0, 1)")):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
          or not ok(v):
        raise ValueError(f"conv_train Config: {name} must be a finite number {want}, got {v!r}.")
      set_(name, float(v))
    seeds = self.seeds
    if not isinstance(seeds, (list, tuple)) or not seeds or not all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in seeds):
      raise ValueError(f"conv_train Config: seeds must be a non-empty list of ints >= 0, got "
                       f"{seeds!r}.")
    set_("seeds", tuple(int(s) for s in seeds))

  def net(self) -> ConvNet:
    """The vanilla CNN: stacked tanh convolutions, pool, dense readout."""
    return ConvNet(channels=(1,) + (self.channels,) * self.depth, kernel_size=self.kernel_size,
                   activation="tanh", padding=self.padding, ndim=2, outputs=10, stack=True)

  def sigma_w2(self, value) -> float:
    """A setting's sigma_w^2, the critical one resolved."""
    if value == "critical":
      return float(meanfield.critical_sigma_w2("tanh", self.sigma_b2))
    return float(value)


def initializer(init: str, sigma_w2: float, sigma_b2: float) -> _init.Initializer:
  """Delta-orthogonal with gain ``sqrt(sigma_w2)``, or Gaussian ``sigma_w2 / fan_in``."""
  if init == "gaussian":
    return _init.gaussian(sigma_w2, sigma_b2)
  return _init.delta_orthogonal(math.sqrt(sigma_w2), sigma_b2)


def images(dataset: _data.Dataset):
  """The digits as ``(n, 8, 8, 1)`` images (channels last)."""
  shape = lambda x: jnp.asarray(x).reshape(-1, 8, 8, 1)
  return shape(dataset.x_train), dataset.y_train, shape(dataset.x_test), dataset.y_test


def train_one(config: Config, init: str, sigma_w2: float, seed: int) -> dict:
  """One run: accuracies, final loss, the init's gradient ratio, seconds."""
  t0 = time.perf_counter()
  net, loss = config.net(), "softmax_cross_entropy"
  x, y, x_test, y_test = images(_data.digits())
  p_key, b_key = jax.random.split(jax.random.PRNGKey(seed))
  params = net.init(p_key, init=initializer(init, sigma_w2, config.sigma_b2))
  # The gradient ratio at init, on the first 256 images (the whole set costs ~6x more).
  g = jax.jit(jax.grad(objective(net, loss)))(params, x[:256], y[:256])
  first = float(jnp.sqrt(jnp.sum(g[0].W ** 2)))
  last_stack = g[1].W   # the stacked hidden convolutions, (depth - 1, k, k, c, c)
  last = float(jnp.sqrt(jnp.sum(last_stack[-1] ** 2)))
  tx = _training.optimizer("momentum", config.learning_rate, momentum=config.momentum)
  steps = config.epochs * (x.shape[0] // config.batch_size)
  out = _training.fit(net, loss, params, x, y, tx, steps=steps, batch_size=config.batch_size,
                      key=b_key)
  test_loss, test_acc = _training.evaluate(net, loss, out.params, x_test, y_test)
  train_loss, train_acc = _training.evaluate(net, loss, out.params, x, y)
  ratio = math.log10(first / last) if first > 0 and last > 0 else -math.inf
  return {"test_accuracy": float(test_acc), "train_accuracy": float(train_acc),
          "test_loss": float(test_loss), "train_loss": float(train_loss),
          "status": _training.status(out), "steps": steps, "log10_grad_ratio": ratio,
          "seconds": time.perf_counter() - t0}


def keys(config: Config):
  """One key per (setting, seed)."""
  common = {"study": "conv_train", "x64": bool(jax.config.jax_enable_x64),
            **{k: v for k, v in driver.config_dict(config).items()
               if k not in ("settings", "seeds")}}
  return [dict(common, init=init, sigma_w2=config.sigma_w2(s), critical=s == "critical",
               seed=seed) for init, s in config.settings for seed in config.seeds]


def summarise(config: Config, key_list, records) -> list:
  """One row per setting: test accuracy over seeds."""
  groups = {}
  for k, r in zip(key_list, records):
    groups.setdefault((k["init"], k["sigma_w2"], k["critical"]), []).append(r)
  rows = []
  for (init, sigma_w2, critical), recs in groups.items():
    acc = np.array([r["test_accuracy"] for r in recs])
    rows.append({"init": init, "sigma_w2": sigma_w2, "critical": critical,
                 "chi1": float(meanfield.chi1("tanh", sigma_w2, config.sigma_b2)),
                 "test_accuracy_mean": float(acc.mean()), "test_accuracy_min": float(acc.min()),
                 "test_accuracy_max": float(acc.max()), "seeds": len(recs),
                 "seeds_at_90": int((acc >= 0.9).sum()),
                 "train_accuracy_mean": float(np.mean([r["train_accuracy"] for r in recs])),
                 # None: stored -inf, the first layer's gradient underflowed to 0.
                 "log10_grad_ratio": float(np.mean([-np.inf if r["log10_grad_ratio"] is None
                                                    else r["log10_grad_ratio"] for r in recs])),
                 "overflowed": int(sum(r["status"] == "overflow" for r in recs)),
                 "seconds": float(np.mean([r["seconds"] for r in recs]))})
  return rows


def report(config: Config, rows) -> str:
  """``report.md``: the accuracy table."""
  lines = [f"# Vanilla tanh CNN, depth {config.depth}, on the 8x8 digits", "",
           f"{config.depth} {config.kernel_size}x{config.kernel_size} convolutions "
           f"({config.padding} padding) of "
           f"{config.channels} channels, tanh, no residual or normalisation; global average "
           f"pool and a dense readout. SGD momentum {config.momentum:g}, lr "
           f"{config.learning_rate:g}, batch {config.batch_size}, {config.epochs} epochs; "
           f"sigma_b^2 = {config.sigma_b2:g}; seeds {list(config.seeds)}; 1,437 train / 360 "
           "test images.", "",
           "| init | sigma_w^2 | chi_1 | test accuracy (mean, min-max) | seeds >= 90% "
           "| train accuracy | log10 ‖dW_1‖/‖dW_L‖ at init | s per run |",
           "|---|---|---:|---|---:|---:|---:|---:|"]
  for r in rows:
    label = f"{r['sigma_w2']:.4g}" + (" (critical)" if r["critical"] else "")
    lines.append(f"| {r['init']} | {label} | {r['chi1']:.3f} | {r['test_accuracy_mean']:.3f} "
                 f"({r['test_accuracy_min']:.3f}-{r['test_accuracy_max']:.3f}) | "
                 f"{r['seeds_at_90']}/{r['seeds']} | {r['train_accuracy_mean']:.3f} | "
                 f"{r['log10_grad_ratio']:+.1f} | {r['seconds']:.0f} |")
  return "\n".join(lines + [""])


def run(config, out_dir) -> list:
  """Trains every (setting, seed), resumably; writes ``results.csv``/``.json``,
  ``runs.json`` (every run) and ``report.md``. Returns the rows."""
  config = config if isinstance(config, Config) else Config(**config)
  session = driver.start(config, out_dir)
  key_list = keys(config)

  def compute(pending):
    for k in pending:
      yield k, train_one(config, k["init"], k["sigma_w2"], k["seed"])

  records = driver.resume(session, key_list, compute, desc="conv train")
  rows = summarise(config, key_list, records)
  driver.write_table(session, "results", rows)
  driver.write_table(session, "runs", [dict(init=k["init"], sigma_w2=k["sigma_w2"],
                                            seed=k["seed"], **r)
                                       for k, r in zip(key_list, records)])
  driver.finish(session, report(config, rows))
  return rows
