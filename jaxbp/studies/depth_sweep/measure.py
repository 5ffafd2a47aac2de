"""One seed's measurement: unit-scale samples, and the hand recursion on row-stacked
configurations (:func:`measure_rows`), equal to the per-configuration
reference (:func:`measure`) to round-off."""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp

from jaxbp.core import backprop as _backprop
from jaxbp.core import losses as _losses
from jaxbp.core.layers import Dense, RowScale
from jaxbp.core.nets import MLP
from jaxbp.measure import diagnostics as _diag


class Sample(NamedTuple):
  """The randomness of one seed, at unit scale; every configuration rescales it.

  Attributes:
    params: ``W ~ N(0, 1 / fan_in)`` (or Haar-orthogonal, columns of norm 1) and
      ``b ~ N(0, 1)``: sigma_w2 = sigma_b2 = 1.
    x: input directions ``(batch, n)``, every row of squared norm exactly n
      (no chi^2 scatter: z_1 starts at q* for every example).
    y: the standard-normal readout ``(batch, out)`` of :data:`RANDOM_READOUT`.
  """
  params: Tuple[Dense, ...]
  x: jax.Array
  y: jax.Array


class Measurement(NamedTuple):
  """One net's per-layer profiles, each ``(K,)`` for the K = depth + 1 layers.

  Attributes:
    log_delta_sq: ``ln mean_batch ||delta_l||^2``.
    log_weight_sq: ``ln ||dL/dW_l||_F^2``.
    log_bias_sq: ``ln ||dL/db_l||^2``.
    forward_finite: whether every ``h_l`` of the forward pass is finite.
  """
  log_delta_sq: jax.Array
  log_weight_sq: jax.Array
  log_bias_sq: jax.Array
  forward_finite: jax.Array


def _haar(a):
  # QR of a Gaussian matrix with the signs of R's diagonal folded into Q: Q is
  # Haar-distributed (Mezzadri 2007), as in jaxbp.initializers.orthogonal.
  q, r = jnp.linalg.qr(a)
  return q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[..., None, :]


def draw_samples(net: MLP, families: Sequence[str], batch: int, seed, dtype) -> Tuple[Sample, ...]:
  """The unit-scale :class:`Sample` of ``seed`` for each weight family, for a net of
  equal widths; jittable, vmaps over seeds.

  The families share their random numbers: the orthogonal weights are the
  Gaussian ones orthonormalised (QR with R's signs folded in), and biases,
  inputs and readout are the same. Two ``jax.random.normal`` calls fill
  everything: a ``(K, n, n)`` block of weights and a flat vector cut into
  biases, inputs and readout. Each call site is a threefry kernel that XLA
  takes long to compile on a CPU, so one per layer group would cost seconds.
  The QR reads the weight block of its own draw, not slices of the flat one,
  which XLA's CPU runtime handles badly.

  >>> import jax, jax.numpy as jnp
  >>> net = MLP.uniform(16, 16, 3, 16, stack=True)
  >>> gauss, orth = draw_samples(net, ("gaussian", "orthogonal"), 2, 0, jnp.float32)
  >>> W = orth.params[1].W[0]              # a hidden layer: W^T W = I
  >>> bool(jnp.allclose(W.T @ W, jnp.eye(16), atol=1e-5))
  True
  """
  n = net.sizes[0]
  if set(net.sizes) != {n}:
    raise ValueError(f"draw_samples: the sweep's nets have equal widths, got sizes={net.sizes}.")
  K, B = net.num_layers, batch
  k_w, k_rest = jax.random.split(jax.random.PRNGKey(seed))
  normal = jax.random.normal(k_w, (K, n, n), dtype)
  rest = jax.random.normal(k_rest, ((K + 2 * B) * n,), dtype)
  b, g, y = rest[:K * n].reshape(K, n), rest[K * n:(K + B) * n].reshape(B, n), rest[(K + B) * n:]
  x = g * (math.sqrt(n) / jnp.linalg.norm(g, axis=1, keepdims=True))
  samples = []
  for weights in families:
    # Unit sigma_w2: Var W_ij = 1 / fan_in, or orthonormal columns (gain 1).
    W = _haar(normal) if weights == "orthogonal" else normal / math.sqrt(n)
    params, k = [], 0
    for grp, (count, _, _) in enumerate(net.groups):
      params.append(Dense(W[k:k + count], b[k:k + count]) if net.is_stacked(grp)
                    else Dense(W[k], b[k]))
      k += count
    samples.append(Sample(tuple(params), x, y.reshape(B, n)))
  return tuple(samples)


