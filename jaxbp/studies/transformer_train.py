"""Training deep transformers on token reversal: post-LN with and without warm-up,
pre-LN, and DeepNet's post-LN (Xiong et al. 2020; Wang et al. 2022).

The task: a sequence of ``length`` tokens drawn uniformly from ``vocab``; the
target at position i is ``x[length - 1 - i]``. Each output needs the token at
another position, so the net must attend (the model is non-causal). The train
stream draws a fresh batch for step t from ``fold_in(train_key, t)`` inside the
compiled loop (every seed sees the same stream); the held-out test set is one
fixed draw. A model that ignores its input scores loss ``ln vocab``.

Each run is a :class:`jaxbp.Transformer` with ``vocab`` (learned positions and a
readout), ``stack=True`` (the blocks under ``lax.scan``), trained with Adam on
the token-mean softmax cross-entropy. A *setting* is one of :data:`SETTINGS`:

* ``"post"``: ``norm="post"``, the learning rate from step 0;
* ``"post_warmup"``: ``norm="post"``, the rate ramped linearly from 0 over the
  first ``warmup`` fraction of the steps;
* ``"pre"``: ``norm="pre"``, no warm-up;
* ``"deepnet"``: ``norm="post"``, no warm-up, DeepNet's ``h <- LN(a h + f(h))``
  with ``a = (2N)^(1/4)`` (the Transformer's ``skip_scale``; its
  ``residual_scale`` stays 1) and the value, output and FFN weights (``Wv``,
  ``Wo``, ``ffn1.W``, ``ffn2.W``; not ``Wq``, ``Wk``) multiplied after the init
  by ``b = (8N)^(-1/4)``, N the number of blocks (Wang et al. 2022's encoder
  values).

Per run: held-out token accuracy and loss, the final train loss (mean batch loss
over the last ``tail`` steps), the status (``"ok"``, ``"nonfinite"``, or ``"stuck"``
within 5% of ``ln vocab``), process CPU seconds, the loss curve for the figure.

>>> rows = run(Config.quick(), "/tmp/tt")   # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Mapping, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbp.core import checks
from jaxbp.core.transformer import Block, Transformer
import jaxbp.studies.cli as cli
import jaxbp.studies.driver as driver
import jaxbp.studies.transformer_train_report as _report
from jaxbp.studies.transformer_train_report import SETTINGS, STUCK
DTYPES = ("float32", "float64")
_W = "transformer_train Config"


@dataclasses.dataclass(frozen=True)
class Config:
  """Checked on construction: a bad value is a ValueError naming the field.

  Attributes:
    settings: which of ``post``, ``post_warmup``, ``pre``, ``deepnet`` to train.
    depths: the numbers of blocks N.
    seeds: one init per seed (the data are the same for every seed).
    length: tokens per sequence.
    vocab: the token alphabet.
    d_model, heads, d_ff: the width, attention heads and FFN hidden width.
    batch: sequences per step.
    steps: Adam updates per run, the same budget for every setting.
    learning_rate: Adam's peak step size, shared by every setting.
    warmup: ``post_warmup``'s linear warm-up, a fraction of ``steps`` in (0, 1).
    test_size: held-out sequences.
    tail: the final train loss is the mean batch loss over the last ``tail`` steps.
    curve_every: the stored loss curve is the mean over each ``curve_every`` steps.
    data_seed: the PRNG seed of the train stream and the test set.
    dtype: the parameters' float type (``float64`` needs ``jax_enable_x64``).
  """
  settings: Tuple[str, ...] = SETTINGS
  depths: Tuple[int, ...] = (24, 48)
  seeds: Tuple[int, ...] = (0, 1, 2)
  length: int = 16
  vocab: int = 16
  d_model: int = 64
  heads: int = 4
  d_ff: int = 128
  batch: int = 32
  steps: int = 600
  learning_rate: float = 5e-4
  warmup: float = 0.1
  test_size: int = 1024
  tail: int = 50
  curve_every: int = 10
  data_seed: int = 0
  dtype: str = "float32"

  def __post_init__(self):
    set_ = lambda name, value: object.__setattr__(self, name, value)
    if isinstance(self.settings, (str, bytes)) or not isinstance(self.settings, (list, tuple)) \
        or not self.settings:
      raise ValueError(f"{_W}: settings must be a non-empty list drawn from {SETTINGS}, got "
                       f"{self.settings!r}.")
    for s in self.settings:
      checks.one_of(s, SETTINGS, "each of settings", _W)
    if len(set(self.settings)) != len(self.settings):
      raise ValueError(f"{_W}: settings must not repeat, got {self.settings!r}.")
    set_("settings", tuple(self.settings))
    for name, low in (("depths", 1), ("seeds", 0)):
      if not isinstance(getattr(self, name), (list, tuple)):
        raise ValueError(f"{_W}: {name} must be a non-empty list of ints >= {low}, got "
                         f"{getattr(self, name)!r}.")
      set_(name, checks.int_tuple(getattr(self, name), name, _W, low=low))
    for name, low in (("length", 2), ("vocab", 2), ("d_model", 1), ("heads", 1), ("d_ff", 1),
                      ("batch", 1), ("steps", 1), ("test_size", 1), ("tail", 1),
                      ("curve_every", 1), ("data_seed", 0)):
      set_(name, checks.int_at_least(getattr(self, name), low, name, _W))
    if self.d_model % self.heads:
      raise ValueError(f"{_W}: d_model must be a multiple of heads, got d_model="
                       f"{self.d_model}, heads={self.heads}.")
    for name in ("tail", "curve_every"):
      if getattr(self, name) > self.steps:
        raise ValueError(f"{_W}: {name} must be at most steps ({self.steps}), got "
                         f"{getattr(self, name)}.")
    set_("learning_rate", checks.positive(self.learning_rate, "learning_rate", _W))
    warmup = checks.finite(self.warmup, "warmup", _W, low=0.0)
    if not 0 < warmup < 1:
      raise ValueError(f"{_W}: warmup must be a fraction of steps in (0, 1), got {warmup!r}.")
    set_("warmup", warmup)
    checks.one_of(self.dtype, DTYPES, "dtype", _W)

  @classmethod
  def quick(cls, **overrides) -> "Config":
    """The small preset (seconds): depth 2 and 3, narrow, 40 steps, one seed."""
    return cls(**{"depths": (2, 3), "seeds": (0,), "d_model": 16, "heads": 2, "d_ff": 32,
                  "batch": 8, "steps": 40, "test_size": 64, "tail": 10, "curve_every": 5,
                  **overrides})

  @classmethod
  def from_dict(cls, config: Mapping) -> "Config":
    """From a mapping of field names; unknown keys are an error."""
    return cli.from_dict(cls, config, _W)

  def to_dict(self) -> dict:
    return driver.config_dict(self)

  def net(self, setting: str, depth: int) -> Transformer:
    """The setting's transformer of ``depth`` blocks."""
    checks.one_of(setting, SETTINGS, "setting", "transformer_train")
    skip = deepnet_alpha(depth) if setting == "deepnet" else 1.0
    return Transformer(self.d_model, self.heads, depth, self.d_ff,
                       norm="pre" if setting == "pre" else "post", skip_scale=skip,
                       vocab=self.vocab, max_len=self.length, stack=True)

  def warmup_steps(self, setting: str) -> int:
    """Steps of linear warm-up: ``round(warmup * steps)`` for ``post_warmup``, else 0."""
    return max(1, round(self.warmup * self.steps)) if setting == "post_warmup" else 0


