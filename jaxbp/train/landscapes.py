"""Test functions for optimisers, and gradient descent on them (seed 000 §7.8).

Himmelblau's function has four minima, all with f = 0::

    f(x, y) = (x^2 + y - 11)^2 + (x + y^2 - 7)^2
    minima: (3, 2), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126)

The seed runs ``x <- x - 0.01 grad f(x)`` for 200 steps from ``[1, 0]``,
``[-4, 0]`` and ``[4, 0]``; these reach (3, 2), (-3.779310, -3.283186) and
(3.584428, -1.848126), and none reaches (-2.805118, 3.131312): a vmapped grid
of starts finds all four (the study :mod:`jaxbp.studies.himmelblau` draws and
saves it). Functions take points ``p`` of shape ``(..., 2)`` and return ``(...)``.

References:
  Himmelblau, *Applied Nonlinear Programming* (1972).
  Rosenbrock, "An automatic method for finding the greatest or least value of a
  function", The Computer Journal 3 (1960).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp.train.training as _training


def himmelblau(p):
  """``(x^2 + y - 11)^2 + (x + y^2 - 7)^2`` over the last axis of ``p``.

  >>> float(himmelblau(jnp.array([3.0, 2.0])))
  0.0
  """
  x, y = p[..., 0], p[..., 1]
  return (x ** 2 + y - 11) ** 2 + (x + y ** 2 - 7) ** 2


def rosenbrock(p, a: float = 1.0, b: float = 100.0):
  """``(a - x)^2 + b (y - x^2)^2``: one minimum at (a, a^2) in a curved valley."""
  x, y = p[..., 0], p[..., 1]
  return (a - x) ** 2 + b * (y - x ** 2) ** 2


def quadratic_bowl(p, condition: float = 10.0):
  """``(x^2 + condition * y^2) / 2``: convex, Hessian eigenvalues 1 and ``condition``."""
  x, y = p[..., 0], p[..., 1]
  return 0.5 * (x ** 2 + condition * y ** 2)


HIMMELBLAU_MINIMA = np.array([[3.0, 2.0], [-2.805118, 3.131312],
                              [-3.779310, -3.283186], [3.584428, -1.848126]])
SEED_STARTS = ((1.0, 0.0), (-4.0, 0.0), (4.0, 0.0))

FUNCTIONS = {"himmelblau": himmelblau, "rosenbrock": rosenbrock, "quadratic_bowl": quadratic_bowl}
MINIMA = {"himmelblau": HIMMELBLAU_MINIMA, "rosenbrock": np.array([[1.0, 1.0]]),
          "quadratic_bowl": np.array([[0.0, 0.0]])}


class Trajectory(NamedTuple):
  """A descent path. Attributes: ``points (..., steps + 1, 2)`` from the start
  on, ``values (..., steps + 1)`` of f there."""
  points: jax.Array
  values: jax.Array


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("steps", "tx"))
def _descend(f, start, steps, tx):
  def body(carry, _):
    p, state = carry
    updates, state = tx.update(jax.grad(f)(p), state, p)
    p = p + updates
    return (p, state), p

  _, points = jax.lax.scan(body, (start, tx.init(start)), None, length=steps)
  points = jnp.concatenate([start[None, :], points], axis=0)
  return Trajectory(points, f(points))


def descend(f, starts, learning_rate: float = 0.01, steps: int = 200, tx=None) -> Trajectory:
  """Gradient descent ``p <- p - eta grad f(p)`` from one start ``(2,)`` or many ``(m, 2)``.

  Many starts run together under ``jax.vmap``. ``tx`` swaps in any optax
  optimizer (default: plain SGD at ``learning_rate``, as in the seed).

  >>> traj = descend(himmelblau, jnp.array([1.0, 0.0]), 0.01, 200)
  >>> [round(float(v), 4) for v in traj.points[-1]]
  [3.0, 2.0]
  """
  tx = _training.optimizer("sgd", learning_rate) if tx is None else tx
  starts = jnp.asarray(starts, dtype=jnp.result_type(float))
  if starts.shape[-1:] != (2,) or starts.ndim > 2:
    raise ValueError(f"descend: starts must have shape (2,) or (m, 2), got {starts.shape}.")
  if starts.ndim == 1:
    return _descend(f, starts, steps=steps, tx=tx)
  return jax.vmap(lambda s: _descend(f, s, steps=steps, tx=tx))(starts)


def grid(low: float, high: float, n: int) -> jax.Array:
  """``n * n`` starts on a square grid over ``[low, high]^2``, shape ``(n * n, 2)``."""
  axis = jnp.linspace(low, high, n)
  return jnp.stack(jnp.meshgrid(axis, axis), axis=-1).reshape(-1, 2)


def nearest(points, minima, atol: float = 1e-3) -> np.ndarray:
  """Index of the minimum within ``atol`` of each point, or -1 if none is."""
  points, minima = np.asarray(points).reshape(-1, 2), np.asarray(minima).reshape(-1, 2)
  dist = np.linalg.norm(points[:, None, :] - minima[None, :, :], axis=-1)
  dist = np.where(np.isnan(dist), np.inf, dist)   # diverged runs match nothing
  idx = np.argmin(dist, axis=1)
  return np.where(dist[np.arange(len(points)), idx] <= atol, idx, -1)


def distinct(points, f, grad_tol: float = 1e-6, atol: float = 1e-3) -> np.ndarray:
  """The distinct stationary points among ``points``: those with ``||grad f|| <= grad_tol``,
  merged when closer than ``atol``; shape ``(k, 2)``."""
  points = np.asarray(points)
  gnorm = np.linalg.norm(np.asarray(jax.vmap(jax.grad(f))(jnp.asarray(points))), axis=-1)
  found = []
  for p in points[gnorm <= grad_tol]:   # NaN norms fail the test too
    if all(np.linalg.norm(p - q) > atol for q in found):
      found.append(p)
  return np.array(sorted(found, key=tuple)).reshape(-1, 2)