def measure(net: MLP, sample: Sample, sigma_w2, sigma_b2, v0) -> Measurement:
  """Scales ``sample`` to (sigma_w2, sigma_b2, v0), runs backprop, returns the profiles.

  ``W = sqrt(sigma_w2) W_unit``, ``b = sqrt(sigma_b2) b_unit``, ``x = sqrt(v0) x_unit``:
  configurations share their seed's sample (common random numbers, so the
  phase diagram is smooth in sigma_w2), and the variances are arrays, so one
  compiled program serves every configuration of a shape. The loss is the
  random readout ``sum <y, h_K>`` (:data:`RANDOM_READOUT`, so ``delta_K = y``);
  the deltas come from the hand recursion.
  """
  sw, sb = jnp.sqrt(sigma_w2), jnp.sqrt(sigma_b2)
  params = tuple(Dense(sw * p.W, sb * p.b) for p in sample.params)
  x = jnp.sqrt(v0) * sample.x
  out = _backprop.backward(net, RANDOM_READOUT, params, x, sample.y, reduction="sum")
  # Norms from deltas and activations: dW is never formed (nor computed: XLA
  # drops the unread gradients), which saves a third of the flops and the
  # (L, n, n) memory of dW.
  norms = _diag.norms_from_deltas(net, x, out.trace, out.deltas)
  finite = _diag.per_layer(net, out.trace.h, lambda h: jnp.all(jnp.isfinite(h)))
  # 2 ln ||v||: the norms are computed scaled, so this is right even where
  # ||v||^2 itself would overflow or underflow.
  return Measurement(2 * jnp.log(norms.delta), 2 * jnp.log(norms.weight),
                     2 * jnp.log(norms.bias), finite)


def _measure_rows_at(net: MLP, samples: Sample, index, sigma_w2, sigma_b2, v0) -> Measurement:
  """:func:`measure_rows` on sample ``index`` of ``samples`` (a leading sample axis on
  every array): the hand recursion with per-row scales, its layers reading their
  weights one at a time from the selected sample, so the seed's
  ``(depth + 1, n, n)`` stack is never copied out of ``samples``."""
  C = sigma_w2.shape[0]
  B, n = samples.x.shape[-2:]
  dtype = samples.x.dtype
  rows = lambda s: jnp.repeat(s.astype(dtype), B)[:, None]   # (C,) -> (C * B, 1)
  scale = RowScale(rows(jnp.sqrt(sigma_w2)), rows(jnp.sqrt(sigma_b2)))
  # x = sqrt(v0) x_unit, configuration-major rows: row c * B + b is example b of c.
  x = (jnp.sqrt(v0).astype(dtype)[:, None, None] * samples.x[index][None]).reshape(C * B, n)
  # The random readout: delta_K = y, every configuration alike.
  y = jnp.broadcast_to(samples.y[index][None], (C, B, n)).reshape(C * B, n)
  out = _backprop.backward(net, RANDOM_READOUT, samples.params, x, y, reduction="sum",
                           param_grads=False, scale=scale, select=index)
  norms = _diag.norms_from_deltas(net, x, out.trace, out.deltas, blocks=C)
  finite = _diag.per_layer(net, out.trace.h,
                           lambda h: jnp.all(jnp.isfinite(h.reshape(C, B * n)), axis=1))
  # (K, C) per quantity, layers in order; transposed to (C, K) like measure's (K,).
  log_sq = lambda v: 2 * jnp.log(v).T   # 2 ln ||v||: finite where ||v||^2 would not be
  return Measurement(log_sq(norms.delta), log_sq(norms.weight), log_sq(norms.bias), finite.T)


