"""What :mod:`jaxbp.measure.probing` finds in a jaxpr, and the jaxpr helpers
it and :mod:`jaxbp.measure.probe_run` share.

A :class:`Plan` lists a jaxpr's probe sites in execution order: a :class:`Site`
per probed value, a :class:`Nested` per sub-jaxpr (call, remat, scan, cond)
that holds sites of its own. A :class:`Flag` says where a value comes from
(params, data, both), :class:`Notes` what the analysis saw but did not take.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Optional

import jax.numpy as jnp
from jax.extend import core as jcore

TAP_PREFIX = "jaxbp_tap:"
LAYER_PRIMITIVES = ("dot_general", "conv_general_dilated")
CALLS = ("jit", "pjit", "closed_call", "core_call")
CUSTOM = ("custom_jvp_call", "custom_vjp_call")
REMAT = ("remat2", "checkpoint")
RELAYOUT = ("transpose", "reshape", "squeeze", "broadcast_in_dim", "expand_dims", "copy",
             "copy_p", "convert_element_type")


class Flag(NamedTuple):
  """Where a variable's value comes from."""
  param: bool = False
  data: bool = False
  origin: frozenset = frozenset()  # indices of the param leaves it reads

  def __or__(self, other):
    return Flag(self.param or other.param, self.data or other.data, self.origin | other.origin)


NONE = Flag()


@dataclasses.dataclass(frozen=True)
class Site:
  """One layer: a probe goes on ``z`` (the op's output, or its bias add)."""
  path: str    # the weight's parameter path ("" for a tap)
  kind: str    # "dot_general", "conv_general_dilated", "norm" or "tap"
  shape: tuple
  dtype: Any
  activation: Optional[str] = None  # the elementwise op applied to z, when recognised


@dataclasses.dataclass
class Plan:
  """The sites of one jaxpr, in execution order.

  ``items`` holds Sites and Nested sub-plans; ``sites`` maps the probed
  variable to its item index, ``nested`` an equation index to its item index.
  ``weights`` and ``biases`` map an equation index to ``(item index, operand)``
  where a layer reads its weight or bias (for the mean-field estimates).
  """
  items: list = dataclasses.field(default_factory=list)
  sites: dict = dataclasses.field(default_factory=dict)
  nested: dict = dataclasses.field(default_factory=dict)
  weights: dict = dataclasses.field(default_factory=dict)
  biases: dict = dataclasses.field(default_factory=dict)

  def add_site(self, var, site):
    self.sites[var] = len(self.items)
    self.items.append(site)


@dataclasses.dataclass
class Nested:
  """A sub-jaxpr with sites: ``mode`` is "inline", "remat", "scan" or "cond"
  (whose ``branches`` hold one plan per branch; ``plan`` is then None)."""
  mode: str
  plan: Optional[Plan]
  length: int = 1
  reverse: bool = False
  branches: tuple = ()


@dataclasses.dataclass
class Notes:
  """What an analysis saw that was not a layer, for the "no layer found" error."""
  constant_operand: int = 0  # matmuls/convs of a param-only weight and a constant
  opaque: set = dataclasses.field(default_factory=set)  # sub-jaxprs not looked into


def sub_jaxpr(eqn):
  sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
  if isinstance(sub, jcore.ClosedJaxpr):
    return sub.jaxpr, sub.consts
  return sub, ()


def is_tap(eqn):
  return (eqn.primitive.name in CALLS
          and str(eqn.params.get("name", "")).startswith(TAP_PREFIX))


def is_float(aval):
  return hasattr(aval, "dtype") and jnp.issubdtype(aval.dtype, jnp.inexact)


def has_sub_jaxpr(eqn):
  return any(isinstance(v, (jcore.Jaxpr, jcore.ClosedJaxpr)) or (
      isinstance(v, (tuple, list)) and v and isinstance(v[0], (jcore.Jaxpr, jcore.ClosedJaxpr)))
             for v in eqn.params.values())


def uses_of(jaxpr) -> dict:
  """How many times each variable is read, by equations or as an output."""
  counts = {}
  for eqn in jaxpr.eqns:
    for a in eqn.invars:
      if not isinstance(a, jcore.Literal):
        counts[a] = counts.get(a, 0) + 1
  for a in jaxpr.outvars:
    if not isinstance(a, jcore.Literal):
      counts[a] = counts.get(a, 0) + 1
  return counts


def size(aval):
  return math.prod(aval.shape)


def is_relayout(eqn):
  # An op that moves z's elements without changing or repeating any: what vmap
  # and equinox put between a matmul/conv and its bias (a transpose of a
  # batch-last dot, a conv's squeezed unit batch). Reshapes and broadcasts only
  # count when they add or drop unit axes, so z keeps its batch and features.
  name = eqn.primitive.name
  if name not in RELAYOUT or len(eqn.outvars) != 1 or not eqn.invars:
    return False
  if name == "reshape" and len(eqn.invars) != 1:
    return False
  a, out = eqn.invars[0].aval, eqn.outvars[0].aval
  if not (is_float(a) and is_float(out)) or size(a) != size(out):
    return False
  if name in ("reshape", "broadcast_in_dim", "expand_dims"):
    return [d for d in a.shape if d != 1] == [d for d in out.shape if d != 1]
  return True
