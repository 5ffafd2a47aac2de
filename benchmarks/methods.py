"""One gradient step of the benchmark's tanh MLP, in every framework the processes section times.

:func:`build` returns a zero-argument step and the gradients it computes, as a
list in jaxbp's leaf order (``W_0, b_0, W_1, b_1, ...``, ``W`` as ``(in, out)``),
for one of :data:`METHODS`. Every method starts from the same parameters and
data (:func:`problem`), so their gradients can be checked against one
reference (:func:`reference_grads`, NumPy in float64) before they are timed.

Each method is written as its own users would write it, with its defaults:
flax.linen ``Dense`` layers under ``jit(grad)``; equinox's ``eqx.nn.MLP`` under
``filter_jit(filter_grad)`` with ``vmap`` over the batch; raw JAX as a list of
``{"W", "b"}`` dicts; PyTorch eager on its default thread count; torch.compile
with its default (inductor) backend. The one exception is
``"torch eager, 1 thread"``, a labelled extra row: ``torch.set_num_threads(1)``
before anything runs, in its own process.

flax, equinox and torch are optional: a missing one makes its method raise
:class:`Missing`, which the child reports as skipped.
"""
from __future__ import annotations

import functools
import importlib
from typing import Callable, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.core import backprop
from jaxbp.core.nets import objective
import benchmarks.baselines as baselines
import benchmarks.common as common

METHODS = ("jaxbp autodiff", "jaxbp hand recursion", "flax.linen", "equinox", "raw jax",
           "numpy (seed 002)", "torch eager", "torch eager, 1 thread", "torch.compile")
# The extra, labelled rows: a changed default, not what users get.
LABELLED = ("torch eager, 1 thread",)


class Missing(Exception):
  """The method's framework is not installed."""


def optional(name: str):
  """An optional framework's module (``"flax.linen"``, ``"equinox"``, ``"torch"``).

  Loaded only when its method is built, so that importing the benchmark loads
  none of them.

  Raises:
    Missing: it is not installed.
  """
  try:
    return importlib.import_module(name)
  except ImportError as e:
    raise Missing(f"skipped: {name.split('.')[0]} not installed ({e})") from None


def problem(width: int, batch: int, depth: int, seed: int = 0):
  """The net, its float32 lecun parameters and standard-normal ``(x, y)`` of one size."""
  pkey, dkey = jax.random.split(jax.random.PRNGKey(seed))
  net = common.net(width, depth)
  params = net.init(pkey, "lecun", dtype=common.F32)
  x, y = common.data(dkey, batch, width)
  return net, params, x, y


def augmented(params) -> List[np.ndarray]:
  """Seed 002's layout: each layer's ``W`` with its bias as the last row."""
  return [np.concatenate([np.asarray(p.W), np.asarray(p.b)[None, :]], axis=0) for p in params]


def reference_grads(params, x, y) -> List[np.ndarray]:
  """The gradient in float64 NumPy (seed 002's backprop), in jaxbp's leaf order."""
  Ws = [W.astype(np.float64) for W in augmented(params)]
  grads = baselines.numpy_grad(Ws, np.asarray(x, np.float64), np.asarray(y, np.float64))
  return [a for g in grads for a in (g[:-1], g[-1])]


def _flat(tree) -> List[np.ndarray]:
  return [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]


def _jaxbp(net, params, x, y, hand: bool):
  fn = (jax.jit(functools.partial(backprop.grad, net, "mse")) if hand
        else jax.jit(jax.grad(objective(net, "mse"))))
  return (lambda: fn(params, x, y)), _flat


def _raw_jax(net, params, x, y):
  raw = [{"W": p.W, "b": p.b} for p in params]
  last = len(raw) - 1

  def loss(raw, x, y):
    h = x
    for k, p in enumerate(raw):
      z = h @ p["W"] + p["b"][None, :]
      h = jnp.tanh(z) if k < last else z
    return jnp.mean((h - y) ** 2)

  fn = jax.jit(jax.grad(loss))
  return (lambda: fn(raw, x, y)), lambda g: [np.asarray(a) for p in g for a in (p["W"], p["b"])]


