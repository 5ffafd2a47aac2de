"""The transformer's signal-propagation theory (jaxbp.theory.attention and
attention_gradients) against Monte Carlo on jaxbp.Transformer itself, float64.

With qk_scale = 0 the recursion is exact at infinite width, so the measured means
at finite width must sit within the O(1/d) bias plus the seeds' standard error.
The slow tests run the issue's depths; the fast ones one block, small and wide.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.core import activations
from jaxbp.core import attention as core_attention
from jaxbp.core import initializers
from jaxbp.theory import attention as ta
from jaxbp.theory import attention_gradients as tg


def _measure(d, T, depth, norm, alpha, beta, seeds, batch, qk_scale=0.0, causal=False,
             rho0=0.0, d_ff=None, heads=4):
  """ln q and rho per block, one row per sequence: ``(depth + 1, seeds * batch)`` each."""
  net = jaxbp.Transformer(d_model=d, heads=heads, depth=depth, d_ff=d_ff or 4 * d, norm=norm,
                          residual_scale=alpha, skip_scale=beta, qk_scale=qk_scale,
                          causal=causal, stack=True)
  kind, L = net.block_kind, jnp.linalg.cholesky(ta.equicorrelated_kernel(1.0, rho0, T))

  @jax.jit
  def one(key):
    kp, kx = jax.random.split(key)
    x = jnp.einsum("ij,bja->bia", L, jax.random.normal(kx, (batch, T, d)))

    def step(h, p):
      h = kind.forward(h, p)
      return h, ta.kernel_stats(ta.token_kernel(h))
    _, (q, rho) = jax.lax.scan(step, x, net.init(kp)[0])
    q0, rho0_ = ta.kernel_stats(ta.token_kernel(x))
    return jnp.concatenate([q0[None], q]), jnp.concatenate([rho0_[None], rho])
  out = [one(jax.random.PRNGKey(s)) for s in range(seeds)]
  return (np.log(np.concatenate([o[0] for o in out], 1)),
          np.concatenate([o[1] for o in out], 1))


def _errors(pred, meas):
  """``(max |error|, the standard error there)`` over the blocks."""
  err = np.abs(np.asarray(pred) - meas.mean(1))
  return err.max(), meas.std(1)[err.argmax()] / np.sqrt(meas.shape[1])


# -- fast: one block, wide ------------------------------------------------------------


def _one_block(norm, causal, alpha=0.9, beta=0.6, rho0=0.4, T=6, d=512, batch=4, seeds=2):
  """ln q, rho of one eager Transformer block's outputs, ``(2, seeds * batch)``."""
  net = jaxbp.Transformer(d_model=d, heads=4, depth=1, d_ff=d, norm=norm, residual_scale=alpha,
                          skip_scale=beta, qk_scale=0.0, causal=causal)
  L = jnp.linalg.cholesky(ta.equicorrelated_kernel(1.0, rho0, T))
  stats = []
  for s in range(seeds):
    kp, kx = jax.random.split(jax.random.PRNGKey(s))
    x = jnp.einsum("ij,bja->bia", L, jax.random.normal(kx, (batch, T, d)))
    # The block itself: net.apply would add pre-LN's final LayerNorm.
    h = net.block_kind.forward(x, net.init(kp)[0])
    stats.append([ta.kernel_stats(ta.token_kernel(u)) for u in (x, h)])
  return tuple(np.array([np.concatenate([st[l][m] for st in stats]) for l in (0, 1)])
               for m in (0, 1))


@pytest.mark.parametrize("norm,causal", [
    ("post", True),
    pytest.param("pre", False, marks=pytest.mark.slow),
    pytest.param("none", False, marks=pytest.mark.slow)])
def test_one_block_matches_a_wide_transformer_block(norm, causal):
  # alpha, beta != 1 and correlated tokens, so a beta for beta^2 or a dropped
  # normalisation moves q or rho by more than 0.05.
  q_m, rho_m = _one_block(norm, causal)
  q, r = ta.signal_profile(1, q0=1.0, rho0=0.4, tokens=6, norm=norm, residual_scale=0.9,
                           skip_scale=0.6, causal=causal)
  assert _errors(np.log(q), np.log(q_m))[0] < 0.04
  assert _errors(r, rho_m)[0] < 0.025


def test_pair_moments_closed_forms_equal_quadrature():
  K = ta.equicorrelated_kernel(1.5, 0.3, 3).at[0, 0].set(2.5)
  for name in ("relu", "identity"):
    act = activations.get(name)
    same = activations.Activation(name + "_by_quadrature", act.fn, act.grad)
    # The quadrature has relu's kink (and relu''s jump) off its panel edges: 1e-5, 2e-3.
    for exact, quad, tol in zip(ta.pair_moments(act, K), ta.pair_moments(same, K), (1e-4, 5e-3)):
      np.testing.assert_allclose(exact, quad, atol=tol)


