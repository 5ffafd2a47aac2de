"""Training with optax as one compiled loop; the optimizers are :mod:`jaxbp.train.optimizers`.

Seed 001's gradient descent ``w_{t+1} = w_t - eta grad L(w_t)`` in its three
regimes: batch (all n samples per step, ``batch_size=None``), stochastic
(``batch_size=1``) and mini-batch (``batch_size=b``, reshuffled every epoch from
a PRNG key; an epoch is ``n // b`` steps, the ``n % b`` left over wait for the
next one). The steps run in one ``lax.scan``, or, with seed 001's stopping rule
``||grad||_2 <= tol``, in one ``lax.while_loop`` that stops early on the device.
``fit(..., monitor=k)`` also records :func:`jaxbp.inspect`'s per-layer report
every k-th step, inside the loop.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from jaxbp.core import backprop as _backprop
from jaxbp.core import losses as _losses
from jaxbp.core.checks import is_int as _is_int
from jaxbp.core.nets import MLP, Family
from jaxbp.measure.inspect import inspect_with_grads
import jaxbp.train.optimizers as optimizers

GRAD_METHODS = ("autodiff", "backprop")
OPTIMIZERS = optimizers.OPTIMIZERS
optimizer = optimizers.optimizer


# -- one step ------------------------------------------------------------------


class StepInfo(NamedTuple):
  """What one step measures, at the parameters before its update: the batch
  ``loss``, the batch ``accuracy`` (NaN for regression) and ``grad_norm``, the
  global norm ``sqrt(sum_k ||dL/dtheta_k||^2)`` of the raw (unclipped) gradient."""
  loss: jax.Array
  accuracy: jax.Array
  grad_norm: jax.Array


def global_norm(tree) -> jax.Array:
  """``sqrt(sum of squares)`` over every leaf of a pytree."""
  return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(tree)))


def accuracy(loss, out, y) -> jax.Array:
  """Fraction of correct predictions: ``argmax`` against integer or one-hot labels
  for categorical losses, probabilities cut at 1/2 (logits at 0) for binary
  ones; NaN for a regression loss."""
  loss = _losses.get(loss)
  y = jnp.asarray(y)
  if loss.categorical:
    labels = y if jnp.issubdtype(y.dtype, jnp.integer) else jnp.argmax(y, axis=-1)
    return jnp.mean((jnp.argmax(out, axis=-1) == labels).astype(out.dtype))
  if loss.name.startswith("binary_cross_entropy"):
    cut = 0.0 if loss.name.endswith("logits") else 0.5
    return jnp.mean(((out > cut) == (y > 0.5)).astype(out.dtype))
  return jnp.full((), jnp.nan, out.dtype)


def _value_and_grad(net, loss, grad_method, reduction):
  """``(params, x, y) -> ((loss, output), grads)`` by autodiff or the hand recursion."""
  if grad_method == "backprop":
    def vg(params, x, y):
      out = _backprop.backward(net, loss, params, x, y, reduction)
      return (out.value, out.trace.h[-1]), out.grads
    return vg

  def loss_and_output(params, x, y):  # jaxbp.objective, keeping the output for accuracy
    out = net.apply(params, x)
    return loss.fn(out, y, reduction), out
  return jax.value_and_grad(loss_and_output, has_aux=True)


def _make_step(net, loss, tx, grad_method, reduction, reported=False):
  """One update: ``(params, opt_state, StepInfo, bad_layer)``, and with ``reported``
  the :class:`~jaxbp.measure.report.LayerReport` of the params before it, whose
  backward pass is also the update's gradient (one pass, not two)."""
  vg = _value_and_grad(net, loss, grad_method, reduction)

  def loss_and_output(params, x, y):
    out = net.apply(params, x)
    return loss.fn(out, y, reduction), out

  def step(params, opt_state, x, y):
    if reported:
      report, grads, out = inspect_with_grads(loss_and_output, params, x, y, has_aux=True)
      value = report.loss
    else:
      (value, out), grads = vg(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    info = StepInfo(value, accuracy(loss, out, y), global_norm(grads))
    new = optax.apply_updates(params, updates), opt_state, info, _first_bad_layer(value, grads)
    return new + (report,) if reported else new
  return step


def _monitored_step(net, loss, tx, reduction, every):
  """``(t, params, opt_state, x, y) -> (..., report)``: the reported step on steps
  ``t % every == 0``, a plain autodiff step (and a NaN report) on the others."""
  reported = _make_step(net, loss, tx, "autodiff", reduction, reported=True)
  if every == 1:
    return lambda t, *a: reported(*a)
  plain = _make_step(net, loss, tx, "autodiff", reduction)

  def skipped(*a):
    report = jax.eval_shape(reported, *a)[-1]
    return plain(*a) + (jax.tree_util.tree_map(_nans, report),)

  return lambda t, *a: jax.lax.cond(t % every == 0, reported, skipped, *a)


def _nans(s):
  return jnp.full(s.shape, jnp.nan, s.dtype)


@functools.partial(jax.jit, static_argnums=(0, 1, 2), static_argnames=("grad_method", "reduction"))
def train_step(net: Family, loss, tx, params, opt_state, x, y, grad_method="autodiff",
               reduction="mean"):
  """One jitted update: ``(params, opt_state, StepInfo)``; ``net``, ``loss`` and ``tx``
  are static (hashable).

  >>> net, tx = MLP((3, 3, 2, 3)), optimizer("sgd", 0.1)
  >>> params = net.init(jax.random.PRNGKey(0))
  >>> params, state, info = train_step(net, "softmax_cross_entropy", tx, params,
  ...     tx.init(params), jnp.ones((2, 3)), jnp.array([0, 2]))
  """
  step = _make_step(net, _losses.get(loss), tx, _check_method(grad_method), reduction)
  return step(params, opt_state, x, y)[:3]


def _check_method(grad_method):
  _check(grad_method in GRAD_METHODS, f"grad_method must be one of {GRAD_METHODS}, got "
         f"{grad_method!r}.", "training")
  return grad_method


@functools.partial(jax.jit, static_argnums=(0, 1), static_argnames=("reduction",))
def evaluate(net: Family, loss, params, x, y, reduction="mean"):
  """``(loss, accuracy)`` of ``params`` on ``(x, y)``, e.g. a test set."""
  loss = _losses.get(loss)
  out = net.apply(params, x)
  return loss.fn(out, y, reduction), accuracy(loss, out, y)


# -- the loop ------------------------------------------------------------------


class Fit(NamedTuple):
  """What :func:`fit` returns: the trained ``params`` and ``opt_state``;
  ``history``, a :class:`StepInfo` of arrays of length ``steps`` whose row t is
  measured before update t (with ``tol``, the loop stops at the first row with
  ``grad_norm <= tol``, keeps that row but not its update, and leaves the rows
  after it NaN); ``num_steps``, the updates made; ``converged``, whether ``tol``
  was met (False without ``tol``).

  Overflow: the first step whose loss or gradient is not finite is recorded in
  ``overflow_step`` and ``overflow_layer`` (the first params entry with a
  non-finite gradient; ``len(params)`` when only the loss overflowed). That
  step's update is not applied: ``params`` are the last finite ones, the
  overflow row of ``history`` is kept as measured and the rows after it are NaN.
  Both are -1 when nothing overflowed. :func:`status` names the outcome.

  ``reports``: with ``fit(..., monitor=k)``, a :class:`~jaxbp.measure.report.LayerReport`
  whose arrays carry a leading axis of ``ceil(steps / k)`` recorded steps (row r
  is step ``r k``, before its update; NaN where the loop had stopped); None
  without ``monitor``. :func:`jaxbp.train.monitoring.write_monitor` writes it out."""
  params: Any
  opt_state: Any
  history: StepInfo
  num_steps: jax.Array
  converged: jax.Array
  overflow_step: jax.Array
  overflow_layer: jax.Array
  reports: Any = None


def status(result: Fit) -> str:
  """``"overflow"``, ``"converged"`` or ``"ok"`` (host-side, after the run)."""
  if int(result.overflow_step) >= 0:
    return "overflow"
  return "converged" if bool(result.converged) else "ok"


def _first_bad_layer(value, grads):
  """Index of the first params entry with a non-finite gradient; G if only the
  loss is non-finite; -1 if everything is finite."""
  per_layer = jnp.stack([jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf))
                                            for leaf in jax.tree_util.tree_leaves(p)]
                                           or [jnp.array(True)]))
                         for p in grads] + [jnp.isfinite(value)])
  return jnp.where(jnp.all(per_layer), -1, jnp.argmin(per_layer))


