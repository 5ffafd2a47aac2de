"""Seed 003 §4.4's remedies for vanishing and exploding gradients, trained.

Backprop multiplies the output gradient by one factor per layer (seed 003 §4.4)::

    dL/dh_{k-1} = dL/dh_L  prod_{t=k..L} phi'(z_t) W_t^T

A sigmoid has ``phi' <= 1/4``, so with Glorot/Xavier weights the product shrinks
geometrically and the first layers of a deep net barely move: the gradient
vanishes. The seed lists what helps:

  ==================  =============================================================
  setting             what it changes
  ==================  =============================================================
  sigmoid_xavier      the baseline that fails: sigmoid, Glorot & Bengio (2010) init
  tanh_critical       tanh with W ~ N(0, sigma_w2*/n), b ~ N(0, sigma_b2): chi_1 = 1
                      (Schoenholz et al. 2017; :mod:`jaxbp.meanfield`)
  tanh_orthogonal     the same sigma_w2*, b, but W = sqrt(sigma_w2*) Q, Q orthogonal
                      (Saxe et al. 2014; Pennington et al. 2017)
  relu_he             ReLU (phi' = 1 where active) with He et al. (2015) init
  sigmoid_residual    the baseline plus identity skips h_k = h_{k-1} + phi(z_k)
                      (He et al. 2016): dL/dh_{k-1} keeps an identity term
  sigmoid_batchnorm   the baseline plus batch norm before every sigmoid (Ioffe &
                      Szegedy 2015): z stays near 0, where sigmoid' is largest
  relu_large          ReLU with sigma_w2 = 4 (chi_1 = 2): the gradient explodes
  relu_large_clip     the same plus gradient clipping (Pascanu et al. 2013)
  relu_large_decay    the same plus L2 weight decay (seed 003: keeps w_t from
                      growing large)
  ==================  =============================================================

:func:`run` trains every setting at every depth on the digits and on two
spirals, with several seeds at once (``jax.vmap`` over the seed axis of one
compiled :func:`jaxbp.training.fit`), and records the loss curve, the test
accuracy, the overflow status and the per-layer gradient norms
``||dL/dW_k||`` (from :func:`jaxbp.diagnostics.gradient_norms`) at the start and
at the end of training. A setting *trains* at a depth when the median test
accuracy over seeds reaches the dataset's threshold.

Batch-norm nets normalise with the statistics of whatever batch they see (no
running averages): the test set is evaluated as one batch.

References:
  Glorot & Bengio, "Understanding the difficulty of training deep feedforward
    neural networks", AISTATS 2010.
  He, Zhang, Ren & Sun, "Delving deep into rectifiers", ICCV 2015; "Deep
    residual learning for image recognition", CVPR 2016.
  Ioffe & Szegedy, "Batch normalization", ICML 2015.
  Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural
    networks", ICML 2013.
  Saxe, McClelland & Ganguli, "Exact solutions to the nonlinear dynamics of
    learning in deep linear neural networks", ICLR 2014.
  Schoenholz, Gilmer, Ganguli & Sohl-Dickstein, "Deep information propagation",
    ICLR 2017.
  Pennington, Schoenholz & Ganguli, "Resurrecting the sigmoid in deep learning
    through dynamical isometry", NeurIPS 2017.

>>> import jax; jax.config.update("jax_enable_x64", True)
>>> out = train("relu_he", "spirals", depth=5, width=16, steps=50, seeds=2)  # doctest: +SKIP
>>> out["test_accuracy"]                                                      # doctest: +SKIP
"""
from __future__ import annotations

import functools
import math
import os
import time
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.train import data as _data
from jaxbp.measure import diagnostics as _diagnostics
from jaxbp.core import initializers as _init
from jaxbp.theory import meanfield as _mf
from jaxbp.studies import spectrum as _spectrum
from jaxbp.train import training as _training
from jaxbp.core.nets import MLP

LOSS = "softmax_cross_entropy"
DATASETS = ("digits", "spirals")


