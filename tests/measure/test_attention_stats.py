"""The attention statistics against independent NumPy references.

Every statistic is recomputed here with explicit loops (token pairs, rows,
heads, blocks) or ``np.linalg``; :func:`transformer_states` against a NumPy
re-implementation of the blocks; :func:`tapped` against the values computed
directly and its gradients against ``jax.grad``. Inputs are random with
nonzero statistics, so a formula that dropped a term would show.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.measure.attention_stats import (AttentionGradNorms, attention_entropy,
                                           attention_grad_norms, grad_norms, tapped,
                                           token_cosine, top_singular_values,
                                           transformer_states)
from jaxbp.measure.inspect import path_str

RNG = np.random.default_rng(0)


def _probs(shape, causal, rng=RNG):
  s = rng.normal(0, 1.5, shape)
  if causal:
    T = shape[-1]
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
  e = np.exp(s - s.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


# -- token cosine -------------------------------------------------------------------------


def _cosine_loops(h):
  # h (T, d): the mean over ordered pairs i != j of the cosine, a zero token's being 0.
  T = h.shape[0]
  total = 0.0
  for i in range(T):
    for j in range(T):
      if i != j:
        ni, nj = np.linalg.norm(h[i]), np.linalg.norm(h[j])
        total += 0.0 if ni == 0 or nj == 0 else h[i] @ h[j] / (ni * nj)
  return total / (T * (T - 1))


def test_token_cosine_matches_pair_loops():
  h = RNG.normal(size=(3, 2, 4, 5)) + 0.7      # (depth, batch, T, d); an offset: rho > 0
  h[1, 0, 2] = 0.0                             # a zero token
  got = np.asarray(token_cosine(jnp.asarray(h)))
  assert got.shape == (3, 2)
  want = np.array([[_cosine_loops(h[l, b]) for b in range(2)] for l in range(3)])
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
  assert np.all(np.abs(want) > 0.05)
  # Collapsed tokens (one direction, any lengths) give 1.
  one = np.outer(RNG.uniform(0.5, 2, 6), RNG.normal(size=4))[None]
  np.testing.assert_allclose(token_cosine(jnp.asarray(one)), [1.0], rtol=1e-12)
  # vmap and jit give the same numbers.
  np.testing.assert_allclose(jax.jit(jax.vmap(token_cosine))(jnp.asarray(h)), got, rtol=1e-12)


# -- attention entropy ------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_attention_entropy_matches_row_loops(causal):
  P = _probs((2, 3, 5, 5), causal)
  got = np.asarray(attention_entropy(jnp.asarray(P)))
  assert got.shape == (2, 3)
  want = np.zeros((2, 3))
  for b in range(2):
    for h in range(3):
      rows = [-sum(p * math.log(p) for p in P[b, h, i] if p > 0) for i in range(5)]
      want[b, h] = np.mean(rows)
  np.testing.assert_allclose(got, want, rtol=1e-12)
  assert np.all(want > 0.1)
  # Uniform attention over the visible tokens: the mean of log(visible count).
  T = 6
  U = np.tril(np.ones((T, T))) if causal else np.ones((T, T))
  U = U / U.sum(-1, keepdims=True)
  expect = np.mean(np.log(np.arange(1, T + 1))) if causal else math.log(T)
  np.testing.assert_allclose(attention_entropy(jnp.asarray(U)), expect, rtol=1e-12)


def test_attention_entropy_gradient_through_a_causal_mask():
  # d/dP of -P log P is -(log P + 1); a masked entry (P = 0) must get 0, not nan.
  P = jnp.asarray(_probs((1, 4, 4), True))
  g = np.asarray(jax.grad(lambda P: jnp.sum(attention_entropy(P)))(P))
  masked = np.triu(np.ones((4, 4), bool), 1)[None]
  assert np.all(g[masked] == 0)
  Pn = np.asarray(P)
  np.testing.assert_allclose(g[~masked], (-(np.log(np.where(masked, 1, Pn)) + 1) / 4)[~masked], rtol=1e-12)


# -- singular values --------------------------------------------------------------------


def test_top_singular_values_match_numpy_svd():
  P = _probs((2, 3, 6, 6), True)
  got = np.asarray(top_singular_values(jnp.asarray(P)))
  assert got.shape == (2, 3, 2)
  for b in range(2):
    for h in range(3):
      s = np.linalg.svd(P[b, h], compute_uv=False)
      np.testing.assert_allclose(got[b, h], s[:2], rtol=1e-10)
      assert s[0] >= 1 - 1e-12 and s[1] > 0.05      # row-stochastic; a real second value
  np.testing.assert_allclose(top_singular_values(jnp.full((4, 4), 0.25), k=3),
                             [1.0, 0.0, 0.0], atol=1e-12)   # uniform: rank one


# -- gradient norms -----------------------------------------------------------------------


def _fill(shapes, rng=RNG):
  # Any values: the norms are of whatever tree they are given (grads in use).
  return jax.tree_util.tree_map(lambda a: jnp.asarray(rng.normal(size=a.shape)), shapes)


@pytest.mark.parametrize("cfg", [dict(), dict(stack=True, vocab=7, max_len=6, norm="post")],
                         ids=["blocks", "stacked-vocab"])
def test_attention_grad_norms_per_block(cfg):
  net = jaxbp.Transformer(8, 2, 3, 10, **cfg)
  grads = _fill(jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), dtype=jnp.float64)))
  got = attention_grad_norms(grads)
  assert isinstance(got, AttentionGradNorms)
  blocks = [b for b in grads if isinstance(b, jaxbp.Block)]
  for name in AttentionGradNorms._fields:
    want = []
    for b in blocks:
      w = np.asarray(getattr(b.attn, name))
      want += [np.sqrt(np.sum(w[l] ** 2)) for l in range(w.shape[0])] if w.ndim == 3 else \
          [np.sqrt(np.sum(w ** 2))]
    np.testing.assert_allclose(getattr(got, name), want, rtol=1e-12)
    assert len(want) == 3
  with pytest.raises(ValueError, match="no Block"):
    attention_grad_norms({"W": jnp.ones((2, 2))})


def test_grad_norms_by_path_patterns():
  # A flax-like tree: two blocks, and a stacked one (leading layer axis).
  tree = {"params": {f"block{l}": {"attn": {n: {"kernel": jnp.asarray(RNG.normal(size=(4, 2, 2)))}
                                           for n in ("query", "key", "value")}}
                     for l in range(2)}}
  got = grad_norms(tree, {"Wq": r"query/kernel", "Wv": r"value/kernel"})
  for name, part in (("Wq", "query"), ("Wv", "value")):
    want = [np.linalg.norm(np.asarray(tree["params"][f"block{l}"]["attn"][part]["kernel"])
                           .reshape(-1)) for l in range(2)]
    np.testing.assert_allclose(got[name], want, rtol=1e-12)
  stacked = grad_norms(tree, {"Wk": r"block1/attn/key"}, stacked=True)["Wk"]
  w = np.asarray(tree["params"]["block1"]["attn"]["key"]["kernel"])
  np.testing.assert_allclose(stacked, [np.linalg.norm(w[l]) for l in range(4)], rtol=1e-12)
  with pytest.raises(ValueError, match=r"matches no array leaf.*params/block0/attn/query"):
    grad_norms(tree, {"Wo": r"out/kernel"})
  with pytest.raises(ValueError, match="non-empty dict"):
    grad_norms(tree, {})


# -- transformer_states against a NumPy transformer -------------------------------------


def _np_ln(x, p):
  mu = x.mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * \
      np.asarray(p.scale) + np.asarray(p.offset)


def _np_states(net, params, x):
  """h (depth + 1, batch, T, d) and P (depth, batch, heads, T, T), head by head."""
  a = [jax.tree_util.tree_map(np.asarray, p) for p in net.unstack(params)]
  h = np.asarray(x, float) if net.vocab is None else \
      a[0].table[np.asarray(x)] + a[0].positions[None, :x.shape[1]]
  b_, T, d = h.shape
  H, dh = net.heads, d // net.heads
  c = net.attention_scale
  hs, Ps = [h], []
  for blk in [p for p in a if isinstance(p, jaxbp.Block)]:
    A = blk.attn

    def attn(u):
      q, k, v = (u @ W + b for W, b in ((A.Wq, A.bq), (A.Wk, A.bk), (A.Wv, A.bv)))
      P = np.zeros((b_, H, T, T))
      o = np.zeros((b_, T, d))
      for n in range(b_):
        for hd in range(H):
          cols = slice(hd * dh, (hd + 1) * dh)
          S = c * q[n, :, cols] @ k[n, :, cols].T
          for i in range(T):
            row = np.exp(S[i] - S[i].max())
            if net.causal:
              row[i + 1:] = 0.0
            P[n, hd, i] = row / row.sum()
          o[n, :, cols] = P[n, hd] @ v[n, :, cols]
      Ps.append(P)
      return o @ A.Wo + A.bo

    def ffn(u):
      return np.maximum(u @ blk.ffn1.W + blk.ffn1.b, 0) @ blk.ffn2.W + blk.ffn2.b

    for f, ln in ((attn, blk.ln1), (ffn, blk.ln2)):
      al, be = net.residual_scale, net.skip_scale
      if net.norm == "pre":
        h = be * h + al * f(_np_ln(h, ln))
      elif net.norm == "post":
        h = _np_ln(be * h + al * f(h), ln)
      else:
        h = be * h + al * f(h)
    hs.append(h)
  return np.stack(hs), np.stack(Ps)


def _states_case(cfg, seed):
  rng = np.random.default_rng(seed)
  net = jaxbp.Transformer(8, 2, 2, 10, **cfg)
  shapes = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), dtype=jnp.float64))
  params = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(0, 0.5, s.shape)), shapes)
  x = jnp.asarray(rng.integers(0, net.vocab, (3, 5))) if net.vocab else \
      jnp.asarray(rng.normal(size=(3, 5, 8)))
  got = jax.jit(transformer_states, static_argnums=0)(net, params, x)
  want_h, want_P = _np_states(net, params, x)
  assert got.h.shape == (3, 3, 5, 8) and got.P.shape == (2, 3, 2, 5, 5)
  np.testing.assert_allclose(got.h, want_h, rtol=1e-11, atol=1e-12)
  np.testing.assert_allclose(got.P, want_P, rtol=1e-11, atol=1e-14)
  assert np.std(want_P) > 0.05                 # attention far from uniform: a real check


def test_transformer_states_matches_numpy():
  _states_case(dict(norm="pre", causal=True, residual_scale=0.8), 1)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [
    dict(norm="post", stack=True, vocab=7, max_len=6, skip_scale=0.7),
    dict(norm="none", qk_scale=1.3, stack=True),
    dict(norm="none", skip_scale=0.0, causal=True),
], ids=["post-stacked-vocab", "none-stacked", "pure-attention-causal"])
def test_transformer_states_matches_numpy_more(cfg):
  _states_case(cfg, 2)


def test_transformer_states_wants_a_transformer():
  with pytest.raises(TypeError, match="jaxbp.Transformer"):
    transformer_states(jaxbp.MLP((2, 2), "tanh"), None, jnp.ones((1, 2)))


# -- tapped ---------------------------------------------------------------------------------


def _model(p, x):
  # Taps in a Python loop, inside jit and remat, in a scan and in a cond.
  h = x
  for l in range(2):
    h = jaxbp.tap(jnp.tanh(h @ p["W"][l]), "h")
  h = jax.jit(lambda h: jaxbp.tap(h * p["s"][None], "scaled"))(h)
  h = jax.checkpoint(lambda h: jaxbp.tap(jnp.sin(h), "remat"))(h)

  def body(c, W):
    c = jaxbp.tap(jnp.tanh(c @ W), "scan")
    return c, None
  h, _ = jax.lax.scan(body, h, p["W"])
  h = jax.lax.cond(jnp.sum(x) > 0, lambda h: jaxbp.tap(2 * h, "cond"), lambda h: h, h)
  return jnp.sum(h ** 2), h


def test_tapped_returns_the_marked_values_and_its_gradients_are_jax_grad():
  rng = np.random.default_rng(3)
  p = {"W": jnp.asarray(rng.normal(0, 0.7, (2, 4, 4))), "s": jnp.asarray(rng.normal(size=4))}
  x = jnp.abs(jnp.asarray(rng.normal(size=(3, 4))))       # sum > 0: the cond's tap runs

  @jax.jit          # one compile for all three
  def run(p, x):
    # Differentiable: the loss's gradient through tapped must be jax.grad's of the model.
    through = jax.grad(lambda p: tapped(_model, p, x)[0][0])(p)
    return tapped(_model, p, x), through, jax.grad(lambda p: _model(p, x)[0])(p)

  ((value, out), taps), g, want = run(p, x)
  W, s, xn = np.asarray(p["W"]), np.asarray(p["s"]), np.asarray(x)
  h1 = np.tanh(xn @ W[0])
  h2 = np.tanh(h1 @ W[1])
  sc = h2 * s
  rm = np.sin(sc)
  c1 = np.tanh(rm @ W[0])
  c2 = np.tanh(c1 @ W[1])
  assert set(taps) == {"h", "scaled", "remat", "scan", "cond"}
  np.testing.assert_allclose(taps["h"], np.stack([h1, h2]), rtol=1e-12)
  np.testing.assert_allclose(taps["scaled"], sc, rtol=1e-12)
  np.testing.assert_allclose(taps["remat"], rm, rtol=1e-12)
  np.testing.assert_allclose(taps["scan"], np.stack([c1, c2]), rtol=1e-12)
  np.testing.assert_allclose(taps["cond"], 2 * c2, rtol=1e-12)
  np.testing.assert_allclose(value, np.sum((2 * c2) ** 2), rtol=1e-12)
  np.testing.assert_allclose(out, 2 * c2, rtol=1e-12)
  for k in p:
    np.testing.assert_allclose(g[k], want[k], rtol=1e-12)


def test_tapped_names_of_two_shapes_and_no_taps():
  def f(x):
    return jnp.sum(jaxbp.tap(x, "a")) + jnp.sum(jaxbp.tap(x[:1], "a"))
  with pytest.raises(ValueError, match="'a' marks values of different shapes"):
    jax.jit(lambda x: tapped(f, x))(jnp.ones((2, 3)))
  out, taps = jax.jit(lambda x: tapped(lambda x: x * 2, x))(jnp.ones(2))
  assert taps == {} and np.allclose(out, 2)


def test_path_names_are_inspects():
  # grad_norms matches the paths inspect prints: the same helper.
  tree = {"a": [jnp.ones(1), {"b": jnp.ones(1)}]}
  paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
  assert paths == ["a/0", "a/1/b"]
  assert set(grad_norms(tree, {"x": r"^a/1/b$"})) == {"x"}


# -- bad input ------------------------------------------------------------------------------


def test_bad_shapes_are_named():
  with pytest.raises(ValueError, match=r"T >= 2"):
    token_cosine(jnp.ones((3, 1, 4)))
  with pytest.raises(TypeError, match="floating point"):
    token_cosine(jnp.ones((3, 2, 4), int))
  with pytest.raises(ValueError, match=r"square in its last two axes; got shape \(2, 3, 4\)"):
    attention_entropy(jnp.ones((2, 3, 4)))
  with pytest.raises(ValueError, match=r"k must be an int in \[1, T=3\]"):
    top_singular_values(jnp.ones((3, 3)), k=4)
