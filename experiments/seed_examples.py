"""Every worked example of the seeds, with jaxbp's numbers beside the seed's.

    python experiments/seed_examples.py            # all examples, with PyTorch if importable
    python experiments/seed_examples.py --only 004 --no-torch

The seeds are the five lecture notes in ``seeds/`` (000-004). Each function
below reproduces one worked example and returns rows ``(example, quantity,
seed, jaxbp, agreement)``. Where a seed prints a number, ``seed`` is that number
as printed and it is compared at the printed precision (abs 5e-3 for two
decimals, 5e-5 for four); where a seed gives a formula or code but no number,
``seed`` is that formula or code evaluated here in numpy / plain Python, and it
is compared with ``jax.grad`` or jaxbp at 1e-12. The agreement column reads:

  yes ...             agrees within the stated tolerance
  NO ...              disagrees: a bug in jaxbp or in this script (tests fail)
  seed wrong: ...     the seed's formula or code is wrong; jaxbp's is right
  seed inconsistent:  the seed's own printed numbers contradict each other
  note: ...           a convention, or a number the seed does not print

Mistakes and inconsistencies found in the seeds (each has a row below):

  000 §7.2  ReLU': the formula says 1 at x = 0, the code returns 0 there (jaxbp:
            0, as jax.nn.relu). The Tanh heading names ``tf.nn.relu``.
  000 §7.3  The MSE gradient has the wrong sign: d/dθ sum (y - f)^2 =
            -2 sum (y - f) df/dθ.
  000 §7.7  The hidden-layer result is written dL/dw_jk; it is dL/dw_ij.
  001       The unary gates f_c, f_a are justified by "we do need the gradients
            of the constants c, a": a one-input gate gives them none, which is
            only right because they are NOT needed.
  001       The convexity test is backwards: f'' <= 0 makes f concave; with the
            seed's own midpoint definition, f = -x^2 is not convex.
  002       ``one_hot`` shifts labels by the batch minimum, so a batch without
            class 0 is encoded with the wrong classes and the wrong depth.
  002       ``grad_softmax = s(1 - s)`` is only the Jacobian's diagonal; the
            off-diagonal part "not used in backprop" is needed: softmax + MSE
            and softmax + cross-entropy both give wrong deltas without it.
  002       ``grad_mse = -(y - p)`` is the gradient of 1/2 (p - y)^2, half that
            of the ``mse`` it accompanies (and it is called the gradient of the
            root-mean-square error). ``mse(method='mean')`` returns one number
            per output, not a scalar.
  002       The "multi-class cross-entropy" (26) is a mean of binary
            cross-entropies; the categorical one is -sum_j y_j log p_j.
  002       Eq. (4) writes ``W X`` where the shapes in (5) need ``X W``.
  003       In the grad_table walk, "df/du_5 = df/du_9 du_9/du_5 = 1" and
            "df/du_7 = df/du_5 du_5/du_7" mean u_8: u_5 is not an input of u_9.
  004       "The gradient points opposite to the direction of fastest increase":
            it points along it (the directional derivative along g/|g| is +|g|).
  004       The printed numbers are inconsistent: w1 (In[27]) is not
            w0 - 0.1 * grad (In[6]) (max difference 0.045, far above rounding).
            The execution counters suggest why: In[17], the 100-step momentum
            training of a fresh net, ran between In[6] and In[27], so the dw and
            w0 of In[27]/In[29] belong to that trained net (and its dw was
            computed before its last opt.step(), w0 after). The In[6] gradient
            cannot be recomputed at all: the net was initialised without a seed.
            What can be checked is: w1 from w0 and the dw implied by w1
            ((w0 - w1) / 0.1, nearly rank one: singular values 0.86, 0.006,
            0.0004), the momentum step from v = 0 equal to the SGD step (In[29]
            prints the same w1), and, on the seed's x, z with the seed's w0 as
            h1's weights, the h1 gradient by jaxbp's recursion, jax.grad and
            PyTorch, in PyTorch's (out, in) layout (the transpose of jaxbp's).

Smaller slips, not tabulated: 000 writes ∇L = (L/∂θ_1, ...) without the ∂ and
the softmax derivation's i = j line has e^{a_j} for e^{a_i}; 001's staged code
has ``d xpysqr`` / ``d xpy`` (spaces: not Python); 002's eq. (1) adds the bias
as a column to an n x 2 matrix (it is a row) and writes X_i for X_0, eq. (13)
transposes the wrong factor, its derivation (21) has a garbled middle line
(``= softmax(x_j) = ...``) and "sortmax", its code mixes ``self.grad_w`` and
``self.grad_W``, and ``grad_relu`` casts to float32; 004's ``Model0(3, 3)``
ignores its arguments.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from typing import Any, Callable, NamedTuple

import jax
import jax.flatten_util

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import jaxbp  # noqa: E402
from jaxbp.core import activations
from jaxbp.core import backprop
from jaxbp.core import graph
from jaxbp.core import losses  # noqa: E402
from jaxbp.core.nets import Dense  # noqa: E402

PRINTED_2 = 5e-3   # half a unit in the second decimal
PRINTED_4 = 5e-5   # half a unit in the fourth decimal
EXACT = 1e-12      # float64 agreement where both sides are exact formulas



class Row(NamedTuple):
  """One line of the side-by-side table.

  Attributes:
    example: seed number and example, e.g. ``"001 sigmoid neuron"``.
    quantity: what is compared.
    seed: the seed's number (as printed, or its formula/code evaluated), or text.
    jaxbp: jaxbp's (or jax.grad's) number.
    agreement: ``yes ...``, ``NO ...``, ``seed wrong: ...``,
      ``seed inconsistent: ...`` or ``note: ...``.
  """
  example: str
  quantity: str
  seed: Any
  jaxbp: Any
  agreement: str


@dataclasses.dataclass(frozen=True)
class Config:
  """Flags of the script.

  Attributes:
    seed: seed of the numpy generator for the data the seeds leave random.
    torch: compare with PyTorch (float64) where the seed uses it, if importable.
  """
  seed: int = 0
  torch: bool = True


# -- helpers -------------------------------------------------------------------


def _maxdiff(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f"cannot compare shapes {a.shape} and {b.shape}")
  return float(np.max(np.abs(a - b))) if a.size else 0.0


def _cmp(example, quantity, seed, ours, atol) -> Row:
  d = _maxdiff(seed, ours)
  verdict = "yes" if d <= atol else "NO"
  return Row(example, quantity, seed, ours, f"{verdict} |d|={d:.1e} (tol {atol:.0e})")


def _wrong(example, quantity, seed, ours, why) -> Row:
  # A claimed mistake must show in the numbers, else the claim is the bug.
  d = _maxdiff(seed, ours)
  if d <= 1e-9:
    return Row(example, quantity, seed, ours, f"NO: expected the seed to differ ({why})")
  return Row(example, quantity, seed, ours, f"seed wrong: {why}")


def _note(example, quantity, seed, ours, what) -> Row:
  return Row(example, quantity, seed, ours, f"note: {what}")


def _check(example, quantity, seed, ours, ok, why) -> Row:
  """A row for a yes/no fact: ``yes (why)`` or ``NO``."""
  return Row(example, quantity, seed, ours, f"yes ({why})" if ok else "NO")


def _rng(config: Config, example: int) -> np.random.Generator:
  """One independent generator per example, from the script's seed."""
  return np.random.default_rng([config.seed, example])


def _torch(config: Config):
  """The torch module when wanted and importable, else None."""
  if not config.torch:
    return None
  try:
    import torch
  except ImportError:
    return None
  return torch


def _sigmoid_np(x):
  return 1.0 / (1.0 + np.exp(-x))


def _flat(tree) -> np.ndarray:
  return np.concatenate([np.ravel(np.asarray(a)) for a in jax.tree_util.tree_leaves(tree)])


# Everything JAX computes below runs under jax.jit: one compilation per
# example instead of one per primitive, which keeps the script fast.


# -- seed 000 ------------------------------------------------------------------


