"""jaxbp.inspect on transformers: jaxbp's own, flax.linen's and equinox's attention.

The reference is independent of inspect's jaxpr analysis: a hand-written copy
of each model's forward (:func:`_forward`, explicit einsums in jaxbp's layout,
the frameworks' weights mapped in) that adds an explicit zero probe at every
projection's output, ``q, k, v`` (``x W + b``), the attention output ``o Wo +
bo``, the FFN's ``x W1 + b1`` and ``phi(u) W2 + b2``; ``jax.grad`` with respect
to the probes gives dL/dz there. The copy's loss must equal the model's (so it
is the same function), then inspect must list exactly those six projections
per block, in order, with q and delta_sq equal to the probes' to 1e-10 in
float64. Every weight, bias and LayerNorm parameter is perturbed away from its
init, so a z that left out its bias would show in q.
"""
import math

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.core import losses
from jaxbp.measure.inspect import inspect

D, HEADS, D_FF, T, BATCH = 8, 2, 12, 5, 3
TOL = dict(rtol=1e-10, atol=1e-14)
MSE = losses.get("mse").fn
PARTS = ("q", "k", "v", "attn", "ffn1", "ffn2")


def _fill(shapes, seed=0):
  """Random float64 values for every array of a shape tree (``jax.eval_shape`` of
  an init): weights N(0, 1/D), LayerNorm scales 1 + N(0, 0.04), everything else
  (biases, offsets) N(0, 0.04), all nonzero. NumPy's generator rather than
  jax.random: no compile, and these tests' time is mostly compiles."""
  rng = np.random.default_rng(seed)

  def leaf(path, a):
    if not isinstance(a, jax.ShapeDtypeStruct):
      return a                     # e.g. equinox's Dropout(p=0.0), a float
    keys = jaxbp.measure.inspect.path_str(path)
    if len(a.shape) >= 2:
      return jnp.asarray(rng.normal(0, 1 / math.sqrt(D), a.shape))
    is_scale = "ln" in keys and keys.split("/")[-1] in ("scale", "weight")
    return jnp.asarray(float(is_scale) + rng.normal(0, 0.2, a.shape))
  return jax.tree_util.tree_map_with_path(leaf, shapes)


def _data(seed=1):
  rng = np.random.default_rng(seed)
  return tuple(jnp.asarray(rng.normal(size=(BATCH, T, D))) for _ in range(2))


# -- the hand-written forward with explicit probes --------------------------------------


def _ln(x, scale, offset, eps):
  mu = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
  return (x - mu) / jnp.sqrt(var + eps) * scale[None, None] + offset[None, None]


def _forward(blocks, x, probes, *, heads=HEADS, norm="pre", eps=1e-5, causal=False,
             qk_scale=None, alpha=1.0, beta=1.0, final=None):
  """A pre/post/no-norm transformer on ``x`` (batch, T, d) with ``probes[l][part]``
  added at every projection; returns ``(output, zs)``."""
  b, t, d = x.shape
  dh = d // heads
  c_s = 1.0 / math.sqrt(dh) if qk_scale is None else qk_scale
  zs, h = [], x

  def dense(u, W, bias, probe):
    z = jnp.einsum("bta,ac->btc", u, W) + bias[None, None] + probe
    zs[-1].append(z)
    return z

  def attention(u, p, pr):
    q, k, v = (dense(u, p[f"W{n}"], p[f"b{n}"], pr[n]).reshape(b, t, heads, dh)
               for n in "qkv")
    s = c_s * jnp.einsum("bihe,bjhe->bhij", q, k)
    if causal:
      s = jnp.where(jnp.tril(jnp.ones((t, t), bool))[None, None], s, -jnp.inf)
    P = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True))
    P = P / jnp.sum(P, axis=-1, keepdims=True)
    o = jnp.einsum("bhij,bjhe->bihe", P, v).reshape(b, t, d)
    return dense(o, p["Wo"], p["bo"], pr["attn"])

  def ffn(u, p, pr):
    g = jax.nn.relu(dense(u, p["W1"], p["b1"], pr["ffn1"]))
    return dense(g, p["W2"], p["b2"], pr["ffn2"])

  for p, pr in zip(blocks, probes):
    zs.append([])
    for f, ln in ((attention, "ln1"), (ffn, "ln2")):
      if norm == "pre":
        h = beta * h + alpha * f(_ln(h, *p[ln], eps), p, pr)
      elif norm == "post":
        h = _ln(beta * h + alpha * f(h, p, pr), *p[ln], eps)
      else:
        h = beta * h + alpha * f(h, p, pr)
  if final is not None:
    h = _ln(h, *final, eps)
  return h, zs


