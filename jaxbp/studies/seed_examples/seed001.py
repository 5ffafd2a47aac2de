"""Seed 001 (梯度反向传播, after CS231n): gates, the sigmoid neuron, unary gates,
staged backprop, the matrix product, input scaling and convexity.

Mistakes found: the unary gates f_c, f_a are justified by the constants
"needing" gradients (a one-input gate is right because they need none), and the
second-derivative convexity test has the wrong sign.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp
from jaxbp.core import activations
from jaxbp.core import backprop
from jaxbp.core.nets import Dense
from jaxbp.studies.seed_examples.common import (EXACT, PRINTED_2, Config, Row, check, compare,
                                                example_rng, note)


def gates(config: Config = Config()) -> list[Row]:
  """Seed 001: add routes the gradient unchanged, max to the larger input, mul swaps inputs.

  First example (text): q = x + y with x = -2, y = 5, then f = q z = -12 with
  z = -4. Second (the figure, lost in the seed; it is CS231n's): f = 2 (x y +
  max(z, w)) at x = 3, y = -4, z = 2, w = -1; the text's numbers are the
  gradient 2.00 that the add gate passes to both inputs, the 2.00 max passes
  to z, w's 0, and x's -4.00 x 2.00 = -8.00.
  """
  ex = "001 gates"
  f1 = lambda x, y, z: (x + y) * z
  f2 = lambda x, y, z, w: 2.0 * (x * y + jnp.maximum(z, w))

  @jax.jit
  def ours():
    return dict(
        q=-2.0 + 5.0, f=f1(-2.0, 5.0, -4.0), dq=jax.grad(lambda q: q * -4.0)(3.0),
        g1=jnp.stack(jax.grad(f1, argnums=(0, 1, 2))(-2.0, 5.0, -4.0)),
        g2=jnp.stack(jax.grad(f2, argnums=(0, 1, 2, 3))(3.0, -4.0, 2.0, -1.0)),
        add=jnp.stack(jax.grad(lambda a, m: 2.0 * (a + m), argnums=(0, 1))(-12.0, 2.0)))

  o = ours()
  return [
      compare(ex, "add gate: q = x + y at [-2, 5]", 3.0, o["q"], EXACT),
      compare(ex, "f = q z, z = -4", -12.0, o["f"], EXACT),
      compare(ex, "df/dq (the add gate's output)", -4.0, o["dq"], EXACT),
      compare(ex, "df/dx, df/dy: the add gate routes -4 to both", [-4.0, -4.0], o["g1"][:2], EXACT),
      note(ex, "df/dz", None, o["g1"][2], "not in the seed: = q"),
      compare(ex, "figure: the add gate gives 2.00 to both inputs", [2.0, 2.0], o["add"],
              PRINTED_2),
      compare(ex, "figure: max routes 2.00 to z (2 > -1), 0.00 to w", [2.0, 0.0], o["g2"][2:],
              PRINTED_2),
      compare(ex, "figure: mul gives x the swapped input: -4.00 x 2.00", -8.0, o["g2"][0],
              PRINTED_2),
      note(ex, "figure: df/dy = 3.00 x 2.00", None, o["g2"][1], "not in the seed's text"),
  ]


def sigmoid_neuron(config: Config = Config()) -> list[Row]:
  """Seed 001: the 2-input sigmoid neuron w = [2, -3, -3], x = [-1, -2].

  The seed's own code (plain Python below) and jax.grad of the same f. The
  seed prints 0.73 and (1 - 0.73) 0.73 ~ 0.2; dx = [0.39, -0.59] and
  dw = [-0.20, -0.39, 0.20] are its code's output at two decimals.
  """
  ex = "001 sigmoid neuron"
  w, x = [2, -3, -3], [-1, -2]
  # The seed's code, verbatim.
  dot = w[0] * x[0] + w[1] * x[1] + w[2]
  f = 1.0 / (1 + math.exp(-dot))
  ddot = (1 - f) * f
  dx = [w[0] * ddot, w[1] * ddot]
  dw = [x[0] * ddot, x[1] * ddot, 1.0 * ddot]

  def neuron(w, x):
    return jax.nn.sigmoid(w[0] * x[0] + w[1] * x[1] + w[2])

  @jax.jit
  def ours(w, x):
    local = activations.sigmoid.grad(jnp.ones(()))      # s'(1) = (1 - s(1)) s(1)
    return neuron(w, x), jax.grad(neuron, argnums=(0, 1))(w, x), local

  fj, (gw, gx), local = ours(np.asarray(w, np.float64), np.asarray(x, np.float64))
  return [
      compare(ex, "dot = w.x + w_2 (the sigmoid's input)", 1.0, dot, EXACT),
      compare(ex, "f = s(1.0)", 0.73, fj, PRINTED_2),
      compare(ex, "local gradient (1 - 0.73) 0.73 ~ 0.2", 0.2, local, 5e-2),
      compare(ex, "dx", [0.39, -0.59], gx, PRINTED_2),
      compare(ex, "dw", [-0.20, -0.39, 0.20], gw, PRINTED_2),
      compare(ex, "dx: seed's code vs jax.grad", dx, gx, EXACT),
      compare(ex, "dw: seed's code vs jax.grad", dw, gw, EXACT),
  ]


def unary_gates(config: Config = Config()) -> list[Row]:
  """Seed 001: the gates 1/x, c + x, e^x, a x and their derivatives.

  As two-input gates, c and a would get the gradients 1 and x; a unary gate
  closes over them as constants and gives them none.
  """
  ex = "001 unary gates"
  x, c, a = 2.0, 3.0, -1.5
  seed = [-1 / x ** 2, 1.0, math.exp(x), a]

  @jax.jit
  def ours(x, c, a):
    d = [jax.grad(lambda x: 1 / x)(x), jax.grad(lambda x: c + x)(x), jax.grad(jnp.exp)(x),
         jax.grad(lambda x: a * x)(x)]
    return jnp.stack(d), jax.grad(lambda c: c + x)(c), jax.grad(lambda a: a * x)(a)

  d, dc, da = ours(x, c, a)
  return [
      compare(ex, "d/dx of 1/x, c+x, e^x, ax at x=2 (c=3, a=-1.5)", seed, d, EXACT),
      Row(ex, "why f_c, f_a are unary gates", "c, a need gradients (确实需要)",
          f"no gradients (as inputs: dc={float(dc):g}, da={float(da):g})",
          "seed wrong: a one-input gate is right because the constants need NO gradient"),
  ]


def staged_seed(x, y, accumulate=True):
  """Seed 001's staged forward and backward code, verbatim (with += or with =)."""
  sigy = 1.0 / (1 + math.exp(-y))   # (1)
  num = x + sigy                    # (2)
  sigx = 1.0 / (1 + math.exp(-x))   # (3)
  xpy = x + y                       # (4)
  xpysqr = xpy ** 2                 # (5)
  den = sigx + xpysqr               # (6)
  invden = 1.0 / den                # (7)
  f = num * invden                  # (8)
  d = {"f": f}
  d["dnum"] = invden                                   # (8)
  d["dinvden"] = num                                   # (8)
  d["dden"] = (-1.0 / (den ** 2)) * d["dinvden"]       # (7)
  d["dsigx"] = (1) * d["dden"]                         # (6)
  d["dxpysqr"] = (1) * d["dden"]                       # (6)
  d["dxpy"] = (2 * xpy) * d["dxpysqr"]                 # (5)
  dx = (1) * d["dxpy"]                                 # (4)
  dy = (1) * d["dxpy"]                                 # (4)
  d["dx (4)"], d["dy (4)"] = dx, dy
  branch = ((1 - sigx) * sigx) * d["dsigx"]            # (3)  dx += ...
  dx = dx + branch if accumulate else branch
  d["dx (3)"] = dx
  branch = (1) * d["dnum"]                             # (2)  dx += ...
  dx = dx + branch if accumulate else branch
  d["dx (2)"] = dx
  d["dsigy"] = (1) * d["dnum"]                         # (2)
  branch = ((1 - sigy) * sigy) * d["dsigy"]            # (1)  dy += ...
  dy = dy + branch if accumulate else branch
  d["dy (1)"] = dy
  return d