def tape_examples(config: Config = Config()) -> list[Row]:
  """Seed 000 §7.1: TensorFlow's GradientTape examples in JAX terms.

  TF records operations on a tape and differentiates what was recorded; JAX
  differentiates a function of its arguments. So ``y = x*w`` computed before
  the tape (TF's ``[None]``) is, in JAX, a function that does not depend on
  ``w``: its gradient is 0. A non-persistent tape can be asked once; a JAX
  gradient function is a pure function, callable any number of times (what
  ``persistent=True`` gives). No ``tape.watch``: ``argnums`` picks the inputs.
  """
  ex = "000 GradientTape"
  w, x = 1.0, 2.0
  y = x * w                                         # In[25]: outside the tape
  grad1 = jax.jit(jax.grad(lambda w: y))(w)         # In[18]: TF gives [None]
  grad_y2 = jax.jit(jax.grad(lambda w: x * w))      # In[20]-[22]: y2 = x*w on the tape
  calls = [float(grad_y2(w)) for _ in range(3)]
  both = jax.jit(jax.grad(lambda w, x: x * w, argnums=(0, 1)))(w, x)
  return [
      _cmp(ex, "d(x*w)/dw at w=1, x=2 (In[22])", 2.0, calls[0], EXACT),
      _note(ex, "dy/dw, y = x*w computed outside (In[19])", "[None]", grad1,
            "TF: None (not on the tape); JAX: zeros, since y does not depend on w"),
      _cmp(ex, "the same gradient, called 3 times (persistent tape)", [2.0] * 3, calls, EXACT),
      _cmp(ex, "(d/dw, d/dx) of x*w: argnums, no tape.watch", [2.0, 1.0], both, EXACT),
  ]


def activation_derivatives(config: Config = Config()) -> list[Row]:
  """Seed 000 §7.2: sigmoid, ReLU, LeakyReLU and tanh derivatives (the seed's numpy code)."""
  ex = "000 activations"
  z = np.linspace(-5.0, 5.0, 201)
  z = z[np.abs(z) > 1e-9]                     # away from the ReLU kink
  s = _sigmoid_np
  d_sigmoid = s(z) * (1 - s(z))               # seed's derivative(x)
  tanh_seed = 2 * s(2 * z) - 1                # seed's tanh(x)
  d_tanh = 1 - tanh_seed ** 2

  def relu_seed(x):                           # seed's ReLU derivative, verbatim
    d = np.array(x, copy=True)
    d[x < 0] = 0
    d[x > 0] = 1
    return d

  def leaky_seed(x, p):                       # seed's LeakyReLU derivative
    dx = np.ones_like(x)
    dx[x < 0] = p
    return dx

  leaky = activations.leaky_relu(0.01)

  @jax.jit
  def ours(z):
    each = lambda f: jax.vmap(jax.grad(f))(z)
    zero = jnp.zeros((), z.dtype)
    return dict(
        sigmoid=activations.sigmoid.grad(z), sigmoid_auto=each(jax.nn.sigmoid),
        sigmoid_max=jnp.max(activations.sigmoid.grad(jnp.linspace(-8.0, 8.0, 1601))),
        tanh=jnp.tanh(z), tanh_auto=each(jnp.tanh), relu=activations.relu.grad(z),
        relu0=jnp.stack([activations.relu.grad(zero), jax.grad(jax.nn.relu)(zero)]),
        leaky=leaky.grad(z), leaky0=leaky.grad(zero))

  o = ours(jnp.asarray(z))
  zero = np.array([0.0])
  return [
      _cmp(ex, "sigmoid' = s(1-s) on [-5,5]: seed code vs jaxbp", d_sigmoid, o["sigmoid"], EXACT),
      _cmp(ex, "sigmoid': jaxbp vs jax.grad", o["sigmoid"], o["sigmoid_auto"], EXACT),
      _cmp(ex, "max sigmoid' (at z=0) = 1/4 (seed 003)", 0.25, o["sigmoid_max"], EXACT),
      _cmp(ex, "tanh = 2 s(2x) - 1: seed code vs jnp.tanh", tanh_seed, o["tanh"], EXACT),
      _cmp(ex, "tanh' = 1 - tanh^2: seed code vs jax.grad", d_tanh, o["tanh_auto"], EXACT),
      _cmp(ex, "ReLU' (x != 0): seed code vs jaxbp", relu_seed(z), o["relu"], EXACT),
      _cmp(ex, "ReLU' at 0: seed code vs (jaxbp, jax.grad)", [relu_seed(zero)[0]] * 2,
           o["relu0"], EXACT),
      _wrong(ex, "ReLU' at 0: seed formula (1 for x >= 0) vs its code", 1.0, relu_seed(zero)[0],
             "formula and code disagree at the kink; any value in [0,1] is a subgradient, "
             "jaxbp takes 0 like jax.nn.relu"),
      _cmp(ex, "LeakyReLU' (p=0.01, x != 0): seed code vs jaxbp", leaky_seed(z, 0.01),
           o["leaky"], EXACT),
      _note(ex, "LeakyReLU' at 0", leaky_seed(zero, 0.01)[0], o["leaky0"],
            "convention: seed 1 (x >= 0), jaxbp p (x > 0); both subgradients"),
      Row(ex, "the Tanh heading's TF function", "tf.nn.relu", "tf.math.tanh",
          "seed wrong: copy-paste slip in the heading (the code under it is tanh)"),
  ]


def mse_gradient_sign(config: Config = Config()) -> list[Row]:
  """Seed 000 §7.3: d/dθ sum (y - f_θ(x))^2 has a minus sign the seed drops."""
  ex = "000 MSE gradient"
  x = np.array([1.0, 2.0, 3.0])
  y = np.array([2.0, 1.0, 4.0])
  theta = 0.5
  f = theta * x                                     # f_θ(x) = θ x, df/dθ = x
  seed = 2 * np.sum((y - f) * x)                    # seed: 2 sum [y - f] df/dθ

  @jax.jit
  def ours(theta):
    auto = jax.grad(lambda th: jnp.sum((y - th * x) ** 2))(theta)
    hand = jnp.sum(losses.mse.grad(theta * x, y, "sum") * x)   # 2 (f - y), chained
    return auto, hand

  auto, hand = ours(theta)
  return [
      _wrong(ex, "dL/dθ, L = sum (y - θx)^2, θ=0.5: seed vs jax.grad", seed, auto,
             "sign: it is 2 sum (f - y) df/dθ"),
      _cmp(ex, "jaxbp mse.grad (sum) = 2 (f - y), chained, vs jax.grad", hand, auto, EXACT),
  ]


def tf_softmax_mse(config: Config = Config()) -> list[Row]:
  """Seed 000 In[34]-[39]: softmax(x@w+b), MSE to one_hot(y), gradients of w, b.

  The seed's tensors are random and it prints no numbers; here they are drawn
  from ``config.seed``. ``tf.losses.MSE`` averages over classes and
  ``reduce_mean`` over the batch: jaxbp's ``mse`` with ``"mean"`` (all
  elements). jaxbp's recursion goes through the full softmax Jacobian.
  """
  ex = "000 TF softmax + MSE"
  rng = _rng(config, 0)
  x, w = rng.standard_normal((2, 4)), rng.standard_normal((4, 3))
  b = np.zeros(3)
  y = np.array([2, 0])
  net = jaxbp.MLP((4, 3), output_activation="softmax")

  @jax.jit
  def ours(w, b):
    def tf_loss(w, b):                              # the seed's code, in jnp
      prob = jax.nn.softmax(x @ w + b[None, :], axis=1)
      return jnp.mean(jnp.mean((losses.one_hot(y, 3) - prob) ** 2, axis=1))
    value, grads = backprop.value_and_grad(net, "mse", (Dense(w, b),), x, losses.one_hot(y, 3))
    return tf_loss(w, b), jax.grad(tf_loss, argnums=(0, 1))(w, b), value, grads[0]

  tf_value, (gw, gb), value, hand = ours(w, b)
  return [
      _cmp(ex, "loss: seed's code vs jaxbp (no seed number)", tf_value, value, EXACT),
      _cmp(ex, "dL/dw (4,3): jax.grad vs jaxbp recursion", gw, hand.W, EXACT),
      _cmp(ex, "dL/db (3,): jax.grad vs jaxbp recursion", gb, hand.b, EXACT),
  ]


