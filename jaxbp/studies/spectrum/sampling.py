"""Sampled singular values of the input-output Jacobian of deep random networks.

``J_L = W_1 D_1 W_2 D_2 ... W_L D_L`` (row convention of :mod:`jaxbp.nets`,
``D_l = diag phi'(z_l)``) is built explicitly, layer by layer, for critical
random networks (:func:`jaxbp.theory.spectra.critical`), and its singular values
``s`` are summarised by :func:`spread` to hold against
:func:`jaxbp.theory.spectra.theory`.

A ReLU Jacobian also has exact zeros: ``D_l`` zeroes about half the units, so
``rank J_L <= min_l rank D_l``, about N/2. Gaussian products spread the
remaining singular values over many decades; below ``FLOOR`` times the largest,
float64 round-off in the explicit product hides them, so the log-spread
statistics count them as "below floor" instead of trusting their values.

>>> import jax; jax.config.update("jax_enable_x64", True)
>>> s = singular_values(jax.random.PRNGKey(0), "tanh", "orthogonal", 64, (4, 16), sigma_b2=1e-3)
>>> s.shape
(2, 64)
"""
from __future__ import annotations

import contextlib
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.core import checks
from jaxbp.core.nets import MLP
from jaxbp.theory import spectra as _spectra

FLOOR = 1e-12   # s below FLOOR * max(s) is round-off of the explicit float64 product


@contextlib.contextmanager
def single_thread_blas():
  """Runs the body with OpenBLAS (the LAPACK behind ``jnp.linalg.qr`` on CPU) on
  one thread, if threadpoolctl is installed; restores the thread count after.

  Nothing happens until the body is entered: threadpoolctl is imported, and
  LAPACK loaded, only then.

  Why: on a loaded 2-core machine OpenBLAS's own threads fight XLA's, and the
  QR of orthogonal init (28 matrices of 256 x 256) took 5-20 s instead of
  0.1 s; one BLAS thread (as ``OPENBLAS_NUM_THREADS=1``) restores the 0.1 s.
  """
  try:
    from threadpoolctl import threadpool_limits
  except ImportError:
    yield
    return
  jnp.linalg.qr(jnp.eye(2))   # load the LAPACK that jaxlib calls, so the limit reaches it
  with threadpool_limits(1, user_api="blas"):
    yield


def check_depths(depths) -> tuple:
  """``depths`` as a strictly increasing tuple of ints >= 1 (one int is one depth);
  a ValueError otherwise."""
  if checks.is_int(depths):
    depths = (depths,)
  if isinstance(depths, (str, bytes)) or not isinstance(depths, Sequence):
    raise ValueError(f"depths must be a list of ints >= 1, got {depths!r}.")
  depths = tuple(depths)
  if not depths:
    raise ValueError("depths is empty: give at least one depth >= 1, e.g. (1, 4, 16).")
  for d in depths:
    if not checks.is_int(d) or d < 1:
      raise ValueError(f"every depth must be an int >= 1, got depths={depths!r}.")
  if list(depths) != sorted(set(depths)):
    raise ValueError(f"depths must be strictly increasing, got {depths!r}.")
  return tuple(int(d) for d in depths)


def _stack(tree, net):
  """Every layer's leaf with a leading layer axis: ``(L, ...)`` from the params groups."""
  return jnp.concatenate([a if net.is_stacked(g) else a[None] for g, a in enumerate(tree)])


def prefix_singular_values(net: MLP, params, x, depths: Sequence[int]) -> jax.Array:
  """Singular values of ``J_l = dh_l/dh_0`` at one input, for every l in ``depths``.

  ``net`` must be a square stack whose every layer is hidden, ``sizes = (N,) *
  (L + 1)`` with ``output_activation == activation`` (no residual, no batch
  norm), so that ``J_l`` for l < L is the Jacobian of its first l layers. One
  forward pass (``net.trace``) gives every ``D_l = diag phi'(z_l)``; the product
  ``J_l = J_{l-1} W_l D_l`` is built by ``lax.scan`` and its singular values
  taken at each recorded depth.

  Args:
    net, params: the network and ``net.init(...)`` parameters.
    x: one input, ``(1, N)``.
    depths: increasing depths in 1 .. L.

  Returns:
    ``(len(depths), N)``, each row descending.

  >>> net = MLP((8,) * 4, "tanh", output_activation="tanh")
  >>> p = net.init(jax.random.PRNGKey(0), "orthogonal")
  >>> prefix_singular_values(net, p, jnp.zeros((1, 8)), (1, 3)).shape  # at 0: tanh' = 1
  (2, 8)
  """
  depths = check_depths(depths)
  sizes = set(net.sizes)
  if (len(sizes) != 1 or net.phi_out.name != net.phi.name or net.residual or net.batchnorm
      or depths[-1] > net.num_layers):
    raise ValueError(
        f"prefix_singular_values needs a square net of hidden layers only, e.g. MLP((N,) * "
        f"(L + 1), act, output_activation=act), without residual or batchnorm, and depths <= L; "
        f"got {net} with output_activation={net.phi_out.name!r} and depths={depths}.")
  z = _stack(net.trace(params, x).z, net)[:, 0, :]          # (L, N)
  W = _stack(tuple(p.W for p in params), net)               # (L, N, N)
  d = net.phi.grad(z)

  def layer(M, wd):
    w, dl = wd
    return (M @ w) * dl[None, :], None                      # J_l = J_{l-1} W_l D_l

  M, out, start = jnp.eye(net.sizes[0], dtype=W.dtype), [], 0
  for depth in depths:   # one scan per segment between recorded depths
    M, _ = jax.lax.scan(layer, M, (W[start:depth], d[start:depth]))
    out.append(M)
    start = depth
  return jnp.linalg.svd(jnp.stack(out), compute_uv=False)