_STAGES = ("sigy", "num", "sigx", "xpy", "xpysqr", "den", "invden")


def _staged_jax(x, y, eps):
  """f(x, y) = (x + s(y)) / (s(x) + (x + y)^2) with each stage v shifted by eps[v].

  df/d eps[v] at eps = 0 is df/dv, the seed's d-variable ``dv``.
  """
  sigy = jax.nn.sigmoid(y) + eps["sigy"]
  num = x + sigy + eps["num"]
  sigx = jax.nn.sigmoid(x) + eps["sigx"]
  xpy = x + y + eps["xpy"]
  xpysqr = xpy ** 2 + eps["xpysqr"]
  den = sigx + xpysqr + eps["den"]
  invden = 1.0 / den + eps["invden"]
  return num * invden


def _staged_split(x_num, x_sigx, x_xpy, y_sigy, y_xpy):
  """The same f with one copy of x (of y) per branch it enters."""
  return (x_num + jax.nn.sigmoid(y_sigy)) / (jax.nn.sigmoid(x_sigx) + (x_xpy + y_xpy) ** 2)


def staged_backprop(config: Config = Config()) -> list[Row]:
  """Seed 001: staged backprop of f(x, y) = (x + s(y)) / (s(x) + (x + y)^2) at (3, -4).

  Every d-variable of the seed's code against jax.grad with respect to that
  stage (``_staged_jax``), and the running sums ``dx +=`` against jax.grad of
  the branches they have collected so far (``_staged_split``). The seed prints
  no numbers: its code is run here.
  """
  ex = "001 staged backprop"
  x, y = 3.0, -4.0
  seed = staged_seed(x, y)
  zeros = {k: 0.0 for k in _STAGES}

  @jax.jit
  def ours(x, y):
    adj = jax.grad(_staged_jax, argnums=2)(x, y, zeros)
    branches = jax.grad(_staged_split, argnums=tuple(range(5)))(x, x, x, y, y)
    total = jax.grad(lambda x, y: _staged_jax(x, y, zeros), argnums=(0, 1))(x, y)
    return _staged_jax(x, y, zeros), adj, branches, jnp.stack(total)

  f, adj, (gx_num, gx_sigx, gx_xpy, gy_sigy, gy_xpy), total = ours(x, y)
  ref = {
      "dnum (8)": ("dnum", adj["num"]), "dinvden (8)": ("dinvden", adj["invden"]),
      "dden (7)": ("dden", adj["den"]), "dsigx (6)": ("dsigx", adj["sigx"]),
      "dxpysqr (6)": ("dxpysqr", adj["xpysqr"]), "dxpy (5)": ("dxpy", adj["xpy"]),
      "dx = dxpy (4): the x+y branch": ("dx (4)", gx_xpy),
      "dy = dxpy (4): the x+y branch": ("dy (4)", gy_xpy),
      "dx += (3): + the s(x) branch": ("dx (3)", gx_xpy + gx_sigx),
      "dx += dnum (2): + the numerator": ("dx (2)", gx_xpy + gx_sigx + gx_num),
      "dsigy (2)": ("dsigy", adj["sigy"]),
      "dy += (1): + the s(y) branch": ("dy (1)", gy_xpy + gy_sigy),
  }
  rows = [note(ex, "f(3, -4)", seed["f"], f, "the seed prints no value")]
  for label, (k, v) in ref.items():
    rows.append(compare(ex, f"{label}: seed's code vs jax.grad", seed[k], v, EXACT))
  rows.append(compare(ex, "final (dx, dy) vs jax.grad(f)", [seed["dx (2)"], seed["dy (1)"]], total,
                      EXACT))
  overwrite = staged_seed(x, y, accumulate=False)
  rows.append(note(ex, "(dx, dy) if += were =", [overwrite["dx (2)"], overwrite["dy (1)"]], total,
                   "keeps only the last branch: why the seed insists on +="))
  return rows


