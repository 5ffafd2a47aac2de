"""The Transformer family against two independent references, in float64.

* the hand backward (``backprop.value_and_grad``) equals ``jax.grad`` of a
  reference written here from the issue's equations (``jax.nn.softmax``, a
  LayerNorm written out) and of the net's own forward, to 1e-12;
* the same loss and gradients as PyTorch autograd of the same math
  (``torch.nn.functional.scaled_dot_product_attention`` and ``layer_norm``), to 1e-10;
* ``backprop.deltas`` equals the zero-probe gradients at every block output and
  ``projection_deltas`` those of probes on q, k, v, the attention output and both
  FFN layers of the reference;
* the family contract for a pre-LN net: per-example gradients, remat, jit + vmap,
  stacked = unrolled; bad inputs raise clear errors.

``dL/dbk`` is zero by construction (a softmax row does not change when the same
``q_i . bk`` is added to every logit), so the comparisons measure its error
against the whole gradient's scale, where every other leaf is compared to itself.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.core import backprop
from jaxbp.core.attention import attention
from jaxbp.core.transformer import Projections, Transformer, projection_deltas
from jaxbp.measure import probes

TOL = 1e-12
TORCH_TOL = 1e-10
INIT = jaxbp.initializers.gaussian(sigma_w2=1.6, sigma_b2=0.1)
D, T, B, DEPTH, D_FF, VOCAB = 8, 5, 3, 2, 16, 11

# Between them: every norm, causal or not, heads 1, 2 and 4, stacked or not, with
# vocab (stacked and not) and without, scaled residuals, another qk_scale and FFN
# activation, mse and softmax cross-entropy. (PRE below adds pre-LN stacked.)
CASES = {
    "pre_h1_vocab_tanh": (Transformer(D, 1, DEPTH, D_FF, activation="tanh", qk_scale=0.3,
                                      vocab=VOCAB, max_len=T), "mse"),
    "post_h4_causal": (Transformer(D, 4, DEPTH, D_FF, norm="post", causal=True), "mse"),
    "none_h2_stacked_scaled": (Transformer(D, 2, DEPTH, D_FF, norm="none", causal=True,
                                           residual_scale=0.7, skip_scale=0.5, stack=True), "mse"),
    "post_h4_stacked_vocab": (Transformer(D, 4, DEPTH, D_FF, norm="post", vocab=VOCAB,
                                          max_len=7, stack=True), "softmax_cross_entropy"),
}
PHI = {"relu": jax.nn.relu, "tanh": jnp.tanh}


def _jit(f):
  """jit at LLVM's lowest optimisation level: compiling these small float64
  programs costs far more than running them (it halves the file's time), and
  the level changes no result beyond round-off."""
  return jax.jit(f, compiler_options={"xla_backend_optimization_level": 0})


def _data(net, loss, seed=1):
  rng = np.random.default_rng(seed)
  if net.vocab:
    x = jnp.asarray(rng.integers(0, VOCAB, (B, T)))
  else:
    x = jnp.asarray(rng.standard_normal((B, T, D)))
  out = (B, T, VOCAB if net.vocab else D)
  if loss == "softmax_cross_entropy":
    return x, jnp.asarray(rng.integers(0, VOCAB, out[:2]))
  return x, jnp.asarray(rng.standard_normal(out))


def _parts(net, params):
  """``(embedding, blocks, final LN, readout)`` of the issue's params layout, the
  blocks as a list (a stacked Block sliced), for any array type."""
  params = list(params)
  embed = params.pop(0) if net.vocab else None
  readout = params.pop() if net.vocab else None
  final = params.pop() if net.norm == "pre" else None
  if net.stack:
    params = [jax.tree_util.tree_map(lambda a, l=l: a[l], params[0]) for l in range(net.depth)]
  return embed, params, final, readout


def _row(v, ndim=3):
  return v.reshape((1,) * (ndim - 1) + v.shape)


def _zero_projections(net):
  z = jnp.zeros((B, T, D))
  return [Projections(z, z, z, z, jnp.zeros((B, T, D_FF)), z) for _ in range(net.depth)]


def reference(net, params, x, pr=None):
  """The issue's equations, written directly; ``pr`` adds probes at the projections."""
  embed, blocks, final, readout = _parts(net, params)
  pr = _zero_projections(net) if pr is None else pr
  dh = D // net.heads
  scale = 1.0 / math.sqrt(dh) if net.qk_scale is None else net.qk_scale
  phi = PHI[net.activation]

  def ln(u, p):
    mu = jnp.mean(u, axis=-1, keepdims=True)
    var = jnp.mean((u - mu) ** 2, axis=-1, keepdims=True)
    return (u - mu) / jnp.sqrt(var + 1e-5) * _row(p.scale) + _row(p.offset)

  def attn(u, a, q_):
    heads = [(u @ W + _row(b) + e).reshape(B, T, net.heads, dh)
             for W, b, e in ((a.Wq, a.bq, q_.q), (a.Wk, a.bk, q_.k), (a.Wv, a.bv, q_.v))]
    # (jax.nn.dot_product_attention would do: but it takes its softmax in float32.)
    logits = scale * jnp.einsum("bqhd,bkhd->bhqk", heads[0], heads[1])
    if net.causal:
      logits = jnp.where(jnp.tril(jnp.ones((1, 1, T, T), bool)), logits, -jnp.inf)
    o = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), heads[2])
    return o.reshape(B, T, D) @ a.Wo + _row(a.bo) + q_.attn

  def ffn(u, blk, q_):
    g = phi(u @ blk.ffn1.W + _row(blk.ffn1.b) + q_.ffn1)
    return g @ blk.ffn2.W + _row(blk.ffn2.b) + q_.ffn2

  def sub(h, p, f):
    al, be = net.residual_scale, net.skip_scale
    if net.norm == "pre":
      return be * h + al * f(ln(h, p))
    if net.norm == "post":
      return ln(be * h + al * f(h), p)
    return be * h + al * f(h)

  h = embed.table[x] + embed.positions[None, :x.shape[1]] if net.vocab else x
  for blk, q_ in zip(blocks, pr):
    h = sub(h, blk.ln1, lambda u: attn(u, blk.attn, q_))
    h = sub(h, blk.ln2, lambda u: ffn(u, blk, q_))
  h = ln(h, final) if final is not None else h
  return h @ readout.W + _row(readout.b) if readout is not None else h


