"""Seed 002 (反向传播算法实现): one_hot, softmax, its gradient, the losses and the
2-2-2 sigmoid net with biases folded into W.

Mistakes found: ``one_hot`` shifts labels by the batch minimum; ``grad_softmax``
keeps only the Jacobian's diagonal; ``grad_mse`` is the gradient of
1/2 (p - y)^2; the "multi-class cross-entropy" (26) is a mean of binary ones;
eq. (4) writes ``W X`` where the shapes need ``X W``.
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
from jaxbp.studies.seed_examples.common import (EXACT, Config, Row, check, compare, flat, note,
                                                example_rng, seed_wrong, sigmoid_np)


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
      compare(ex, "one_hot([0, 2, 1])", _one_hot_seed(z), ours, EXACT),
      Row(ex, "one_hot([2, 1, 2]), 3 classes: shape", str(_one_hot_seed(z2).shape),
          str(ours2.shape),
          "seed wrong: it shifts labels by the batch min (2 -> 1, 1 -> 0), losing a column"),
      seed_wrong(ex, "one_hot([2, 1, 2]): the class of each row",
                 np.argmax(_one_hot_seed(z2), axis=1), np.argmax(ours2, axis=1),
                 "label k must mean class k"),
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
      check(ex, "naive softmax([1000, 1001, 1002]) finite?", naive, soft,
            not np.isfinite(naive).any() and bool(np.isfinite(soft).all()),
            "the seed's first version gives nan (exp(1000) = inf); jaxbp's is finite"),
      compare(ex, "stable_softmax (shift by the max) vs jaxbp softmax", stable, soft, EXACT),
      compare(ex, "log-softmax (20) vs jaxbp log_softmax", log_stable, log_soft, EXACT),
      compare(ex, "softmax(x + D) = softmax(x) (19), D = -1000", stable, shifted, EXACT),
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
      seed_wrong(ex, "softmax + MSE: dL/dz, diagonal only vs jax.grad", o["mse_diag"], o["mse"],
                 "the off-diagonal -p_i p_j terms are needed"),
      compare(ex, "softmax + MSE: full Jacobian (jaxbp softmax_vjp) vs jax.grad", o["mse_vjp"],
              o["mse"], EXACT),
      seed_wrong(ex, "softmax + CE: dL/dz, diagonal only vs jax.grad", o["ce_diag"], o["ce"],
                 "gives 0 to the wrong classes instead of p_j"),
      compare(ex, "softmax + CE: dL/dz = p - y (seed 003) vs jax.grad", o["p_minus_y"], o["ce"],
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
      seed_wrong(ex, "grad_mse vs d/dp sum (p - y)^2 (jax.grad)", grad_mse_seed, o["sse"],
                 "misses the factor 2 (the gradient of 1/2 (p - y)^2; no root-mean-square)"),
      compare(ex, "grad_mse vs the gradient of 1/2 sum (p - y)^2", grad_mse_seed, o["half_sse"],
              EXACT),
      compare(ex, "jaxbp mse.grad (sum) vs jax.grad", o["mse_grad"], o["sse"], EXACT),
      note(ex, "mse(method='mean')", mse_mean_seed, o["mse_mean"],
           "seed: one value per output (axis=0); jaxbp: their mean, a scalar"),
      seed_wrong(ex, "'multi-class cross-entropy' (26) vs -sum y log p", mc_seed, o["ce"],
                 "(26) is the mean of binary cross-entropies over the outputs"),
      compare(ex, "(26) vs jaxbp binary_cross_entropy, mean over outputs", mc_seed, o["bce"],
              EXACT),
      compare(ex, "binary CE gradient (25) vs jax.grad (right)", bce_grad_seed, o["bce_grad"],
              EXACT),
  ]


def _seed002_backprop(weights, X, Y):
  """Seed 002's core code: one example at a time as a column, bias as W's last row.

  ``outputs[0]`` is the input, ``outputs[i+1] = S(inputs[i])``, ``inputs[i] =
  W_i^T [outputs[i]; 1]``; ``grad_loss`` is the seed's ``grad_mse``.
  """
  s = sigmoid_np
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
  rng = example_rng(config, 4)
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
      compare(ex, "dW_0, dW_1 (3x2 each): seed's code vs jax.grad", flat(seed), flat(auto), EXACT),
      compare(ex, "  vs jaxbp backprop.augmented_grads (mse sum / 2)", flat(seed), flat(aug),
              EXACT),
      compare(ex, "  vs jaxbp MLP, [dW; db] (mse sum / 2)", flat(seed), flat(mlp), EXACT),
      Row(ex, "eq. (4) vs the shapes of eq. (5)", "Y_0 = activation(W_0 X_0)",
          "Y_0 = activation(X_0 W_0)",
          "seed wrong: X_0 is (n, in+1), W_0 is (in+1, out): only X_0 W_0 is defined"),
  ]


# The examples of seed 002, in the seed's order: (name, function).
EXAMPLES: tuple[tuple[str, Callable[[Config], list[Row]]], ...] = (
    ("002 one_hot", one_hot_examples),
    ("002 softmax", stable_softmax),
    ("002 softmax grad", softmax_diagonal_only),
    ("002 losses", loss_formulas),
    ("002 augmented net", augmented_network),
)
