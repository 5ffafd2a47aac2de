"""Seed 003 (第四讲 反向传播, 南开大学): the computational graph u_1..u_9 with
its S(u) sets and grad_table, the scalar chain, the output-layer gradients and
the PyTorch MSE example.

Mistake found: the grad_table walk writes u_5 where it means u_8.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.core import backprop
from jaxbp.core import graph
from jaxbp.core import losses
from jaxbp.studies.seed_examples.common import (EXACT, Config, Row, check, compare, example_rng,
                                                flat, float64, seed_wrong, sigmoid_np,
                                                torch_or_none)


def seed003_f(w, x, b, y):
  """Seed 003 §4.6.1: f(w, b) = 1/2 (s(wx + b) - y)^2 + 1/2 w^2."""
  return 0.5 * (jax.nn.sigmoid(w * x + b) - y) ** 2 + 0.5 * w ** 2


SEED003_POINT = dict(w=0.8, x=1.5, b=-0.4, y=1.0)   # the seed leaves them symbolic

# S(u) as seed 003 lists it.
SEED003_CHILDREN = {
    "w": ("u_1", "u_7"), "x": ("u_1",), "u_1": ("u_2",), "b": ("u_2",), "u_2": ("u_3",),
    "u_3": ("u_4",), "y": ("u_4",), "u_4": ("u_5",), "u_5": ("u_6",), "u_6": ("u_9",),
    "u_7": ("u_8",), "u_8": ("u_9",),
}
# u_1 = wx, u_2 = u_1 + b, u_3 = s(u_2), u_4 = u_3 - y, u_5 = u_4^2, u_6 = u_5/2,
# u_7 = w^2, u_8 = u_7/2, u_9 = u_6 + u_8: the primitives JAX records for them.
SEED003_OPS = ("mul", "add", "logistic", "sub", "integer_pow", "mul", "integer_pow", "mul", "add")


def seed003_graph(config: Config = Config()) -> graph.Graph:
  """The traced graph of :func:`seed003_f` at :data:`SEED003_POINT`, backward run."""
  p = SEED003_POINT
  return graph.trace(seed003_f, p["w"], p["x"], p["b"], p["y"]).backward()


def graph_table(config: Config = Config()) -> str:
  """:func:`seed003_graph`'s node table (ops, inputs, values, grad_table), computed in float64."""
  with float64():
    return seed003_graph(config).table()


def computational_graph(config: Config = Config()) -> list[Row]:
  """Seed 003 §4.6: the graph u_1..u_9, its S(u) sets and grad_table, via jaxbp.graph.

  The seed's grad_table entries are its formulas, evaluated at
  ``SEED003_POINT`` (w = 0.8, x = 1.5, b = -0.4, y = 1): df/du_9 = 1, df/du_8
  = 1, df/du_7 = 1/2, df/du_6 = 1, df/du_5 = 1/2, df/du_4 = df/du_3 = s - y,
  df/du_2 = df/du_1 = df/db = s' (s - y), df/dw = x s' (s - y) + w.
  """
  ex = "003 computational graph"
  g = seed003_graph(config)
  p = SEED003_POINT
  w, x, b, y = p["w"], p["x"], p["b"], p["y"]
  s = sigmoid_np(w * x + b)
  ds = s * (1 - s)
  seed_table = {
      "u_9": 1.0, "u_8": 1.0, "u_7": 0.5, "u_6": 1.0, "u_5": 0.5, "u_4": s - y, "u_3": s - y,
      "u_2": ds * (s - y), "u_1": ds * (s - y), "b": ds * (s - y), "w": x * ds * (s - y) + w,
  }
  order = ", ".join(g.order(constants=False))
  seed_order = "w, x, b, y, u_1, u_2, u_3, u_4, u_5, u_6, u_7, u_8, u_9"
  ops = tuple(g.node(f"u_{i}").op for i in range(1, 10))
  rows = [
      check(ex, "node order", seed_order, order, order == seed_order, "same"),
      check(ex, "operations of u_1..u_9", " ".join(SEED003_OPS), " ".join(ops),
            ops == SEED003_OPS, "same"),
  ]
  for u, kids in SEED003_CHILDREN.items():
    ours = tuple(g.children(u))
    rows.append(check(ex, f"S({u})", "{" + ", ".join(kids) + "}", "{" + ", ".join(ours) + "}",
                      ours == kids, "same"))
  for u, v in seed_table.items():
    rows.append(compare(ex, f"grad_table df/d{u}: seed's formula vs jaxbp.graph", v, g.gradient(u),
                        EXACT))
  args = (w, x, b, y)
  auto = jnp.stack(jax.jit(jax.grad(seed003_f, argnums=(0, 2)))(*args))
  via_graph = jnp.stack(graph.grad(seed003_f, argnums=(0, 2))(*args))
  rows += [
      compare(ex, "df/dw = x s'(wx+b)(s(wx+b) - y) + w vs jax.grad", seed_table["w"], auto[0],
              EXACT),
      compare(ex, "(df/dw, df/db): jaxbp.graph.grad vs jax.grad", via_graph, auto, EXACT),
      seed_wrong(ex, "walk step 'df/du_5 = df/du_9 du_9/du_5 = 1'", 1.0, g.gradient("u_5"),
                 "u_5 is not an input of u_9; it means u_8 "
                 "(df/du_8 = 1, df/du_7 = df/du_8 du_8/du_7)"),
  ]
  return rows