def _err(a, b):
  """Max error over the leaves, each relative to its own largest entry (dL/dbk's
  to the whole tree's, its own being zero by construction)."""
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  la = jax.tree_util.tree_leaves_with_path(a)
  lb = jax.tree_util.tree_leaves(b)
  whole = max(float(jnp.max(jnp.abs(v))) for v in lb)
  out = 0.0
  for (path, u), v in zip(la, lb):
    dead = "bk" in jax.tree_util.keystr(path)
    own = float(jnp.max(jnp.abs(v)))
    assert dead or own > 1e-8, f"{jax.tree_util.keystr(path)}: a zero gradient checks nothing"
    out = max(out, float(jnp.max(jnp.abs(u - v))) / (whole if dead else own))
  return out


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
  net, loss = CASES[request.param]
  params = net.init(jax.random.PRNGKey(0), init=INIT)
  x, y = _data(net, loss)
  L = jaxbp.losses.get(loss)

  @_jit
  def run(params):
    hand = backprop.backward(net, loss, params, x, y)
    ref = lambda p, pr: L.fn(reference(net, p, x, pr), y)
    ref_value, (ref_grads, ref_proj) = jax.value_and_grad(ref, argnums=(0, 1))(
        params, _zero_projections(net))
    return dict(value=hand.value, grads=hand.grads, deltas=hand.deltas,
                out=net.apply(params, x), ref_out=reference(net, params, x),
                ref_value=ref_value, ref_grads=ref_grads, ref_proj=tuple(ref_proj),
                probe_deltas=probes.autodiff_backward(net, loss, params, x, y).deltas,
                proj=projection_deltas(net, loss, params, x, y))

  return net, loss, params, x, y, run(params)


def test_forward_equals_reference(case):
  net, _, _, _, _, r = case
  scale = float(jnp.max(jnp.abs(r["ref_out"])))
  assert float(jnp.max(jnp.abs(r["out"] - r["ref_out"]))) <= TOL * scale


def test_hand_backward_equals_jax_grad(case):
  net, _, _, _, _, r = case
  assert abs(float(r["value"] - r["ref_value"])) <= TOL * abs(float(r["ref_value"]))
  assert _err(r["grads"], r["ref_grads"]) <= TOL