class Setting(NamedTuple):
  """One way to build and train a deep net.

  Attributes:
    activation: hidden activation name.
    init: an init name, or ``"critical"`` / ``"orthogonal_critical"``: Gaussian
      or orthogonal weights at tanh's critical sigma_w2 for the run's sigma_b2.
    residual, batchnorm: :class:`jaxbp.MLP` flags.
    clip_norm, weight_decay: :func:`jaxbp.training.optimizer` options.
    sigma_w2: for ``init="gaussian"``, the weight variance.
    about: one line for the report.
  """
  activation: str
  init: str
  residual: bool = False
  batchnorm: bool = False
  clip_norm: Optional[float] = None
  weight_decay: Optional[float] = None
  sigma_w2: Optional[float] = None
  about: str = ""


SETTINGS = {
    "sigmoid_xavier": Setting("sigmoid", "glorot", about="sigmoid, Glorot/Xavier init (baseline)"),
    "tanh_critical": Setting("tanh", "critical", about="tanh, Gaussian W at chi_1 = 1"),
    "tanh_orthogonal": Setting("tanh", "orthogonal_critical",
                               about="tanh, orthogonal W at chi_1 = 1"),
    "relu_he": Setting("relu", "he", about="ReLU, He init"),
    "sigmoid_residual": Setting("sigmoid", "glorot", residual=True,
                                about="baseline + residual connections"),
    "sigmoid_batchnorm": Setting("sigmoid", "glorot", batchnorm=True,
                                 about="baseline + batch norm"),
    "relu_large": Setting("relu", "gaussian", sigma_w2=4.0,
                          about="ReLU, sigma_w2 = 4 (chi_1 = 2: explodes)"),
    "relu_large_clip": Setting("relu", "gaussian", sigma_w2=4.0, clip_norm=1.0,
                               about="exploding ReLU + gradient clipping at norm 1"),
    "relu_large_decay": Setting("relu", "gaussian", sigma_w2=4.0, weight_decay=1e-2,
                                about="exploding ReLU + weight decay 1e-2"),
}


def initializer(setting: Setting, sigma_b2: float) -> _init.Initializer:
  """The :class:`jaxbp.initializers.Initializer` a setting asks for."""
  if setting.init in ("critical", "orthogonal_critical"):
    sigma_w2 = float(_mf.critical_sigma_w2(setting.activation, sigma_b2))
    if not math.isfinite(sigma_w2):
      raise ValueError(f"{setting.activation} has no critical sigma_w2 at sigma_b2={sigma_b2}.")
    if setting.init == "critical":
      return _init.gaussian(sigma_w2, float(sigma_b2))
    return _init.orthogonal(math.sqrt(sigma_w2), float(sigma_b2))
  if setting.init == "gaussian":
    return _init.gaussian(float(setting.sigma_w2), 0.0)
  return _init.get(setting.init)


def get(name) -> Setting:
  """A setting by name (or a :class:`Setting` passed through)."""
  if isinstance(name, Setting):
    return name
  if isinstance(name, str) and name in SETTINGS:
    return SETTINGS[name]
  raise ValueError(f"Unknown setting {name!r}; valid names are {', '.join(SETTINGS)}.")


def _check_int(where, name, v, low=1):
  if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
    raise ValueError(f"{where}: {name} must be an int >= {low}, got {v!r}.")
  return int(v)


# -- one (setting, dataset, depth), all seeds ------------------------------------


def _curve(loss, points):
  """The batch-loss history averaged over ``points`` equal windows; NaN (after an
  overflow) stays NaN. Returns ``(curve, window centres)``."""
  loss = np.asarray(loss, dtype=float)
  steps = loss.shape[-1]
  edges = np.linspace(0, steps, min(points, steps) + 1).astype(int)
  curve = np.stack([loss[..., a:b].mean(axis=-1) for a, b in zip(edges[:-1], edges[1:])], -1)
  return curve, (edges[:-1] + edges[1:] - 1) / 2


class _Run(NamedTuple):
  fit: _training.Fit                 # vmapped over seeds
  initial_loss: jax.Array            # full training set, before and after
  final_loss: jax.Array
  train_accuracy: jax.Array
  test_accuracy: jax.Array
  grad_norms_start: jax.Array        # (seeds, K): ||dL/dW_k|| on the training set
  grad_norms_end: jax.Array