def softmax_derivative(config: Config = Config()) -> list[Row]:
  """Seed 000 §7.3: dp_i/da_j = p_i (delta_ij - p_j)."""
  ex = "000 softmax derivative"
  a = np.array([1.0, 2.0, 0.5, -1.0])
  p = np.exp(a) / np.sum(np.exp(a))
  seed = p[:, None] * (np.eye(4) - p[None, :])     # the seed's final form
  auto, hand = jax.jit(lambda a: (jax.jacobian(jax.nn.softmax)(a),
                                  activations.softmax_jacobian(a)))(a)
  return [
      _cmp(ex, "p_i (delta_ij - p_j) vs jax.jacobian(softmax)", seed, auto, EXACT),
      _cmp(ex, "p_i (delta_ij - p_j) vs jaxbp softmax_jacobian", seed, hand, EXACT),
  ]


def perceptron_gradients(config: Config = Config()) -> list[Row]:
  """Seed 000 §7.4-7.7: sigmoid perceptrons with L = 1/2 sum (o - t)^2.

  §7.4 dL/dw_j1 = (o_1 - t) o_1 (1 - o_1) x_j; §7.5 dL/dw_jk = delta_k x_j with
  delta_k = (o_k - t_k) o_k (1 - o_k); §7.7 delta_j = o_j (1 - o_j) sum_k
  delta_k w_jk, dL/dw_ij = delta_j o_i. The seed prints no numbers (its figures
  are lost); inputs come from ``config.seed``. ``w_jk`` joins node j to node
  k, which is jaxbp's ``(in, out)`` layout. jaxbp's ``mse`` is ``(o - t)^2``
  without the 1/2, so its gradients and deltas are halved here.
  """
  ex = "000 perceptron"
  rng = _rng(config, 1)
  x = rng.standard_normal(4)
  w1 = rng.standard_normal((4, 1))                 # §7.4: one output
  t1 = np.array([1.0])
  W3 = rng.standard_normal((4, 3))                 # §7.5: three outputs
  t3 = np.array([1.0, 0.0, 0.0])
  Ws = [rng.standard_normal(s) for s in ((4, 3), (3, 4), (4, 2))]   # §7.7: 4 -> I -> J -> K
  tK = np.array([0.0, 1.0])

  o1 = _sigmoid_np(x @ w1)
  seed74 = np.outer(x, (o1 - t1) * o1 * (1 - o1))
  o3 = _sigmoid_np(x @ W3)
  seed75 = np.outer(x, (o3 - t3) * o3 * (1 - o3))
  oI = _sigmoid_np(x @ Ws[0])
  oJ = _sigmoid_np(oI @ Ws[1])
  oK = _sigmoid_np(oJ @ Ws[2])
  dK = oK * (1 - oK) * (oK - tK)                   # delta_k^K
  dJ = oJ * (1 - oJ) * (Ws[2] @ dK)                # o_j(1-o_j) sum_k delta_k w_jk
  dI = oI * (1 - oI) * (Ws[1] @ dJ)
  seed77 = [np.outer(x, dI), np.outer(oI, dJ), np.outer(oJ, dK)]

  net1 = jaxbp.MLP((4, 1), output_activation="sigmoid", bias=False)
  net3 = jaxbp.MLP((4, 3, 4, 2), "sigmoid", output_activation="sigmoid", bias=False)

  def half_sse(Ws, t):
    h = x
    for W in Ws:
      h = jax.nn.sigmoid(h @ W)
    return 0.5 * jnp.sum((h - t) ** 2)

  @jax.jit
  def ours(w1, W3, Ws):
    hand74 = backprop.grad(net1, "mse", (Dense(w1, None),), x[None], t1[None], "sum")[0].W / 2
    params = tuple(Dense(W, None) for W in Ws)
    deltas = backprop.deltas(net3, "mse", params, x[None], tK[None], "sum")
    return dict(auto74=jax.grad(half_sse)([w1], t1)[0], hand74=hand74,
                auto75=jax.grad(half_sse)([W3], t3)[0], auto77=jax.grad(half_sse)(Ws, tK),
                deltas77=jnp.concatenate([d[0] for d in deltas]) / 2)

  o = ours(w1, W3, Ws)
  rows = [
      _cmp(ex, "§7.4 dL/dw_j1 = (o-t) o(1-o) x_j vs jax.grad", seed74, o["auto74"], EXACT),
      _cmp(ex, "§7.4 the same vs jaxbp recursion (mse sum / 2)", seed74, o["hand74"], EXACT),
      _cmp(ex, "§7.5 dL/dw_jk = delta_k x_j vs jax.grad", seed75, o["auto75"], EXACT),
  ]
  for name, s, a in zip(("w_ni (first layer)", "w_ij", "w_jk (output)"), seed77, o["auto77"]):
    rows.append(_cmp(ex, f"§7.7 dL/d{name} = delta o vs jax.grad", s, a, EXACT))
  rows += [
      _cmp(ex, "§7.7 deltas I, J, K vs jaxbp.backprop.deltas / 2", np.concatenate([dI, dJ, dK]),
           o["deltas77"], EXACT),
      Row(ex, "§7.7 the hidden-layer result's left side", "dL/dw_jk", "dL/dw_ij",
          "seed wrong: index slip (the weight into node j is w_ij)"),
      _note(ex, "numbers printed by §7.4-7.5", "none", "-", "the seed's figures are lost"),
  ]
  return rows


def himmelblau_descent(config: Config = Config()) -> list[Row]:
  """Seed 000 §7.8: 200 steps of x -= 0.01 grad from the seed's three starts.

  The seed prints no output; each run ends at one of Himmelblau's four known
  minima (f = 0), the reference here.
  """
  ex = "000 Himmelblau"

  def himmelblau(p):
    return (p[0] ** 2 + p[1] - 11) ** 2 + (p[0] + p[1] ** 2 - 7) ** 2

  @jax.jit
  def descend(p0):
    def step(p, _):
      return p - 0.01 * jax.grad(himmelblau)(p), None
    p = jax.lax.scan(step, p0, None, length=200)[0]
    return p, himmelblau(p)

  minima = {(1.0, 0.0): (3.0, 2.0), (-4.0, 0.0): (-3.779310, -3.283186),
            (4.0, 0.0): (3.584428, -1.848126)}
  rows = []
  for start, minimum in minima.items():
    p, f = descend(jnp.asarray(start))
    rows.append(_cmp(ex, f"x after 200 steps from {list(start)}: known minimum", minimum, p, 1e-6))
  return rows


# -- seed 001 ------------------------------------------------------------------


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
      _cmp(ex, "add gate: q = x + y at [-2, 5]", 3.0, o["q"], EXACT),
      _cmp(ex, "f = q z, z = -4", -12.0, o["f"], EXACT),
      _cmp(ex, "df/dq (the add gate's output)", -4.0, o["dq"], EXACT),
      _cmp(ex, "df/dx, df/dy: the add gate routes -4 to both", [-4.0, -4.0], o["g1"][:2], EXACT),
      _note(ex, "df/dz", None, o["g1"][2], "not in the seed: = q"),
      _cmp(ex, "figure: the add gate gives 2.00 to both inputs", [2.0, 2.0], o["add"], PRINTED_2),
      _cmp(ex, "figure: max routes 2.00 to z (2 > -1), 0.00 to w", [2.0, 0.0], o["g2"][2:],
           PRINTED_2),
      _cmp(ex, "figure: mul gives x the swapped input: -4.00 x 2.00", -8.0, o["g2"][0], PRINTED_2),
      _note(ex, "figure: df/dy = 3.00 x 2.00", None, o["g2"][1], "not in the seed's text"),
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
      _cmp(ex, "dot = w.x + w_2 (the sigmoid's input)", 1.0, dot, EXACT),
      _cmp(ex, "f = s(1.0)", 0.73, fj, PRINTED_2),
      _cmp(ex, "local gradient (1 - 0.73) 0.73 ~ 0.2", 0.2, local, 5e-2),
      _cmp(ex, "dx", [0.39, -0.59], gx, PRINTED_2),
      _cmp(ex, "dw", [-0.20, -0.39, 0.20], gw, PRINTED_2),
      _cmp(ex, "dx: seed's code vs jax.grad", dx, gx, EXACT),
      _cmp(ex, "dw: seed's code vs jax.grad", dw, gw, EXACT),
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
      _cmp(ex, "d/dx of 1/x, c+x, e^x, ax at x=2 (c=3, a=-1.5)", seed, d, EXACT),
      Row(ex, "why f_c, f_a are unary gates", "c, a need gradients (确实需要)",
          f"no gradients (as inputs: dc={float(dc):g}, da={float(da):g})",
          "seed wrong: a one-input gate is right because the constants need NO gradient"),
  ]