@pytest.mark.slow
def test_logit_draws_zero_spread_is_uniform_and_head_dim_tends_to_gaussian():
  K = ta.equicorrelated_kernel(1.0, 0.3, 5)
  noise = jax.random.normal(jax.random.PRNGKey(0), (64, 5, 5))
  np.testing.assert_allclose(ta.attention_kernel(K, 0.0, True, noise),
                             ta.attention_kernel(K, 0.0, True), atol=1e-14)
  gauss = ta.token_kernel_step(K, norm="none", logit_std=1.0, samples=1024)
  wide = ta.token_kernel_step(K, norm="none", logit_std=1.0, samples=1024, head_dim=128)
  np.testing.assert_allclose(gauss, wide, atol=0.03)
  assert not np.allclose(gauss, ta.token_kernel_step(K, norm="none"), atol=0.02)


def test_jit_and_vmap_over_scales():
  alphas = jnp.array([0.5, 1.0])

  def rho_end(a):
    return ta.signal_profile(3, q0=1.0, rho0=0.2, tokens=4, residual_scale=a,
                             norm="post").rho[-1]
  loop = jnp.stack([rho_end(float(a)) for a in alphas])
  np.testing.assert_allclose(jax.vmap(rho_end)(alphas), loop, rtol=1e-12)
  np.testing.assert_allclose(jax.jit(rho_end)(1.0), loop[1], rtol=1e-12)
  g = jax.vmap(lambda b: tg.gradient_profile(2, q0=1.0, rho0=0.2, tokens=4, d_model=8,
                                             d_ff=8, skip_scale=b).total)(alphas)
  assert g.shape == (2, 2) and np.all(np.isfinite(g))


BAD = [
    (lambda: ta.signal_profile(2, q0=1.0, rho0=0.0, tokens=4, norm="mid"), ValueError,
     r"norm must be one of \('pre', 'post', 'none'\), got 'mid'"),
    (lambda: ta.signal_profile(2), ValueError, r"give a kernel \(T, T\), or q0, rho0 and tokens"),
    (lambda: ta.signal_profile(-1, q0=1.0, tokens=4), ValueError, r"depth must be an int >= 0"),
    (lambda: ta.signal_profile(2, q0=-1.0, tokens=4), ValueError, r"q0 must be a finite number"),
    (lambda: ta.signal_profile(2, q0=1.0, rho0=1.5, tokens=4), ValueError, r"rho0 must be"),
    (lambda: ta.signal_profile(2, q0=1.0, tokens=1), ValueError, r"tokens must be an int >= 2"),
    (lambda: ta.signal_profile(2, q0=1.0, tokens=4, logit_std=-1.0), ValueError,
     r"logit_std must be a finite number >= 0"),
    (lambda: ta.signal_profile(2, q0=1.0, tokens=4, logit_std=1.0, samples=7), ValueError,
     r"samples must be even"),
    (lambda: ta.signal_profile(2, q0=1.0, tokens=4, head_dim=0), ValueError,
     r"head_dim must be an int >= 1"),
    (lambda: ta.signal_profile(2, q0=1.0, tokens=4, causal=1), ValueError,
     r"causal must be True or False"),
    (lambda: ta.signal_profile(2, q0=1.0, tokens=4, residual_scale="1"), TypeError,
     r"residual_scale must be a real number"),
    (lambda: ta.signal_profile(2, q0=1.0, tokens=4, activation="softmax"), ValueError,
     r"activation must be elementwise"),
    (lambda: ta.signal_profile(2, jnp.ones((3, 4))), ValueError, r"kernel must be a \(T, T\)"),
    (lambda: tg.gradient_profile(0, q0=1.0, tokens=4, d_model=8, d_ff=8), ValueError,
     r"gradient_profile: depth must be an int >= 1"),
    (lambda: tg.gradient_profile(2, q0=1.0, tokens=4, d_model=8.0, d_ff=8), ValueError,
     r"gradient_profile: d_model must be an int >= 1"),
]


@pytest.mark.parametrize("call,error,message", BAD)
def test_bad_arguments_are_named(call, error, message):
  with pytest.raises(error, match=message):
    call()