def matrix_product(config: Config = Config()) -> list[Row]:
  """Seed 001: D = W X, dW = dD X^T, dX = W^T dD, for W (5, 10), X (10, 3).

  jaxbp's layers are the same product in row form, ``z = h W``: ``dW = h^T
  delta`` and ``dh = delta W^T`` (the last row).
  """
  ex = "001 matrix product"
  rng = example_rng(config, 2)
  W, X, dD = rng.standard_normal((5, 10)), rng.standard_normal((10, 3)), rng.standard_normal((5, 3))
  h, delta = X.T, dD.T                              # row form: z = h @ W^T

  @jax.jit
  def ours(W, X, dD, h, delta):
    _, vjp = jax.vjp(lambda W, X: W @ X, W, X)
    _, vjp_row = jax.vjp(lambda h, Wr: h @ Wr, h, W.T)
    return vjp(dD), vjp_row(delta)

  (dW, dX), (dh_row, dW_row) = ours(W, X, dD, h, delta)
  shapes = (dW.shape, dX.shape, dD.shape)
  return [
      check(ex, "shapes of dW, dX, dD", "[5x10], [10x3], [5x3]", str(shapes),
            shapes == ((5, 10), (10, 3), (5, 3)), "dW has W's shape, dX has X's"),
      compare(ex, "dW = dD X^T vs jax.vjp", dD @ X.T, dW, EXACT),
      compare(ex, "dX = W^T dD vs jax.vjp", W.T @ dD, dX, EXACT),
      compare(ex, "row form z = h W: (dW, dh) = (h^T delta, delta W^T)",
              np.concatenate([np.ravel(h.T @ delta), np.ravel(delta @ W)]),
              np.concatenate([np.ravel(dW_row), np.ravel(dh_row)]), EXACT),
  ]


