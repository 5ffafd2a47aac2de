"""Central finite differences and tree comparison, for checking gradients.

``numerical_grad`` perturbs one scalar at a time::

    dF/dtheta_i ~ (F(theta + eps e_i) - F(theta - eps e_i)) / (2 eps)

with truncation error O(eps^2 F''') and round-off O(ulp(F) / eps); in float64
``eps = 1e-6`` balances the two near 1e-10 relative error for smooth F. Run it
in float64 (``jax.config.update("jax_enable_x64", True)``) and away from kinks
such as ReLU's at 0.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np


def numerical_grad(f: Callable, params, *args, eps: float = 1e-6):
  """Central-difference gradient of scalar ``f(params, *args)`` w.r.t. ``params``.

  Returns a pytree shaped like ``params``. Costs two evaluations of ``f`` per
  scalar parameter: meant for small nets.
  """
  leaves, treedef = jax.tree_util.tree_flatten(params)
  for leaf in leaves:
    if jnp.asarray(leaf).dtype != jnp.float64:
      raise TypeError(
          f"numerical_grad needs float64 leaves for meaningful differences, got "
          f"{jnp.asarray(leaf).dtype}; enable jax_enable_x64 and cast the params.")
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  fn = jax.jit(lambda v: f(unravel(v), *args))
  eye = jnp.eye(flat.size, dtype=flat.dtype) * eps
  # One vmapped call per side: all perturbations evaluated together.
  plus = jax.vmap(lambda d: fn(flat + d))(eye)
  minus = jax.vmap(lambda d: fn(flat - d))(eye)
  return unravel((plus - minus) / (2 * eps))


class LeafError(NamedTuple):
  """One leaf's agreement: ``max|a - b| / max(max|b|, floor)``."""
  path: str
  shape: tuple
  max_abs_error: float
  relative_error: float


def relative_errors(a, b):
  """Per-leaf relative error of ``a`` against the reference ``b``.

  The error is normalised by the reference leaf's largest entry, so that a tiny
  entry next to big ones does not blow up the ratio. A reference leaf that is
  exactly zero (a dead ReLU layer, say) is compared in absolute terms.
  """
  check_same_structure(a, b)
  out = []
  for (path, la), lb in zip(jax.tree_util.tree_flatten_with_path(a)[0],
                            jax.tree_util.tree_leaves(b)):
    la, lb = np.asarray(la, np.float64), np.asarray(lb, np.float64)
    err = float(np.max(np.abs(la - lb))) if la.size else 0.0
    scale = float(np.max(np.abs(lb))) if lb.size else 0.0
    out.append(LeafError(jax.tree_util.keystr(path), la.shape, err, err / (scale if scale > 0 else 1.0)))
  return out


def max_relative_error(a, b) -> float:
  """The worst :func:`relative_errors` entry (0.0 for empty trees)."""
  # np.max, not max(): a nan leaf must make the result nan (max() drops it).
  errs = [e.relative_error for e in relative_errors(a, b)]
  return float(np.max(errs)) if errs else 0.0


def check_same_structure(a, b):
  """Raises ValueError unless ``a`` and ``b`` have the same tree and leaf shapes."""
  ta, tb = jax.tree_util.tree_structure(a), jax.tree_util.tree_structure(b)
  if ta != tb:
    raise ValueError(f"tree structures differ:\n  {ta}\n  {tb}")
  for (path, la), lb in zip(jax.tree_util.tree_flatten_with_path(a)[0],
                            jax.tree_util.tree_leaves(b)):
    if jnp.shape(la) != jnp.shape(lb):
      raise ValueError(f"leaf {jax.tree_util.keystr(path)} has shape {jnp.shape(la)} "
                       f"in the first tree and {jnp.shape(lb)} in the second.")


def report(a, b) -> str:
  """A per-leaf table of the agreement of ``a`` with the reference ``b``."""
  rows = [f"{'leaf':<16} {'shape':<14} {'max|a-b|':>10} {'rel err':>10}"]
  for e in relative_errors(a, b):
    rows.append(f"{e.path:<16} {str(e.shape):<14} {e.max_abs_error:10.2e} {e.relative_error:10.2e}")
  return "\n".join(rows)
