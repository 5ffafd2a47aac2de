"""The per-block weight-gradient norms of a transformer at init, at infinite width.

The network and notation are :mod:`jaxbp.theory.attention`'s (LeCun init, biases
0, LayerNorm at scale 1, offset 0); attention is uniform (``qk_scale = 0``, where
``dWq = dWk = 0``; at the default ``qk_scale`` this is the uniform approximation).
**The loss** is a random linear readout of one sequence's output ``y`` ``(T, d)``
(pre-LN: after the final LayerNorm; post, none: the last block's output),

    L = sum_{i, a} G[i, a] y[i, a],    G[i, a] i.i.d. N(0, 1), independent of the weights,

so ``dL/dy = G`` and its **gradient kernel** ``D[i, j] = (1/d) sum_a dL/dy[i, a]
dL/dy[j, a]`` is ``I_T`` at infinite width. The predicted quantity is ``E
||dL/dW||_F^2`` for each of a block's ``Wv, Wo, W1, W2`` (``Wq, Wk``: 0).

**A weight's gradient** is exact algebra: for ``y = x W``, ``x`` ``(T, n_in)``,
``dW = x^T delta`` and

    ||dW||_F^2 = sum_{i, j} (x_i . x_j)(delta_i . delta_j) = n_in n_out <K_x, D_y>,

``<A, B> = sum_ij A_ij B_ij``, ``K_x`` the input's token kernel (per feature) and
``D_y`` the output's gradient kernel. So the forward kernels
(:mod:`jaxbp.theory.attention`) and a backward recursion for ``D`` give every norm.

**The backward recursion** for ``D``, at infinite width with the backward's weights
treated as independent of the forward's (Schoenholz et al. 2017; Yang 2020 proves
it for a readout ``G`` independent of the weights). ``delta_x = delta_y W^T`` with
``Var W = 1/n_in`` gives ``D_x = (n_out / n_in) D_y``; through the sublayers, ``U``
the uniform attention and ``Phi'[i, j] = E[phi'(u_i) phi'(u_j)]`` (relu: ``(pi -
theta_ij) / (2 pi)``)::

    attention  z = U x Wv Wo:   D_o = D_z,  D_v = U^T D_z U,  D_x = U^T D_z U
        ||dWo||^2 = d^2 <U K_x U^T, D_z>,   ||dWv||^2 = d^2 <K_x, U^T D_z U>  (equal)
    FFN  z = phi(x W1) W2:      D_u = (d / d_ff) D_z * Phi',  D_x = D_z * Phi'
        ||dW2||^2 = d d_ff <F(K_x), D_z>,   ||dW1||^2 = d^2 <K_x, D_z * Phi'>
    LayerNorm y = N(x):         D_x[i, j] = D_y[i, j] / sqrt((K_ii + eps)(K_jj + eps))

(LayerNorm's two projections, on the mean and on ``x_hat``, remove ``O(1/d)`` of
``D``: ``(1/d) sum_a g[i, a] x_hat[i, a]`` has mean 0 for a readout independent of
the weights. Neglected, but it compounds: up to ``2/d`` per norm for the part of
``g`` not already projected by the norm above; through post-LN's ``2 L`` norms the
measured first block's norm is 0.81 of this prediction at depth 24, ``d = 256``,
where the full ``(1 - 2/d)^{2L}`` would give 0.69, since the skip's share of ``g``
arrives projected.) **The residual**, ``alpha = residual_scale``, ``beta = skip_scale``,
``f_back`` the sublayer rule above (the cross terms ``beta alpha (1/d) delta_y .
f_back(delta_y)`` have mean 0, as in the forward)::

    pre:   D_f = alpha^2 D_y;   D_h = beta^2 D_y + N_back(f_back(D_f))
    post:  D_r = N_back(D_y);   D_f = alpha^2 D_r;   D_h = beta^2 D_r + f_back(D_f)
    none:  D_f = alpha^2 D_y;   D_h = beta^2 D_y + f_back(D_f)

**What follows** (Xiong et al. 2020): post-LN divides ``D`` by the pre-norm
kernel's ``K_ii ~ beta^2 + alpha^2 q_f`` at every sublayer and gets back only
``beta^2 + alpha^2 (...)``, so ``D`` shrinks geometrically from the last block to
the first: the gradients grow toward the last layers. Pre-LN adds the branches to
an undivided ``D_h`` (``D_h >= beta^2 D_y``) and divides only inside the branch,
by the growing ``q``, so its profile is flat up to a slow trend.

References: Xiong et al., "On layer normalization in the transformer
architecture", ICML 2020. Schoenholz et al., "Deep information propagation", ICLR
2017. Yang, "Tensor programs II: neural tangent kernel for any architecture",
arXiv:2006.14548, 2020.

>>> g = gradient_profile(6, q0=1.0, rho0=0.0, tokens=8, d_model=64, d_ff=256, norm="post")
>>> round(float(g.total[-1] / g.total[0]), 3)
1.328
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbp.core import checks as _checks
from jaxbp.theory import attention as _ta


class GradientProfile(NamedTuple):
  """``E ||dL/dW||_F^2`` per block, each ``(depth,)``, block 1 first.

  Attributes:
    Wv, Wo: the attention's value and output projections (``Wq``, ``Wk``: 0).
    W1, W2: the FFN's two matrices.
  """
  Wv: jax.Array
  Wo: jax.Array
  W1: jax.Array
  W2: jax.Array

  @property
  def total(self):
    """The sum over the block's four matrices, ``(depth,)``."""
    return self.Wv + self.Wo + self.W1 + self.W2