def _staged_seed(x, y, accumulate=True):
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
  seed = _staged_seed(x, y)
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
  rows = [_note(ex, "f(3, -4)", seed["f"], f, "the seed prints no value")]
  for label, (k, v) in ref.items():
    rows.append(_cmp(ex, f"{label}: seed's code vs jax.grad", seed[k], v, EXACT))
  rows.append(_cmp(ex, "final (dx, dy) vs jax.grad(f)", [seed["dx (2)"], seed["dy (1)"]], total,
                   EXACT))
  overwrite = _staged_seed(x, y, accumulate=False)
  rows.append(_note(ex, "(dx, dy) if += were =", [overwrite["dx (2)"], overwrite["dy (1)"]], total,
                    "keeps only the last branch: why the seed insists on +="))
  return rows


def matrix_product(config: Config = Config()) -> list[Row]:
  """Seed 001: D = W X, dW = dD X^T, dX = W^T dD, for W (5, 10), X (10, 3).

  jaxbp's layers are the same product in row form, ``z = h W``: ``dW = h^T
  delta`` and ``dh = delta W^T`` (the last row).
  """
  ex = "001 matrix product"
  rng = _rng(config, 2)
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
      _check(ex, "shapes of dW, dX, dD", "[5x10], [10x3], [5x3]", str(shapes),
             shapes == ((5, 10), (10, 3), (5, 3)), "dW has W's shape, dX has X's"),
      _cmp(ex, "dW = dD X^T vs jax.vjp", dD @ X.T, dW, EXACT),
      _cmp(ex, "dX = W^T dD vs jax.vjp", W.T @ dD, dX, EXACT),
      _cmp(ex, "row form z = h W: (dW, dh) = (h^T delta, delta W^T)",
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
  rng = _rng(config, 3)
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
      _cmp(ex, "multiply gate: dw(1000 x) / dw(x)", 1000.0, gate, EXACT),
      _cmp(ex, "softmax classifier at W=0: 1000 dW(x) vs jaxbp dW(1000 x)", scaled, hand, 1e-9),
      _cmp(ex, "  |dW(1000 x)| / |dW(x)| at W=0", 1000.0, r0, 1e-9),
      _note(ex, "  |dW(1000 x)| / |dW(x)| at a random W", 1000.0, r,
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


# -- seed 002 ------------------------------------------------------------------


def _one_hot_seed(X):
  """Seed 002's one_hot, verbatim."""
  assert len(X.shape) == 1, "输入必须是数值型向量"
  X = X - X.min()  # 从0开始数
  return np.eye(X.max() + 1)[X]


def one_hot_examples(config: Config = Config()) -> list[Row]:
  """Seed 002: one_hot. Shifting by the batch minimum breaks batches without class 0."""
  ex = "002 one_hot"
  z = np.array([0, 2, 1])                      # seed 004's labels
  z2 = np.array([2, 1, 2])                     # a batch without class 0
  ours = np.asarray(losses.one_hot(z, 3))
  ours2 = np.asarray(losses.one_hot(z2, 3))
  return [
      _cmp(ex, "one_hot([0, 2, 1])", _one_hot_seed(z), ours, EXACT),
      Row(ex, "one_hot([2, 1, 2]), 3 classes: shape", str(_one_hot_seed(z2).shape),
          str(ours2.shape),
          "seed wrong: it shifts labels by the batch min (2 -> 1, 1 -> 0), losing a column"),
      _wrong(ex, "one_hot([2, 1, 2]): the class of each row", np.argmax(_one_hot_seed(z2), axis=1),
             np.argmax(ours2, axis=1), "label k must mean class k"),
  ]


def stable_softmax(config: Config = Config()) -> list[Row]:
  """Seed 002 eqs. (18)-(20): the naive softmax overflows, the shifted one does not."""
  ex = "002 softmax"
  X = np.array([1000.0, 1001.0, 1002.0])
  with np.errstate(over="ignore", invalid="ignore"):
    exps = np.exp(X)
    naive = exps / np.sum(exps)                 # the seed's softmax
  shift = np.exp(X - np.max(X))
  stable = shift / np.sum(shift)                # the seed's stable_softmax
  log_stable = X - np.max(X) - np.log(np.sum(np.exp(X - np.max(X))))
  soft, log_soft, shifted = jax.jit(lambda X: (
      activations.softmax(X), activations.log_softmax(X), activations.softmax(X - 1000.0)))(X)
  return [
      _check(ex, "naive softmax([1000, 1001, 1002]) finite?", naive, soft,
             not np.isfinite(naive).any() and bool(np.isfinite(soft).all()),
             "the seed's first version gives nan (exp(1000) = inf); jaxbp's is finite"),
      _cmp(ex, "stable_softmax (shift by the max) vs jaxbp softmax", stable, soft, EXACT),
      _cmp(ex, "log-softmax (20) vs jaxbp log_softmax", log_stable, log_soft, EXACT),
      _cmp(ex, "softmax(x + D) = softmax(x) (19), D = -1000", stable, shifted, EXACT),
  ]


def softmax_diagonal_only(config: Config = Config()) -> list[Row]:
  """Seed 002: ``grad_softmax = s(1-s)`` is only the Jacobian's diagonal.

  The seed says the off-diagonal terms -p_i p_j are "not used in backprop".
  They are: the delta at the logits is (dL/dp) J, and with the diagonal alone
  both softmax + MSE and softmax + cross-entropy come out wrong (with
  cross-entropy the wrong classes get 0 instead of p_j). Logits z, target y.
  """
  ex = "002 softmax grad"
  z = np.array([1.0, 2.0, 0.5])
  y = np.array([1.0, 0.0, 0.0])

  @jax.jit
  def ours(z):
    p = activations.softmax(z)
    diag = p * (1 - p)                                   # the seed's grad_softmax
    mse_dp, ce_dp = 2 * (p - y), -y / p                  # dL/dp of sum (p-y)^2, -sum y log p
    return dict(
        mse_diag=mse_dp * diag, ce_diag=ce_dp * diag, p_minus_y=p - y,
        mse_vjp=activations.softmax_vjp(z, mse_dp),
        mse=jax.grad(lambda z: jnp.sum((jax.nn.softmax(z) - y) ** 2))(z),
        ce=jax.grad(lambda z: -jnp.sum(y * jax.nn.log_softmax(z)))(z))

  o = ours(z)
  return [
      _wrong(ex, "softmax + MSE: dL/dz, diagonal only vs jax.grad", o["mse_diag"], o["mse"],
             "the off-diagonal -p_i p_j terms are needed"),
      _cmp(ex, "softmax + MSE: full Jacobian (jaxbp softmax_vjp) vs jax.grad", o["mse_vjp"],
           o["mse"], EXACT),
      _wrong(ex, "softmax + CE: dL/dz, diagonal only vs jax.grad", o["ce_diag"], o["ce"],
             "gives 0 to the wrong classes instead of p_j"),
      _cmp(ex, "softmax + CE: dL/dz = p - y (seed 003) vs jax.grad", o["p_minus_y"], o["ce"],
           EXACT),
  ]


def loss_formulas(config: Config = Config()) -> list[Row]:
  """Seed 002's losses: mse, grad_mse, binary and "multi-class" cross-entropy."""
  ex = "002 losses"
  p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
  y = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
  grad_mse_seed = -(y - p)                                       # the seed's grad_mse
  mse_mean_seed = np.mean((p - y) ** 2, axis=0)                  # mse(method='mean')
  mc_seed = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p), axis=1)  # eq. (26), per example
  bce_grad_seed = -(y / p - (1 - y) / (1 - p))                   # eq. (25)

  @jax.jit
  def ours(p):
    return dict(
        sse=jax.grad(lambda p: jnp.sum((p - y) ** 2))(p),
        half_sse=jax.grad(lambda p: 0.5 * jnp.sum((p - y) ** 2))(p),
        mse_grad=losses.mse.grad(p, y, "sum"), mse_mean=losses.mse.fn(p, y, "mean"),
        ce=losses.cross_entropy.fn(p, y, "none"),
        bce=jnp.mean(losses.binary_cross_entropy.fn(p, y, "none"), axis=1),
        bce_grad=jax.grad(lambda p: jnp.sum(losses.binary_cross_entropy.fn(p, y, "none")))(p))

  o = ours(p)
  return [
      _wrong(ex, "grad_mse vs d/dp sum (p - y)^2 (jax.grad)", grad_mse_seed, o["sse"],
             "misses the factor 2 (the gradient of 1/2 (p - y)^2; no root-mean-square)"),
      _cmp(ex, "grad_mse vs the gradient of 1/2 sum (p - y)^2", grad_mse_seed, o["half_sse"],
           EXACT),
      _cmp(ex, "jaxbp mse.grad (sum) vs jax.grad", o["mse_grad"], o["sse"], EXACT),
      _note(ex, "mse(method='mean')", mse_mean_seed, o["mse_mean"],
            "seed: one value per output (axis=0); jaxbp: their mean, a scalar"),
      _wrong(ex, "'multi-class cross-entropy' (26) vs -sum y log p", mc_seed, o["ce"],
             "(26) is the mean of binary cross-entropies over the outputs"),
      _cmp(ex, "(26) vs jaxbp binary_cross_entropy, mean over outputs", mc_seed, o["bce"], EXACT),
      _cmp(ex, "binary CE gradient (25) vs jax.grad (right)", bce_grad_seed, o["bce_grad"], EXACT),
  ]