@functools.partial(jax.jit, static_argnames=("net", "tx", "steps", "batch_size"))
def _train_seeds(params, shuffle, d, *, net, tx, steps, batch_size):
  """One compiled program per (net, tx, steps, batch, data shapes), vmapped over seeds."""
  def one(p, key):
    norms = lambda p: _diagnostics.gradient_norms(net, LOSS, p, d.x_train, d.y_train).weight
    loss0, _ = _training.evaluate(net, LOSS, p, d.x_train, d.y_train)
    out = _training.fit(net, LOSS, p, d.x_train, d.y_train, tx, steps=steps,
                        batch_size=batch_size, key=key)
    loss1, acc1 = _training.evaluate(net, LOSS, out.params, d.x_train, d.y_train)
    _, test = _training.evaluate(net, LOSS, out.params, d.x_test, d.y_test)
    return _Run(out, loss0, loss1, acc1, test, norms(p), norms(out.params))
  return jax.vmap(one)(params, shuffle)


def train(setting, dataset, depth: int, width: int = 32, steps: int = 300, seeds: int = 3,
          learning_rate: float = 0.01, momentum: float = 0.9, batch_size: int = 64,
          sigma_b2: float = 1e-3, seed: int = 0, curve_points: int = 60,
          data: Optional[_data.Dataset] = None) -> dict:
  """Trains ``seeds`` nets of one setting and depth at once; returns their record.

  The net is ``MLP.uniform(in, width, depth, out, stack=True)`` (``depth`` hidden
  layers under ``lax.scan``), trained by :func:`jaxbp.training.fit` with
  mini-batch SGD + momentum on the softmax cross-entropy, all seeds in one
  vmapped program.

  Args:
    setting: a name in :data:`SETTINGS` or a :class:`Setting`.
    dataset: ``"digits"`` or ``"spirals"`` (:func:`jaxbp.data.load`), unless
      ``data`` (a :class:`jaxbp.data.Dataset`) is given.
    depth: hidden layers.
    steps, batch_size, learning_rate, momentum: the optimiser.
    sigma_b2: bias variance of the critical tanh settings.
    seed: nets ``seed .. seed + seeds - 1`` (init and batch order).
    curve_points: windows the loss curve is averaged over.

  Returns a dict of arrays over seeds: ``test_accuracy``, ``train_accuracy``,
  ``initial_loss``, ``final_loss`` (full training set), ``status``
  (:func:`jaxbp.training.status`), ``overflow_step``, ``overflow_layer``,
  ``grad_norms_start`` / ``grad_norms_end`` (``(seeds, depth + 1)``:
  ``||dL/dW_k||`` on the training set), ``curve`` (``(seeds, points)``
  windowed batch loss) and ``curve_steps``.
  """
  s = get(setting)
  depth = _check_int("train", "depth", depth)
  width = _check_int("train", "width", width)
  steps = _check_int("train", "steps", steps)
  seeds = _check_int("train", "seeds", seeds)
  d = _data.load(dataset, 0) if data is None else data
  n_in, n_out = d.x_train.shape[1], int(np.max(np.asarray(d.y_train))) + 1
  net = MLP.uniform(n_in, width, depth, n_out, activation=s.activation, stack=True,
                    residual=s.residual, batchnorm=s.batchnorm)
  tx = _training.optimizer("momentum", learning_rate, momentum, clip_norm=s.clip_norm,
                           weight_decay=s.weight_decay)
  init = initializer(s, sigma_b2)
  keys = [jax.random.split(jax.random.PRNGKey(seed + i)) for i in range(seeds)]
  # Params are drawn outside the compiled loop, seed by seed: settings that share
  # a net and an optimizer (tanh Gaussian/orthogonal, relu He/large) then share
  # one compiled program, and eager init ops are cached by shape. (A vmapped
  # program with orthogonal init hung XLA:CPU; see spectrum.py.)
  with _spectrum.single_thread_blas():   # orthogonal init's QR: see there
    params = jax.tree_util.tree_map(lambda *a: jnp.stack(a),
                                    *[net.init(k[0], init) for k in keys])
  shuffle = jnp.stack([k[1] for k in keys])
  r = _train_seeds(params, shuffle, d, net=net, tx=tx, steps=steps,
                   batch_size=min(batch_size, d.x_train.shape[0]))
  curve, at = _curve(r.fit.history.loss, curve_points)
  per_seed = lambda i: jax.tree_util.tree_map(lambda a: a[i], r.fit)
  return {
      "test_accuracy": np.asarray(r.test_accuracy), "train_accuracy": np.asarray(r.train_accuracy),
      "initial_loss": np.asarray(r.initial_loss), "final_loss": np.asarray(r.final_loss),
      "status": [_training.status(per_seed(i)) for i in range(seeds)],
      "overflow_step": np.asarray(r.fit.overflow_step),
      "overflow_layer": np.asarray(r.fit.overflow_layer),
      "grad_norms_start": np.asarray(r.grad_norms_start),
      "grad_norms_end": np.asarray(r.grad_norms_end),
      "curve": curve, "curve_steps": at,
  }


