"""Making deep nets' gradients flow at init: ``jaxbp.criticalize`` beside LSUV, DKS/TAT
and mean-field theory, on seven models from three frameworks and a post-LN transformer.

For each model (:mod:`jaxbp.studies.criticalize_models`), method and seed:

1. the init: ``default`` (the model's start), ``lsuv`` (``jaxbp.criticalize`` with
   ``target="forward"``: unit forward variance per layer, Mishkin & Matas 2016),
   ``criticalize`` (``target="gradient"``: per-layer backward gain 1), ``theory``
   (mean-field critical, jaxbp's families only), ``dks`` and ``tat`` (the
   ``dks`` package: a transformed activation with orthogonal weights,
   :mod:`jaxbp.studies.criticalize_dks`; MLPs and CNNs only). LSUV and criticalize
   rescale the default net of the same seed, on the first ``crit_batch``
   training digits; their wall time (compilation included) is recorded;
2. the gradient flow of the result by :func:`jaxbp.inspect` on that batch:
   ``log_slope`` (d ln delta_sq / d layer), the spread ``max_l |ln delta_sq_l - mean|``
   and q's range;
3. training for ``steps`` steps of SGD with momentum (global-norm clipping, the
   same for every method), then the test accuracy.

The post-LN transformer (``post_ln_transformer``) runs default, LSUV and
criticalize only (no theory-critical init, no DKS/TAT:
:data:`jaxbp.studies.criticalize_models.SPECS`) on
:mod:`jaxbp.studies.transformer_train`'s token reversal: a fixed training stream
(step t's batch from ``fold_in(train_key, t)``, the same for every seed; the seed
sets the init), a fixed test set of :data:`TF_TEST` sequences, and a fixed batch
of ``crit_batch`` sequences for LSUV, criticalize and inspect (its "train
accuracy" is measured on that batch). It trains with Adam at ``tf_learning_rate``
for ``tf_steps`` steps, as transformer_train does: SGD with momentum does not train
a deep post-LN transformer (the update's scale must adapt per parameter, the
LayerNorm gains' and the embedding's gradients differ by orders of magnitude).
Its test accuracy is the token accuracy. criticalize's profile descent gets
:data:`TF_DESCENT_STEPS` steps there, not its default: one second-order step
through the depth-48 transformer takes about 4 s on 2 cores.

Writes ``results.csv``/``.json`` (one row per model and method), ``runs.json``,
``report.md``, ``profiles.png`` and ``accuracy.png``; every finished run is kept
in ``store/`` and a rerun resumes. Runs in float64 (a default depth-100 net's
``delta_sq`` spans more than float32's range).
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Tuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbp import io as _io
from jaxbp.core import checks
from jaxbp.measure.criticalize import criticalize
from jaxbp.measure.inspect import inspect
from jaxbp.measure.report import LayerReport
import jaxbp.studies.cli as cli
from jaxbp.studies import criticalize_dks as dks_
from jaxbp.studies import criticalize_models as models
from jaxbp.studies import criticalize_report as _report
from jaxbp.studies import transformer_train as _tt
import jaxbp.studies.driver as driver
from jaxbp.train import data as _data

VERSION = 1
METHODS = ("default", "lsuv", "criticalize", "theory", "dks", "tat")
_W = "criticalize Config"
TRANSFORMER = "post_ln_transformer"
TF_FIELDS = ("tf_depth", "tf_width", "tf_steps", "tf_learning_rate")
TF_TEST = 1024   # held-out reversal sequences, as transformer_train
TF_DESCENT_STEPS = 300   # the transformer's descent budget (25 min here, not 75)


@dataclasses.dataclass(frozen=True)
class Config:
  """Checked on construction: a bad value is a ValueError naming the field.

  Attributes:
    models: names from :data:`jaxbp.studies.criticalize_models.MODELS`.
    methods: names from :data:`METHODS`; each model runs those that apply to it.
    width: hidden units of the MLPs and the RNN.
    channels: channels of the CNNs.
    mlp_depth, conv_depth, cnn_depth, eqx_depth: hidden layers of the jaxbp MLPs,
      the jaxbp ConvNet, the flax CNN and the equinox MLP.
    rnn_steps: the RNN's sequence length (at least 9: the 8 rows and a blank step).
    sigma_b2: the bias variance of jaxbp's inits (and of tanh's critical point).
    crit_batch: training digits that LSUV and criticalize measure on.
    max_iters, tol: passed to ``jaxbp.criticalize``.
    steps, batch_size, learning_rate, momentum, clip_norm: the training of every run.
      At lr 0.02, 0.05 and 0.1 the depth-100 tanh MLPs stalled near chance within
      1,500 steps (theory-critical and criticalized alike); at 0.01 both reach ~95%.
    cnn_steps: the training steps of the two CNNs instead (a float64 step of the
      depth-50 ConvNet costs ~20x one of a depth-100 MLP on a CPU).
    tf_depth, tf_width: the post-LN transformer's blocks and d_model (a multiple of
      its 4 heads; the FFN is ``2 tf_width`` wide).
    tf_steps, tf_learning_rate: its training, Adam (no clipping, no warm-up), with
      ``batch_size`` sequences per step; transformer_train's budget and rate.
    seeds: one init and batch order per seed.
  """
  models: Tuple[str, ...] = models.MODELS
  methods: Tuple[str, ...] = METHODS
  width: int = 64
  channels: int = 8
  mlp_depth: int = 100
  conv_depth: int = 50
  cnn_depth: int = 20
  eqx_depth: int = 50
  rnn_steps: int = 200
  sigma_b2: float = 1e-3
  crit_batch: int = 128
  max_iters: int = 20
  tol: float = 0.01
  steps: int = 1500
  cnn_steps: int = 250
  batch_size: int = 32
  learning_rate: float = 0.01
  momentum: float = 0.9
  clip_norm: float = 1.0
  tf_depth: int = 48
  tf_width: int = 64
  tf_steps: int = 600
  tf_learning_rate: float = 5e-4
  seeds: Tuple[int, ...] = (0, 1, 2)

  def __post_init__(self):
    set_ = lambda name, value: object.__setattr__(self, name, value)
    for name, valid in (("models", models.MODELS), ("methods", METHODS)):
      value = getattr(self, name)
      if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{_W}: {name} must be a non-empty list of names from "
                         f"{', '.join(valid)}, got {value!r}.")
      for v in value:
        checks.one_of(v, valid, name, _W)
      set_(name, tuple(dict.fromkeys(value)))
    for name in ("width", "channels", "mlp_depth", "conv_depth", "cnn_depth", "eqx_depth",
                 "crit_batch", "max_iters", "steps", "cnn_steps", "batch_size", "tf_depth",
                 "tf_width", "tf_steps"):
      set_(name, checks.positive_int(getattr(self, name), name, _W))
    set_("rnn_steps", checks.int_at_least(self.rnn_steps, models.ROWS + 1, "rnn_steps", _W))
    set_("sigma_b2", checks.finite(self.sigma_b2, "sigma_b2", _W, low=0.0))
    if self.tf_width % models.TF_HEADS:
      raise ValueError(f"{_W}: tf_width must be a multiple of the transformer's "
                       f"{models.TF_HEADS} heads, got {self.tf_width}.")
    for name in ("tol", "learning_rate", "clip_norm", "tf_learning_rate"):
      set_(name, checks.positive(getattr(self, name), name, _W))
    momentum = checks.finite(self.momentum, "momentum", _W, low=0.0)
    if momentum >= 1:
      raise ValueError(f"{_W}: momentum must be a number in [0, 1), got {momentum!r}.")
    set_("momentum", momentum)
    if isinstance(self.seeds, (str, bytes)) or not isinstance(self.seeds, (list, tuple)) \
        or not self.seeds:
      raise ValueError(f"{_W}: seeds must be a non-empty list of ints >= 0, got {self.seeds!r}.")
    set_("seeds", checks.int_tuple(self.seeds, "seeds", _W, low=0))

  @classmethod
  def quick(cls, **overrides) -> "Config":
    """The small preset (about a minute): three shallow, narrow nets, one seed, 30 steps
    (the transformer, when named, at depth 2, width 16, 30 steps)."""
    return cls(**{"models": ("tanh_mlp_0.5", "eqx_mlp", "rnn"), "width": 16,
                  "channels": 4, "mlp_depth": 8, "conv_depth": 4, "cnn_depth": 20,
                  "eqx_depth": 4, "rnn_steps": 16, "crit_batch": 32, "steps": 30,
                  "cnn_steps": 30, "tf_depth": 2, "tf_width": 16, "tf_steps": 30,
                  "seeds": (0,), **overrides})

  @classmethod
  def from_dict(cls, config) -> "Config":
    """From a mapping of field names; unknown keys are an error."""
    return cli.from_dict(cls, config, _W)

  def to_dict(self) -> dict:
    return driver.config_dict(self)


def applies(model: str, method: str) -> bool:
  """Whether ``method`` applies to ``model`` (theory: jaxbp's families without skips
  or normalisation; DKS/TAT: the chains of fresh weights, where the package defines
  the transform; neither for the RNN's shared weight or the transformer's attention
  and LayerNorm)."""
  spec = models.SPECS[model]
  if method == "theory":
    return spec.theory is not None
  if method in dks_.METHODS:
    return any(m == method for m, _ in spec.transforms)
  return True


def _xent(logits, y):
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def _bundle(config: Config, model: str, method: str):
  """The net (its activation transformed for DKS/TAT), its loss and its compiled
  inspect, training loop and evaluation; the methods that keep the model's own
  activation share one."""
  return _compiled(config, model, method if method in dks_.METHODS else None)


@functools.lru_cache(maxsize=None)
def _compiled(config: Config, model: str, transform):
  fn = None
  if transform is not None:
    name = dict(models.SPECS[model].transforms)[transform]
    fn = dks_.transformed(name, transform, models.build(model, config).depth)
  net = models.build(model, config, fn)
  if model == TRANSFORMER:
    return _transformer_bundle(config, net)

  def loss_fn(params, x, y):
    return _xent(net.apply(params, x), y)

  steps = config.cnn_steps if models.SPECS[model].task == "image" else config.steps
  tx = optax.chain(optax.clip_by_global_norm(config.clip_norm),
                   optax.sgd(config.learning_rate, momentum=config.momentum))

  @eqx.filter_jit
  def train(params, x, y, key):
    arrays, static = eqx.partition(params, eqx.is_inexact_array)
    grad = jax.value_and_grad(lambda a, xb, yb: loss_fn(eqx.combine(a, static), xb, yb))

    def step(carry, k):
      a, state, ok = carry
      i = jax.random.choice(k, x.shape[0], (config.batch_size,), replace=False)
      value, g = grad(a, x[i], y[i])
      updates, new_state = tx.update(g, state, a)
      finite = ok & jnp.isfinite(value) & jnp.isfinite(optax.global_norm(g))
      keep = lambda new, old: jax.tree_util.tree_map(
          lambda n, o: jnp.where(finite, n, o), new, old)
      return (keep(optax.apply_updates(a, updates), a), keep(new_state, state), finite), value
    (arrays, _, ok), losses = jax.lax.scan(step, (arrays, tx.init(arrays), jnp.array(True)),
                                           jax.random.split(key, steps))
    return eqx.combine(arrays, static), losses, ok

  @eqx.filter_jit
  def evaluate(params, x, y):
    logits = net.apply(params, x)
    return _xent(logits, y), jnp.mean(jnp.argmax(logits, -1) == y)

  return net, loss_fn, eqx.filter_jit(functools.partial(inspect, loss_fn)), train, evaluate


def _transformer_bundle(config: Config, net):
  """The transformer's bundle: transformer_train's token loss, Adam loop and
  evaluation. ``train`` ignores its data and key: the stream is fixed."""
  tnet = models.transformer(config)
  loss_fn = functools.partial(_tt.token_loss, tnet)
  train_key = _tf_keys()[0]

  def train(params, x, y, key):
    del x, y, key
    params, losses = _tt.train_loop(params, train_key, net=tnet,
                                    tx=_tt.adam(config.tf_learning_rate, 0),
                                    steps=config.tf_steps, batch=config.batch_size,
                                    length=models.TF_LENGTH, vocab=models.TF_VOCAB)
    return params, losses, jnp.all(jnp.isfinite(losses))

  evaluate = functools.partial(_tt.evaluate, tnet)
  return net, loss_fn, eqx.filter_jit(functools.partial(inspect, loss_fn)), train, evaluate


def _tf_keys():
  """``(train, test, measure)`` keys: transformer_train's train stream and test set
  at its data seed 0, and a third key for the batch LSUV and criticalize measure on."""
  root = jax.random.PRNGKey(0)
  return tuple(jax.random.fold_in(root, i) for i in (1, 0, 2))


@functools.lru_cache(maxsize=None)
def _reversal_data(crit_batch: int):
  """The transformer's fixed measuring batch (``x``, ``y``) and test set."""
  _, test_key, measure_key = _tf_keys()
  x, y = _tt.reversal(measure_key, crit_batch, models.TF_LENGTH, models.TF_VOCAB)
  return (x, y) + _tt.reversal(test_key, TF_TEST, models.TF_LENGTH, models.TF_VOCAB)