def test_deltas_equal_zero_probe_gradients(case):
  net, _, _, _, _, r = case
  assert _err(r["deltas"], r["probe_deltas"]) <= TOL
  # backprop.deltas' view: one entry per params entry.
  assert len(net.delta_view(r["deltas"])) == len(case[2])
  # Every block output's delta, then every projection's.
  blocks = [r["deltas"][g] for g in net.block_groups]
  assert sum(1 if not net.stack else b.shape[0] for b in blocks) == net.depth
  assert _err(r["proj"], r["ref_proj"]) <= TOL


def _torch_loss_and_grads(net, loss, params, x, y):
  import torch
  import torch.nn.functional as F
  leaves, tree = jax.tree_util.tree_flatten(params)
  tl = [torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True) for a in leaves]
  embed, blocks, final, readout = _parts(net, jax.tree_util.tree_unflatten(tree, tl))
  dh = D // net.heads
  phi = {"relu": torch.relu, "tanh": torch.tanh}[net.activation]
  ln = lambda u, p: F.layer_norm(u, (D,), p.scale, p.offset, eps=1e-5)

  def attn(u, a):
    q, k, v = ((u @ W + b).view(B, T, net.heads, dh).transpose(1, 2)
               for W, b in ((a.Wq, a.bq), (a.Wk, a.bk), (a.Wv, a.bv)))
    o = F.scaled_dot_product_attention(q, k, v, is_causal=net.causal, scale=net.qk_scale)
    return o.transpose(1, 2).reshape(B, T, D) @ a.Wo + a.bo

  def sub(h, p, f):
    al, be = net.residual_scale, net.skip_scale
    if net.norm == "pre":
      return be * h + al * f(ln(h, p))
    if net.norm == "post":
      return ln(be * h + al * f(h), p)
    return be * h + al * f(h)

  xt = torch.tensor(np.asarray(x))
  h = F.embedding(xt, embed.table) + embed.positions[:T] if net.vocab else xt
  for blk in blocks:
    h = sub(h, blk.ln1, lambda u: attn(u, blk.attn))
    h = sub(h, blk.ln2, lambda u: phi(u @ blk.ffn1.W + blk.ffn1.b) @ blk.ffn2.W + blk.ffn2.b)
  h = ln(h, final) if final is not None else h
  out = h @ readout.W + readout.b if readout is not None else h
  yt = torch.tensor(np.asarray(y))
  value = (F.cross_entropy(out.reshape(-1, VOCAB), yt.reshape(-1)) if loss != "mse"
           else torch.mean((out - yt) ** 2))
  value.backward()
  grads = [jnp.asarray(t.grad.numpy()) for t in tl]
  return float(value.detach()), jax.tree_util.tree_unflatten(tree, grads)


def test_equals_pytorch_autograd(case):
  pytest.importorskip("torch")
  net, loss, params, x, y, r = case
  value, grads = _torch_loss_and_grads(net, loss, params, x, y)
  assert abs(value - float(r["value"])) <= TORCH_TOL * abs(value)
  assert _err(r["grads"], grads) <= TORCH_TOL


def test_uniform_attention_at_qk_scale_zero():
  """qk_scale=0: every token attends equally to the tokens it sees, so the
  attention is the (causal) running mean of v, and no gradient reaches q or k."""
  net = Transformer(D, 2, 1, D_FF, norm="none", causal=True, qk_scale=0.0)
  params = net.init(jax.random.PRNGKey(3), init=INIT)
  x, y = _data(net, "mse")
  a = params[0].attn
  v = x @ a.Wv + _row(a.bv)
  mean_v = jnp.cumsum(v, axis=1) / jnp.arange(1, T + 1, dtype=v.dtype).reshape(1, T, 1)
  z, _ = attention(x, a, net.heads, 0.0, causal=True)
  assert float(jnp.max(jnp.abs(z - (mean_v @ a.Wo + _row(a.bo))))) <= TOL
  g = _jit(lambda p: backprop.grad(net, "mse", p, x, y))(params)[0].attn
  assert all(float(jnp.max(jnp.abs(w))) == 0.0 for w in (g.Wq, g.Wk, g.bq, g.bk))
  assert float(jnp.max(jnp.abs(g.Wv))) > 1e-8