def scalar_chain_example(config: Config = Config()) -> list[Row]:
  """Seed 003 §4.3-4.4: the scalar chain h_k = s(w_k h_{k-1} + b_k) and its product form.

  The seed's loop (k = L..1) for f = 1/2 (h_L - t)^2, against jax.grad and
  ``jaxbp.backprop.scalar_chain``; and the vanishing bound
  |dh_L/dh_0| = prod |s'(z_t) w_t| <= (1/4)^L prod |w_t|.
  """
  ex = "003 scalar chain"
  L = 8
  rng = example_rng(config, 5)
  w, b = rng.standard_normal(L), rng.standard_normal(L)
  x, t = 0.7, 0.2
  hs, zs = [x], []
  for i in range(L):                           # forward, storing every h_k and z_k
    zs.append(w[i] * hs[-1] + b[i])
    hs.append(sigmoid_np(zs[-1]))
  df_dh = hs[-1] - t                           # initialisation: df/dh_L = df/dy
  dw, db = np.zeros(L), np.zeros(L)
  for i in reversed(range(L)):                 # for k = L, ..., 1
    sp = sigmoid_np(zs[i]) * (1 - sigmoid_np(zs[i]))
    dw[i] = df_dh * sp * hs[i]
    db[i] = df_dh * sp
    df_dh = df_dh * sp * w[i]

  def f(w, b, x):
    h = x
    for i in range(L):
      h = jax.nn.sigmoid(w[i] * h + b[i])
    return 0.5 * (h - t) ** 2

  @jax.jit
  def ours(w, b, x):
    gw, gb, gx = jax.grad(f, argnums=(0, 1, 2))(w, b, x)
    hL, dh_dx, dh_dw, dh_db = backprop.scalar_chain(w, b, x)
    chain = (hL - t) * jnp.concatenate([dh_dw, dh_db, dh_dx[None]])
    return jnp.concatenate([gw, gb, gx[None]]), chain, dh_dx

  auto, chain, dh_dx = ours(w, b, x)
  bound = 0.25 ** L * np.prod(np.abs(w))
  seed = np.concatenate([dw, db, [df_dh]])
  return [
      compare(ex, f"(df/dw_k, df/db_k, df/dh_0), L={L}: seed's loop vs jax.grad", seed, auto,
              EXACT),
      compare(ex, "  vs jaxbp scalar_chain (product form) x (h_L - t)", seed, chain, EXACT),
      check(ex, "|dh_L/dh_0| <= (1/4)^L prod|w_t|", f"<= {bound:.3g}", f"{abs(float(dh_dx)):.3g}",
            abs(float(dh_dx)) <= bound, "sigmoid' <= 1/4: the gradient vanishes"),
  ]


def output_gradients(config: Config = Config()) -> list[Row]:
  """Seed 003 §4.6.4: cross-entropy on softmax gives softmax(h) - y; 1/2 (h-y)^2 gives h - y."""
  ex = "003 output gradients"
  h = np.array([0.3, -1.2, 2.0, 0.1])
  y = np.array([0.0, 0.0, 1.0, 0.0])
  seed_ce = np.exp(h) / np.sum(np.exp(h)) - y

  @jax.jit
  def ours(h):
    return (jax.grad(lambda h: -jnp.sum(y * jax.nn.log_softmax(h)))(h),
            losses.softmax_cross_entropy.grad(h[None], y[None], "sum")[0],
            jax.grad(lambda h: 0.5 * jnp.sum((h - y) ** 2))(h))

  ce, ce_hand, q = ours(h)
  return [
      compare(ex, "cross-entropy: softmax(h) - y vs jax.grad", seed_ce, ce, EXACT),
      compare(ex, "  vs jaxbp softmax_cross_entropy.grad (sum)", seed_ce, ce_hand, EXACT),
      compare(ex, "1/2 (h - y)^2: h - y vs jax.grad", h - y, q, EXACT),
  ]


def torch_mse_example(config: Config = Config()) -> list[Row]:
  """Seed 003 §4.3's PyTorch example: z = x @ w + b (w (5,3)), nn.MSELoss, backward().

  MSELoss averages over the 3 outputs, so w.grad = x r^T and b.grad = r with
  r = 2 (z - y) / 3. The seed's tensors are random (``torch.randn``) and it
  prints no numbers; here they come from ``config.seed``. The PyTorch row
  appears when torch is importable.
  """
  ex = "003 PyTorch MSE example"
  rng = example_rng(config, 6)
  x, y, w, b = (rng.standard_normal(s) for s in ((5,), (3,), (5, 3), (3,)))
  r = 2 * (x @ w + b - y) / 3
  seed = np.concatenate([np.ravel(np.outer(x, r)), r])
  mse = lambda w, b: jnp.mean((x @ w + b - y) ** 2)
  auto = flat(jax.jit(jax.grad(mse, argnums=(0, 1)))(w, b))
  rows = [compare(ex, "(w.grad, b.grad) = (x r^T, r), r = 2(z - y)/3, vs jax.grad", seed, auto,
                  EXACT)]
  torch = torch_or_none(config)
  if torch is not None:
    t = lambda a: torch.tensor(a, dtype=torch.float64)
    tw, tb = t(w).requires_grad_(True), t(b).requires_grad_(True)
    torch.nn.MSELoss()(torch.matmul(t(x), tw) + tb, t(y)).backward()
    rows.append(compare(ex, "(w.grad, b.grad): PyTorch vs jax.grad",
                        np.concatenate([tw.grad.numpy().ravel(), tb.grad.numpy()]), auto, EXACT))
  return rows


# The examples of seed 003, in the seed's order: (name, function).
EXAMPLES: tuple[tuple[str, Callable[[Config], list[Row]]], ...] = (
    ("003 computational graph", computational_graph),
    ("003 scalar chain", scalar_chain_example),
    ("003 output gradients", output_gradients),
    ("003 PyTorch MSE example", torch_mse_example),
)