def _inner(A, B):
  return jnp.sum(A * B, axis=(-2, -1))


def _sublayer_forward(K, f, norm, alpha, beta):
  """``(K_out, (K_in, K_x, K_r))``: a sublayer's kernels, ``K_x`` its branch's input
  and ``K_r`` the sum before a post-LN."""
  N = _ta.layer_norm_kernel
  K_x = N(K) if norm == "pre" else K
  K_r = beta ** 2 * K + alpha ** 2 * f(K_x)
  return (N(K_r) if norm == "post" else K_r), (K, K_x, K_r)


def _n_back(D, K):
  s = jax.lax.rsqrt(jnp.diagonal(K) + _ta.EPS)
  return D * s[:, None] * s[None, :]


def _sublayer_backward(D, saved, f_back, norm, alpha, beta):
  """``(D_in, D_f, K_x)``: the gradient kernel at the sublayer's input and at its branch's
  output, and the branch input's kernel (for the weight norms)."""
  K_in, K_x, K_r = saved
  D_r = _n_back(D, K_r) if norm == "post" else D
  D_f = alpha ** 2 * D_r
  D_x = f_back(D_f, K_x)
  return beta ** 2 * D_r + (_n_back(D_x, K_in) if norm == "pre" else D_x), D_f, K_x


@functools.partial(jax.jit, static_argnames=("depth", "act", "norm", "causal"))
def _gradients(K0, depth, act, norm, alpha, beta, causal, d_model, d_ff):
  T = K0.shape[-1]
  U = _ta.uniform_attention(T, causal, K0.dtype)
  attn = lambda K: U @ K @ U.T
  ffn = lambda K: _ta.pair_moments(act, K)[0]

  def forward(K, _):
    K1, s1 = _sublayer_forward(K, attn, norm, alpha, beta)
    K2, s2 = _sublayer_forward(K1, ffn, norm, alpha, beta)
    return K2, (s1, s2)

  K_L, saved = jax.lax.scan(forward, K0, None, length=depth)
  D = jnp.eye(T, dtype=K0.dtype)
  if norm == "pre":                     # the final LayerNorm
    D = _n_back(D, K_L)

  def backward(D, s):
    s1, s2 = s
    ffn_back = lambda D_f, K_x: D_f * _ta.pair_moments(act, K_x)[1]
    D1, D_f2, K_x2 = _sublayer_backward(D, s2, ffn_back, norm, alpha, beta)
    F, dphi = _ta.pair_moments(act, K_x2)
    w1 = d_model ** 2 * _inner(K_x2, D_f2 * dphi)
    w2 = d_model * d_ff * _inner(F, D_f2)
    D0, D_f1, K_x1 = _sublayer_backward(D1, s1, lambda D_f, K_x: U.T @ D_f @ U, norm,
                                        alpha, beta)
    wo = d_model ** 2 * _inner(U @ K_x1 @ U.T, D_f1)
    wv = d_model ** 2 * _inner(K_x1, U.T @ D_f1 @ U)
    return D0, GradientProfile(wv, wo, w1, w2)

  _, norms = jax.lax.scan(backward, D, saved, reverse=True)
  return norms


def gradient_profile(depth, kernel=None, *, d_model, d_ff, q0=1.0, rho0=0.0, tokens=None,
                     norm="pre", activation="relu", residual_scale=1.0, skip_scale=1.0,
                     causal=False) -> GradientProfile:
  """``E ||dL/dW||_F^2`` of every block's ``Wv, Wo, W1, W2`` at init (the module docstring).

  Where it comes from: ``||dW||^2 = n_in n_out <K_x, D_y>`` with the forward token
  kernels of :mod:`jaxbp.theory.attention` and the backward recursion of the gradient
  kernel ``D`` from ``D = I`` at the output (the loss ``sum G * y``, ``G`` i.i.d.
  N(0, 1)); uniform attention (exact for ``qk_scale = 0``), one sequence.

  Args:
    depth: blocks (>= 1).
    kernel: the input's token kernel ``(T, T)``, or None for
      :func:`~jaxbp.theory.attention.equicorrelated_kernel` ``(q0, rho0, tokens)``.
    d_model, d_ff: the widths (they scale the norms: ``n_in n_out``).
    norm, activation, residual_scale, skip_scale, causal: as :class:`jaxbp.Transformer`.

  Returns: a :class:`GradientProfile`; ``.total`` sums a block's matrices. Jits, and
  vmaps over ``residual_scale``, ``skip_scale`` and the kernel.
  """
  where = "gradient_profile"
  depth = _checks.positive_int(depth, "depth", where)
  d_model = _checks.positive_int(d_model, "d_model", where)
  d_ff = _checks.positive_int(d_ff, "d_ff", where)
  if kernel is None:
    if tokens is None:
      raise ValueError(f"{where}: give a kernel (T, T), or q0, rho0 and tokens (the number "
                       "of tokens T) for equicorrelated tokens.")
    kernel = _ta.equicorrelated_kernel(q0, rho0, tokens)
  act, causal, _, _, _, K = _ta.check_options(where, kernel, norm, activation, residual_scale,
                                              skip_scale, causal)
  return _gradients(K, depth, act, norm, residual_scale, skip_scale, causal, float(d_model),
                    float(d_ff))