# -- the experiment -------------------------------------------------------------


DEFAULT_CONFIG = {
    "datasets": ["digits", "spirals"],
    "settings": list(SETTINGS),
    "depths": [2, 5, 10, 20, 50],
    "width": 64,
    "steps": 1500,
    "batch_size": 64,
    "learning_rate": 0.01,
    "momentum": 0.9,
    "sigma_b2": 1e-3,
    "seeds": 3,
    "seed": 0,
    # "trains" = median test accuracy over seeds >= this (chance: 0.1 and 0.5).
    "thresholds": {"digits": 0.8, "spirals": 0.8},
    "curve_points": 60,
}
QUICK_CONFIG = {**DEFAULT_CONFIG, "datasets": ["digits"], "depths": [5, 20], "width": 32,
                "steps": 300, "seeds": 2}


def check_config(config: dict) -> dict:
  """``config`` over :data:`DEFAULT_CONFIG`, validated: a bad name, depth or empty
  grid raises a ValueError here, before any data is loaded or net compiled."""
  unknown = set(config) - set(DEFAULT_CONFIG)
  if unknown:
    raise ValueError(f"remedies: unknown config keys {sorted(unknown)}; valid keys are "
                     f"{sorted(DEFAULT_CONFIG)}.")
  c = {**DEFAULT_CONFIG, **config}
  for key in ("datasets", "settings", "depths"):
    if isinstance(c[key], (str, int)) or not c[key]:
      raise ValueError(f"remedies: {key} must be a non-empty list, got {c[key]!r}; the grid "
                       "would be empty.")
    c[key] = list(c[key])
  for name in c["settings"]:
    if not isinstance(name, str):   # names: they key the store and label the report
      raise ValueError(f"remedies: settings are names from {', '.join(SETTINGS)}, got "
                       f"{name!r}; call train() directly to try a custom Setting.")
    get(name)
  for name in c["datasets"]:
    if name not in DATASETS:
      raise ValueError(f"Unknown dataset {name!r}; valid names are {', '.join(DATASETS)}.")
  for depth in c["depths"]:
    _check_int("remedies", "every depth", depth)
  for key in ("width", "steps", "batch_size", "seeds", "curve_points"):
    _check_int("remedies", key, c[key])
  _check_int("remedies", "seed", c["seed"], low=0)
  for key in ("learning_rate", "sigma_b2"):
    if not isinstance(c[key], (int, float)) or not (c[key] > 0 or key == "sigma_b2" and c[key] == 0):
      raise ValueError(f"remedies: {key} must be a number > 0, got {c[key]!r}.")
  missing = [d for d in c["datasets"] if d not in c["thresholds"]]
  if missing:
    raise ValueError(f"remedies: thresholds has no entry for {missing}; give one accuracy "
                     "in (0, 1) per dataset.")
  # The optimiser and the tanh critical point fail here too, not mid-sweep.
  for name in c["settings"]:
    s = get(name)
    initializer(s, c["sigma_b2"])
    _training.optimizer("momentum", c["learning_rate"], c["momentum"], clip_norm=s.clip_norm,
                        weight_decay=s.weight_decay)
  return c


def _job(c, dataset, name, depth):
  """The store key of one (dataset, setting, depth): everything its numbers depend on."""
  keep = ("width", "steps", "batch_size", "learning_rate", "momentum", "sigma_b2", "seeds",
          "seed", "curve_points")
  return {"dataset": dataset, "setting": name, "definition": get(name)._asdict(),
          "depth": depth, **{k: c[k] for k in keep}}


def summarise(record: dict, threshold: float) -> dict:
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


