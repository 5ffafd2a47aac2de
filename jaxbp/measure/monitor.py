"""Gradient flow during training, inside the compiled loop: ``monitor(loss_fn, tx)``.

The monitored step is an ordinary optax step whose gradient comes from
:func:`jaxbp.measure.inspect.inspect_with_grads`: the same backward pass gives
``dL/dparams`` for the update and every layer's ``delta`` for the report, so
monitoring costs the probes' additions and the per-layer reductions, not a
second pass. :func:`run` scans the steps on the device and returns the
reports stacked along a leading step axis: no host round-trip per step.

>>> import optax, jax.numpy as jnp
>>> loss_fn = lambda p, x: jnp.mean(jnp.tanh(x @ p["W"]) ** 2)
>>> step = monitor(loss_fn, optax.sgd(0.1))
>>> params = {"W": jnp.ones((3, 2))}
>>> params, opt_state, report = step(params, optax.sgd(0.1).init(params), jnp.ones((4, 3)))
>>> report.names
('W · dot_general',)
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import optax

from jaxbp.measure.inspect import inspect_with_grads


def monitor(loss_fn: Callable[..., Any], tx: optax.GradientTransformation) -> Callable:
  """A train step that also returns the :class:`~jaxbp.measure.report.LayerReport`.

  Args:
    loss_fn: ``(params, *args) -> scalar``, as for :func:`~jaxbp.measure.inspect.inspect`.
    tx: any optax optimiser.

  Returns:
    ``step(params, opt_state, *args) -> (params, opt_state, report)``, jitted.
    The report is taken at the params before the update; ``opt_state`` must be
    ``tx.init(params)`` or what the previous step returned (a TypeError names it
    otherwise). The params must be a
    pytree of float arrays (for an equinox module, step on ``eqx.partition``'s
    arrays and close over the rest in ``loss_fn``).
  """
  if not isinstance(tx, optax.GradientTransformation):
    raise TypeError(f"monitor: tx must be an optax.GradientTransformation, got {type(tx)}.")

  @jax.jit
  def step(params, opt_state, *args):
    _check_opt_state(tx, params, opt_state, "step")
    return _reported_step(loss_fn, tx, params, opt_state, args)

  return step


def _check_opt_state(tx, params, opt_state, where):
  # optax's own error for a missing or foreign state is about NoneType or tree
  # structures deep in the optimiser; the structure is known from params alone.
  want = jax.tree_util.tree_structure(jax.eval_shape(tx.init, params))
  got = jax.tree_util.tree_structure(opt_state)
  if opt_state is None or got != want:
    raise TypeError(
        f"monitor {where}: opt_state must be the optimiser's state for these params, "
        f"tx.init(params) (a {type(jax.eval_shape(tx.init, params)).__name__}); got "
        f"{'None' if opt_state is None else type(opt_state).__name__} of structure {got}. "
        "Start from opt_state = tx.init(params) and pass on the one each step returns.")


def run(loss_fn: Callable[..., Any], tx: optax.GradientTransformation, params, batches,
        every: int = 1, opt_state: Optional[Any] = None):
  """Trains over ``batches`` in one ``lax.scan``, reporting every ``every``-th step.

  Args:
    loss_fn, tx: as for :func:`monitor`.
    params: the starting params.
    batches: a tuple of the step's ``*args``, each with a leading step axis ``T``.
    every: report on steps ``0, every, 2 every, ...``; the others are plain optax
      steps (no probes). ``T`` must be a multiple of ``every``.
    opt_state: the optimiser state to start from (default ``tx.init(params)``).

  Returns:
    ``(params, opt_state, reports)``: reports a LayerReport whose arrays carry
    a leading axis of ``T // every`` recorded steps.
  """
  batches = tuple(batches)
  T = jax.tree_util.tree_leaves(batches)[0].shape[0]
  if not (isinstance(every, int) and every >= 1 and T % every == 0):
    raise ValueError(f"run: every must be an int >= 1 dividing the {T} steps, got {every!r}.")
  if opt_state is None:
    opt_state = tx.init(params)
  _check_opt_state(tx, params, opt_state, "run")
  chunks = jax.tree_util.tree_map(lambda a: a.reshape((T // every, every) + a.shape[1:]), batches)
  return _run(loss_fn, tx, params, opt_state, chunks)


def _reported_step(loss_fn, tx, params, opt_state, args):
  report, grads = inspect_with_grads(loss_fn, params, *args)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, report


def _plain_step(loss_fn, tx, params, opt_state, args):
  grads = jax.grad(loss_fn)(params, *args)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def _run(loss_fn, tx, params, opt_state, chunks):
  @jax.jit
  def loop(params, opt_state, chunks):
    def chunk(carry, batch):
      params, opt_state = carry
      first = jax.tree_util.tree_map(lambda a: a[0], batch)
      params, opt_state, report = _reported_step(loss_fn, tx, params, opt_state, first)
      rest = jax.tree_util.tree_map(lambda a: a[1:], batch)

      def plain(carry, args):
        return _plain_step(loss_fn, tx, *carry, args), None

      (params, opt_state), _ = jax.lax.scan(plain, (params, opt_state), rest)
      return (params, opt_state), report

    (params, opt_state), reports = jax.lax.scan(chunk, (params, opt_state), chunks)
    return params, opt_state, reports

  return loop(params, opt_state, chunks)