def _reference(blocks, x, y, **cfg):
  """(loss, q, delta_sq) from explicit zero probes, sites in block order."""
  zeros = [{n: jnp.zeros((BATCH, T, D_FF if n == "ffn1" else D), jnp.float64) for n in PARTS}
           for _ in blocks]

  def loss(probes):
    out, zs = _forward(blocks, x, probes, **cfg)
    return MSE(out, y), zs

  (value, zs), grads = jax.value_and_grad(loss, has_aux=True)(zeros)
  q = [float(np.mean(np.square(z))) for block in zs for z in block]
  delta_sq = [float(np.sum(np.square(g[n]))) for g in grads for n in PARTS]
  return float(value), np.array(q), np.array(delta_sq)


def _names(prefixes):
  return tuple(f"{p} · dot_general" for p in prefixes)


# -- the models: each case gives (loss_fn, params, expected names, reference config) --


def _jaxbp_blocks(net, params):
  blocks = [p for p in net.unstack(params) if isinstance(p, jaxbp.Block)]
  return [dict(Wq=b.attn.Wq, Wk=b.attn.Wk, Wv=b.attn.Wv, Wo=b.attn.Wo, bq=b.attn.bq,
               bk=b.attn.bk, bv=b.attn.bv, bo=b.attn.bo, W1=b.ffn1.W, b1=b.ffn1.b,
               W2=b.ffn2.W, b2=b.ffn2.b,
               ln1=None if b.ln1 is None else (b.ln1.scale, b.ln1.offset),
               ln2=None if b.ln2 is None else (b.ln2.scale, b.ln2.offset)) for b in blocks]


def _jaxbp_case(**cfg):
  net = jaxbp.Transformer(D, HEADS, 2, D_FF, **cfg)
  params = _fill(jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), dtype=jnp.float64)))
  names = []
  for l in range(net.depth):
    g, i = (0, f"[{l}]") if net.stack else (l, "")   # a stacked net: one Block, a scan
    names += [f"{g}/attn/W{n}{i}" for n in "qkvo"] + [f"{g}/ffn1/W{i}", f"{g}/ffn2/W{i}"]
  ref = dict(blocks=lambda: _jaxbp_blocks(net, params), norm=net.norm, causal=net.causal,
             qk_scale=net.qk_scale, alpha=net.residual_scale, beta=net.skip_scale,
             final=(params[-1].scale, params[-1].offset) if net.norm == "pre" else None)
  return dict(loss=jaxbp.objective(net, "mse"), params=params, names=_names(names), ref=ref,
              net=net)


class LinenBlock(nn.Module):
  @nn.compact
  def __call__(self, h):
    f64 = dict(param_dtype=jnp.float64)
    h = h + nn.MultiHeadDotProductAttention(num_heads=HEADS, name="attn", **f64)(
        nn.LayerNorm(name="ln1", **f64)(h))
    u = nn.Dense(D_FF, name="ffn1", **f64)(nn.LayerNorm(name="ln2", **f64)(h))
    return h + nn.Dense(D, name="ffn2", **f64)(nn.relu(u))


class LinenTransformer(nn.Module):
  @nn.compact
  def __call__(self, h):
    for l in range(2):
      h = LinenBlock(name=f"block{l}")(h)
    return h


def _linen_blocks(variables):
  out = []
  for l in range(2):
    p = variables["params"][f"block{l}"]
    a = p["attn"]
    qkv = tuple(zip("qkv", ("query", "key", "value")))
    out.append(dict(**{f"W{n}": a[m]["kernel"].reshape(D, D) for n, m in qkv},
                    **{f"b{n}": a[m]["bias"].reshape(D) for n, m in qkv},
                    Wo=a["out"]["kernel"].reshape(D, D), bo=a["out"]["bias"],
                    W1=p["ffn1"]["kernel"], b1=p["ffn1"]["bias"], W2=p["ffn2"]["kernel"],
                    b2=p["ffn2"]["bias"], ln1=(p["ln1"]["scale"], p["ln1"]["bias"]),
                    ln2=(p["ln2"]["scale"], p["ln2"]["bias"])))
  return out


def _linen_case():
  model = LinenTransformer()
  variables = _fill(jax.eval_shape(model.init, jax.random.PRNGKey(0), _data()[0]))
  names = [f"params/block{l}/{n}/kernel" for l in range(2)
           for n in ("attn/query", "attn/key", "attn/value", "attn/out", "ffn1", "ffn2")]
  # flax's LayerNorm has eps 1e-6.
  return dict(loss=lambda v, x, y: MSE(model.apply(v, x), y), params=variables,
              names=_names(names), ref=dict(blocks=lambda: _linen_blocks(variables), eps=1e-6))


