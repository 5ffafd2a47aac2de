"""Part (c) of the transformer sweep: the per-block gradient norms of pre- and post-LN at init.

Xiong et al. 2020: at init, post-LN's gradient norm grows toward the last
blocks, pre-LN's stays flat; that is why post-LN needs a learning-rate
warm-up. Per depth, norm and qk_scale (0, and the default), ``seeds``
transformers (the sweep's widths, T and input tokens) take the loss of
:func:`jaxbp.theory.attention_gradients.gradient_profile`, a random linear
readout ``L = sum G * y`` of the output (``G`` i.i.d. N(0, 1), drawn per seed),
and ``jax.grad`` gives every block's ``|dL/dW|^2`` per matrix (Wq, Wk, Wv,
Wo, W1, W2). The report sets the last/first ratio of the sum over ``Wv, Wo,
W1, W2`` (the theory's; at qk_scale 0 ``dWq = dWk = 0``) against the
prediction's: exact at infinite width for qk_scale 0, the uniform-attention
approximation at the default.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.core.transformer import Transformer
from jaxbp.theory.attention_gradients import gradient_profile

MATRICES = ("Wq", "Wk", "Wv", "Wo", "W1", "W2")
NORMS = ("pre", "post")
QK = ("0", "default")
THEORY_MATRICES = slice(2, 6)      # Wv, Wo, W1, W2


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
  """``{"pre/0": (seeds, depth, 6) squared norms, ...}`` per norm and qk_scale at ``depth``."""
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 30_000 + depth)
  out = {}
  for norm in NORMS:
    for qk in QK:
      net = Transformer(config.d_model, config.heads, depth, config.d_ff, norm=norm,
                        qk_scale=0.0 if qk == "0" else None)
      readout = lambda p, x, g: jnp.sum(g * net.apply(p, x))
      step = jax.jit(jax.grad(readout))
      per_seed = []
      for s in range(config.seeds):
        kp, kx, kg = jax.random.split(jax.random.fold_in(key, s), 3)
        x = tokens(kx, config.batch, config.tokens, config.d_model, config.q0, config.rho0)
        g = jax.random.normal(kg, x.shape, jnp.float64)
        per_seed.append(block_sq_norms(step(net.init(kp, dtype=jnp.float64), x, g)).tolist())
      out[f"{norm}/{qk}"] = per_seed
  return out


def predicted(config, depth: int, norm: str) -> np.ndarray:
  """The theory's ``E ||dW||^2`` summed over Wv, Wo, W1, W2, per block."""
  g = gradient_profile(depth, q0=config.q0, rho0=config.rho0, tokens=config.tokens,
                       d_model=config.d_model, d_ff=config.d_ff, norm=norm)
  return np.asarray(g.total)


def summary(config, depth: int, record) -> dict:
  """Per norm and qk_scale: the mean profile over seeds, last/first measured and predicted."""
  out = {}
  for name, per_seed in record.items():
    norm = name.split("/")[0]
    total = np.sum(np.asarray(per_seed)[..., THEORY_MATRICES], axis=-1)    # (seeds, depth)
    mean = total.mean(axis=0)
    pred = predicted(config, depth, norm)
    ratio, ratio_pred = float(mean[-1] / mean[0]), float(pred[-1] / pred[0])
    out[name] = {"profile": mean.tolist(), "predicted_profile": pred.tolist(),
                 "last_over_first": ratio, "predicted_last_over_first": ratio_pred,
                 "relative_error": ratio / ratio_pred - 1.0,
                 "seed_ratios": (total[:, -1] / total[:, 0]).tolist()}
  return out
