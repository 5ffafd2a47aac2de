"""Training a deep vanilla tanh CNN on the 8x8 digits: critical delta-orthogonal
init against off-critical Gaussian init (Xiao et al. 2018, at digit scale).

Each net is ``depth`` 3x3 convolutions of ``channels`` channels, every one
followed by tanh (no residual, no normalisation), then a dense readout to the 10
classes: ``ConvNet(outputs=10, readout=...)``, trained with SGD + momentum (and
global-norm clipping) on softmax cross-entropy by :func:`jaxbp.training.fit`
(one compiled loop, the batches reshuffled every epoch). A *setting* is an init
and its sigma_w^2 ("critical": the chi_1 = 1 value at the config's sigma_b^2).
Besides the accuracies, each run records how the gradient reaches the input at
init: ``log10 ||dL/dW_1|| / ||dL/dW_depth||``.

The readout reads the flattened last feature map by default. A delta-orthogonal
stack starts as a 1x1 convolution, so at init each pixel's features are a
function of that pixel alone; a global average pool (``readout="pool"``) would
then see only a histogram of intensities, and where the strokes lie could reach
the readout only once the off-centre taps have grown through all ``depth``
layers.

>>> import jax; jax.config.update("jax_enable_x64", True)
>>> rows = run(Config(depth=4, channels=4, epochs=1), "/tmp/ct")   # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.core import backprop as _backprop
from jaxbp.core import checks
from jaxbp.core.convnets import ConvNet
from jaxbp.core.layers import Dense
from jaxbp.studies.common import CONV_INITS, conv_initializer
import jaxbp.studies.driver as driver
from jaxbp.theory import meanfield
from jaxbp.train import data as _data
from jaxbp.train import training as _training

INITS = CONV_INITS
READOUTS = ("flatten", "pool")
_W = "conv_train Config"   # what every Config error begins with
SETTINGS = (("delta_orthogonal", "critical"), ("gaussian", "critical"), ("gaussian", 0.5),
            ("gaussian", 4.0))


def _setting(s) -> Tuple[str, object]:
  ok = (isinstance(s, (list, tuple)) and len(s) == 2 and s[0] in INITS
        and (s[1] == "critical" or (checks.is_real(s[1]) and math.isfinite(s[1]) and s[1] > 0)))
  if not ok:
    raise ValueError(f"conv_train Config: each setting must be (init, sigma_w2) with init in "
                     f"{INITS} and sigma_w2 a number > 0 or 'critical', got {s!r}.")
  return (s[0], s[1] if s[1] == "critical" else float(s[1]))


@dataclasses.dataclass(frozen=True)
class Config:
  """Checked on construction: a bad value is a ValueError naming the field.

  Attributes:
    settings: ``(init, sigma_w2)`` pairs; sigma_w2 ``"critical"`` or a number.
    sigma_b2: the bias variance of every setting. Small, so that the input still
      shows at depth 100: at the critical point with 1e-3, the last feature map's
      spread across images is ~half its size (0.15 of rms 0.31, delta-orthogonal);
      with 0.05 it is 0.10 of 0.57 and the bias part slows SGD (150 steps: 92%
      test against 88%).
    depth, channels, kernel_size: ``depth`` tanh convolutions of ``channels``
      channels (the first from the digits' one channel).
    padding: ``"same"`` (zeros) or ``"circular"`` (shift-invariant).
    readout: ``"flatten"`` (a dense layer on the whole last feature map) or
      ``"pool"`` (global average pool, then dense); see the module docstring.
    epochs, batch_size, learning_rate, momentum: SGD with momentum.
    clip_norm: the gradient's global norm is clipped to this before each update
      (None: no clipping). Without it, momentum SGD at lr 0.02 diverged at depth
      100 within 100 steps (loss 23), and at lr 0.005 it stayed at chance.
    seeds: one init and batch order per seed (the train/test split is fixed).
  """
  settings: Tuple[Tuple[str, object], ...] = SETTINGS
  sigma_b2: float = 1e-3
  depth: int = 100
  channels: int = 16
  kernel_size: int = 3
  padding: str = "same"
  readout: str = "flatten"
  epochs: int = 6
  batch_size: int = 32
  learning_rate: float = 0.02
  momentum: float = 0.9
  clip_norm: Optional[float] = 1.0
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
      set_(name, checks.int_at_least(getattr(self, name), lo, name, _W))
    if self.kernel_size % 2 == 0:
      raise ValueError(f"conv_train Config: kernel_size must be odd, got {self.kernel_size}.")
    checks.one_of(self.padding, ("same", "circular"), "padding", _W)
    checks.one_of(self.readout, READOUTS, "readout", _W)
    if self.clip_norm is not None:
      set_("clip_norm", checks.positive(self.clip_norm, "clip_norm (None or a number)", _W))
    set_("sigma_b2", checks.finite(self.sigma_b2, "sigma_b2", _W, low=0.0))
    set_("learning_rate", checks.positive(self.learning_rate, "learning_rate", _W))
    momentum = checks.finite(self.momentum, "momentum", _W, low=0.0)
    if momentum >= 1:
      raise ValueError(f"{_W}: momentum must be a finite number in [0, 1), got {momentum!r}.")
    set_("momentum", momentum)
    if not isinstance(self.seeds, (list, tuple)):
      raise ValueError(f"{_W}: seeds must be a non-empty list of ints >= 0, got {self.seeds!r}.")
    set_("seeds", checks.int_tuple(self.seeds, "seeds", _W, low=0))

  def net(self) -> ConvNet:
    """The whole net: ``depth`` tanh convolutions (the hidden ``c -> c`` ones
    stacked under ``lax.scan``), then the dense readout to the 10 classes."""
    return ConvNet(channels=(1,) + (self.channels,) * self.depth, kernel_size=self.kernel_size,
                   activation="tanh", padding=self.padding, ndim=2, outputs=10,
                   readout=self.readout, spatial=8 if self.readout == "flatten" else None,
                   stack=True)

  def features(self) -> int:
    """The readout's fan-in on 8x8 images."""
    return self.channels * (64 if self.readout == "flatten" else 1)

  def sigma_w2(self, value) -> float:
    """A setting's sigma_w^2, the critical one resolved."""
    if value == "critical":
      return float(meanfield.critical_sigma_w2("tanh", self.sigma_b2))
    return float(value)


initializer = conv_initializer   # also public here: conv_train.initializer


def images(dataset: _data.Dataset):
  """The digits as ``(n, 8, 8, 1)`` images (channels last)."""
  shape = lambda x: jnp.asarray(x).reshape(-1, 8, 8, 1)
  return shape(dataset.x_train), dataset.y_train, shape(dataset.x_test), dataset.y_test


LOSS = "softmax_cross_entropy"


def init_params(config: Config, key, init: str, sigma_w2: float) -> tuple:
  """``config.net()``'s params: the convolutions drawn by the setting's init, the
  readout ``N(0, 1 / fan_in)`` with bias 0.

  The readout is redrawn after ``ConvNet.init``, which would give it the
  setting's initializer: ``sigma_w2 / fan_in`` (4x too large for Gaussian
  sigma_w^2 = 4) or an orthogonal matrix, and a bias of variance sigma_b^2. The
  study compares the convolutions' inits, so every setting starts from the same
  readout law."""
  c_key, r_key = jax.random.split(key)
  net = config.net()
  params = net.init(c_key, init=initializer(init, sigma_w2, config.sigma_b2))
  n = config.features()
  dtype = params[0].W.dtype
  W = jax.random.normal(r_key, (n, 10), dtype) / math.sqrt(n)
  return params[:-1] + (Dense(W, jnp.zeros(10, dtype)),)


def train(config: Config, params, x, y, key) -> _training.Fit:
  """``epochs`` passes over ``(x, y)`` in batches reshuffled every epoch, by
  :func:`jaxbp.training.fit` (compiled once per config: the net, loss, optimizer
  and step count are its static arguments, equal for every run of a config).

  Returns ``fit``'s :class:`~jaxbp.training.Fit`; ``history.loss`` holds the
  per-step losses. On the first non-finite loss or gradient ``fit`` stops
  updating (``status(fit) == "overflow"``) and the later losses are NaN."""
  if x.ndim != 4 or x.shape[1:] != (8, 8, 1) or y.shape[:1] != x.shape[:1]:
    raise ValueError(f"conv_train.train: x must be (n, 8, 8, 1) images with n labels y, got x "
                     f"{x.shape} and y {y.shape}.")
  if x.shape[0] < config.batch_size:
    raise ValueError(f"conv_train.train: batch_size {config.batch_size} is larger than the "
                     f"{x.shape[0]} training images; an epoch needs at least one full batch.")
  steps = config.epochs * (x.shape[0] // config.batch_size)
  # optimizer() returns one object per argument list (it is cached), and fit takes
  # it as a static argument: every run of a config reuses one compiled loop.
  tx = _training.optimizer("momentum", config.learning_rate, momentum=config.momentum,
                           clip_norm=config.clip_norm)
  return _training.fit(config.net(), LOSS, params, x, y, tx, steps=steps,
                       batch_size=config.batch_size, key=key)


# Jitted once here (net and loss static), so every run of a config reuses one program.
_grad = jax.jit(_backprop.grad, static_argnums=(0, 1))


def grad_ratio(config: Config, params, x, y) -> float:
  """``log10 ||dL/dW_1|| / ||dL/dW_depth||``: the first and the last convolution's
  kernel gradients by the hand backward pass (:func:`jaxbp.backprop.grad`);
  -inf when the first underflowed to 0."""
  net = config.net()
  g = _grad(net, LOSS, params, x, y)
  first = float(jnp.sqrt(jnp.sum(g[0].W ** 2)))
  last_conv = g[-2].W[-1] if net.is_stacked(len(g) - 2) else g[-2].W
  last = float(jnp.sqrt(jnp.sum(last_conv ** 2)))
  return math.log10(first / last) if first > 0 and last > 0 else -math.inf


def train_one(config: Config, init: str, sigma_w2: float, seed: int) -> dict:
  """One run: accuracies, final loss, the init's gradient ratio, seconds."""
  t0 = time.perf_counter()
  x, y, x_test, y_test = images(_data.digits())
  p_key, b_key = jax.random.split(jax.random.PRNGKey(seed))
  params = init_params(config, p_key, init, sigma_w2)
  # The gradient ratio at init, on the first 256 images (the whole set costs ~6x more).
  ratio = grad_ratio(config, params, x[:256], y[:256])
  result = train(config, params, x, y, b_key)
  values = np.asarray(result.history.loss)
  net = config.net()
  test_loss, test_acc = _training.evaluate(net, LOSS, result.params, x_test, y_test)
  train_loss, train_acc = _training.evaluate(net, LOSS, result.params, x, y)
  return {"test_accuracy": float(test_acc), "train_accuracy": float(train_acc),
          "test_loss": float(test_loss), "train_loss": float(train_loss),
          "status": _training.status(result), "steps": int(values.shape[0]),
          "log10_grad_ratio": ratio, "first_loss": float(values[0]),
          "last_epoch_loss": float(np.mean(values[-(values.shape[0] // config.epochs):])),
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
  readout = ("the flattened last feature map" if config.readout == "flatten"
             else "a global average pool")
  clip = "no clipping" if config.clip_norm is None else f"global norm clipped to {config.clip_norm:g}"
  n_train, n_test = (len(a) for a in _data.digits()[1::2])
  lines = [f"# Vanilla tanh CNN, depth {config.depth}, on the 8x8 digits", "",
           f"{config.depth} {config.kernel_size}x{config.kernel_size} convolutions "
           f"({config.padding} padding) of {config.channels} channels, each followed by tanh; "
           f"no residual or normalisation; a dense readout on {readout}. SGD momentum "
           f"{config.momentum:g}, lr {config.learning_rate:g} ({clip}), batch "
           f"{config.batch_size}, {config.epochs} epochs; sigma_b^2 = {config.sigma_b2:g}; "
           f"seeds {list(config.seeds)}; {n_train:,} train / {n_test} test images; "
           f"{'float64' if jax.config.jax_enable_x64 else 'float32'}.", "",
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