class EqxBlock(eqx.Module):
  ln1: eqx.nn.LayerNorm
  attn: eqx.nn.MultiheadAttention
  ln2: eqx.nn.LayerNorm
  ffn1: eqx.nn.Linear
  ffn2: eqx.nn.Linear

  def __init__(self, key):
    ka, k1, k2 = jax.random.split(key, 3)
    f64 = dict(dtype=jnp.float64)
    self.ln1, self.ln2 = eqx.nn.LayerNorm(D, **f64), eqx.nn.LayerNorm(D, **f64)
    self.attn = eqx.nn.MultiheadAttention(HEADS, D, use_query_bias=True, use_key_bias=True,
                                          use_value_bias=True, use_output_bias=True, key=ka,
                                          **f64)
    self.ffn1 = eqx.nn.Linear(D, D_FF, key=k1, **f64)
    self.ffn2 = eqx.nn.Linear(D_FF, D, key=k2, **f64)

  def __call__(self, h):                        # one sequence (T, d); causal
    n = jax.vmap(self.ln1)(h)
    h = h + self.attn(n, n, n, mask=jnp.tril(jnp.ones((T, T), bool)))
    u = jax.vmap(self.ffn1)(jax.vmap(self.ln2)(h))
    return h + jax.vmap(self.ffn2)(jax.nn.relu(u))


class EqxTransformer(eqx.Module):
  blocks: tuple

  def __call__(self, h):
    for b in self.blocks:
      h = b(h)
    return h


def _eqx_blocks(model):
  out = []
  for b in model.blocks:
    a = b.attn
    projs = (a.query_proj, a.key_proj, a.value_proj, a.output_proj)
    out.append(dict(**{f"W{n}": p.weight.T for n, p in zip("qkvo", projs)},
                    **{f"b{n}": p.bias for n, p in zip("qkvo", projs)},
                    W1=b.ffn1.weight.T, b1=b.ffn1.bias, W2=b.ffn2.weight.T, b2=b.ffn2.bias,
                    ln1=(b.ln1.weight, b.ln1.bias), ln2=(b.ln2.weight, b.ln2.bias)))
  return out


def _eqx_case():
  keys = lambda: jax.random.split(jax.random.PRNGKey(0), 2)
  model = _fill(eqx.filter_eval_shape(lambda: EqxTransformer(tuple(map(EqxBlock, keys())))))
  names = [f"blocks/{l}/{n}/weight" for l in range(2)
           for n in ("attn/query_proj", "attn/key_proj", "attn/value_proj",
                     "attn/output_proj", "ffn1", "ffn2")]
  # Per example, vmapped over the batch by the loss.
  return dict(loss=lambda m, x, y: MSE(jax.vmap(m)(x), y), params=model, names=_names(names),
              ref=dict(blocks=lambda: _eqx_blocks(model), causal=True))


CASES = {
    "jaxbp-pre": lambda: _jaxbp_case(norm="pre"),
    "jaxbp-post-causal-stacked": lambda: _jaxbp_case(
        norm="post", causal=True, stack=True, residual_scale=0.7, skip_scale=0.9),
    "jaxbp-none": lambda: _jaxbp_case(norm="none", qk_scale=0.8, residual_scale=0.6),
    "flax-linen": _linen_case,
    "equinox": _eqx_case,
}


@pytest.mark.parametrize("case", CASES)
def test_rows_are_the_projections(case):
  # Under eval_shape: inspect is traced, not compiled, and the rows (names,
  # kinds, shapes) are static. Six projections per block, in execution order.
  c = CASES[case]()
  # Only the array leaves are traced: equinox's Python bools and floats stay as they are.
  leaves, treedef = jax.tree_util.tree_flatten(c["params"])
  is_array = [isinstance(a, jax.Array) for a in leaves]

  def abstract(arrays, x, y):
    it = iter(arrays)
    full = [next(it) if a else leaf for a, leaf in zip(is_array, leaves)]
    return inspect(c["loss"], jax.tree_util.tree_unflatten(treedef, full), x, y)

  report = jax.eval_shape(abstract, [l for a, l in zip(is_array, leaves) if a], *_data())
  assert report.names == c["names"], report.names
  assert report.kinds == ("dot_general",) * 12
  widths = [D_FF if k % 6 == 4 else D for k in range(12)]
  # flax keeps q, k, v as (batch, T, heads, dh): the same numbers as (batch, T, d).
  assert [math.prod(s) for s in report.shapes] == [BATCH * T * w for w in widths]
  assert report.shapes[-1] == (BATCH, T, D)
  assert report.activations[4] == "relu" and report.activations[5] is None


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_equals_explicit_zero_probes(case):
  c = CASES[case]()
  x, y = _data()
  report = inspect(c["loss"], c["params"], x, y)
  ref = dict(c["ref"])
  value, q, delta_sq = _reference(ref.pop("blocks")(), x, y, **ref)
  assert report.names == c["names"]
  np.testing.assert_allclose(float(report.loss), value, **TOL)   # the same function
  np.testing.assert_allclose(report.q, q, **TOL)
  np.testing.assert_allclose(report.delta_sq, delta_sq, **TOL)
  assert np.all(delta_sq > 1e-8) and np.all(q > 1e-3)   # nothing vanished: a real check
  if "net" in c:
    # jaxbp's hand backward at the projections: a third reference, without autodiff.
    hand = jaxbp.projection_deltas(c["net"], "mse", c["params"], x, y)
    np.testing.assert_allclose(report.delta_sq, [float(np.sum(np.square(getattr(p, n))))
                                                 for p in hand for n in PARTS], **TOL)
