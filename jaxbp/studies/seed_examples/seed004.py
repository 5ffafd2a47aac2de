"""Seed 004 (神经网络的反向传播): x**3, the printed h1 gradient and weights, the
3-3-2-3 ReLU net against PyTorch, SGD with momentum, and the gradient's direction.

Mistakes found: the gradient is said to point against the fastest increase;
the printed w1 (In[27]) is not w0 - 0.1 grad (In[6]) (In[17] ran in between).
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

import jaxbp
from jaxbp.core import backprop
from jaxbp.core.nets import Dense
from jaxbp.studies.seed_examples.common import (EXACT, PRINTED_4, Config, Row, check, compare,
                                                example_rng, flat, maxdiff, note, seed_wrong,
                                                torch_or_none)

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
  rows = [compare(ex, "d(x^3)/dx at 1: jax.grad", 3.0, ours, EXACT)]
  torch = torch_or_none(config)
  if torch is not None:
    x = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    rows.append(compare(ex, "d(x^3)/dx at 1: torch.autograd.grad", 3.0,
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
  d = maxdiff(SEED004_W1, from_in6)
  return [
      note(ex, "h1 grad, In[6] (torch layout (out, in))", SEED004_GRAD_IN6, None,
           "not reproducible: Model0 was initialised without a fixed seed"),
      Row(ex, "w1 (In[27]) vs w0 - 0.1 grad(In[6])", SEED004_W1, from_in6,
          f"seed inconsistent: |d|={d:.3f}, far above rounding (In[17] ran in between)"
          if d > 10 * PRINTED_4 else f"NO: they agree (|d|={d:.1e})"),
      note(ex, "the dw In[27] used: (w0 - w1) / 0.1", dw, None,
           f"{np.linalg.norm(dw) / np.linalg.norm(SEED004_GRAD_IN6):.1f}x the In[6] grad; "
           f"singular values {', '.join(f'{v:.2g}' for v in sv)} (nearly rank one)"),
      compare(ex, "In[27]: w1 = w0 - 0.1 dw (optax.sgd)", SEED004_W1, w_sgd, PRINTED_4),
      compare(ex, "In[29]: v = 0.9*0 + 0.1 dw, w1 = w0 - v", SEED004_W1, w_mom, PRINTED_4),
      compare(ex, "  optax.sgd(0.1, momentum=0.9), first step", SEED004_W1, w_optax_mom, PRINTED_4),
      compare(ex, "momentum step from v=0 = SGD step (In[29] = In[27])", w_sgd, w_mom, EXACT),
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
      compare(ex, "h1 weight = the seed's w0 (torch layout)", SEED004_W0, params[0].W.T, EXACT),
      note(ex, "loss at the init", SEED004_LOSS0, o["value"],
           "the seed's 1.2060 (In[17]) is another random init"),
      compare(ex, "dL/dW_h1 (in, out): jaxbp recursion vs jax.grad", dW_h1, o["auto"][0].W, EXACT),
      compare(ex, "all six gradients: jaxbp recursion vs jax.grad", flat(o["hand"]),
              flat(o["auto"]), EXACT),
      note(ex, "net.h1.weight.grad (torch layout) = dW_h1.T", SEED004_GRAD_IN6, dW_h1.T,
           "the seed's In[6] net had other, unknown weights"),
      compare(ex, "SGD lr 0.1: w0 - 0.1 dW_h1.T vs optax.sgd (torch layout)",
              SEED004_W0 - lr * dW_h1.T, o["sgd"][0].W.T, EXACT),
      compare(ex, "momentum step from v=0 = SGD step (all params)", flat(o["momentum1"]),
              flat(o["sgd"]), EXACT),
      compare(ex, "5 momentum steps: seed's v = gv + lr dw vs optax.sgd(momentum)",
              flat(o["momentum5"]), flat(o["optax5"]), 1e-10),
      note(ex, "In[17] loop (lr 0.01, momentum 0.9): loss at steps 1, 100", [SEED004_LOSS0, None],
           np.asarray(o["losses100"])[[0, 99]], "the seed's curve comes from another random init"),
  ]
  torch = torch_or_none(config)
  if torch is None:
    return rows
  copy = lambda t: t.detach().numpy().copy()
  tnet = _torch_model(torch, params)
  tx, tz = torch.tensor(SEED004_X), torch.tensor(SEED004_Z)
  criterion = torch.nn.CrossEntropyLoss()
  tloss = criterion(tnet(tx), tz)
  tloss.backward()
  rows += [
      compare(ex, "loss: PyTorch vs jaxbp", tloss.item(), o["value"], EXACT),
      compare(ex, "net.h1.weight.grad (3,3) vs jaxbp dW_h1.T", copy(tnet.h1.weight.grad), dW_h1.T,
              EXACT),
      compare(ex, "net.h2.weight.grad (2,3) vs jaxbp dW_h2.T", copy(tnet.h2.weight.grad),
              np.asarray(o["hand"][1].W).T, EXACT),
  ]
  opt = torch.optim.SGD(tnet.parameters(), lr=lr, momentum=gamma)
  opt.step()                                   # from the gradient above, v = 0
  rows.append(compare(ex, "torch.optim.SGD(momentum=0.9) first step = SGD step (h1)",
                      copy(tnet.h1.weight), o["sgd"][0].W.T, EXACT))
  for _ in range(4):
    opt.zero_grad()
    criterion(tnet(tx), tz).backward()
    opt.step()
  rows.append(compare(ex, "5 momentum steps: torch.optim.SGD vs optax (h1)", copy(tnet.h1.weight),
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
      compare(ex, "In[17] loop: the 100 losses, PyTorch vs optax", curve, o["losses100"], 1e-10),
      compare(ex, "In[17] loop: final h1 weight, PyTorch vs optax", copy(tnet.h1.weight),
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
  directions = example_rng(config, 8).standard_normal((100, flat.size))
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
      seed_wrong(ex, "slope of L along g/|g|: seed's claim (< 0) vs jax.jvp", -norm, along,
                 "the gradient points along the fastest increase (+|g|), not against it"),
      compare(ex, "slope along g/|g| = |g|", norm, along, EXACT),
      check(ex, "largest slope over 100 random unit directions", f"< |g| = {norm:.4g}",
            f"{best_random:.4g}", best_random < norm, "none beats the gradient"),
  ]


# The examples of seed 004, in the seed's order: (name, function).
EXAMPLES: tuple[tuple[str, Callable[[Config], list[Row]]], ...] = (
    ("004 x**3", cube),
    ("004 printed numbers", seed004_printed),
    ("004 network", seed004_network),
    ("004 gradient direction", gradient_direction),
)