def _flax(net, params, x, y):
  nn = optional("flax.linen")
  depth, width = len(params) - 1, net.sizes[-1]

  class TanhMLP(nn.Module):
    @nn.compact
    def __call__(self, h):
      for _ in range(depth):
        h = jnp.tanh(nn.Dense(width)(h))
      return nn.Dense(width)(h)

  model = TanhMLP()
  variables = {"params": {f"Dense_{k}": {"kernel": p.W, "bias": p.b}
                          for k, p in enumerate(params)}}
  # The layers must be the ones init would make: same names and shapes.
  shapes = jax.tree_util.tree_map(jnp.shape, jax.eval_shape(model.init, jax.random.PRNGKey(0), x))
  assert shapes == jax.tree_util.tree_map(jnp.shape, variables), shapes

  def loss(variables, x, y):
    return jnp.mean((model.apply(variables, x) - y) ** 2)

  fn = jax.jit(jax.grad(loss))

  def flat(g):
    layers = g["params"]
    return [np.asarray(layers[f"Dense_{k}"][n]) for k in range(len(params))
            for n in ("kernel", "bias")]

  return (lambda: fn(variables, x, y)), flat


def _equinox(net, params, x, y):
  eqx = optional("equinox")
  width = net.sizes[-1]
  model = eqx.nn.MLP(width, width, width, len(params) - 1, activation=jnp.tanh,
                     key=jax.random.PRNGKey(0))
  # Linear keeps W as (out, in) and computes W @ x per example.
  model = eqx.tree_at(lambda m: [v for layer in m.layers for v in (layer.weight, layer.bias)],
                      model, [v for p in params for v in (p.W.T, p.b)])

  @eqx.filter_jit
  @eqx.filter_grad
  def grad(model, x, y):
    return jnp.mean((jax.vmap(model)(x) - y) ** 2)

  def flat(g):
    return [np.asarray(a) for layer in g.layers for a in (layer.weight.T, layer.bias)]

  return (lambda: grad(model, x, y)), flat


def _numpy(net, params, x, y):
  Ws, xn, yn = augmented(params), np.asarray(x), np.asarray(y)
  return ((lambda: baselines.numpy_grad(Ws, xn, yn)),
          lambda g: [a for G in g for a in (G[:-1], G[-1])])


def _torch(net, params, x, y, threads=None, compiled: bool = False):
  torch = optional("torch")
  if threads is not None:
    torch.set_num_threads(threads)
  flat = lambda g: [t.detach().numpy() for t in g]
  if not compiled:
    return baselines.torch_grad_fn(torch, params, x, y), flat
  leaves = [torch.tensor(np.asarray(v)).requires_grad_() for p in params for v in (p.W, p.b)]
  tx, ty = torch.tensor(np.asarray(x)), torch.tensor(np.asarray(y))
  last = len(params) - 1

  @torch.compile
  def loss(leaves, x, y):
    h = x
    for k in range(last + 1):
      z = torch.addmm(leaves[2 * k + 1], h, leaves[2 * k])
      h = torch.tanh(z) if k < last else z
    return torch.mean((h - y) ** 2)

  return (lambda: torch.autograd.grad(loss(leaves, tx, ty), leaves)), flat


BUILDERS = {
    "jaxbp autodiff": functools.partial(_jaxbp, hand=False),
    "jaxbp hand recursion": functools.partial(_jaxbp, hand=True),
    "flax.linen": _flax,
    "equinox": _equinox,
    "raw jax": _raw_jax,
    "numpy (seed 002)": _numpy,
    "torch eager": _torch,
    "torch eager, 1 thread": functools.partial(_torch, threads=1),
    "torch.compile": functools.partial(_torch, compiled=True),
}


def build(method: str, net, params, x, y) -> Tuple[Callable, Callable]:
  """``(step, flat)``: ``step()`` runs one gradient step, ``flat(step())`` lists its gradients.

  Raises:
    ValueError: an unknown method.
    Missing: its framework is not installed.
  """
  if method not in BUILDERS:
    raise ValueError(f"benchmark method must be one of {', '.join(METHODS)}, got {method!r}.")
  return BUILDERS[method](net, params, x, y)
