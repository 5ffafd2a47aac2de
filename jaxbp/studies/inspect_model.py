"""``jaxbp.inspect`` on ready-made example models: per-layer q and delta_sq, theory beside them.

Four models, each trained on nothing (the gradient flow at initialisation), on
Gaussian inputs and regression targets with the mean squared error:

* ``mlp``: a :class:`jaxbp.MLP` of tanh layers, Glorot init (a plain chain:
  mean-field theory is drawn beside it);
* ``scan_mlp``: the same net with its hidden layers stacked under ``lax.scan``
  (every iteration reported as its own layer);
* ``flax_cnn``: a flax.linen CNN (conv, conv, dense);
* ``eqx_resnet``: an equinox residual MLP whose blocks are
  ``h + W2 tanh(W1 tap(LayerNorm(h)))``.

>>> summary = run(Config(model="mlp"), "/tmp/jaxbp_inspect")   # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.core import checks, losses, nets
from jaxbp.measure.inspect import inspect, tap
from jaxbp.measure.report import LayerReport
import jaxbp.studies.driver as driver

MODELS = ("mlp", "scan_mlp", "flax_cnn", "eqx_resnet")


@dataclasses.dataclass(frozen=True)
class Config:
  """One model to inspect. Checked on construction (a ValueError names the field).

  Attributes:
    model: one of :data:`MODELS`.
    width: hidden width (channels for the CNN).
    depth: hidden layers (blocks for the resnet; ignored by the CNN).
    batch: examples in the batch.
    seed: PRNG seed of weights and data.
  """
  model: str = "mlp"
  width: int = 256
  depth: int = 20
  batch: int = 64
  seed: int = 0

  def __post_init__(self):
    if self.model not in MODELS:
      raise ValueError(f"inspect_model Config: model must be one of {', '.join(MODELS)}, "
                       f"got {self.model!r}.")
    for name in ("width", "depth", "batch"):
      checks.positive_int(getattr(self, name), name, "inspect_model Config")
    if not checks.is_int(self.seed):
      raise ValueError(f"inspect_model Config: seed must be an int, got {self.seed!r}.")


class _CNN(nn.Module):
  channels: int

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Conv(self.channels, (3, 3), param_dtype=jnp.float64)(x))
    x = jnp.tanh(nn.Conv(self.channels, (3, 3), strides=2, param_dtype=jnp.float64)(x))
    return nn.Dense(10, param_dtype=jnp.float64)(x.reshape(x.shape[0], -1))


class _Block(eqx.Module):
  norm: eqx.nn.LayerNorm
  lin1: eqx.nn.Linear
  lin2: eqx.nn.Linear
  name: str = eqx.field(static=True)

  def __init__(self, width, name, key):
    k1, k2 = jax.random.split(key)
    self.norm = eqx.nn.LayerNorm(width, dtype=jnp.float64)
    self.lin1 = eqx.nn.Linear(width, width, key=k1, dtype=jnp.float64)
    self.lin2 = eqx.nn.Linear(width, width, key=k2, dtype=jnp.float64)
    self.name = name

  def __call__(self, h):
    return h + self.lin2(jnp.tanh(self.lin1(tap(self.norm(h), self.name))))


class _ResNet(eqx.Module):
  blocks: list
  head: eqx.nn.Linear

  def __init__(self, width, depth, key):
    keys = jax.random.split(key, depth + 1)
    self.blocks = [_Block(width, f"block{i}/ln", k) for i, k in enumerate(keys[:-1])]
    self.head = eqx.nn.Linear(width, 10, key=keys[-1], dtype=jnp.float64)

  def __call__(self, h):
    for block in self.blocks:
      h = block(h)
    return self.head(h)


def example(config: Config):
  """``(loss_fn, params, x, y)`` of ``config.model``, in float64."""
  kp, kx, ky = jax.random.split(jax.random.PRNGKey(config.seed), 3)
  mse = losses.get("mse").fn
  y = jax.random.normal(ky, (config.batch, 10), jnp.float64)
  if config.model in ("mlp", "scan_mlp"):
    net = nets.MLP.uniform(32, config.width, config.depth, 10, activation="tanh",
                           stack=config.model == "scan_mlp")
    params = net.init(kp, init="glorot", dtype=jnp.float64)
    x = jax.random.normal(kx, (config.batch, 32), jnp.float64)
    return (lambda p, x, y: mse(net.apply(p, x), y)), params, x, y
  if config.model == "flax_cnn":
    model = _CNN(config.width)
    x = jax.random.normal(kx, (config.batch, 16, 16, 1), jnp.float64)
    return (lambda v, x, y: mse(model.apply(v, x), y)), model.init(kp, x), x, y
  model = _ResNet(config.width, config.depth, kp)
  x = jax.random.normal(kx, (config.batch, config.width), jnp.float64)
  return (lambda m, x, y: mse(jax.vmap(m)(x), y)), model, x, y


def _record(report: LayerReport) -> dict:
  theory = report.theory()
  return {"names": list(report.names), "kinds": list(report.kinds),
          "shapes": [list(s) for s in report.shapes],
          "activations": list(report.activations),
          "loss": float(report.loss), "log_slope": float(report.log_slope),
          **{k: np.asarray(getattr(report, k)).tolist()
             for k in ("q", "delta_sq", "sigma_w2", "sigma_b2")},
          "grad_sq": {k: float(v) for k, v in report.grad_sq.items()},
          "theory": None if theory is None else theory.table()}


def _report(record: Mapping) -> LayerReport:
  arrays = {k: np.asarray(record[k], float) for k in ("q", "delta_sq", "sigma_w2", "sigma_b2")}
  return LayerReport(
      names=tuple(record["names"]), kinds=tuple(record["kinds"]),
      shapes=tuple(tuple(s) for s in record["shapes"]),
      activations=tuple(record["activations"]), loss=np.asarray(record["loss"]),
      grad_sq={k: np.asarray(v) for k, v in record["grad_sq"].items()},
      log_slope=np.asarray(record["log_slope"]), **arrays)


def run(config: Config, out_dir) -> dict:
  """Inspects ``config.model``; writes ``layers.csv``/``layers.json``,
  ``profile.png`` and ``report.md`` (the table) under ``out_dir``."""
  config = config if isinstance(config, Config) else Config(**config)
  session = driver.start(config, out_dir)
  key = driver.config_dict(config)

  def compute(pending):
    for k in pending:
      loss_fn, params, x, y = example(config)
      yield k, _record(jax.jit(lambda p, x, y: inspect(loss_fn, p, x, y))(params, x, y))

  (record,) = driver.resume(session, [key], compute, desc=f"inspect {config.model}")
  report = _report(record)
  rows = [{"layer": l + 1, "name": n, "kind": k, "q": q, "delta_sq": d, "sigma_w2": w}
          for l, (n, k, q, d, w) in enumerate(zip(report.names, report.kinds, record["q"],
                                                  record["delta_sq"], record["sigma_w2"]))]
  driver.write_table(session, "layers", rows)
  report.plot(os.path.join(session.out_dir, "profile.png"))
  text = (f"# jaxbp.inspect: {config.model}\n\n"
          f"width {config.width}, depth {config.depth}, batch {config.batch}, seed "
          f"{config.seed}; float64, at initialisation, mean squared error on Gaussian data.\n\n"
          f"![per-layer profile](profile.png)\n\n```\n{report.table()}\n```\n")
  driver.finish(session, text)
  return {"model": config.model, "layers": len(report), "log_slope": record["log_slope"],
          "theory": record["theory"]}