def input_scaling(config: Config = Config()) -> list[Row]:
  """Seed 001: multiplying every input by 1000 multiplies the weight gradient by 1000.

  Exact for the multiply gate with a given upstream gradient, and for a linear
  softmax classifier at W = 0 (the scores, hence the upstream gradient, do not
  change). At a general W the scores grow with the inputs, the upstream
  gradient changes, and the ratio is not 1000.
  """
  ex = "001 input scaling"
  rng = example_rng(config, 3)
  x = rng.standard_normal((6, 4))
  y = rng.integers(0, 3, 6)
  net = jaxbp.MLP((4, 3))
  zero = (Dense(np.zeros((4, 3)), np.zeros(3)),)
  random = (Dense(rng.standard_normal((4, 3)), np.zeros(3)),)
  loss = jaxbp.objective(net, "softmax_cross_entropy")

  @jax.jit
  def ours(zero, random):
    def ratio(params):
      g1 = jax.grad(loss)(params, x, y)[0].W
      g1000 = jax.grad(loss)(params, 1000.0 * x, y)[0].W
      return jnp.linalg.norm(g1000) / jnp.linalg.norm(g1)
    gate = jax.grad(lambda w: w * 2000.0)(0.3) / jax.grad(lambda w: w * 2.0)(0.3)
    hand = backprop.grad(net, "softmax_cross_entropy", zero, 1000.0 * x, y)[0].W
    return gate, 1000.0 * jax.grad(loss)(zero, x, y)[0].W, hand, ratio(zero), ratio(random)

  gate, scaled, hand, r0, r = ours(zero, random)
  return [
      compare(ex, "multiply gate: dw(1000 x) / dw(x)", 1000.0, gate, EXACT),
      compare(ex, "softmax classifier at W=0: 1000 dW(x) vs jaxbp dW(1000 x)", scaled, hand, 1e-9),
      compare(ex, "  |dW(1000 x)| / |dW(x)| at W=0", 1000.0, r0, 1e-9),
      note(ex, "  |dW(1000 x)| / |dW(x)| at a random W", 1000.0, r,
           "the upstream gradient changes with the scores: the seed's 1000 holds it fixed"),
  ]


def convexity(config: Config = Config()) -> list[Row]:
  """Seed 001: the second-derivative test for convexity has the wrong sign.

  The seed calls f convex when f'' <= 0, and defines convexity by
  f((x1 + x2)/2) <= (f(x1) + f(x2))/2. f = -x^2 passes the first (f'' = -2)
  and fails the second at x1 = -1, x2 = 1 (0 <= -1 is false); f = x^2 is the
  other way round. Convex means f'' >= 0.
  """
  ex = "001 convexity"
  rows = []
  for name, sign in (("-x^2", -1.0), ("x^2", 1.0)):
    f = lambda x, sign=sign: sign * x ** 2
    f2 = float(jax.jit(jax.grad(jax.grad(f)))(0.3))
    midpoint = bool(f(0.0) <= (f(-1.0) + f(1.0)) / 2)
    seed_says = f2 <= 0
    rows.append(Row(ex, f"f = {name} (f'' = {f2:g}): convex?", f"{seed_says} (f'' <= 0)",
                    f"{midpoint} (midpoint definition)",
                    "seed wrong: convex means f'' >= 0" if seed_says != midpoint else "NO"))
  return rows


# The examples of seed 001, in the seed's order: (name, function).
EXAMPLES: tuple[tuple[str, Callable[[Config], list[Row]]], ...] = (
    ("001 gates", gates),
    ("001 sigmoid neuron", sigmoid_neuron),
    ("001 unary gates", unary_gates),
    ("001 staged backprop", staged_backprop),
    ("001 matrix product", matrix_product),
    ("001 input scaling", input_scaling),
    ("001 convexity", convexity),
)