def _seed002_backprop(weights, X, Y):
  """Seed 002's core code: one example at a time as a column, bias as W's last row.

  ``outputs[0]`` is the input, ``outputs[i+1] = S(inputs[i])``, ``inputs[i] =
  W_i^T [outputs[i]; 1]``; ``grad_loss`` is the seed's ``grad_mse``.
  """
  s = _sigmoid_np
  grad_s = lambda x: s(x) * (1.0 - s(x))
  grads = [np.zeros_like(W) for W in weights]
  for x, y in zip(X, Y):
    outputs, inputs = [x[:, None]], []
    for W in weights:
      inputs.append(W.T @ np.concatenate([outputs[-1], np.ones((1, 1))], axis=0))
      outputs.append(s(inputs[-1]))
    grad_loss = -(y[:, None] - outputs[-1])
    delta = grad_loss * grad_s(inputs[-1])
    tmp_output = np.concatenate([outputs[-2], np.ones((1, 1))], axis=0)
    grads[-1] += np.matmul(tmp_output, delta.T)
    for i in range(len(weights) - 2, -1, -1):
      delta = np.matmul(weights[i + 1][:-1, :], delta)    # without the bias row
      delta *= grad_s(inputs[i])
      tmp_output = np.concatenate([outputs[i], np.ones((1, 1))], axis=0)
      grads[i] += np.matmul(tmp_output, delta.T)
  return grads


def augmented_network(config: Config = Config()) -> list[Row]:
  """Seed 002 eqs. (1)-(15): the 2-2-2 sigmoid net with biases folded into W.

  The seed's code (``_seed002_backprop``) against jax.grad of 1/2 sum (p - y)^2
  (the loss its ``grad_mse`` differentiates), ``jaxbp.backprop.augmented_grads``
  and jaxbp's MLP with (W, b) split; weights and data from ``config.seed``.
  """
  ex = "002 augmented net"
  rng = _rng(config, 4)
  Ws = [rng.standard_normal((3, 2)), rng.standard_normal((3, 2))]
  X, Y = rng.standard_normal((5, 2)), rng.uniform(size=(5, 2))
  seed = _seed002_backprop(Ws, X, Y)
  net = jaxbp.MLP((2, 2, 2), "sigmoid", output_activation="sigmoid")

  def half_sse(Ws):
    h = X
    for W in Ws:
      h = jax.nn.sigmoid(jnp.concatenate([h, jnp.ones((h.shape[0], 1))], axis=1) @ W)
    return 0.5 * jnp.sum((h - Y) ** 2)

  @jax.jit
  def ours(Ws):
    _, aug = backprop.augmented_grads(Ws, X, Y, "sigmoid", "mse", output_activation="sigmoid",
                                      reduction="sum")
    params = tuple(Dense(W[:-1], W[-1]) for W in Ws)    # b is W's last row
    mlp = backprop.grad(net, "mse", params, X, Y, "sum")
    mlp = [jnp.concatenate([g.W, g.b[None, :]], axis=0) for g in mlp]
    return jax.grad(half_sse)(Ws), [g / 2 for g in aug], [g / 2 for g in mlp]

  auto, aug, mlp = ours(Ws)
  return [
      _cmp(ex, "dW_0, dW_1 (3x2 each): seed's code vs jax.grad", _flat(seed), _flat(auto), EXACT),
      _cmp(ex, "  vs jaxbp backprop.augmented_grads (mse sum / 2)", _flat(seed), _flat(aug), EXACT),
      _cmp(ex, "  vs jaxbp MLP, [dW; db] (mse sum / 2)", _flat(seed), _flat(mlp), EXACT),
      Row(ex, "eq. (4) vs the shapes of eq. (5)", "Y_0 = activation(W_0 X_0)",
          "Y_0 = activation(X_0 W_0)",
          "seed wrong: X_0 is (n, in+1), W_0 is (in+1, out): only X_0 W_0 is defined"),
  ]


