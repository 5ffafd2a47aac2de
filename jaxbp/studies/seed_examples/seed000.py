"""Seed 000 (7 反向传播算法): GradientTape, activation derivatives, the MSE
gradient's sign, softmax + MSE, the softmax Jacobian, sigmoid perceptrons and
gradient descent on Himmelblau's function.

Mistakes found: ReLU' at 0 (formula 1, code 0), the Tanh heading naming
``tf.nn.relu``, the MSE gradient's dropped minus sign, and dL/dw_jk written for
dL/dw_ij in the hidden-layer result (§7.7).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp
from jaxbp.core import activations
from jaxbp.core import backprop
from jaxbp.core import losses
from jaxbp.core.nets import Dense
from jaxbp.studies.seed_examples.common import (EXACT, Config, Row, compare, example_rng, note,
                                                seed_wrong, sigmoid_np)

# Everything JAX computes below runs under jax.jit: one compilation per example
# instead of one per primitive, which keeps the run fast.


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
      compare(ex, "d(x*w)/dw at w=1, x=2 (In[22])", 2.0, calls[0], EXACT),
      note(ex, "dy/dw, y = x*w computed outside (In[19])", "[None]", grad1,
           "TF: None (not on the tape); JAX: zeros, since y does not depend on w"),
      compare(ex, "the same gradient, called 3 times (persistent tape)", [2.0] * 3, calls, EXACT),
      compare(ex, "(d/dw, d/dx) of x*w: argnums, no tape.watch", [2.0, 1.0], both, EXACT),
  ]


def activation_derivatives(config: Config = Config()) -> list[Row]:
  """Seed 000 §7.2: sigmoid, ReLU, LeakyReLU and tanh derivatives (the seed's numpy code)."""
  ex = "000 activations"
  z = np.linspace(-5.0, 5.0, 201)
  z = z[np.abs(z) > 1e-9]                     # away from the ReLU kink
  s = sigmoid_np
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
      compare(ex, "sigmoid' = s(1-s) on [-5,5]: seed code vs jaxbp", d_sigmoid, o["sigmoid"],
              EXACT),
      compare(ex, "sigmoid': jaxbp vs jax.grad", o["sigmoid"], o["sigmoid_auto"], EXACT),
      compare(ex, "max sigmoid' (at z=0) = 1/4 (seed 003)", 0.25, o["sigmoid_max"], EXACT),
      compare(ex, "tanh = 2 s(2x) - 1: seed code vs jnp.tanh", tanh_seed, o["tanh"], EXACT),
      compare(ex, "tanh' = 1 - tanh^2: seed code vs jax.grad", d_tanh, o["tanh_auto"], EXACT),
      compare(ex, "ReLU' (x != 0): seed code vs jaxbp", relu_seed(z), o["relu"], EXACT),
      compare(ex, "ReLU' at 0: seed code vs (jaxbp, jax.grad)", [relu_seed(zero)[0]] * 2,
              o["relu0"], EXACT),
      seed_wrong(ex, "ReLU' at 0: seed formula (1 for x >= 0) vs its code", 1.0, relu_seed(zero)[0],
                 "formula and code disagree at the kink; any value in [0,1] is a subgradient, "
                 "jaxbp takes 0 like jax.nn.relu"),
      compare(ex, "LeakyReLU' (p=0.01, x != 0): seed code vs jaxbp", leaky_seed(z, 0.01),
              o["leaky"], EXACT),
      note(ex, "LeakyReLU' at 0", leaky_seed(zero, 0.01)[0], o["leaky0"],
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
      seed_wrong(ex, "dL/dθ, L = sum (y - θx)^2, θ=0.5: seed vs jax.grad", seed, auto,
                 "sign: it is 2 sum (f - y) df/dθ"),
      compare(ex, "jaxbp mse.grad (sum) = 2 (f - y), chained, vs jax.grad", hand, auto, EXACT),
  ]


def tf_softmax_mse(config: Config = Config()) -> list[Row]:
  """Seed 000 In[34]-[39]: softmax(x@w+b), MSE to one_hot(y), gradients of w, b.

  The seed's tensors are random and it prints no numbers; here they are drawn
  from ``config.seed``. ``tf.losses.MSE`` averages over classes and
  ``reduce_mean`` over the batch: jaxbp's ``mse`` with ``"mean"`` (all
  elements). jaxbp's recursion goes through the full softmax Jacobian.
  """
  ex = "000 TF softmax + MSE"
  rng = example_rng(config, 0)
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
      compare(ex, "loss: seed's code vs jaxbp (no seed number)", tf_value, value, EXACT),
      compare(ex, "dL/dw (4,3): jax.grad vs jaxbp recursion", gw, hand.W, EXACT),
      compare(ex, "dL/db (3,): jax.grad vs jaxbp recursion", gb, hand.b, EXACT),
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
      compare(ex, "p_i (delta_ij - p_j) vs jax.jacobian(softmax)", seed, auto, EXACT),
      compare(ex, "p_i (delta_ij - p_j) vs jaxbp softmax_jacobian", seed, hand, EXACT),
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
  rng = example_rng(config, 1)
  x = rng.standard_normal(4)
  w1 = rng.standard_normal((4, 1))                 # §7.4: one output
  t1 = np.array([1.0])
  W3 = rng.standard_normal((4, 3))                 # §7.5: three outputs
  t3 = np.array([1.0, 0.0, 0.0])
  Ws = [rng.standard_normal(s) for s in ((4, 3), (3, 4), (4, 2))]   # §7.7: 4 -> I -> J -> K
  tK = np.array([0.0, 1.0])

  o1 = sigmoid_np(x @ w1)
  seed74 = np.outer(x, (o1 - t1) * o1 * (1 - o1))
  o3 = sigmoid_np(x @ W3)
  seed75 = np.outer(x, (o3 - t3) * o3 * (1 - o3))
  oI = sigmoid_np(x @ Ws[0])
  oJ = sigmoid_np(oI @ Ws[1])
  oK = sigmoid_np(oJ @ Ws[2])
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
      compare(ex, "§7.4 dL/dw_j1 = (o-t) o(1-o) x_j vs jax.grad", seed74, o["auto74"], EXACT),
      compare(ex, "§7.4 the same vs jaxbp recursion (mse sum / 2)", seed74, o["hand74"], EXACT),
      compare(ex, "§7.5 dL/dw_jk = delta_k x_j vs jax.grad", seed75, o["auto75"], EXACT),
  ]
  for name, s, a in zip(("w_ni (first layer)", "w_ij", "w_jk (output)"), seed77, o["auto77"]):
    rows.append(compare(ex, f"§7.7 dL/d{name} = delta o vs jax.grad", s, a, EXACT))
  rows += [
      compare(ex, "§7.7 deltas I, J, K vs jaxbp.backprop.deltas / 2", np.concatenate([dI, dJ, dK]),
              o["deltas77"], EXACT),
      Row(ex, "§7.7 the hidden-layer result's left side", "dL/dw_jk", "dL/dw_ij",
          "seed wrong: index slip (the weight into node j is w_ij)"),
      note(ex, "numbers printed by §7.4-7.5", "none", "-", "the seed's figures are lost"),
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
    rows.append(compare(ex, f"x after 200 steps from {list(start)}: known minimum", minimum, p,
                        1e-6))
  return rows


# The examples of seed 000, in the seed's order: (name, function).
EXAMPLES: tuple[tuple[str, Callable[[Config], list[Row]]], ...] = (
    ("000 GradientTape", tape_examples),
    ("000 activations", activation_derivatives),
    ("000 MSE gradient", mse_gradient_sign),
    ("000 TF softmax + MSE", tf_softmax_mse),
    ("000 softmax derivative", softmax_derivative),
    ("000 perceptron", perceptron_gradients),
    ("000 Himmelblau", himmelblau_descent),
)