def run(config: dict, out_dir: str) -> dict:
  """Trains every dataset x setting x depth; writes results, plots and report.md.

  Writes to ``out_dir``: ``config.json``, ``provenance.json``, ``summary.json``
  and ``summary.csv`` (one row per dataset, setting, depth), per dataset
  ``loss_curves_<dataset>.png``, ``accuracy_vs_depth_<dataset>.png`` and
  ``grad_profiles_<dataset>.png``, and ``report.md``. Each finished
  configuration is kept in ``out_dir/store`` (:class:`jaxbp.results.ResultStore`),
  so a rerun resumes. Returns ``{"rows": [...], "report": str}``.

  >>> out = run(QUICK_CONFIG, "/tmp/jaxbp_remedies")  # doctest: +SKIP
  """
  from jaxbp import io as _results
  c = check_config(config)
  os.makedirs(out_dir, exist_ok=True)
  _results.write_json(os.path.join(out_dir, "config.json"), c)
  started = time.time()
  _results.write_json(os.path.join(out_dir, "provenance.json"), _results.provenance(started))
  store = _results.ResultStore(os.path.join(out_dir, "store"))
  grid = [(ds, name, depth) for ds in c["datasets"] for depth in c["depths"]
          for name in c["settings"]]
  data, records, rows = {}, {}, []
  for ds, name, depth in _results.progress(grid, desc="remedies"):
    job = _job(c, ds, name, depth)
    if not store.done(job):
      if ds not in data:
        data[ds] = _data.load(ds, 0)
      start = time.perf_counter()
      record = train(name, ds, depth, c["width"], c["steps"], c["seeds"], c["learning_rate"],
                     c["momentum"], c["batch_size"], c["sigma_b2"], c["seed"],
                     c["curve_points"], data=data[ds])
      record["seconds"] = time.perf_counter() - start   # compile included
      store.save(job, record)
    records[ds, name, depth] = store.load(job)
    rows.append({"dataset": ds, "setting": name, "depth": depth,
                 **summarise(records[ds, name, depth], c["thresholds"][ds])})
  _results.write_json(os.path.join(out_dir, "summary.json"), rows)
  _results.write_csv(os.path.join(out_dir, "summary.csv"),
                     {k: [r[k] for r in rows] for k in rows[0]})
  for ds in c["datasets"]:
    _plot_curves(c, ds, records, os.path.join(out_dir, f"loss_curves_{ds}.png"))
    _plot_accuracy(c, ds, rows, os.path.join(out_dir, f"accuracy_vs_depth_{ds}.png"))
    _plot_profiles(c, ds, records, os.path.join(out_dir, f"grad_profiles_{ds}.png"))
  report = _report(c, rows)
  _results.write_text(os.path.join(out_dir, "report.md"), report)
  _results.write_json(os.path.join(out_dir, "provenance.json"), _results.provenance(started))
  return {"rows": rows, "report": report}


# -- plots and report -----------------------------------------------------------


def _grid_axes(plt, n, size=(3.2, 2.5)):
  cols = min(n, 5)
  rows = -(-n // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False,
                           layout="constrained")
  for ax in axes.flat[n:]:
    ax.set_visible(False)
  return fig, axes.flat


def _plot_curves(c, ds, records, path):
  from jaxbp import io as _results
  plt = _results.pyplot()
  fig, axes = _grid_axes(plt, len(c["settings"]))
  for ax, name in zip(axes, c["settings"]):
    for i, depth in enumerate(c["depths"]):
      r = records[ds, name, depth]
      curve = np.asarray(r["curve"], dtype=float)
      with np.errstate(all="ignore"):
        ax.plot(r["curve_steps"], np.median(curve, axis=0), color=f"C{i}", label=f"L={depth}")
    ax.set(title=name, yscale="log", xlabel="step")
  axes[0].set_ylabel("batch loss (median of seeds)")
  axes[0].legend(fontsize=7)
  fig.suptitle(f"{ds}: training loss (gaps: overflow)")
  _results.save_figure(fig, path)


def _plot_accuracy(c, ds, rows, path):
  from jaxbp import io as _results
  plt = _results.pyplot()
  fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
  for i, name in enumerate(c["settings"]):
    rs = [r for r in rows if r["dataset"] == ds and r["setting"] == name]
    ax.plot([r["depth"] for r in rs], [r["test_accuracy"] for r in rs], marker="o",
            color=f"C{i % 10}", ls="-" if i < 10 else "--", label=name)
  ax.axhline(c["thresholds"][ds], color="k", lw=0.8, ls=":", label="threshold")
  ax.set_xscale("log")
  ax.set_xticks(c["depths"], [str(d) for d in c["depths"]])
  ax.minorticks_off()
  ax.set(xlabel="depth (hidden layers)", ylabel="test accuracy (median)",
         title=f"{ds}: final test accuracy vs depth", ylim=(0, 1.02))
  ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
  _results.save_figure(fig, path)