def measure_rows(net: MLP, sample: Sample, sigma_w2, sigma_b2, v0) -> Measurement:
  """:func:`measure` for C configurations of one seed at once, as one row-stacked net.

  ``sigma_w2``, ``sigma_b2``, ``v0`` are ``(C,)``; every field of the result is
  ``(C, K)``, row c equal to ``measure(net, sample, sigma_w2[c], sigma_b2[c], v0[c])``
  to round-off.

  Configurations of one seed differ only by three scalars applied to the seed's
  unit sample: ``W_k = sw W_k^u``, ``b_k = sb b_k^u``, ``x = sqrt(v0) x^u``
  (sw = sqrt(sigma_w2), sb = sqrt(sigma_b2)). A scalar commutes with the matmul,
  ``h (sw W^u) = sw (h W^u)``, so the scale can go on the rows instead of the
  weights. Stack the C configurations' batches along the batch axis (C * B rows,
  configuration-major) with per-row factors ``sw_r``, ``sb_r``, and run one net on
  the *unscaled* shared weights::

      z_k     = sw_r * (h_{k-1} @ W_k^u) + sb_r * b_k^u,   h_k = phi(z_k)
      delta_K = y                                          (the random readout)
      delta_{k-1} = sw_r * (delta_k @ W_k^uT) * phi'(z_{k-1})

  Rows never mix (a matmul acts row by row and phi elementwise), so every row
  follows exactly its own configuration's net: the same z, h and delta as
  :func:`measure`, up to the rounding of ``sw (h W)`` against ``h (sw W)``.
  The gradients are those of the *scaled* parameters, as in :func:`measure`:
  ``dL/dW_k = h_{k-1,c}^T delta_{k,c}`` and ``dL/db_k = sum_b delta_{k,c}`` over
  configuration c's B rows (the scale already sits inside h and delta), and
  their norms come per configuration from ``(C, B, B)`` Gram matrices
  (:func:`_block_norms`). Every matmul is ``(C * B, n) @ (n, n)``: the shared
  weights are read once per layer for all C configurations, instead of one
  scaled copy and one thin ``(B, n) @ (n, n)`` product per configuration.

  >>> import jax, jax.numpy as jnp
  >>> jax.config.update("jax_enable_x64", True)
  >>> net = sweep_net("tanh", 4, 16)
  >>> (s,) = draw_samples(net, ("gaussian",), 2, 0, jnp.float64)
  >>> rows = measure_rows(net, s, jnp.array([1.0, 2.0]), jnp.array([0.0, 0.1]), jnp.ones(2))
  >>> one = measure(net, s, 2.0, 0.1, 1.0)
  >>> bool(jnp.allclose(rows.log_delta_sq[1], one.log_delta_sq, rtol=1e-12))
  True
  """
  one = jax.tree_util.tree_map(lambda a: a[None], sample)
  return _measure_rows_at(net, one, 0, jnp.asarray(sigma_w2), jnp.asarray(sigma_b2),
                          jnp.asarray(v0))


def measure_groups(net: MLP, samples: Sample, index, sigma_w2, sigma_b2, v0,
                   batch_size=None) -> Measurement:
  """:func:`measure_rows` for G groups: ``index`` ``(G,)`` picks each group's sample
  (a leading sample axis on ``samples``), ``sigma_w2``, ``sigma_b2``, ``v0`` are
  ``(G, C)``; fields ``(G, C, K)``. Groups run under ``lax.map``, ``batch_size`` of
  them vmapped at a time (default one), so memory holds ``batch_size`` groups'
  forward caches, ``(depth + 1) C B n`` values each for z and for h; jittable
  with ``net`` static. Each group reads its weights from ``samples`` one layer at
  a time: no per-group copy of a weight stack.
  """
  fn = lambda a: _measure_rows_at(net, samples, *a)
  return jax.lax.map(fn, (index, sigma_w2, sigma_b2, v0),
                     batch_size=None if batch_size in (None, 1) else batch_size)


def _readout_fn(h, r, reduction="sum"):
  terms = h * r
  return terms if reduction == "none" else jnp.sum(terms) / (terms.size if reduction == "mean" else 1)


def _readout_grad(h, r, reduction="sum"):
  return r / r.size if reduction == "mean" else r


# L = sum_b <r_b, h_K[b]>: dL/dh_K = r, whatever the forward pass did, as the
# theory's gradient-independence assumption wants. MSE to random targets would
# give 2 (h_K - y), whose h_K part is aligned with the forward pass; backprop
# amplifies that part (h_K = h_l J for relu, and J J^T is not an isometry), a
# transient of tenths of a nat over the top layers.
RANDOM_READOUT = _losses.Loss("random_readout", _readout_fn, _readout_grad, False)


def sweep_net(activation, depth, width) -> MLP:
  """The sweep's net: ``depth`` hidden layers of ``width`` under ``lax.scan`` and a
  linear output layer, every layer ``width`` wide."""
  return MLP.uniform(width, width, depth, width, activation=activation, stack=True)