@functools.lru_cache(maxsize=None)
def _data_for(task: str, rnn_steps: int, normalised: bool):
  d = _data.digits()
  prep = lambda x: models.inputs(task, dks_.normalise(x) if normalised else x, rnn_steps)
  return prep(d.x_train), jnp.asarray(d.y_train), prep(d.x_test), jnp.asarray(d.y_test)


def flow(report) -> dict:
  """A report's gradient flow: log_slope, the spread of ln delta_sq about its mean
  (max over layers), q's range and the per-layer profiles."""
  ln = np.log(np.asarray(report.delta_sq, float))
  q = np.asarray(report.q, float)
  spread = float(np.max(np.abs(ln - ln.mean()))) if np.all(np.isfinite(ln)) else float("inf")
  return {"log_slope": float(report.log_slope), "spread": spread, "q_min": float(q.min()),
          "q_max": float(q.max()), "layers": len(report), "ln_delta_sq": ln.tolist(),
          "q": q.tolist()}


def _criticalize(loss_fn, params, x, y, target, config, model):
  # Called eagerly, as a user would: the time includes tracing and compilation,
  # and a layer that cannot reach the target is a warning naming it.
  budget = {"descent_steps": TF_DESCENT_STEPS} if model == TRANSFORMER else {}
  return criticalize(loss_fn, params, x, y, target=target, max_iters=config.max_iters,
                     tol=config.tol, **budget)


