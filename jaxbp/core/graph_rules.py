"""Seed 003's local derivatives: one hand-written VJP rule per JAX primitive.

``RULES[name](g, out, *operands, **params)`` returns one cotangent per operand
(None where no gradient flows), ``g`` of ``out``'s shape: what
:func:`jaxbp.graph.backward` multiplies along every edge of the graph.
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np


# --- Hand-written VJP rules: rule(g, out, *operands, **params) -> one cotangent
# per operand (None: no gradient flows there). g has out's shape.

def _unbroadcast(ct, shape):
  # lax lets a scalar literal meet an array (`mul 0.5 x`): sum ct back down.
  shape = tuple(shape)
  if ct.shape == shape:
    return ct
  ct = ct.sum(axis=tuple(range(ct.ndim - len(shape))))
  keep = tuple(i for i, d in enumerate(shape) if d == 1 and ct.shape[i] != 1)
  return ct.sum(axis=keep, keepdims=True).reshape(shape)


def _binary(rule):
  """Lifts ``rule(g, out, x, y) -> (dx, dy)`` to operands of broadcast shapes."""
  def lifted(g, out, x, y, **_):
    dx, dy = rule(g, out, jnp.broadcast_to(x, out.shape), jnp.broadcast_to(y, out.shape))
    return (None if dx is None else _unbroadcast(dx, x.shape),
            None if dy is None else _unbroadcast(dy, y.shape))
  return lifted


def _chooser(g, out, x, y):
  # d max(x, y)/dx: 1 where x wins, 1/2 on a tie (as JAX does), 0 elsewhere.
  return g * (x == out) / (1.0 + (y == out)), g * (y == out) / (1.0 + (x == out))


def _pow(g, out, x, y):
  # d x^y/dx = y x^(y-1) (0 when y = 0); d x^y/dy = x^y log x (0 when x = 0).
  dx = g * jnp.where(y == 0, 0.0, y * x ** (y - 1))
  dy = g * out * jnp.log(jnp.where(x == 0, 1.0, x)) if jnp.issubdtype(y.dtype, jnp.inexact) else None
  return dx, dy


def _dot_general(g, out, x, y, *, dimension_numbers, **_):
  # Name every axis with a letter: contracting and batch axes of y share x's
  # letters, out = batch + x-free + y-free. Then out = einsum(x, y) is
  # bilinear and dx = einsum(g, y -> x), dy = einsum(x, g -> y).
  (xc, yc), (xb, yb) = dimension_numbers
  xs = [chr(97 + i) for i in range(x.ndim)]
  ys = [chr(97 + x.ndim + j) for j in range(y.ndim)]
  for i, j in zip(tuple(xc) + tuple(xb), tuple(yc) + tuple(yb)):
    ys[j] = xs[i]
  os = ([xs[i] for i in xb] + [c for i, c in enumerate(xs) if i not in (*xc, *xb)]
        + [c for j, c in enumerate(ys) if j not in (*yc, *yb)])
  xs, ys, os = "".join(xs), "".join(ys), "".join(os)
  return (jnp.einsum(f"{os},{ys}->{xs}", g, y).astype(x.dtype),
          jnp.einsum(f"{xs},{os}->{ys}", x, g).astype(y.dtype))


def _reduce_chooser(g, out, x, *, axes, **_):
  # The max is reached at the positions equal to it; split g evenly among ties.
  hit = (x == jnp.expand_dims(out, axes)).astype(g.dtype)
  return (jnp.expand_dims(g, axes) * hit / hit.sum(axis=axes, keepdims=True),)


def _broadcast_in_dim(g, out, x, *_, shape, broadcast_dimensions, **__):
  # Sum over the new axes and over the size-1 axes that were stretched.
  new = tuple(d for d in range(len(shape)) if d not in broadcast_dimensions)
  stretched = tuple(d for i, d in enumerate(broadcast_dimensions) if x.shape[i] != shape[d])
  return (g.sum(axis=stretched, keepdims=True).sum(axis=new).reshape(x.shape),)


def _select_n(g, out, which, *cases):
  # out = cases[which]: g flows to the chosen case only; `which` is an index.
  return (None,) + tuple(_unbroadcast(jnp.where(which == i, g, 0.0), c.shape)
                         for i, c in enumerate(cases))


def _slice(g, out, x, *, start_indices, limit_indices, strides, **_):
  strides = strides or (1,) * x.ndim
  index = tuple(slice(*a) for a in zip(start_indices, limit_indices, strides))
  return (jnp.zeros(x.shape, g.dtype).at[index].set(g),)


def _concatenate(g, out, *xs, dimension):
  splits = np.cumsum([x.shape[dimension] for x in xs])[:-1]
  return tuple(jnp.split(g, splits, axis=dimension))


def _convert(g, out, x, **_):
  # An int or bool operand (e.g. a comparison's result) is not differentiable.
  return (g.astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.inexact) else None,)


# The local derivative of every primitive the graph differentiates.
RULES: dict[str, Callable[..., tuple]] = {
    "add": _binary(lambda g, o, x, y: (g, g)),
    "sub": _binary(lambda g, o, x, y: (g, -g)),
    "mul": _binary(lambda g, o, x, y: (g * y, g * x)),
    "div": _binary(lambda g, o, x, y: (g / y, -g * x / y ** 2)),
    "max": _binary(_chooser),
    "min": _binary(_chooser),
    "pow": _binary(_pow),
    "neg": lambda g, o, x, **_: (-g,),
    "integer_pow": lambda g, o, x, *, y: (g * y * x ** (y - 1) if y else 0.0 * g,),
    "square": lambda g, o, x, **_: (g * 2 * x,),
    "sqrt": lambda g, o, x, **_: (g * 0.5 / o,),
    "rsqrt": lambda g, o, x, **_: (g * -0.5 * o / x,),
    "exp": lambda g, o, x, **_: (g * o,),
    "exp2": lambda g, o, x, **_: (g * o * np.log(2.0),),
    "expm1": lambda g, o, x, **_: (g * (o + 1),),
    "log": lambda g, o, x, **_: (g / x,),
    "log1p": lambda g, o, x, **_: (g / (1 + x),),
    "tanh": lambda g, o, x, **_: (g * (1 - o ** 2),),
    "logistic": lambda g, o, x, **_: (g * o * (1 - o),),
    "sin": lambda g, o, x, **_: (g * jnp.cos(x),),
    "cos": lambda g, o, x, **_: (-g * jnp.sin(x),),
    "abs": lambda g, o, x, **_: (jnp.where(x >= 0, g, -g),),
    "dot_general": _dot_general,
    "reduce_sum": lambda g, o, x, *, axes, **_: (
        jnp.broadcast_to(jnp.expand_dims(g, axes), x.shape),),
    "reduce_max": _reduce_chooser,
    "reduce_min": _reduce_chooser,
    "broadcast_in_dim": _broadcast_in_dim,
    "reshape": lambda g, o, x, *_, **__: (g.reshape(x.shape),),
    "squeeze": lambda g, o, x, **_: (g.reshape(x.shape),),
    "transpose": lambda g, o, x, *, permutation: (g.transpose(np.argsort(permutation)),),
    "convert_element_type": _convert,
    "copy": lambda g, o, x, **_: (g,),
    "select_n": _select_n,
    "slice": _slice,
    "concatenate": _concatenate,
}
# Piecewise-constant or boolean results: zero derivative everywhere it exists.
_ZERO = ("eq", "ne", "gt", "ge", "lt", "le", "and", "or", "not", "sign", "floor",
         "ceil", "round", "is_finite", "stop_gradient", "iota")
RULES.update({p: (lambda g, o, *xs, **_: (None,) * len(xs)) for p in _ZERO})
# Call-like primitives whose body is spliced into the graph.
INLINE = ("jit", "pjit", "closed_call", "core_call", "custom_jvp_call",
           "custom_vjp_call", "remat2", "checkpoint")


def supported_primitives() -> tuple[str, ...]:
  """Primitive names :func:`jaxbp.graph.trace` accepts (``INLINE`` ones are inlined)."""
  return tuple(sorted(set(RULES) | set(INLINE)))