def _input(key, net, q0):
  # h_0 = phi(sqrt(q*) g) makes z_1 = h_0 W_1 + b_1 start at the fixed point:
  # Var z_1 = sigma_w2 E[phi(sqrt(q*) g)^2] + sigma_b2 = q* (the variance map).
  return net.phi.fn(jnp.sqrt(q0) * jax.random.normal(key, (1, net.sizes[0]), jnp.float64))


@functools.partial(jax.jit, static_argnames=("net", "init", "depths"))
def _products(key, q0, *, net, init, depths):
  p_key, x_key = jax.random.split(key)
  return prefix_singular_values(net, net.init(p_key, init), _input(x_key, net, q0), depths)


def singular_values(key, activation: str, weights: str, width: int, depths: Sequence[int],
                    sigma_b2: float = 0.0, num_seeds: int | None = None) -> jax.Array:
  """Singular values of ``J_l = dh_l/dh_0`` for each l in ``depths``, of one network.

  One network of depth ``max(depths)`` at the critical point of ``activation``
  (:func:`jaxbp.theory.spectra.critical`); ``J_l`` for smaller l is its first l
  layers (distributed as a fresh depth-l net). The input is ``phi(sqrt(q*) g)``,
  so every layer sees pre-activations of variance q*.

  Args:
    key: a PRNG key (network and input).
    activation, weights, sigma_b2: see :func:`jaxbp.theory.spectra.critical`.
    width: N.
    depths: increasing depths >= 1.
    num_seeds: if given, ``key`` is split into that many networks.

  Returns:
    ``(len(depths), width)`` singular values, descending; with ``num_seeds``,
    ``(num_seeds, len(depths), width)``.
  """
  net = _spectra.critical(activation, weights, sigma_b2)
  depths = check_depths(depths)
  width = checks.positive_int(width, "width")
  return sample_singular_values(key, net, width, depths, num_seeds)


def sample_singular_values(key, net: _spectra.CriticalNet, width: int, depths: tuple,
                           num_seeds: int | None = None) -> jax.Array:
  """:func:`singular_values` for a resolved :class:`~jaxbp.theory.spectra.CriticalNet`,
  with ``width`` an int and ``depths`` already checked (:func:`check_depths`)."""
  L = depths[-1]
  mlp = MLP((width,) * (L + 1), net.activation, output_activation=net.activation, stack=True)
  run = functools.partial(_products, net=mlp, init=net.initializer, depths=depths)
  q0 = jnp.asarray(net.q_star, jnp.float64)
  if num_seeds is None:
    with single_thread_blas():
      return run(key, q0)
  # A loop over seeds sharing one compiled program, not jax.vmap: XLA's CPU
  # runtime can hang on the vmapped program with orthogonal (QR) init at N = 256.
  with single_thread_blas():
    return jnp.stack([run(k, q0) for k in jax.random.split(key, num_seeds)])


def spread(s, floor: float = FLOOR) -> dict:
  """Statistics of one network's singular values ``s`` (last axis), averaged over
  any leading (seed) axes.

  Returns (all floats):
    mean_sq: mean of ``lambda = s^2`` (theory: chi_1^L).
    var_sq: variance of ``lambda`` over the N values (theory: sigma^2_{JJ^T}).
    var_sq_norm: ``var_sq / mean_sq^2`` per network, then averaged: the same at
      chi_1 = 1, but free of the network-to-network scale fluctuation of
      ``mean_sq`` (the input's q drifts at finite N), so much less noisy.
    log10_range: 5%-95% quantile range of ``log10 s`` over the values above
      ``floor * max(s)``, pooled over the leading axes; the decades the bulk spans.
    frac_below_floor: fraction of s below ``floor * max s`` (ReLU's exact zeros,
      and what round-off hides).
    max_over_median: ``max(s) / median(s)`` (inf when the median is a zero).
    mean_sq_std, var_sq_std: the seed-to-seed standard deviations.
  """
  s = np.asarray(s, dtype=float)
  s = s.reshape(-1, s.shape[-1])
  lam = s ** 2
  m1 = lam.mean(axis=-1)
  var = lam.var(axis=-1)
  keep = s > floor * s.max(axis=-1, keepdims=True)
  logs = np.log10(s[keep])
  med = np.median(s, axis=-1)
  ratio = np.where(med > floor * s.max(axis=-1), s.max(axis=-1) / np.maximum(med, 1e-300), np.inf)
  q05, q95 = np.quantile(logs, [0.05, 0.95]) if logs.size else (np.nan, np.nan)
  return {"mean_sq": float(m1.mean()), "var_sq": float(var.mean()),
          "var_sq_norm": float((var / m1 ** 2).mean()),
          "mean_sq_std": float(m1.std()), "var_sq_std": float(var.std()),
          "log10_range": float(q95 - q05), "frac_below_floor": float(1 - keep.mean()),
          "max_over_median": float(np.mean(ratio))}


def growth_rate(rows) -> float:
  """The median over depths of ``var_sq_norm / L``: the measured
  ``mu_2/mu_1^2 - 1 - s_1`` of :func:`jaxbp.theory.spectra.theory`. A median,
  because at L ~ N/4 the heavy upper tail of a Gaussian product is undersampled
  by N singular values and its variance falls below the infinite-width line."""
  return float(np.median([r["var_sq_norm"] / r["depth"] for r in rows]))