def _batch_fn(x, y, key, batch_size):
  """``t -> (x_t, y_t)``: all data, or batch ``t % (n // b)`` of epoch ``t // (n // b)``."""
  n = x.shape[0]
  if batch_size == n:
    return lambda t: (x, y)
  per_epoch = n // batch_size

  def batch(t):
    # A fresh permutation for each epoch, from the key folded with the epoch number.
    perm = jax.random.permutation(jax.random.fold_in(key, t // per_epoch), n)
    idx = jax.lax.dynamic_slice_in_dim(perm, (t % per_epoch) * batch_size, batch_size)
    return x[idx], y[idx]
  return batch


@functools.partial(jax.jit, static_argnames=(
    "net", "loss", "tx", "steps", "batch_size", "tol", "grad_method", "reduction", "every"))
def _fit(params, x, y, key, *, net, loss, tx, steps, batch_size, tol, grad_method, reduction,
         every):
  if every:
    step = _monitored_step(net, loss, tx, reduction, every)
  else:
    plain = _make_step(net, loss, tx, grad_method, reduction)
    step = lambda t, *a: plain(*a) + (None,)
  batch = _batch_fn(x, y, key, batch_size)
  opt_state = tx.init(params)
  dtype = jax.tree_util.tree_leaves(params)[0].dtype
  history = StepInfo(*(jnp.full((steps,), jnp.nan, dtype) for _ in StepInfo._fields))
  no = jnp.asarray(-1)

  if tol is None:
    # A fixed number of steps: one lax.scan. After an overflow the remaining
    # steps still run (a scan cannot stop) but change nothing and log NaN.
    def scan_body(carry, t):
      params, opt_state, o_step, o_layer = carry
      new_params, new_state, info, bad_layer, report = step(t, params, opt_state, *batch(t))
      before = o_step < 0
      now = before & (bad_layer >= 0)
      keep = lambda new, old: jnp.where(before & ~now, new, old)
      info = StepInfo(*(jnp.where(before, v.astype(dtype), jnp.nan) for v in info))
      report = jax.tree_util.tree_map(lambda v: jnp.where(before, v, jnp.nan), report)
      return (jax.tree_util.tree_map(keep, new_params, params),
              jax.tree_util.tree_map(keep, new_state, opt_state),
              jnp.where(now, t, o_step), jnp.where(now, bad_layer, o_layer)), (info, report)

    (params, opt_state, o_step, o_layer), (history, reports) = jax.lax.scan(
        scan_body, (params, opt_state, no, no), jnp.arange(steps))
    made = jnp.where(o_step >= 0, o_step, steps)
    reports = jax.tree_util.tree_map(lambda a: a[::every], reports) if every else None
    return Fit(params, opt_state, history, made, jnp.asarray(False), o_step, o_layer, reports)

  # With seed 001's stopping rule: a while_loop that ends inside the compiled
  # program at the first gradient with norm <= tol (or the first overflow).
  def cond(carry):
    t, _, _, _, _, stop, overflow_step, _ = carry
    return (t < steps) & ~stop & (overflow_step < 0)

  def body(carry):
    t, params, opt_state, history, reports, _, _, _ = carry
    new_params, new_state, info, bad_layer, report = step(t, params, opt_state, *batch(t))
    # Seed 001: stop when ||grad f(w)|| <= tol, keeping w (no update from it).
    stop = info.grad_norm <= tol
    overflow = bad_layer >= 0
    keep = lambda new, old: jnp.where(stop | overflow, old, new)
    params = jax.tree_util.tree_map(keep, new_params, params)
    opt_state = jax.tree_util.tree_map(keep, new_state, opt_state)
    history = StepInfo(*(h.at[t].set(v.astype(dtype)) for h, v in zip(history, info)))
    if every:  # row t // every on recorded steps; the others index past the end and drop
      row = jnp.where(t % every == 0, t // every, reports_len)
      reports = jax.tree_util.tree_map(lambda b, v: b.at[row].set(v, mode="drop"), reports,
                                       report)
    return (t + 1, params, opt_state, history, reports, stop, jnp.where(overflow, t, -1),
            jnp.where(overflow, bad_layer, -1))

  reports, reports_len = None, -(-steps // every) if every else 0
  if every:
    shapes = jax.eval_shape(step, 0, params, opt_state, *batch(0))[-1]
    reports = jax.tree_util.tree_map(
        lambda s: jnp.full((reports_len,) + s.shape, jnp.nan, s.dtype), shapes)
  init = (jnp.asarray(0), params, opt_state, history, reports, jnp.asarray(False), no, no)
  t, params, opt_state, history, reports, stop, o_step, o_layer = jax.lax.while_loop(
      cond, body, init)
  made = t - (stop | (o_step >= 0)).astype(t.dtype)
  return Fit(params, opt_state, history, made, stop, o_step, o_layer, reports)


def fit(net: Family, loss, params, x, y, tx: optax.GradientTransformation, *, steps: int,
        batch_size: Optional[int] = None, key=None, tol: Optional[float] = None,
        grad_method: str = "autodiff", reduction: str = "mean",
        monitor: Union[bool, int] = False) -> Fit:
  """Trains ``params`` for ``steps`` updates in one compiled loop.

  Step t takes a batch, computes ``L`` and ``g = dL/dtheta`` on it and applies
  ``tx.update``. Returns a :class:`Fit`.

  Args:
    net, loss, params: the spec, a loss name (or Loss), ``net.init(key)``.
    x, y: the training data, ``(n, in)`` and ``(n, ...)``.
    tx: an optax optimizer such as ``optimizer("momentum", 0.01)``; static, so
      reuse one object to reuse the compiled loop.
    steps: the number of updates (the budget, with ``tol``).
    batch_size: None for batch gradient descent, 1 stochastic, b mini-batch.
    key: a PRNG key for the per-epoch shuffles; needed when ``batch_size < n``.
    tol: stop at the first batch gradient with global norm ``<= tol`` (seed 001).
    grad_method: ``"autodiff"`` (``jax.value_and_grad``) or ``"backprop"`` (the
      hand recursion of :mod:`jaxbp.backprop`): the same numbers either way.
    reduction: ``"mean"`` or ``"sum"`` over the batch.
    monitor: record gradient flow inside the compiled loop: True on every step,
      an int k on steps 0, k, 2k, ... (:func:`jaxbp.inspect`'s per-layer q,
      delta_sq and per-leaf grad_sq, in ``Fit.reports``). A recorded step takes
      its update's gradient from the same backward pass that measures the
      layers, so the numbers are those of an unmonitored run. Needs
      ``grad_method="autodiff"``.

  >>> net = MLP((3, 3, 2, 3), "relu")
  >>> x = jnp.array([[1, 2, 1.5], [3, 4, 2.3], [5, 6, 1.2]]); y = jnp.array([0, 2, 1])
  >>> out = fit(net, "softmax_cross_entropy", net.init(jax.random.PRNGKey(0)), x, y,
  ...           optimizer("sgd", 0.01, momentum=0.9), steps=100)
  >>> out.history.loss.shape
  (100,)
  """
  x, y = jnp.asarray(x), jnp.asarray(y)
  rows = lambda a: a.shape[0] if a.ndim else 0
  _check(x.ndim and y.ndim and rows(x) == rows(y), f"x and y need one row per sample, but "
         f"x has {rows(x)} rows (shape {x.shape}) and y has {rows(y)} (shape {y.shape}).")
  n, batch_size = x.shape[0], x.shape[0] if batch_size is None else batch_size
  _check(_is_int(steps) and steps >= 1, f"steps must be an int >= 1, got {steps!r}.")
  _check(_is_int(batch_size) and 1 <= batch_size <= n, f"batch_size must be an int in "
         f"[1, {n}] (the number of samples), got {batch_size!r}; None means all {n}.")
  _check(batch_size == n or key is not None, "mini-batches are reshuffled every epoch "
         "from a PRNG key: pass key=jax.random.PRNGKey(seed).")
  _check(tol is None or float(tol) > 0, f"tol must be > 0 or None, got {tol!r}.")
  _check(isinstance(tx, optax.GradientTransformation), "tx must be an optax "
         f"GradientTransformation such as optimizer('sgd', 0.1), got {type(tx).__name__}.")
  _check(monitor is False or monitor is True or (_is_int(monitor) and monitor >= 0),
         f"monitor must be True, False or an int k >= 1 (record every k-th step; 0 is off), "
         f"got {monitor!r}.")
  every = int(monitor)
  _check(not every or grad_method == "autodiff", "monitor records the layers through "
         "jaxbp.inspect's autodiff pass, which is also the update's gradient: use "
         f"grad_method='autodiff' with it, not {grad_method!r}.")
  net.check_params(params)
  key = jax.random.PRNGKey(0) if key is None else key  # unused for full batches
  return _fit(params, x, y, key, net=net, loss=_losses.get(loss), tx=tx, steps=steps,
              batch_size=batch_size, tol=None if tol is None else float(tol),
              grad_method=_check_method(grad_method), reduction=reduction, every=every)


def _check(ok, message, where="fit"):
  if not ok:
    raise ValueError(f"{where}: {message}")