def deepnet_alpha(n: int) -> float:
  """DeepNet's skip factor for an encoder of n blocks, ``(2n)^(1/4)``."""
  return (2.0 * n) ** 0.25


def deepnet_beta(n: int) -> float:
  """DeepNet's init factor for Wv, Wo and the FFN, ``(8n)^(-1/4)``."""
  return (8.0 * n) ** -0.25


# -- the task ------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def reversal(key, n: int, length: int, vocab: int):
  """``n`` sequences ``x`` of ``length`` uniform tokens in ``[0, vocab)`` and their
  targets ``y[:, i] = x[:, length - 1 - i]``."""
  x = jax.random.randint(key, (n, length), 0, vocab)
  return x, x[:, ::-1]


def data_keys(config: Config):
  """``(train_key, test_key)``: step t's batch is drawn from ``fold_in(train_key, t)``."""
  root = jax.random.PRNGKey(config.data_seed)
  return jax.random.fold_in(root, 1), jax.random.fold_in(root, 0)


def test_set(config: Config):
  """The fixed held-out ``(x, y)``."""
  return reversal(data_keys(config)[1], config.test_size, config.length, config.vocab)


# -- one run ---------------------------------------------------------------------


def init_params(config: Config, setting: str, depth: int, key) -> tuple:
  """``config.net(setting, depth).init(key)`` (LeCun weights), and for ``deepnet``
  Wv, Wo, ffn1.W and ffn2.W of every block times ``deepnet_beta(depth)``."""
  params = config.net(setting, depth).init(key, dtype=jnp.dtype(config.dtype))
  if setting != "deepnet":
    return params
  b = deepnet_beta(depth)
  scale = lambda e: e._replace(attn=e.attn._replace(Wv=e.attn.Wv * b, Wo=e.attn.Wo * b),
                               ffn1=e.ffn1._replace(W=e.ffn1.W * b),
                               ffn2=e.ffn2._replace(W=e.ffn2.W * b))
  return tuple(scale(e) if isinstance(e, Block) else e for e in params)


def token_loss(net, params, x, y):
  """Mean softmax cross-entropy over every token of the batch."""
  logits = net.apply(params, x)
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