# -- the family contract for one pre-LN net ---------------------------------------------

PRE = Transformer(D, 2, DEPTH, D_FF, stack=True)


@pytest.fixture(scope="module")
def pre():
  params = PRE.init(jax.random.PRNGKey(0), init=INIT)
  x, y = _data(PRE, "mse")
  return params, x, y


def test_per_example_grads(pre):
  params, x, y = pre
  hand = _jit(lambda p: backprop.per_example_grads(PRE, "mse", p, x, y))(params)
  one = jax.grad(jaxbp.objective(PRE, "mse"))
  auto = _jit(jax.vmap(lambda xi, yi: one(params, xi[None], yi[None])))(x, y)
  assert _err(hand, auto) <= TOL


def test_remat_and_stack_change_nothing(pre):
  params, x, y = pre
  flat = dataclasses.replace(PRE, stack=False)
  ref = _jit(lambda p: backprop.backward(PRE, "mse", p, x, y))(params)
  unrolled = _jit(lambda p: backprop.backward(flat, "mse", p, x, y))(PRE.unstack(params))
  assert _err(PRE.unstack(ref.grads), unrolled.grads) <= TOL
  assert _err((*ref.deltas[0], *ref.deltas[1:]), unrolled.deltas) <= TOL
  remat = dataclasses.replace(PRE, remat=2)
  assert _err(_jit(jax.grad(jaxbp.objective(remat, "mse")))(params, x, y), ref.grads) <= TOL


def test_jit_and_vmap_over_params(pre):
  params, x, y = pre
  other = PRE.init(jax.random.PRNGKey(5), init=INIT)
  both = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), params, other)
  one = lambda p: backprop.grad(PRE, "mse", p, x, y)
  grads = _jit(jax.vmap(one))(both)
  one = _jit(one)
  for i, p in enumerate((params, other)):
    assert _err(jax.tree_util.tree_map(lambda a: a[i], grads), one(p)) <= TOL


# -- bad input ----------------------------------------------------------------------------


def test_heads_must_divide_d_model():
  with pytest.raises(ValueError, match="d_model must be a multiple of heads.*d_model=8, heads=3"):
    Transformer(8, 3, 2, 16)


@pytest.mark.parametrize("kwargs, match", [
    (dict(norm="layer"), "norm must be one of"),
    (dict(vocab=5), "vocab needs max_len"),
    (dict(qk_scale=-1.0), "qk_scale must be a finite number >= 0"),
    (dict(skip_scale=float("nan")), "skip_scale must be a finite number"),
    (dict(causal=1), "causal must be True or False"),
    (dict(activation="softmax"), "softmax can only be the output_activation"),
])
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    Transformer(8, 2, 2, 16, **kwargs)


def test_bad_inputs():
  net = Transformer(D, 2, 1, D_FF, max_len=T)
  params = net.init(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match=r"x has T=6 tokens, more than max_len=5"):
    net.apply(params, jnp.ones((2, 6, D)))
  for shape in ((2, D), (2, 1, 3, D), (2, T, D + 1)):
    with pytest.raises(ValueError, match=r"expected \(batch, T, 8\)"):
      net.apply(params, jnp.ones(shape))
  tok = Transformer(D, 2, 1, D_FF, vocab=VOCAB, max_len=T)
  tp = tok.init(jax.random.PRNGKey(0))
  for bad in (jnp.array([[0, 11]]), jnp.array([[-1, 3]])):
    with pytest.raises(ValueError, match=r"token ids in \[-?\d+, \d+\], outside \[0, 10\]"):
      tok.apply(tp, bad)
  with pytest.raises(ValueError, match="more than max_len=5"):
    tok.apply(tp, jnp.zeros((1, 6), jnp.int32))
  with pytest.raises(ValueError, match=r"expected token ids \(batch, T\)"):
    tok.apply(tp, jnp.zeros((1, 2, 3), jnp.int32))
  with pytest.raises(TypeError, match="integer token ids"):
    tok.apply(tp, jnp.zeros((1, 3)))
  blk = params[0]
  bad = (blk._replace(attn=blk.attn._replace(Wq=jnp.ones((8, 9)))),) + params[1:]
  with pytest.raises(ValueError, match=r"params\[0\]\.attn\.Wq has shape \(8, 9\), expected "):
    net.apply(bad, jnp.ones((1, 2, D)))