# -- slow: the depths ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["pre", "post", "none"])
@pytest.mark.parametrize("alpha", [1.0, 0.2])            # 0.2 = 1 / sqrt(depth 25)
@pytest.mark.parametrize("beta,causal", [(1.0, False), (0.7, True)])
def test_profile_matches_transformer_at_qk_scale_zero(norm, alpha, beta, causal):
  depth, T = 24, 16
  lnq, rho = _measure(256, T, depth, norm, alpha, beta, seeds=4, batch=4, causal=causal)
  q, r = ta.signal_profile(depth, q0=1.0, rho0=0.0, tokens=T, norm=norm, residual_scale=alpha,
                           skip_scale=beta, causal=causal)
  # ln q of norm="none" at alpha = 1 random-walks by ~0.1 a block (the tokens align, and
  # one direction's norm fluctuates by sqrt(2 / d)): the bound widens by 4 standard errors.
  err, se = _errors(np.log(q), lnq)
  assert err < 0.05 + 4 * se, (err, se)
  err, se = _errors(r, rho)
  assert err < 0.03 + 4 * se, (err, se)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_profile_at_default_qk_scale_by_monte_carlo(norm):
  depth, T = 16, 16
  lnq, rho = _measure(256, T, depth, norm, 1.0, 1.0, seeds=4, batch=4, qk_scale=None)
  q, r = ta.signal_profile(depth, q0=1.0, rho0=0.0, tokens=T, norm=norm, logit_std=1.0)
  assert _errors(r, rho)[0] < 0.03
  assert _errors(np.log(q), lnq)[0] < 0.1
  # The uniform approximation is worse here: the logits' spread is O(1) at rho ~ 0.
  q_u, r_u = ta.signal_profile(depth, q0=1.0, rho0=0.0, tokens=T, norm=norm)
  assert _errors(r_u, rho)[0] > _errors(r, rho)[0]


def _grad_norms(norm, depth, T, seeds, batch, causal):
  """Mean over seeds of ||dL/dW||^2 per block and matrix (Wv, Wo, W1, W2), per sequence,
  for L = sum(G * y), by jax.grad."""
  d = 256
  net = jaxbp.Transformer(d_model=d, heads=4, depth=depth, d_ff=4 * d, norm=norm, qk_scale=0.0,
                          causal=causal, stack=True)

  @jax.jit
  def one(key):
    kp, kx, kg = jax.random.split(key, 3)
    x, G = (jax.random.normal(k, (batch, T, d)) for k in (kx, kg))
    g = jax.grad(lambda p: jnp.sum(G * net.apply(p, x)))(net.init(kp))[0]
    # Sequences' cross terms vanish in the mean (G is independent across them).
    sq = lambda W: jnp.sum(W * W, axis=(1, 2)) / batch
    return jnp.stack([sq(g.attn.Wv), sq(g.attn.Wo), sq(g.ffn1.W), sq(g.ffn2.W)], 1)
  return np.mean([one(jax.random.PRNGKey(s)) for s in range(seeds)], axis=0)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("depth", [6, 12, 24])
def test_gradient_profile_matches_jax_grad(norm, depth):
  T = 16
  measured = _grad_norms(norm, depth, T, seeds=8, batch=4, causal=True).sum(1)
  p = tg.gradient_profile(depth, q0=1.0, rho0=0.0, tokens=T, d_model=256, d_ff=1024,
                          norm=norm, causal=True).total
  ratio_p, ratio_m = p[-1] / p[0], measured[-1] / measured[0]
  assert abs(ratio_p / ratio_m - 1) < 0.2, (ratio_p, ratio_m)
  # Per block 25%: post-LN's 2L norms each drop O(1/d) of the gradient (the module
  # docstring), 19% by the first block at depth 24.
  np.testing.assert_allclose(p, measured, rtol=0.25)


@pytest.mark.slow
def test_rank_collapse_is_cubic():
  r = ta.rank_collapse(4, q0=1.0, rho0=0.5, tokens=8)
  q = ta.signal_profile(1, q0=1.0, rho0=0.5, tokens=8, norm="none", skip_scale=0.0,
                        logit_std=1.0, ffn=False).q
  delta = np.asarray(r.residual[:3]) ** 2 / (1 - 1 / 8)
  # delta_2 / delta_1^3 is the cubic law's q_1^2 / T while delta falls by orders: Dong's 3^l.
  assert delta[2] < 1e-5 and 0.5 < delta[2] / delta[1] ** 3 / (q[1] ** 2 / 8) < 2
  # The kernel recursion against the same pure-attention stack, measured.
  d, T = 256, 8
  kinds = core_attention.AttentionKind(4)
  L = jnp.linalg.cholesky(ta.equicorrelated_kernel(1.0, 0.5, T))
  res = []
  for s in range(4):
    keys = jax.random.split(jax.random.PRNGKey(s), 3)
    h = (L @ jax.random.normal(keys[0], (T, d)))[None]
    out = [h]
    for k in jax.random.split(keys[1], 2):
      p = kinds.init(initializers.get("lecun"), k, k, (), d, d, h.dtype)
      out.append(kinds.forward(out[-1], p))
    res.append([float(jnp.linalg.norm(o - o.mean(1, keepdims=True)) / jnp.linalg.norm(o))
                for o in out])
  measured = np.mean(res, axis=0)
  np.testing.assert_allclose(measured[:2], r.residual[:2], rtol=0.15)
