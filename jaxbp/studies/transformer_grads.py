"""Part (c) of the transformer sweep: the per-block gradient norms of pre- and post-LN at init.

Xiong et al. 2020: at init, post-LN's gradient norm grows toward the last
blocks, pre-LN's stays flat; that is why post-LN needs a learning-rate
warm-up. Per depth and norm, ``seeds`` transformers (the sweep's widths, T,
input tokens) take an MSE loss against a standard-normal target on every token
(its ``dL/dh`` at the output: i.i.d. over tokens and features), and the hand
backward gives every block's ``|dL/dW|`` per matrix (Wq, Wk, Wv, Wo, W1, W2).
The record keeps each matrix's norm per block and seed; the report sets the
last/first ratio of the block's summed squared norms against
:func:`jaxbp.theory.attention.gradient_profile`'s.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.core import backprop
from jaxbp.core.transformer import Transformer

MATRICES = ("Wq", "Wk", "Wv", "Wo", "W1", "W2")
NORMS = ("pre", "post")


def tokens(key, batch, T, d, q0, rho0):
  """``(batch, T, d)`` equicorrelated tokens: ``sqrt(q0) (sqrt(rho0) c + sqrt(1 - rho0) g_i)``
  with ``c, g_i`` standard normal: second moment q0 and pairwise cosine rho0 as d grows."""
  kc, kg = jax.random.split(key)
  c = jax.random.normal(kc, (batch, 1, d), jnp.float64)
  g = jax.random.normal(kg, (batch, T, d), jnp.float64)
  return math.sqrt(q0) * (math.sqrt(rho0) * c + math.sqrt(1.0 - rho0) * g)


def block_sq_norms(grads) -> np.ndarray:
  """``(depth, 6)``: each block's squared Frobenius norm of dL/d(Wq, Wk, Wv, Wo, W1, W2)."""
  rows = []
  for b in grads:
    if not hasattr(b, "attn"):
      continue                                  # the final LayerNorm
    mats = (b.attn.Wq, b.attn.Wk, b.attn.Wv, b.attn.Wo, b.ffn1.W, b.ffn2.W)
    rows.append([float(jnp.sum(jnp.square(m))) for m in mats])
  return np.asarray(rows)


def measure(config, depth: int) -> dict:
  """``{norm: (seeds, depth, 6) squared norms}`` for pre- and post-LN at ``depth``."""
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 30_000 + depth)
  out = {}
  for norm in NORMS:
    net = Transformer(config.d_model, config.heads, depth, config.d_ff, norm=norm)
    step = jax.jit(functools.partial(backprop.grad, net, "mse"))
    per_seed = []
    for s in range(config.seeds):
      kp, kx, ky = jax.random.split(jax.random.fold_in(key, s), 3)
      x = tokens(kx, config.batch, config.tokens, config.d_model, config.q0, config.rho0)
      y = jax.random.normal(ky, x.shape, jnp.float64)
      per_seed.append(block_sq_norms(step(net.init(kp, dtype=jnp.float64), x, y)).tolist())
    out[norm] = per_seed
  return out


def summary(record) -> dict:
  """Per norm: the mean over seeds of each block's summed squared norm and last/first."""
  out = {}
  for norm in NORMS:
    total = np.sum(np.asarray(record[norm]), axis=-1)          # (seeds, depth)
    mean = total.mean(axis=0)
    ratios = total[:, -1] / total[:, 0]
    out[norm] = {"profile": mean.tolist(), "last_over_first": float(mean[-1] / mean[0]),
                 "seed_ratios": ratios.tolist()}
  return out