@functools.lru_cache(maxsize=64)
def adam(learning_rate: float, warmup_steps: int) -> optax.GradientTransformation:
  """Adam with a linear warm-up from 0 over ``warmup_steps`` (none for 0); one object
  per argument list, so the compiled loop is reused."""
  if not warmup_steps:
    return optax.adam(learning_rate)
  return optax.adam(optax.linear_schedule(0.0, learning_rate, warmup_steps))


@functools.partial(jax.jit, static_argnames=("net", "tx", "steps", "batch", "length", "vocab"))
def train_loop(params, train_key, *, net, tx, steps, batch, length, vocab):
  """``steps`` Adam updates in one ``lax.scan``, batch t drawn from
  ``fold_in(train_key, t)``. Returns the params and the per-step batch losses
  (each measured before its update)."""
  grad = jax.value_and_grad(functools.partial(token_loss, net))

  def body(carry, t):
    params, state = carry
    x, y = reversal(jax.random.fold_in(train_key, t), batch, length, vocab)
    loss, g = grad(params, x, y)
    updates, state = tx.update(g, state, params)
    return (optax.apply_updates(params, updates), state), loss

  (params, _), losses = jax.lax.scan(body, (params, tx.init(params)), jnp.arange(steps))
  return params, losses


@functools.partial(jax.jit, static_argnames=("net",))
def evaluate(net, params, x, y):
  """``(token loss, token accuracy)`` on ``(x, y)``."""
  logits = net.apply(params, x)
  loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
  return loss, jnp.mean((jnp.argmax(logits, axis=-1) == y).astype(logits.dtype))


def train_one(config: Config, setting: str, depth: int, seed: int) -> dict:
  """One run: test accuracy and loss, final train loss, status, CPU seconds, curve."""
  if config.dtype == "float64" and not jax.config.jax_enable_x64:
    raise ValueError("transformer_train: dtype float64 needs jax_enable_x64 (or use float32).")
  cpu0, wall0 = time.process_time(), time.perf_counter()
  net = config.net(setting, depth)
  params = init_params(config, setting, depth, jax.random.PRNGKey(seed))
  params, losses = train_loop(params, data_keys(config)[0], net=net,
                              tx=adam(config.learning_rate, config.warmup_steps(setting)),
                              steps=config.steps, batch=config.batch, length=config.length,
                              vocab=config.vocab)
  test_loss, test_acc = evaluate(net, params, *test_set(config))
  losses = np.asarray(losses, dtype=np.float64)
  final = float(np.mean(losses[-config.tail:]))
  finite = bool(np.all(np.isfinite(losses))) and math.isfinite(float(test_loss))
  status = ("nonfinite" if not finite else
            "stuck" if final >= STUCK * math.log(config.vocab) else "ok")
  n = config.steps // config.curve_every * config.curve_every
  curve = losses[:n].reshape(-1, config.curve_every).mean(axis=1)
  return {"test_accuracy": float(test_acc), "test_loss": float(test_loss),
          "final_train_loss": final, "first_loss": float(losses[0]), "status": status,
          "diverged": status != "ok", "cpu_seconds": time.process_time() - cpu0,
          "wall_seconds": time.perf_counter() - wall0, "curve": curve.tolist()}


# -- the study -----------------------------------------------------------------


def keys(config: Config):
  """One key per (setting, depth, seed): everything its numbers depend on. Seed by
  seed, so that a run stopped early has every setting and depth for its first seeds."""
  common = {"study": "transformer_train", **{k: v for k, v in config.to_dict().items()
                                             if k not in ("settings", "depths", "seeds")}}
  return [dict(common, setting=s, depth=d, seed=seed)
          for seed in config.seeds for d in config.depths for s in config.settings]


def run(config, out_dir) -> list:
  """Trains every (depth, setting, seed), resumably (each finished run is stored at
  once); writes ``results.csv``/``.json`` (one row per depth and setting),
  ``runs.csv``/``.json`` (every run, with its curve), ``curves.png`` and
  ``report.md``. Returns the rows."""
  config = config if isinstance(config, Config) else Config.from_dict(config)
  session = driver.start(config, out_dir)
  key_list = keys(config)

  def compute(pending):
    for k in pending:
      yield k, train_one(config, k["setting"], k["depth"], k["seed"])

  records = driver.resume(session, key_list, compute, desc="transformer train")
  rows = _report.summarise(key_list, records)
  driver.write_table(session, "results", rows)
  driver.write_table(session, "runs", [dict(setting=k["setting"], depth=k["depth"],
                                            seed=k["seed"], **r)
                                       for k, r in zip(key_list, records)],
                     columns=("setting", "depth", "seed", "test_accuracy", "test_loss",
                              "final_train_loss", "status", "cpu_seconds", "wall_seconds"))
  _report.plot_curves(config, key_list, records, session.path("curves.png"))
  driver.finish(session, _report.report(config, rows))
  return rows
