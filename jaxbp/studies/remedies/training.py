"""Seed 003 §4.4's remedies as training recipes, and one compiled training run.

Backprop multiplies the output gradient by one factor per layer (seed 003 §4.4)::

    dL/dh_{k-1} = dL/dh_L  prod_{t=k..L} phi'(z_t) W_t^T

A sigmoid has ``phi' <= 1/4``, so with Glorot/Xavier weights the product shrinks
geometrically and the first layers of a deep net barely move: the gradient
vanishes. The seed lists what helps; each is a :class:`Remedy`, named in
:data:`REMEDIES` (the names are the study's "settings"):

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

:func:`train` trains several seeds of one remedy at one depth at once
(``jax.vmap`` over the seed axis of one compiled :func:`jaxbp.training.fit`) and
records the loss curve, the test accuracy, the overflow status and the
per-layer gradient norms ``||dL/dW_k||`` (from
:func:`jaxbp.diagnostics.gradient_norms`) at the start and at the end of
training.

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
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.core import checks
from jaxbp.core import initializers as _init
from jaxbp.core.nets import MLP
from jaxbp.measure import diagnostics as _diagnostics
from jaxbp.studies.spectrum.sampling import single_thread_blas
from jaxbp.theory import meanfield as _mf
from jaxbp.train import data as _data
from jaxbp.train import training as _training

LOSS = "softmax_cross_entropy"
DATASETS = _data.DATASETS


class Remedy(NamedTuple):
  """One way to build and train a deep net: a training recipe.

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


# The keys are the setting names of the study's config, store, tables and report.
REMEDIES = {
    "sigmoid_xavier": Remedy("sigmoid", "glorot", about="sigmoid, Glorot/Xavier init (baseline)"),
    "tanh_critical": Remedy("tanh", "critical", about="tanh, Gaussian W at chi_1 = 1"),
    "tanh_orthogonal": Remedy("tanh", "orthogonal_critical",
                              about="tanh, orthogonal W at chi_1 = 1"),
    "relu_he": Remedy("relu", "he", about="ReLU, He init"),
    "sigmoid_residual": Remedy("sigmoid", "glorot", residual=True,
                               about="baseline + residual connections"),
    "sigmoid_batchnorm": Remedy("sigmoid", "glorot", batchnorm=True,
                                about="baseline + batch norm"),
    "relu_large": Remedy("relu", "gaussian", sigma_w2=4.0,
                         about="ReLU, sigma_w2 = 4 (chi_1 = 2: explodes)"),
    "relu_large_clip": Remedy("relu", "gaussian", sigma_w2=4.0, clip_norm=1.0,
                              about="exploding ReLU + gradient clipping at norm 1"),
    "relu_large_decay": Remedy("relu", "gaussian", sigma_w2=4.0, weight_decay=1e-2,
                               about="exploding ReLU + weight decay 1e-2"),
}


def initializer(remedy: Remedy, sigma_b2: float) -> _init.Initializer:
  """The :class:`jaxbp.initializers.Initializer` a remedy asks for; a ValueError
  where a critical init has no critical sigma_w2 at ``sigma_b2``."""
  if remedy.init in ("critical", "orthogonal_critical"):
    sigma_w2 = float(_mf.critical_sigma_w2(remedy.activation, sigma_b2))
    if not math.isfinite(sigma_w2):
      raise ValueError(f"{remedy.activation} has no critical sigma_w2 at sigma_b2={sigma_b2}.")
    if remedy.init == "critical":
      return _init.gaussian(sigma_w2, float(sigma_b2))
    return _init.orthogonal(math.sqrt(sigma_w2), float(sigma_b2))
  if remedy.init == "gaussian":
    return _init.gaussian(float(remedy.sigma_w2), 0.0)
  return _init.get(remedy.init)


def get(name) -> Remedy:
  """A remedy by its setting name in :data:`REMEDIES` (or a :class:`Remedy` passed
  through); a ValueError naming the valid names otherwise."""
  if isinstance(name, Remedy):
    return name
  if isinstance(name, str) and name in REMEDIES:
    return REMEDIES[name]
  raise ValueError(f"Unknown setting {name!r}; valid names are {', '.join(REMEDIES)}.")


# -- one (remedy, dataset, depth), all seeds -------------------------------------


def curve(loss, points: int):
  """The batch-loss history averaged over ``points`` equal windows; NaN (after an
  overflow) stays NaN. Returns ``(curve, window centres)``."""
  loss = np.asarray(loss, dtype=float)
  steps = loss.shape[-1]
  edges = np.linspace(0, steps, min(points, steps) + 1).astype(int)
  means = np.stack([loss[..., a:b].mean(axis=-1) for a, b in zip(edges[:-1], edges[1:])], -1)
  return means, (edges[:-1] + edges[1:] - 1) / 2


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
    setting: a name in :data:`REMEDIES` or a :class:`Remedy`.
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
  depth = checks.positive_int(depth, "depth", "train")
  width = checks.positive_int(width, "width", "train")
  steps = checks.positive_int(steps, "steps", "train")
  seeds = checks.positive_int(seeds, "seeds", "train")
  d = _data.load(dataset, 0) if data is None else data
  n_in, n_out = d.x_train.shape[1], int(np.max(np.asarray(d.y_train))) + 1
  net = MLP.uniform(n_in, width, depth, n_out, activation=s.activation, stack=True,
                    residual=s.residual, batchnorm=s.batchnorm)
  tx = _training.optimizer("momentum", learning_rate, momentum, clip_norm=s.clip_norm,
                           weight_decay=s.weight_decay)
  init = initializer(s, sigma_b2)
  keys = [jax.random.split(jax.random.PRNGKey(seed + i)) for i in range(seeds)]
  # Params are drawn outside the compiled loop, seed by seed: remedies that share
  # a net and an optimizer (tanh Gaussian/orthogonal, relu He/large) then share
  # one compiled program, and eager init ops are cached by shape. (A vmapped
  # program with orthogonal init hangs XLA:CPU; see spectrum.sampling.)
  with single_thread_blas():   # orthogonal init's QR: see there
    params = jax.tree_util.tree_map(lambda *a: jnp.stack(a),
                                    *[net.init(k[0], init) for k in keys])
  shuffle = jnp.stack([k[1] for k in keys])
  r = _train_seeds(params, shuffle, d, net=net, tx=tx, steps=steps,
                   batch_size=min(batch_size, d.x_train.shape[0]))
  loss_curve, at = curve(r.fit.history.loss, curve_points)
  per_seed = lambda i: jax.tree_util.tree_map(lambda a: a[i], r.fit)
  return {
      "test_accuracy": np.asarray(r.test_accuracy), "train_accuracy": np.asarray(r.train_accuracy),
      "initial_loss": np.asarray(r.initial_loss), "final_loss": np.asarray(r.final_loss),
      "status": [_training.status(per_seed(i)) for i in range(seeds)],
      "overflow_step": np.asarray(r.fit.overflow_step),
      "overflow_layer": np.asarray(r.fit.overflow_layer),
      "grad_norms_start": np.asarray(r.grad_norms_start),
      "grad_norms_end": np.asarray(r.grad_norms_end),
      "curve": loss_curve, "curve_steps": at,
  }