def run_one(config: Config, model: str, method: str, seed: int) -> dict:
  """One run: the init by ``method``, its gradient flow, training, test accuracy."""
  net, loss_fn, inspect_fn, train, evaluate = _bundle(config, model, method)
  task = models.SPECS[model].task
  x, y, x_test, y_test = (_reversal_data(config.crit_batch) if task == "reversal" else
                          _data_for(task, config.rnn_steps, method in dks_.METHODS))
  xb, yb = x[:config.crit_batch], y[:config.crit_batch]
  init_key, batch_key = jax.random.split(jax.random.PRNGKey(seed))
  record = {"seconds_method": 0.0}
  scheme = {"theory": "theory", "dks": "suo", "tat": "suo"}.get(method, "default")
  params = net.init(init_key, scheme)
  if method in ("lsuv", "criticalize"):
    t0, c0 = time.perf_counter(), time.process_time()
    params, info = _criticalize(loss_fn, params, xb, yb,
                                "forward" if method == "lsuv" else "gradient", config, model)
    jax.block_until_ready(params)
    record["seconds_method"] = time.perf_counter() - t0
    record["cpu_seconds_method"] = time.process_time() - c0
    record["info"] = _info_summary(info)
  record["flow"] = flow(inspect_fn(params, xb, yb))
  t0, c0 = time.perf_counter(), time.process_time()
  trained, losses, ok = train(params, x, y, batch_key)
  jax.block_until_ready(trained)
  record["seconds_train"] = time.perf_counter() - t0
  record["cpu_seconds_train"] = time.process_time() - c0
  (test_loss, test_acc), (_, train_acc) = (evaluate(trained, x_test, y_test),
                                           evaluate(trained, x, y))
  losses = np.asarray(losses, float)
  record.update(test_accuracy=float(test_acc), train_accuracy=float(train_acc),
                test_loss=float(test_loss), first_loss=float(losses[0]),
                last_loss=float(np.mean(losses[-max(1, len(losses) // 10):])),
                status="ok" if bool(ok) else "overflow")
  return record


def _info_summary(info) -> dict:
  """What the store keeps of criticalize's info (the reports aside): scalars as
  they are, arrays as their [min, max], boolean arrays as how many are True."""
  out = {}
  for name, value in info._asdict().items():
    if isinstance(value, LayerReport):
      continue
    a = np.asarray(value)
    if a.dtype == bool:
      out[name] = int(a.sum()) if a.ndim else bool(a)
    elif a.size == 1:
      out[name] = float(a)
    elif a.size:
      out[name] = [float(a.min()), float(a.max())]
  return out


def keys(config: Config):
  """One key per (model, method, seed), the methods that apply only. The
  transformer's fields are in the transformer's keys only, so that the other
  models' keys, and their stored runs, do not depend on them."""
  common = {"study": "criticalize", "version": VERSION, "x64": bool(jax.config.jax_enable_x64),
            **{k: v for k, v in config.to_dict().items() if k not in ("models", "methods",
                                                                      "seeds") + TF_FIELDS}}
  tf = {k: getattr(config, k) for k in TF_FIELDS}
  return [dict(common, **(tf if m == TRANSFORMER else {}), model=m, method=k, seed=s)
          for m in config.models for k in config.methods if applies(m, k)
          for s in config.seeds]



def run(config, out_dir) -> dict:
  """Runs (or resumes) the study into ``out_dir``; returns ``{"rows", "report"}``."""
  config = Config.from_dict(config)
  if not jax.config.jax_enable_x64:
    raise ValueError("criticalize study needs float64 (jax.config.update('jax_enable_x64', "
                     "True)): a default depth-100 net's delta_sq underflows float32.")
  session = driver.start(config, out_dir)
  key_list = keys(config)

  def compute(pending):
    for k in pending:
      yield k, run_one(config, k["model"], k["method"], k["seed"])

  records = driver.resume(session, key_list, compute, desc="criticalize")
  rows = _report.summarise(key_list, records)
  driver.write_table(session, "results", rows)
  driver.write_table(session, "runs", [
      {**{f: k[f] for f in ("model", "method", "seed")},
       **{f: v for f, v in r.items() if f != "flow"},
       **{f: v for f, v in r["flow"].items() if f not in ("ln_delta_sq", "q")}}
      for k, r in zip(key_list, records)])
  _report.plot_profiles(key_list, records, session.path("profiles.png"))
  _report.plot_accuracy(key_list, records, session.path("accuracy.png"))
  text = _report.report(config, rows)
  driver.finish(session, text)
  return {"rows": rows, "report": text}