# -- seed 003 ------------------------------------------------------------------


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
  s = _sigmoid_np(w * x + b)
  ds = s * (1 - s)
  seed_table = {
      "u_9": 1.0, "u_8": 1.0, "u_7": 0.5, "u_6": 1.0, "u_5": 0.5, "u_4": s - y, "u_3": s - y,
      "u_2": ds * (s - y), "u_1": ds * (s - y), "b": ds * (s - y), "w": x * ds * (s - y) + w,
  }
  order = ", ".join(g.order(constants=False))
  seed_order = "w, x, b, y, u_1, u_2, u_3, u_4, u_5, u_6, u_7, u_8, u_9"
  ops = tuple(g.node(f"u_{i}").op for i in range(1, 10))
  rows = [
      _check(ex, "node order", seed_order, order, order == seed_order, "same"),
      _check(ex, "operations of u_1..u_9", " ".join(SEED003_OPS), " ".join(ops),
             ops == SEED003_OPS, "same"),
  ]
  for u, kids in SEED003_CHILDREN.items():
    ours = tuple(g.children(u))
    rows.append(_check(ex, f"S({u})", "{" + ", ".join(kids) + "}", "{" + ", ".join(ours) + "}",
                       ours == kids, "same"))
  for u, v in seed_table.items():
    rows.append(_cmp(ex, f"grad_table df/d{u}: seed's formula vs jaxbp.graph", v, g.gradient(u),
                     EXACT))
  args = (w, x, b, y)
  auto = jnp.stack(jax.jit(jax.grad(seed003_f, argnums=(0, 2)))(*args))
  via_graph = jnp.stack(graph.grad(seed003_f, argnums=(0, 2))(*args))
  rows += [
      _cmp(ex, "df/dw = x s'(wx+b)(s(wx+b) - y) + w vs jax.grad", seed_table["w"], auto[0], EXACT),
      _cmp(ex, "(df/dw, df/db): jaxbp.graph.grad vs jax.grad", via_graph, auto, EXACT),
      _wrong(ex, "walk step 'df/du_5 = df/du_9 du_9/du_5 = 1'", 1.0, g.gradient("u_5"),
             "u_5 is not an input of u_9; it means u_8 (df/du_8 = 1, df/du_7 = df/du_8 du_8/du_7)"),
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
  rng = _rng(config, 5)
  w, b = rng.standard_normal(L), rng.standard_normal(L)
  x, t = 0.7, 0.2
  hs, zs = [x], []
  for i in range(L):                           # forward, storing every h_k and z_k
    zs.append(w[i] * hs[-1] + b[i])
    hs.append(_sigmoid_np(zs[-1]))
  df_dh = hs[-1] - t                           # initialisation: df/dh_L = df/dy
  dw, db = np.zeros(L), np.zeros(L)
  for i in reversed(range(L)):                 # for k = L, ..., 1
    sp = _sigmoid_np(zs[i]) * (1 - _sigmoid_np(zs[i]))
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
      _cmp(ex, f"(df/dw_k, df/db_k, df/dh_0), L={L}: seed's loop vs jax.grad", seed, auto, EXACT),
      _cmp(ex, "  vs jaxbp scalar_chain (product form) x (h_L - t)", seed, chain, EXACT),
      _check(ex, "|dh_L/dh_0| <= (1/4)^L prod|w_t|", f"<= {bound:.3g}", f"{abs(float(dh_dx)):.3g}",
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
      _cmp(ex, "cross-entropy: softmax(h) - y vs jax.grad", seed_ce, ce, EXACT),
      _cmp(ex, "  vs jaxbp softmax_cross_entropy.grad (sum)", seed_ce, ce_hand, EXACT),
      _cmp(ex, "1/2 (h - y)^2: h - y vs jax.grad", h - y, q, EXACT),
  ]


def torch_mse_example(config: Config = Config()) -> list[Row]:
  """Seed 003 §4.3's PyTorch example: z = x @ w + b (w (5,3)), nn.MSELoss, backward().

  MSELoss averages over the 3 outputs, so w.grad = x r^T and b.grad = r with
  r = 2 (z - y) / 3. The seed's tensors are random (``torch.randn``) and it
  prints no numbers; here they come from ``config.seed``. The PyTorch row
  appears when torch is importable.
  """
  ex = "003 PyTorch MSE example"
  rng = _rng(config, 6)
  x, y, w, b = (rng.standard_normal(s) for s in ((5,), (3,), (5, 3), (3,)))
  r = 2 * (x @ w + b - y) / 3
  seed = np.concatenate([np.ravel(np.outer(x, r)), r])
  auto = _flat(jax.jit(jax.grad(lambda w, b: jnp.mean((x @ w + b - y) ** 2), argnums=(0, 1)))(w, b))
  rows = [_cmp(ex, "(w.grad, b.grad) = (x r^T, r), r = 2(z - y)/3, vs jax.grad", seed, auto, EXACT)]
  torch = _torch(config)
  if torch is not None:
    t = lambda a: torch.tensor(a, dtype=torch.float64)
    tw, tb = t(w).requires_grad_(True), t(b).requires_grad_(True)
    torch.nn.MSELoss()(torch.matmul(t(x), tw) + tb, t(y)).backward()
    rows.append(_cmp(ex, "(w.grad, b.grad): PyTorch vs jax.grad",
                     np.concatenate([tw.grad.numpy().ravel(), tb.grad.numpy()]), auto, EXACT))
  return rows


# -- seed 004 ------------------------------------------------------------------

SEED004_X = np.array([[1.0, 2.0, 1.5], [3.0, 4.0, 2.3], [5.0, 6.0, 1.2]])
SEED004_Z = np.array([0, 2, 1])
# Printed by the seed, in PyTorch's (out, in) layout.
SEED004_GRAD_IN6 = np.array([[-0.0060, -0.0119, -0.0089],
                             [-0.0775, -0.0874, -0.0108],
                             [0.0724, 0.0817, 0.0101]])
SEED004_W0 = np.array([[-0.3902, 0.3928, 0.2833],
                       [-0.2951, 0.2564, 0.2619],
                       [0.0678, 0.1884, -0.0510]])
SEED004_W1 = np.array([[-0.4063, 0.3714, 0.2793],
                       [-0.2671, 0.2932, 0.2683],
                       [0.0271, 0.1356, -0.0597]])
SEED004_LOSS0 = 1.2060      # In[17]'s first printed loss (a fresh random net)


def cube(config: Config = Config()) -> list[Row]:
  """Seed 004 In[3]: torch.autograd.grad(x**3, x) at x = 1 gives 3."""
  ex = "004 x**3"
  ours = jax.jit(jax.grad(lambda x: x ** 3))(1.0)
  rows = [_cmp(ex, "d(x^3)/dx at 1: jax.grad", 3.0, ours, EXACT)]
  torch = _torch(config)
  if torch is not None:
    x = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    rows.append(_cmp(ex, "d(x^3)/dx at 1: torch.autograd.grad", 3.0,
                     torch.autograd.grad(x ** 3, x)[0].item(), EXACT))
  return rows


def seed004_printed(config: Config = Config()) -> list[Row]:
  """Seed 004 In[6], In[27], In[29]: are the printed h1 grad, w0 and w1 consistent?

  They are not: w1 != w0 - 0.1 grad(In[6]). The notebook ran In[17] (a fresh
  net trained 100 momentum steps) between In[6] and In[27], so the dw of
  In[27] is, most likely, that net's last gradient. What holds: w1 = w0 - 0.1 dw for the dw
  the printed w1 implies, and the momentum step from v = 0 (In[29]) equals it.
  """
  ex = "004 printed numbers"
  lr, gamma = 0.1, 0.9
  from_in6 = SEED004_W0 - lr * SEED004_GRAD_IN6
  dw = (SEED004_W0 - SEED004_W1) / lr                  # the dw In[27] must have used

  @jax.jit
  def ours(w0, dw):
    # optax's SGD and SGD-with-momentum (trace), on the seed's layout.
    sgd, mom = optax.sgd(lr), optax.sgd(lr, momentum=gamma)
    w_sgd = optax.apply_updates(w0, sgd.update(dw, sgd.init(w0))[0])
    w_optax_mom = optax.apply_updates(w0, mom.update(dw, mom.init(w0))[0])
    v1 = gamma * jnp.zeros_like(w0) + lr * dw          # the seed's v = gamma v + lr dw
    return w_sgd, w0 - v1, w_optax_mom

  w_sgd, w_mom, w_optax_mom = ours(SEED004_W0, dw)
  sv = np.linalg.svd(dw, compute_uv=False)
  d = _maxdiff(SEED004_W1, from_in6)
  return [
      _note(ex, "h1 grad, In[6] (torch layout (out, in))", SEED004_GRAD_IN6, None,
            "not reproducible: Model0 was initialised without a fixed seed"),
      Row(ex, "w1 (In[27]) vs w0 - 0.1 grad(In[6])", SEED004_W1, from_in6,
          f"seed inconsistent: |d|={d:.3f}, far above rounding (In[17] ran in between)"
          if d > 10 * PRINTED_4 else f"NO: they agree (|d|={d:.1e})"),
      _note(ex, "the dw In[27] used: (w0 - w1) / 0.1", dw, None,
            f"{np.linalg.norm(dw) / np.linalg.norm(SEED004_GRAD_IN6):.1f}x the In[6] grad; "
            f"singular values {', '.join(f'{v:.2g}' for v in sv)} (nearly rank one)"),
      _cmp(ex, "In[27]: w1 = w0 - 0.1 dw (optax.sgd)", SEED004_W1, w_sgd, PRINTED_4),
      _cmp(ex, "In[29]: v = 0.9*0 + 0.1 dw, w1 = w0 - v", SEED004_W1, w_mom, PRINTED_4),
      _cmp(ex, "  optax.sgd(0.1, momentum=0.9), first step", SEED004_W1, w_optax_mom, PRINTED_4),
      _cmp(ex, "momentum step from v=0 = SGD step (In[29] = In[27])", w_sgd, w_mom, EXACT),
  ]


def _torch_default_init(rng, fan_in, fan_out):
  """nn.Linear's default init in jaxbp's layout: W (in, out) and b, U(+-1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)
  return Dense(rng.uniform(-bound, bound, (fan_in, fan_out)), rng.uniform(-bound, bound, fan_out))


def seed004_params(seed: int = 0):
  """Seed 004's 3-3-2-3 ReLU net, and params whose h1 weight is the seed's printed w0.

  The rest is drawn like ``nn.Linear``'s default init, from numpy with
  ``seed`` (then seed + 1, ... until every hidden unit is active for some
  example and every pre-activation is at least 0.05 from ReLU's kink, so that
  the gradient is neither trivially zero nor at a kink).

  Returns:
    ``(net, params)``; ``params`` hold numpy arrays in jaxbp's (in, out) layout.
  """
  net = jaxbp.MLP((3, 3, 2, 3), "relu")
  for s in range(seed, seed + 1000):
    rng = np.random.default_rng([s, 7])
    b1 = _torch_default_init(rng, 3, 3).b
    params = (Dense(SEED004_W0.T.copy(), b1), _torch_default_init(rng, 3, 2),
              _torch_default_init(rng, 2, 3))
    z1 = SEED004_X @ params[0].W + b1
    z2 = np.maximum(z1, 0) @ params[1].W + params[1].b
    live = (z1 > 0).any(axis=0).all() and (z2 > 0).any(axis=0).all()
    if live and min(np.abs(z1).min(), np.abs(z2).min()) > 0.05:
      return net, params
  raise RuntimeError(f"no usable init for seeds {seed}..{seed + 999}")


def _torch_model(torch, params):
  """Seed 004's Model0 in float64, weights copied from jaxbp params (transposed)."""
  nn = torch.nn

  class Model0(nn.Module):
    def __init__(self):
      super().__init__()
      self.h1 = nn.Linear(3, 3, bias=True)
      self.h2 = nn.Linear(3, 2, bias=True)
      self.out = nn.Linear(2, 3, bias=True)

    def forward(self, x):
      h1_out_r = torch.relu(self.h1(x))
      h2_out_r = torch.relu(self.h2(h1_out_r))
      return self.out(h2_out_r)

  net = Model0().double()
  with torch.no_grad():
    for layer, p in zip((net.h1, net.h2, net.out), params):
      layer.weight.copy_(torch.tensor(np.asarray(p.W).T))     # (in, out) -> (out, in)
      layer.bias.copy_(torch.tensor(np.asarray(p.b)))
  return net


def _seed004_jax(net, params, lr, gamma):
  """Everything jaxbp computes for seed 004's net, in one compiled function."""
  loss_fn = jaxbp.objective(net, "softmax_cross_entropy")
  x, z = SEED004_X, SEED004_Z

  def optax_run(opt, steps):
    def step(carry, _):
      params, state = carry
      value, g = jax.value_and_grad(loss_fn)(params, x, z)
      upd, state = opt.update(g, state, params)
      return (optax.apply_updates(params, upd), state), value
    (final, _), values = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return final, values

  def seed_momentum(steps):
    """The seed's v = gamma v + lr dw, w = w - v, on every parameter; every step's w."""
    def step(carry, _):
      p, v = carry
      g = jax.grad(loss_fn)(p, x, z)
      v = jax.tree_util.tree_map(lambda v, g: gamma * v + lr * g, v, g)
      p = jax.tree_util.tree_map(lambda p, v: p - v, p, v)
      return (p, v), p
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    return jax.lax.scan(step, (params, zeros), None, length=steps)[1]

  value, hand = backprop.value_and_grad(net, "softmax_cross_entropy", params, x, z)
  sgd = optax.sgd(lr)
  path = seed_momentum(5)
  loop100, losses100 = optax_run(optax.sgd(0.01, momentum=gamma), 100)
  at = lambda k: jax.tree_util.tree_map(lambda a: a[k], path)
  return dict(value=value, hand=hand, auto=jax.grad(loss_fn)(params, x, z),
              sgd=optax.apply_updates(params, sgd.update(hand, sgd.init(params))[0]),
              momentum1=at(0), momentum5=at(4),
              optax5=optax_run(optax.sgd(lr, momentum=gamma), 5)[0],
              loop100=loop100, losses100=losses100)


def seed004_network(config: Config = Config()) -> list[Row]:
  """Seed 004: the 3-3-2-3 ReLU net with cross-entropy on the seed's x, z.

  h1's weight is the seed's printed w0 (its (out, in) layout transposed to
  jaxbp's (in, out)); the other layers come from ``config.seed``. The h1
  gradient by jaxbp's recursion, jax.grad and PyTorch (if importable); one SGD
  step (lr 0.1); the momentum step from v = 0 (gamma 0.9); five momentum steps
  by the seed's formula, optax and torch.optim.SGD (whose v = gamma v + g,
  w -= lr v is the seed's v scaled by 1/lr: the same steps for a constant lr);
  and In[17]'s 100-step loop (lr 0.01, momentum 0.9) in optax and PyTorch.
  """
  ex = "004 network"
  lr, gamma = 0.1, 0.9
  net, params = seed004_params(config.seed)
  o = jax.jit(lambda p: _seed004_jax(net, p, lr, gamma))(params)
  dW_h1 = np.asarray(o["hand"][0].W)                    # (in, out)
  shapes = ", ".join(f"{n} {tuple(p.W.shape)}" for n, p in zip(("h1", "h2", "out"), params))
  rows = [
      Row(ex, "weight layout: torch (out, in) vs jaxbp (in, out)",
          "h1 (3, 3), h2 (2, 3), out (3, 2)", shapes, "note: jaxbp's W is torch's weight.T"),
      _cmp(ex, "h1 weight = the seed's w0 (torch layout)", SEED004_W0, params[0].W.T, EXACT),
      _note(ex, "loss at the init", SEED004_LOSS0, o["value"],
            "the seed's 1.2060 (In[17]) is another random init"),
      _cmp(ex, "dL/dW_h1 (in, out): jaxbp recursion vs jax.grad", dW_h1, o["auto"][0].W, EXACT),
      _cmp(ex, "all six gradients: jaxbp recursion vs jax.grad", _flat(o["hand"]),
           _flat(o["auto"]), EXACT),
      _note(ex, "net.h1.weight.grad (torch layout) = dW_h1.T", SEED004_GRAD_IN6, dW_h1.T,
            "the seed's In[6] net had other, unknown weights"),
      _cmp(ex, "SGD lr 0.1: w0 - 0.1 dW_h1.T vs optax.sgd (torch layout)",
           SEED004_W0 - lr * dW_h1.T, o["sgd"][0].W.T, EXACT),
      _cmp(ex, "momentum step from v=0 = SGD step (all params)", _flat(o["momentum1"]),
           _flat(o["sgd"]), EXACT),
      _cmp(ex, "5 momentum steps: seed's v = gv + lr dw vs optax.sgd(momentum)",
           _flat(o["momentum5"]), _flat(o["optax5"]), 1e-10),
      _note(ex, "In[17] loop (lr 0.01, momentum 0.9): loss at steps 1, 100", [SEED004_LOSS0, None],
            np.asarray(o["losses100"])[[0, 99]], "the seed's curve comes from another random init"),
  ]
  torch = _torch(config)
  if torch is None:
    return rows
  copy = lambda t: t.detach().numpy().copy()
  tnet = _torch_model(torch, params)
  tx, tz = torch.tensor(SEED004_X), torch.tensor(SEED004_Z)
  criterion = torch.nn.CrossEntropyLoss()
  tloss = criterion(tnet(tx), tz)
  tloss.backward()
  rows += [
      _cmp(ex, "loss: PyTorch vs jaxbp", tloss.item(), o["value"], EXACT),
      _cmp(ex, "net.h1.weight.grad (3,3) vs jaxbp dW_h1.T", copy(tnet.h1.weight.grad), dW_h1.T,
           EXACT),
      _cmp(ex, "net.h2.weight.grad (2,3) vs jaxbp dW_h2.T", copy(tnet.h2.weight.grad),
           np.asarray(o["hand"][1].W).T, EXACT),
  ]
  opt = torch.optim.SGD(tnet.parameters(), lr=lr, momentum=gamma)
  opt.step()                                   # from the gradient above, v = 0
  rows.append(_cmp(ex, "torch.optim.SGD(momentum=0.9) first step = SGD step (h1)",
                   copy(tnet.h1.weight), o["sgd"][0].W.T, EXACT))
  for _ in range(4):
    opt.zero_grad()
    criterion(tnet(tx), tz).backward()
    opt.step()
  rows.append(_cmp(ex, "5 momentum steps: torch.optim.SGD vs optax (h1)", copy(tnet.h1.weight),
                   o["optax5"][0].W.T, 1e-10))
  tnet = _torch_model(torch, params)
  opt = torch.optim.SGD(tnet.parameters(), lr=0.01, momentum=gamma)
  curve = []
  for _ in range(100):                         # In[17], but for the print
    output = tnet.forward(tx)
    loss = criterion(output, tz)
    opt.zero_grad()
    loss.backward()
    opt.step()
    curve.append(loss.item())
  rows += [
      _cmp(ex, "In[17] loop: the 100 losses, PyTorch vs optax", curve, o["losses100"], 1e-10),
      _cmp(ex, "In[17] loop: final h1 weight, PyTorch vs optax", copy(tnet.h1.weight),
           o["loop100"][0].W.T, 1e-10),
  ]
  return rows


def gradient_direction(config: Config = Config()) -> list[Row]:
  """Seed 004 says the gradient points opposite to the direction of fastest increase.

  It points along it: the directional derivative along u = g/|g| is +|g|, the
  largest over unit vectors (Cauchy-Schwarz), and -|g| along -u. Checked on
  seed 004's loss at the params of :func:`seed004_network`.
  """
  ex = "004 gradient direction"
  net, params = seed004_params(config.seed)
  loss_fn = jaxbp.objective(net, "softmax_cross_entropy")
  flat, unravel = jax.flatten_util.ravel_pytree(jax.tree_util.tree_map(jnp.asarray, params))
  directions = _rng(config, 8).standard_normal((100, flat.size))
  directions /= np.linalg.norm(directions, axis=1, keepdims=True)

  @jax.jit
  def ours(flat, directions):
    f = lambda v: loss_fn(unravel(v), SEED004_X, SEED004_Z)
    g = jax.grad(f)(flat)
    norm = jnp.linalg.norm(g)
    slope = lambda u: jax.jvp(f, (flat,), (u,))[1]
    return norm, slope(g / norm), jnp.max(jax.vmap(slope)(directions))

  norm, along, best_random = (float(v) for v in ours(flat, directions))
  return [
      _wrong(ex, "slope of L along g/|g|: seed's claim (< 0) vs jax.jvp", -norm, along,
             "the gradient points along the fastest increase (+|g|), not against it"),
      _cmp(ex, "slope along g/|g| = |g|", norm, along, EXACT),
      _check(ex, "largest slope over 100 random unit directions", f"< |g| = {norm:.4g}",
             f"{best_random:.4g}", best_random < norm, "none beats the gradient"),
  ]


# -- run -----------------------------------------------------------------------

EXAMPLES: tuple[tuple[str, Callable[[Config], list[Row]]], ...] = (
    ("000 GradientTape", tape_examples),
    ("000 activations", activation_derivatives),
    ("000 MSE gradient", mse_gradient_sign),
    ("000 TF softmax + MSE", tf_softmax_mse),
    ("000 softmax derivative", softmax_derivative),
    ("000 perceptron", perceptron_gradients),
    ("000 Himmelblau", himmelblau_descent),
    ("001 gates", gates),
    ("001 sigmoid neuron", sigmoid_neuron),
    ("001 unary gates", unary_gates),
    ("001 staged backprop", staged_backprop),
    ("001 matrix product", matrix_product),
    ("001 input scaling", input_scaling),
    ("001 convexity", convexity),
    ("002 one_hot", one_hot_examples),
    ("002 softmax", stable_softmax),
    ("002 softmax grad", softmax_diagonal_only),
    ("002 losses", loss_formulas),
    ("002 augmented net", augmented_network),
    ("003 computational graph", computational_graph),
    ("003 scalar chain", scalar_chain_example),
    ("003 output gradients", output_gradients),
    ("003 PyTorch MSE example", torch_mse_example),
    ("004 x**3", cube),
    ("004 printed numbers", seed004_printed),
    ("004 network", seed004_network),
    ("004 gradient direction", gradient_direction),
)


def run(config: Config = Config(), only: str = "") -> list[Row]:
  """The rows of every example whose name contains ``only``, in seed order."""
  rows = []
  for name, fn in EXAMPLES:
    if only in name:
      rows.extend(fn(config))
  return rows


def _fmt(v) -> str:
  if v is None:
    return "-"
  if isinstance(v, str):
    return v
  if isinstance(v, (list, tuple)) and any(e is None for e in v):
    return "[" + ", ".join(_fmt(e) for e in v) + "]"
  a = np.asarray(v)
  if a.ndim == 0:
    return f"{float(a):.6g}" if a.dtype.kind == "f" else str(a.item())
  text = np.array2string(a, precision=4, suppress_small=True, separator=", ", threshold=12,
                         edgeitems=3, max_line_width=10 ** 6)
  return " ".join(text.split())


def format_rows(rows: list[Row]) -> str:
  """The side-by-side table, one section per example."""
  lines = ["Each row: quantity, the seed's number (in an 'A vs B' row: A), jaxbp's (B), "
           "agreement."]
  current = None
  for r in rows:
    if r.example != current:
      current = r.example
      lines.append(f"\n== {current} ==")
    seed, ours = _fmt(r.seed), _fmt(r.jaxbp)
    if max(len(seed), len(ours)) <= 22 and len(r.quantity) <= 56:
      lines.append(f"  {r.quantity:<56} seed {seed:<22} jaxbp {ours:<22} {r.agreement}")
    else:
      lines.append(f"  {r.quantity}")
      lines.append(f"      seed : {seed}")
      lines.append(f"      jaxbp: {ours}")
      lines.append(f"      -> {r.agreement}")
  return "\n".join(lines)


def summary(rows: list[Row]) -> str:
  kinds = ("yes", "seed wrong", "seed inconsistent", "note", "NO")
  counts = {k: sum(r.agreement.startswith(k) for r in rows) for k in kinds}
  return f"{len(rows)} rows: " + ", ".join(f"{v} {k}" for k, v in counts.items())


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seed", type=int, default=0,
                      help="seed for the data the lecture notes leave random (default 0)")
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparisons")
  parser.add_argument("--only", default="",
                      help="run only the examples whose name contains this, e.g. 004 or graph")
  args = parser.parse_args(argv)
  config = Config(seed=args.seed, torch=not args.no_torch)
  rows = run(config, args.only)
  print(format_rows(rows))
  if args.only in "003 computational graph":
    print(f"\nseed 003's graph at {SEED003_POINT}, with its grad_table:")
    print(seed003_graph(config).table())
  print("\n" + summary(rows))
  if config.torch and _torch(config) is None:
    print("(PyTorch is not importable: its rows were skipped)")
  return 1 if any(r.agreement.startswith("NO") for r in rows) else 0


if __name__ == "__main__":
  sys.exit(main())