def _plot_profiles(c, ds, records, path):
  from jaxbp import io as _results
  plt = _results.pyplot()
  fig, axes = _grid_axes(plt, len(c["settings"]))
  for ax, name in zip(axes, c["settings"]):
    for i, depth in enumerate(c["depths"]):
      r = records[ds, name, depth]
      for key, ls in (("grad_norms_start", "-"), ("grad_norms_end", "--")):
        g = np.asarray(r[key], dtype=float)
        if not np.isfinite(g).all():
          continue   # an overflowed run has no finite end profile
        ax.plot(np.arange(1, g.shape[1] + 1), np.median(g, axis=0), ls=ls, color=f"C{i}",
                label=f"L={depth}" if ls == "-" else None)
    ax.set(title=name, yscale="log", xlabel="layer k", xscale="log")
  axes[0].set_ylabel("||dL/dW_k||")
  axes[0].legend(fontsize=7)
  fig.suptitle(f"{ds}: per-layer gradient norms, at init (solid) and after training (dashed)")
  _results.save_figure(fig, path)


def _report(c, rows) -> str:
  lines = [
      "# Remedies for vanishing and exploding gradients (seed 003 §4.4)",
      "",
      f"MLPs of width {c['width']} with `depth` hidden layers, {c['steps']} steps of SGD + "
      f"momentum {c['momentum']} (lr {c['learning_rate']}, batch {c['batch_size']}), "
      f"{c['seeds']} seeds each. A setting *trains* at a depth when the median test "
      "accuracy over seeds reaches the threshold ("
      + ", ".join(f"{d}: {c['thresholds'][d]:g}" for d in c["datasets"]) + ").",
      "",
      "| setting | what |",
      "|---|---|",
  ]
  lines += [f"| {n} | {get(n).about} |" for n in c["settings"]]
  for ds in c["datasets"]:
    rs = {(r["setting"], r["depth"]): r for r in rows if r["dataset"] == ds}
    lines += ["", f"## {ds}", "", "Median test accuracy (seeds reaching the threshold; "
              "`!` = overflow in some seed):", "",
              "| setting | " + " | ".join(f"L={d}" for d in c["depths"]) + " | trains at |",
              "|---|" + "---|" * (len(c["depths"]) + 1)]
    for name in c["settings"]:
      cells = []
      for d in c["depths"]:
        r = rs[name, d]
        mark = "**" if r["trains"] else ""
        bang = " !" if r["overflows"] else ""
        cells.append(f"{mark}{r['test_accuracy']:.3f}{mark} ({r['seeds_trained']}/{r['seeds']}){bang}")
      ok = [str(d) for d in c["depths"] if rs[name, d]["trains"]]
      lines.append(f"| {name} | " + " | ".join(cells) + f" | {', '.join(ok) or 'none'} |")
    lines += ["", "Training loss at init -> after training, and the gradient ratio "
              "||dL/dW_1|| / ||dL/dW_K|| at init -> after training (medians over seeds):", "",
              "| setting | " + " | ".join(f"L={d}" for d in c["depths"]) + " |",
              "|---|" + "---|" * len(c["depths"])]
    for name in c["settings"]:
      cells = []
      for d in c["depths"]:
        r = rs[name, d]
        end = "overflow" if r["overflows"] else f"{r['final_loss']:.3g}"
        cells.append(f"{r['initial_loss']:.3g} -> {end}; "
                     f"{r['grad_ratio_start']:.1e} -> {r['grad_ratio_end']:.1e}")
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines += ["", "## Which depths train", ""]
  for ds in c["datasets"]:
    for name in c["settings"]:
      ok = [r["depth"] for r in rows if r["dataset"] == ds and r["setting"] == name and r["trains"]]
      lines.append(f"- {ds}, {name}: {'depths ' + ', '.join(map(str, ok)) if ok else 'no depth'}")
  lines += ["", "Figures: `loss_curves_<dataset>.png`, `accuracy_vs_depth_<dataset>.png`, "
            "`grad_profiles_<dataset>.png`.", ""]
  return "\n".join(lines)
