"""Signal propagation through a transformer at init: the token kernel, block by block.

The network is :class:`jaxbp.Transformer` at its default init: every ``W`` drawn
N(0, 1 / fan_in) (LeCun), every bias 0, every LayerNorm at scale 1, offset 0,
``eps = 1e-5``. One sequence ``h`` ``(T, d)``; its **token kernel** is

    K[i, j] = (1/d) sum_a h[i, a] h[j, a],
    q = (1/T) sum_i K[i, i],    rho = mean_{i != j} K[i, j] / sqrt(K[i, i] K[j, j])

(:func:`token_kernel`, :func:`kernel_stats`). As ``d, d_ff -> infinity`` the kernel
of each sublayer's output is a deterministic function of its input's kernel,
because every feature of a product ``x W`` (``W`` independent of ``x``, zero mean)
is a centred Gaussian over the tokens with covariance ``K_x`` (Neal 1996; Lee et
al. 2018). Four rules, with ``alpha = residual_scale``, ``beta = skip_scale``:

**Skip.** ``(1/d) sum_a (beta h + alpha f)[i, a] (beta h + alpha f)[j, a] = beta^2 K_h
+ alpha^2 K_f + 2 alpha beta C``, and the cross term ``C[i, j] = (1/d) sum_a h[i, a]
f[j, a]`` has mean 0 (``f`` ends in ``Wo`` or ``W2``, zero mean and independent of
``h``) and size ``O(sqrt(K_ii K_f,jj / d))``: it vanishes.

**LayerNorm.** ``LN(x)[i, a] = (x[i, a] - mu_i) / sqrt(K[i, i] - mu_i^2 + eps)``
with ``mu_i = (1/d) sum_a x[i, a] = O(sqrt(K_ii / d))`` at init (every ``x`` is a sum of
zero-mean projections), so ``K_LN[i, j] = K[i, j] / sqrt((K_ii + eps)(K_jj + eps))``
up to ``O(1/d)``: the kernel becomes a correlation matrix.

**Attention.** ``z = softmax(S) (x Wv) Wo`` per head. Given the logits, ``v = x Wv``
has kernel ``K_x`` and ``Wo`` keeps it (fan-in variance), so head h gives ``P^h K_x
P^h^T`` and the heads' mean is ``K_z = (1/H) sum_h P^h K_x P^h^T``. With ``qk_scale
= 0``, ``S = 0`` and every ``P^h = U``, the uniform mean over the visible tokens
(``U[i, j] = 1/T``; causal: ``1/i`` for ``j <= i``, 0 beyond), so ``K_z = U K_x U^T``
exactly. Otherwise ``S[i, j] = c_s sum_e q[i, e] k[j, e]`` over the head's ``dh``
features, ``q = x Wq``, ``k = x Wk`` independent with ``E q[i, e] q[i', e'] =
delta_ee' K_x[i, i']``, so

    E S[i, j] S[i', j'] = c_s^2 dh K_x[i, i'] K_x[j, j'] = sigma^2 K_x[i, i'] K_x[j, j'],
    sigma = c_s sqrt(dh)   (the logit scale: 1 at the default c_s = 1/sqrt(dh), 0 at c_s = 0).

``S`` is the sum of ``dh`` i.i.d. products, Gaussian as ``dh -> infinity`` (then
``S = sigma L G L^T``, ``L L^T = K_x``, ``G`` i.i.d. N(0, 1)), and ``K_z ~ E_S[P K_x
P^T]``, ``P = softmax(S)`` row-wise, which this module takes by Monte Carlo over
``samples`` fixed draws (antithetic pairs; a fixed key, so the answer is
deterministic). ``head_dim = dh`` draws the exact product law instead (``S = c_s (L
A)(L B)^T``, ``A, B`` ``(T, dh)``). **What it neglects:** (i) the heads are
finitely many: ``K_z`` is the mean of ``H`` i.i.d. ``P K P^T``, not its expectation;
the kernel is itself random with relative spread ``~ sd(P K P^T) / sqrt(H)`` per
block, and the recursion, nonlinear in ``K``, is shifted by its variance
(``O(1/H)``); it is exact only as ``H -> infinity`` (``d -> infinity`` at fixed
``dh`` with ``head_dim = dh``). (ii) With ``head_dim = None``, the logits' excess
kurtosis ``6/dh`` (products of Gaussians). (iii) The Monte Carlo error,
``~ sd / sqrt(samples)``. (iv) ``O(1/d)`` like every other rule. The uniform
approximation (``logit_std = 0`` at the default ``qk_scale``) neglects the logits'
spread: the part of ``S`` that varies along a row has variance ``sigma^2 K_ii
(K_jj - K_jj')``-like, ``sigma^2 q^2 (1 - rho)`` for equicorrelated tokens, and the
error in ``K_z`` is of that order (small once the tokens align, large with growing
``q`` under ``norm="none"``).

**FFN.** ``u = x W1`` has kernel ``K_x``; ``phi(u) W2`` (``W2`` of variance ``1/d_ff``)
has ``K_F[i, j] = E[phi(u_i) phi(u_j)]``, ``(u_i, u_j)`` Gaussian with covariances
from ``K_x``. For relu the arc-cosine kernel (Cho & Saul 2009), ``theta =
arccos(K_ij / sqrt(K_ii K_jj))``: ``K_F = sqrt(K_ii K_jj) (sin theta + (pi - theta)
cos theta) / (2 pi)``; identity: ``K_F = K``; any other elementwise ``phi``:
Gauss-Legendre quadrature (:mod:`jaxbp.theory.quadrature`).

**A block**, ``A`` the attention rule and ``F`` the FFN rule, ``N`` the LayerNorm::

    pre:   K1 = beta^2 K + alpha^2 A(N(K));    K' = beta^2 K1 + alpha^2 F(N(K1))
    post:  K1 = N(beta^2 K + alpha^2 A(K));    K' = N(beta^2 K1 + alpha^2 F(K1))
    none:  K1 = beta^2 K + alpha^2 A(K);       K' = beta^2 K1 + alpha^2 F(K1)

(pre-LN's final LayerNorm is not a block: apply ``N`` to the last kernel.) With
``qk_scale = 0`` every rule is exact as ``d, d_ff -> infinity``; at ``d = 256, T =
32`` and depth 64 the measured means lie within the issue's 0.03 in rho and 0.05
in ln q (``tests/theory/test_attention_theory.py``).

**Rank collapse** (Dong et al. 2021): pure attention (``beta = 0``, no FFN, no norm)
maps the residual ``r_i = h_i - mean_j h_j`` to a cube of itself. Write ``S[i, j] =
a_i + c_j + e_ij``: ``a_i`` is constant along a row (the softmax drops it), ``c_j =
c_s (h_bar Wq) . (r_j Wk)`` is the same in every row, so ``P = 1 p^T + O(e)`` and
``1 p^T h`` is rank one; what survives is ``sum_j p_j (e_ij - sum_k p_k e_ik) r_j``,
``e_ij = c_s (r_i Wq) . (r_j Wk)``, of size ``|r|^3``. For equicorrelated tokens,
``delta = 1 - rho``: ``delta' ~ (sigma^2 q^2 / T) delta^3`` as ``delta -> 0``, Dong's
doubly exponential (``3^l``) rate (their bound ``||res'|| <= (4 gamma beta /
sqrt(d_qk)) ||res||^3``; :func:`rank_collapse`). With ``qk_scale = 0`` (or a skip)
the cube is gone: uniform attention makes the tokens equal in one block (non-causal),
and a skip keeps ``delta`` off 0 (Dong's "skips prevent it"; Noci et al. 2022).

References: Dong, Cordonnier & Loukas, "Attention is not all you need: pure
attention loses rank doubly exponentially with depth", ICML 2021. Noci et al.,
"Signal propagation in transformers: theoretical perspectives and the role of
rank collapse", NeurIPS 2022. Xiong et al., "On layer normalization in the
transformer architecture", ICML 2020. Cho & Saul, "Kernel methods for deep
learning", NeurIPS 2009. Lee et al., "Deep neural networks as Gaussian processes",
ICLR 2018.

>>> q, rho = signal_profile(4, q0=1.0, rho0=0.0, tokens=8, norm="post")
>>> [round(float(r), 4) for r in rho]
[0.0, 0.1994, 0.4339, 0.6473, 0.8011]
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.core import activations as _activations
from jaxbp.core import checks as _checks
from jaxbp.core.attention import EPS
import jaxbp.theory.quadrature as _quadrature

NORMS = ("pre", "post", "none")
SAMPLES = 512       # Monte Carlo draws of the logits per attention sublayer (antithetic pairs)
_PAIR_POINTS = 128  # Gauss-Legendre nodes per axis for a non-relu FFN kernel


class SignalProfile(NamedTuple):
  """The kernel's summary at the input (``l = 0``) and after each block.

  Attributes:
    q: ``(depth + 1,)``, the mean over tokens of ``K[i, i]``.
    rho: ``(depth + 1,)``, the mean over ``i != j`` of ``K[i, j] / sqrt(K_ii K_jj)``.
  """
  q: jax.Array
  rho: jax.Array


def token_kernel(h):
  """``K[..., i, j] = (1/d) sum_a h[..., i, a] h[..., j, a]`` of tokens ``(..., T, d)``."""
  h = jnp.asarray(h)
  return jnp.einsum("...ia,...ja->...ij", h, h) / h.shape[-1]


def kernel_stats(kernel) -> SignalProfile:
  """``(q, rho)`` of kernels ``(..., T, T)`` (the module docstring's definitions), ``T >= 2``."""
  K = jnp.asarray(kernel)
  T = K.shape[-1]
  d = jnp.diagonal(K, axis1=-2, axis2=-1)
  s = jnp.sqrt(d)
  cos = K / (s[..., :, None] * s[..., None, :])
  off = (jnp.sum(cos, axis=(-2, -1)) - jnp.sum(jnp.diagonal(cos, axis1=-2, axis2=-1), -1))
  return SignalProfile(jnp.mean(d, axis=-1), off / (T * (T - 1)))


def equicorrelated_kernel(q0, rho0, tokens: int):
  """``q0 ((1 - rho0) I + rho0 1 1^T)``, ``(tokens, tokens)``: every token of second moment
  ``q0``, every pair of cosine ``rho0``."""
  where = "equicorrelated_kernel"
  T = _checks.int_at_least(tokens, 2, "tokens", where)
  _checks.real_array(q0, "q0", where, low=0.0, open_low=True)
  _checks.real_array(rho0, "rho0", where, low=-1.0 / (T - 1), high=1.0)
  q0, rho0 = jnp.asarray(q0, float), jnp.asarray(rho0, float)
  eye = jnp.eye(T, dtype=q0.dtype)
  return q0 * ((1.0 - rho0) * eye + rho0 * jnp.ones_like(eye))


# -- the four rules ----------------------------------------------------------------


def layer_norm_kernel(K, eps=EPS):
  """``N(K) = K[i, j] / sqrt((K_ii + eps)(K_jj + eps))``: LayerNorm at infinite width."""
  s = jax.lax.rsqrt(jnp.diagonal(K, axis1=-2, axis2=-1) + eps)
  return K * s[..., :, None] * s[..., None, :]


def uniform_attention(tokens: int, causal: bool = False, dtype=float):
  """``U``: row i the uniform mean over the tokens i sees (all; ``j <= i`` when causal)."""
  U = jnp.tril(jnp.ones((tokens, tokens), dtype)) if causal else jnp.ones((tokens, tokens), dtype)
  return U / jnp.sum(U, axis=-1, keepdims=True)


def pair_moments(activation, K):
  """``(E[phi(u_i) phi(u_j)], E[phi'(u_i) phi'(u_j)])`` for ``u ~ N(0, K)``, ``K (T, T)``:
  closed forms for relu (the arc-cosine kernels) and identity, quadrature otherwise."""
  act = _elementwise(activation, "pair_moments")
  return _pair_moments(act, K)


def _pair_moments(act, K):
  s = jnp.sqrt(jnp.maximum(jnp.diagonal(K), 0.0))
  ss = s[:, None] * s[None, :]
  c = jnp.clip(K / jnp.where(ss > 0, ss, 1.0), -1.0, 1.0)
  if act.name == "identity":
    return K, jnp.ones_like(K)
  if act.name == "relu":
    theta = jnp.arccos(c)
    return (ss * (jnp.sin(theta) + (math.pi - theta) * c) / (2 * math.pi),
            (math.pi - theta) / (2 * math.pi))
  z, w = _quadrature.rule(_PAIR_POINTS, K.dtype)
  z1, z2 = z.reshape(1, 1, -1, 1), z.reshape(1, 1, 1, -1)
  ww = (w[:, None] * w[None, :])[None, None]
  u1 = s[:, None, None, None] * z1
  u2 = s[None, :, None, None] * (c[..., None, None] * z1
                                 + jnp.sqrt(1.0 - c * c)[..., None, None] * z2)
  return tuple(jnp.sum(ww * f(u1) * f(u2), axis=(-2, -1)) for f in (act.fn, act.grad))


def _noise(key, layer, samples, T, head_dim, dtype):
  """Fixed standard normal draws for one sublayer; the second half negates the first."""
  k = jax.random.fold_in(jax.random.PRNGKey(key), layer)
  shape = (samples // 2, T, T) if head_dim is None else (samples // 2, 2, T, head_dim)
  g = jax.random.normal(k, shape, dtype)
  return jnp.concatenate([g, -g]) if head_dim is None else \
      jnp.concatenate([g, g * jnp.array([1.0, -1.0], dtype)[None, :, None, None]])


def attention_kernel(K, logit_std=0.0, causal=False, noise=None):
  """``E[P K P^T]`` (the module docstring's attention rule) for the attention's input
  kernel ``K (T, T)``; ``noise`` ``(n, T, T)`` (Gaussian logits) or ``(n, 2, T, dh)``
  (the product law) of N(0, 1) draws; None (or ``logit_std = 0``) is uniform attention."""
  T = K.shape[-1]
  U = uniform_attention(T, causal, K.dtype)
  if noise is None:
    return U @ K @ U.T
  lam, vec = jnp.linalg.eigh(K)
  L = vec * jnp.sqrt(jnp.maximum(lam, 0.0))[None, :]          # L L^T = K, K may be singular
  if noise.ndim == 3:
    S = logit_std * jnp.einsum("ia,nab,jb->nij", L, noise, L)
  else:
    a, b = (jnp.einsum("ia,nae->nie", L, noise[:, m]) for m in (0, 1))
    S = (logit_std / math.sqrt(noise.shape[-1])) * jnp.einsum("nie,nje->nij", a, b)
  S = jnp.where(U[None] > 0, S, -jnp.inf)
  P = jax.nn.softmax(S, axis=-1)
  return jnp.mean(jnp.einsum("nij,jk,nlk->nil", P, K, P), axis=0)


# -- a block, and the profile ------------------------------------------------------


def _block(K, layer, act, norm, alpha, beta, causal, logit_std, head_dim, samples, key, ffn):
  """One block's map ``K -> K'``; ``layer`` picks the Monte Carlo draws."""
  N = layer_norm_kernel
  noise = None if samples == 0 else _noise(key, layer, samples, K.shape[-1], head_dim, K.dtype)
  A = functools.partial(attention_kernel, logit_std=logit_std, causal=causal, noise=noise)
  F = lambda k: _pair_moments(act, k)[0]
  sublayers = (A, F) if ffn else (A,)
  for f in sublayers:
    if norm == "pre":
      K = beta ** 2 * K + alpha ** 2 * f(N(K))
    elif norm == "post":
      K = N(beta ** 2 * K + alpha ** 2 * f(K))
    else:
      K = beta ** 2 * K + alpha ** 2 * f(K)
  return K


@functools.partial(jax.jit, static_argnames=("depth", "act", "norm", "causal", "head_dim",
                                             "samples", "key", "ffn"))
def _profile(K0, depth, act, norm, alpha, beta, causal, logit_std, head_dim, samples, key, ffn):
  def step(K, layer):
    K = _block(K, layer, act, norm, alpha, beta, causal, logit_std, head_dim, samples, key, ffn)
    return K, K
  _, Ks = jax.lax.scan(step, K0, jnp.arange(depth))
  return jnp.concatenate([K0[None], Ks])


def _elementwise(activation, where):
  act = _activations.get(activation)
  if not act.elementwise:
    raise ValueError(f"{where}: activation must be elementwise, got {act.name!r}.")
  return act


def check_options(where, kernel, norm, activation, residual_scale, skip_scale, causal,
                  logit_std=0.0, head_dim=None, samples=SAMPLES, key=0):
  """Checks the arguments the profiles share, naming ``where``; returns ``(activation,
  causal, head_dim, samples, key, kernel)``, ``samples = 0`` for uniform attention."""
  _checks.one_of(norm, NORMS, "norm", where)
  act = _elementwise(activation, where)
  for name, value in (("residual_scale", residual_scale), ("skip_scale", skip_scale)):
    _checks.real_array(value, name, where)
  _checks.real_array(logit_std, "logit_std", where, low=0.0)
  causal = _checks.boolean(causal, "causal", where)
  if head_dim is not None:
    head_dim = _checks.positive_int(head_dim, "head_dim", where)
  samples = _checks.int_at_least(samples, 2, "samples", where)
  if samples % 2:
    raise ValueError(f"{where}: samples must be even (antithetic pairs), got {samples}.")
  if not _checks.is_int(key):
    raise ValueError(f"{where}: key must be an int (the Monte Carlo seed), got {key!r}.")
  _checks.real_array(kernel, "kernel", where)
  K = jnp.asarray(kernel)
  K = K.astype(jnp.result_type(K, float))
  if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] < 2:
    raise ValueError(f"{where}: kernel must be a (T, T) token kernel with T >= 2, got shape "
                     f"{K.shape}.")
  # Uniform attention needs no draws: a concrete logit_std of 0 skips the Monte Carlo.
  uniform = not isinstance(logit_std, jax.core.Tracer) and not np.any(np.asarray(logit_std))
  return act, causal, head_dim, 0 if uniform else samples, int(key), K


def token_kernel_step(kernel, norm="pre", activation="relu", residual_scale=1.0, skip_scale=1.0,
                      causal=False, logit_std=0.0, head_dim=None, samples=SAMPLES, key=0,
                      layer=0):
  """One block's map of the token kernel at infinite width (the module docstring).

  Args:
    kernel: ``(T, T)``, the block input's token kernel.
    norm, activation, residual_scale, skip_scale, causal: as :class:`jaxbp.Transformer`.
    logit_std: ``sigma = qk_scale sqrt(dh)``: 1 at the default ``qk_scale``, 0 for
      ``qk_scale = 0`` (uniform attention, exact; no Monte Carlo).
    head_dim: None, Gaussian logits (``dh -> infinity``); an int ``dh``, the exact
      law of a ``dh``-feature dot product.
    samples, key: the Monte Carlo's draws (even) and seed; ``layer`` is folded
      into the seed, so each block gets its own draws.

  Returns: the block output's kernel ``(T, T)``.
  """
  act, causal, head_dim, samples, key, K = check_options(
      "token_kernel_step", kernel, norm, activation, residual_scale, skip_scale, causal,
      logit_std, head_dim, samples, key)
  return _block(K, layer, act, norm, residual_scale, skip_scale, causal, logit_std, head_dim,
                samples, key, True)


def kernel_profile(depth, kernel=None, *, q0=1.0, rho0=0.0, tokens=None, norm="pre",
                   activation="relu", residual_scale=1.0, skip_scale=1.0, causal=False,
                   logit_std=0.0, head_dim=None, samples=SAMPLES, key=0, ffn=True):
  """The token kernels ``(depth + 1, T, T)``: the input's, then each block's output.

  The input is ``kernel`` ``(T, T)``, or (kernel None) equicorrelated tokens
  :func:`equicorrelated_kernel` ``(q0, rho0, tokens)``. ``ffn=False`` drops the FFN
  sublayer (pure attention, Dong's setting); the rest as :func:`token_kernel_step`.
  Jits (one compile per depth, T and static option) and vmaps over ``residual_scale``,
  ``skip_scale``, ``logit_std`` and the kernel (or ``q0, rho0``).
  """
  where = "kernel_profile"
  depth = _checks.int_at_least(depth, 0, "depth", where)
  if kernel is None:
    if tokens is None:
      raise ValueError(f"{where}: give a kernel (T, T), or q0, rho0 and tokens (the number "
                       "of tokens T) for equicorrelated tokens.")
    kernel = equicorrelated_kernel(q0, rho0, tokens)
  ffn = _checks.boolean(ffn, "ffn", where)
  act, causal, head_dim, samples, key, K = check_options(
      where, kernel, norm, activation, residual_scale, skip_scale, causal, logit_std,
      head_dim, samples, key)
  return _profile(K, depth, act, norm, residual_scale, skip_scale, causal, logit_std,
                  head_dim, samples, key, ffn)


def signal_profile(depth, kernel=None, **options) -> SignalProfile:
  """``(q, rho)`` per block, ``l = 0 .. depth``: :func:`kernel_stats` of
  :func:`kernel_profile` (same arguments).

  Where it comes from: the module docstring's block map, iterated; exact at
  infinite width for ``logit_std = 0`` (``qk_scale = 0``).

  >>> q, rho = signal_profile(2, q0=1.0, rho0=0.5, tokens=4, norm="none")
  >>> [round(float(v), 4) for v in q]
  [1.0, 2.4375, 6.5163]
  """
  return kernel_stats(kernel_profile(depth, kernel, **options))


class RankCollapse(NamedTuple):
  """Pure attention's distance to rank one, per layer ``l = 0 .. depth``.

  Attributes:
    residual: ``||h - 1 h_bar^T||_F / ||h||_F`` predicted by the kernel recursion
      (``sqrt(tr(C K C) / tr K)``, ``C = I - 1 1^T / T``). It bottoms out near 1e-8:
      the kernel holds ``q 1 1^T`` plus the residual's square, in float64.
    cubic: Dong's leading order from the same start, ``delta_{l+1} = (sigma^2 q_l^2
      / T) delta_l^3`` on ``delta = 1 - rho`` (equicorrelated tokens), as the residual
      ``sqrt(delta (1 - 1/T))``.
  """
  residual: jax.Array
  cubic: jax.Array


def rank_collapse(depth, q0=1.0, rho0=0.5, tokens=8, logit_std=1.0, causal=False,
                  head_dim=None, samples=SAMPLES, key=0) -> RankCollapse:
  """Dong et al.'s rank collapse of pure attention (no skip, no FFN, no norm), from
  equicorrelated tokens: the Monte Carlo kernel recursion and its cubic law
  (the module docstring's "Rank collapse"). The residual falls doubly
  exponentially, ``ln delta_l ~ 3^l``, once ``delta`` is small."""
  K = kernel_profile(depth, q0=q0, rho0=rho0, tokens=tokens, norm="none", skip_scale=0.0,
                     causal=causal, logit_std=logit_std, head_dim=head_dim, samples=samples,
                     key=key, ffn=False)
  T = K.shape[-1]
  C = jnp.eye(T, dtype=K.dtype) - 1.0 / T                    # removes the token mean
  tr = jnp.trace(K, axis1=-2, axis2=-1)
  residual = jnp.sqrt(jnp.maximum(jnp.trace(C @ K @ C, axis1=-2, axis2=-1) / tr, 0.0))
  q = tr / T

  def cube(delta, q_l):
    nxt = (logit_std ** 2) * q_l ** 2 / T * delta ** 3
    return nxt, nxt
  _, deltas = jax.lax.scan(cube, 1.0 - jnp.asarray(rho0, K.dtype), q[:-1])
  deltas = jnp.concatenate([jnp.asarray(1.0 - rho0, K.dtype)[None], deltas])
  return RankCollapse(residual, jnp.sqrt(deltas * (1.0 - 1.0 / T)))
