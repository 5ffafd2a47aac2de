"""The seeds' computational graph, read off a jaxpr, and backprop over it by hand.

Seed 003 §4.5-4.6 builds a graph of the forward pass: one node per variable
(inputs first, then every intermediate result in creation order
``u_1, ..., u_n``), a children set ``S(u)`` per node (the nodes that consume
``u``) and, for every elementary operation, its derivative written by hand.
Backprop then walks the nodes in reverse creation order:

  grad_table[u_n] = 1
  for k = n-1, ..., 1:
    df/du_k = sum_{v in S(u_k)} df/dv . dv/du_k          (chain rule)

For arrays ``df/dv . dv/du`` is a vector-Jacobian product (VJP): the
cotangent ``g = df/dv`` pulled back through the operation, e.g. ``g * y`` for
``v = x * y`` or ``g @ B^T`` for ``v = A @ B``. Every such rule below is written
out by hand (``RULES``); none calls ``jax.vjp`` or ``jax.grad``, so
:func:`grad` is an independent check on JAX's autodiff.

:func:`trace` gets the nodes from ``jax.make_jaxpr``: each jaxpr equation is a
node, evaluated with its primitive's ``bind``; ``jit``/``custom_jvp`` /
``custom_vjp``/``checkpoint`` sub-jaxprs are inlined (custom rules are
bypassed: the primal computation itself is differentiated, as the seed does;
so ``jax.nn.relu`` at exactly 0 gets max's tie value 1/2, where JAX says 0).
Literals and closed-over arrays become constant leaves ``c_1, c_2, ...``,
placed after the inputs; they have no gradient. Seed 003 folds its constants
into the operation (``u_6 = 1/2 u_5``), so its node order is
``graph.order(constants=False)``.

>>> import jax
>>> def f(w, x, b, y):  # seed 003: f(w, b) = 1/2 (s(wx + b) - y)^2 + 1/2 w^2
...   return 0.5 * (jax.nn.sigmoid(w * x + b) - y) ** 2 + 0.5 * w ** 2
>>> g = trace(f, 1.0, 2.0, -1.0, 0.0).backward()
>>> g.order(constants=False)
('w', 'x', 'b', 'y', 'u_1', 'u_2', 'u_3', 'u_4', 'u_5', 'u_6', 'u_7', 'u_8', 'u_9')
>>> g.children("w")                      # S(w) = {u_1, u_7}
('u_1', 'u_7')
>>> u6 = g.node("u_6")                   # u_6 = 1/2 u_5; the 1/2 is leaf c_1
>>> u6.op, [g.nodes[i].name for i in u6.inputs]
('mul', ['c_1', 'u_5'])
>>> round(float(g.gradient("u_7")), 6)  # df/du_7 = df/du_8 du_8/du_7 = 1/2
0.5

References:
  Goodfellow, Bengio & Courville, *Deep Learning* (2016), §6.5 (Algorithms 6.5-6.6).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from jaxbp.core.graph_rules import INLINE, RULES, supported_primitives

NodeRef = Union[int, str]


@dataclasses.dataclass(frozen=True, eq=False)
class Node:
  """One variable of the graph.

  Attributes:
    id: creation index, 0-based (node ``u_{id+1}`` in seed 003 §4.6.3).
    name: ``w`` (an input, named after f's argument), ``c_1`` (a constant) or
      ``u_1`` (a computed node, numbered like the seed's worked example).
    op: ``"input"``, ``"const"`` or the JAX primitive's name (``"mul"``).
    inputs: ids of the nodes the operation reads, in operand order
      (repeated for ``x * x``).
    value: the forward value.
    params: the primitive's static parameters (axes, exponents, ...).
  """
  id: int
  name: str
  op: str
  inputs: tuple[int, ...]
  value: jax.Array
  params: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.value.shape)


@dataclasses.dataclass(frozen=True, eq=False)
class Graph:
  """A traced function: nodes in creation order, S(u) per node, grad_table.

  Attributes:
    nodes: every node, ``nodes[i].id == i``; leaves (inputs, constants) first.
    output: id of the node f returns (``u_n``).
    child_ids: ``child_ids[i]`` is S(u) of node i: the ids of the nodes that
      consume it, ascending, without repeats.
    grad_table: node id -> df/du, filled by :meth:`backward` (None before).
      Constants have no entry.
  """
  nodes: tuple[Node, ...]
  output: int
  child_ids: tuple[tuple[int, ...], ...]
  grad_table: Optional[Mapping[int, jax.Array]] = None

  def node(self, u: NodeRef) -> Node:
    """The node with id ``u`` (int) or name ``u`` (str)."""
    if isinstance(u, str):
      for n in self.nodes:
        if n.name == u:
          return n
      raise KeyError(f"No node named {u!r}; the nodes are {', '.join(self.order())}.")
    return self.nodes[u]

  def children(self, u: NodeRef) -> tuple:
    """S(u): the nodes that consume u, as names if u is a name, else as ids."""
    ids = self.child_ids[self.node(u).id]
    return tuple(self.nodes[i].name for i in ids) if isinstance(u, str) else ids

  def order(self, constants: bool = True) -> tuple[str, ...]:
    """Node names in creation order; ``constants=False`` gives seed 003's view."""
    return tuple(n.name for n in self.nodes if constants or n.op != "const")

  def gradient(self, u: NodeRef) -> jax.Array:
    """df/du from the grad_table (runs :meth:`backward` if it has not run)."""
    table = self.grad_table if self.grad_table is not None else backward(self)
    return table[self.node(u).id]

  def backward(self, cotangent: Optional[jax.Array] = None) -> "Graph":
    """This graph with its grad_table filled in; see :func:`backward`."""
    return dataclasses.replace(self, grad_table=backward(self, cotangent))

  def table(self) -> str:
    """The graph as seed 003 tabulates it: node, operation, inputs, value, gradient."""
    table = self.grad_table
    if table is None and self.nodes[self.output].shape == ():
      table = backward(self)
    rows = [("node", "operation", "inputs", "value", "gradient")]
    for n in self.nodes:
      gval = table.get(n.id) if table is not None else None
      rows.append((n.name, _label(n), ", ".join(self.nodes[i].name for i in n.inputs),
                   _fmt(n.value), "-" if gval is None else _fmt(gval)))
    widths = [max(len(r[j]) for r in rows) for j in range(5)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)

  __str__ = table

  def to_dot(self) -> str:
    """Graphviz DOT text: one edge per operand, from each input to its consumer."""
    lines = ["digraph jaxbp {", "  rankdir=LR;"]
    for n in self.nodes:
      shape = ("doublecircle" if n.id == self.output
               else {"input": "circle", "const": "box"}.get(n.op, "ellipse"))
      label = (n.name if n.op == "input" else f"{n.name}\\n{_label(n)}").replace('"', '\\"')
      lines.append(f'  n{n.id} [label="{label}", shape={shape}];')
    for n in self.nodes:
      lines.extend(f"  n{i} -> n{n.id};" for i in n.inputs)
    lines.append("}")
    return "\n".join(lines)


# --- Tracing.

_CACHE: dict = {}  # graph structure -> its jitted forward or backward pass


def _structure(ops):
  # Ops, wiring and params identify a pass; shapes and dtypes are jit's own key.
  return tuple((op, ins, repr(sorted(ps.items()))) for op, ins, ps in ops)


def _compiled(key, make):
  # One compiled program per pass and graph structure: op-by-op dispatch would
  # compile every primitive separately, and retracing would recompile each call
  # (e.g. every step of gradient descent with grad()).
  if key not in _CACHE:
    if len(_CACHE) >= 256:
      _CACHE.clear()
    _CACHE[key] = jax.jit(make())
  return _CACHE[key]


class _Builder:
  """Collects nodes as (name, op, inputs, value or primitive, params)."""

  def __init__(self):
    self.protos = []

  def add(self, name, op, inputs, value, params=None):
    self.protos.append((name, op, tuple(inputs), value, dict(params or {})))
    return len(self.protos) - 1

  def inline(self, jaxpr, consts, refs):
    env = dict(zip(jaxpr.invars, refs))
    env.update((v, self.add(None, "const", (), c)) for v, c in zip(jaxpr.constvars, consts))

    def read(a):
      if isinstance(a, jcore.Literal):
        return self.add(None, "const", (), jnp.asarray(a.val, a.aval.dtype))
      return env[a]

    for eqn in jaxpr.eqns:
      name, ins = eqn.primitive.name, [read(a) for a in eqn.invars]
      if name in INLINE:
        sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
        closed = isinstance(sub, jcore.ClosedJaxpr)
        outs = self.inline(sub.jaxpr if closed else sub, sub.consts if closed else (), ins)
      elif name in RULES and not eqn.primitive.multiple_results:
        outs = [self.add(None, name, ins, eqn.primitive, eqn.params)]
      else:
        raise NotImplementedError(
            f"jaxbp.graph has no hand-written derivative for the primitive {name!r}. "
            f"Rewrite f without it; supported primitives: {', '.join(supported_primitives())}.")
      env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]

  def build(self, output):
    is_leaf = [p[1] in ("input", "const") for p in self.protos]
    leaves = {k: jnp.asarray(p[3]) for k, p in enumerate(self.protos) if is_leaf[k]}
    # The cached pass keeps primitives, not values: no arrays outlive the call.
    ops = [(ins, None if leaf else prim, ps)
           for (_, _, ins, prim, ps), leaf in zip(self.protos, is_leaf)]
    key = ("forward",) + _structure((op, ins, ps) for _, op, ins, _, ps in self.protos)
    values = _compiled(key, lambda: functools.partial(_forward, ops))(leaves)
    # Leaves first (inputs, then constants), each group in creation order; a
    # leaf has no inputs, so moving it earlier keeps parents before children.
    rank = {"input": 0, "const": 1}
    perm = sorted(range(len(self.protos)), key=lambda i: (rank.get(self.protos[i][1], 2), i))
    new = {old: k for k, old in enumerate(perm)}
    counts, nodes, kids = {"const": 0, "op": 0}, [], [set() for _ in perm]
    for k, old in enumerate(perm):
      name, op, inputs, _, params = self.protos[old]
      if name is None:
        kind = "const" if op == "const" else "op"
        counts[kind] += 1
        name = f"{'c' if kind == 'const' else 'u'}_{counts[kind]}"
      inputs = tuple(new[i] for i in inputs)
      for i in inputs:
        kids[i].add(k)
      nodes.append(Node(k, name, op, inputs, values[old], params))
    return Graph(tuple(nodes), new[output], tuple(tuple(sorted(s)) for s in kids))


def _forward(ops, leaves):
  # Each node's value: its primitive bound to its operands' values, in order.
  values = dict(leaves)
  for k, (inputs, prim, params) in enumerate(ops):
    if k not in values:
      values[k] = prim.bind(*(values[i] for i in inputs), **params)
  return values


def _arg_names(f, n):
  try:
    ps = [p for p in inspect.signature(f).parameters.values()
          if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
  except (TypeError, ValueError):  # builtins, some partials
    ps = []
  return [ps[i].name if i < len(ps) else f"arg{i}" for i in range(n)]


def trace(f: Callable[..., jax.Array], *args) -> Graph:
  """Builds seed 003's computational graph of ``f(*args)`` from its jaxpr.

  Args:
    f: a function of arrays (or pytrees of arrays) returning one array.
    *args: the point to evaluate at; every pytree leaf becomes an input node,
      named after f's parameter (``params[0].W`` for a leaf inside a pytree).

  Returns:
    A :class:`Graph`: inputs, then constants, then one node per primitive
    application ``u_1, ..., u_n``, each with its value and children S(u).

  Raises:
    NotImplementedError: f uses a primitive without a hand-written rule
      (e.g. ``cumsum``, control flow such as ``scan``); the message names it.
  """
  closed = jax.make_jaxpr(f)(*args)
  if len(closed.jaxpr.outvars) != 1:
    raise ValueError(f"trace: f must return a single array, got {len(closed.jaxpr.outvars)} "
                     "outputs; return one of them, or their sum.")
  b, names, refs = _Builder(), _arg_names(f, len(args)), []
  leaves, _ = jax.tree_util.tree_flatten_with_path(args)
  for (path, leaf), var in zip(leaves, closed.jaxpr.invars):
    name = names[path[0].idx] + jax.tree_util.keystr(path[1:])
    refs.append(b.add(name, "input", (), jnp.asarray(leaf, var.aval.dtype)))
  (out,) = b.inline(closed.jaxpr, closed.consts, refs)
  return b.build(out)


# --- Backprop.

def backward(graph: Graph, cotangent: Optional[jax.Array] = None) -> dict[int, jax.Array]:
  """Seed 003 §4.6.3: the grad_table of every node, by the reverse-order sweep.

  ``grad_table[u_n] = 1``; then for k = n-1, ..., 1,
  ``df/du_k = sum_{v in S(u_k)} VJP_v(df/dv)`` restricted to u_k's operand
  slot(s) of v. Every child v comes after u_k, so df/dv is already final.

  Args:
    graph: from :func:`trace`.
    cotangent: df/du_n for a non-scalar output (then f is ``<cotangent, u_n>``).

  Returns:
    node id -> df/du (shape of u) for every non-constant node; bool and int
    nodes (comparisons, iota) get zeros.
  """
  out = graph.nodes[graph.output]
  if cotangent is None:
    if out.shape != ():
      raise ValueError(
          f"backward needs a scalar output, but f returned shape {out.shape}; reduce it "
          "to a scalar (e.g. `.sum()` or `.mean()`), or pass cotangent= of that shape.")
    cotangent = jnp.ones((), out.value.dtype)
  cotangent = jnp.asarray(cotangent)
  if cotangent.shape != out.shape:
    raise ValueError(f"backward: cotangent has shape {cotangent.shape}, but the output "
                     f"{out.name} has shape {out.shape}; they must be equal.")
  key = ("backward", graph.output) + _structure((n.op, n.inputs, n.params) for n in graph.nodes)
  values = [n.value for n in graph.nodes]
  bare = dataclasses.replace(graph, grad_table=None, nodes=tuple(
      dataclasses.replace(n, value=None) for n in graph.nodes))  # structure only
  return _compiled(key, lambda: functools.partial(_sweep, bare))(values, cotangent)


def _sweep(graph, values, cotangent):
  table, vjps = {graph.output: cotangent}, {}

  def pulled(v):  # every operand's cotangent of v, computed once
    if v.id not in vjps:
      ins = [values[i] for i in v.inputs]
      vjps[v.id] = RULES[v.op](table[v.id], values[v.id], *ins, **v.params)
    return vjps[v.id]

  for u in reversed(graph.nodes):  # k = n-1, ..., 1
    if u.op == "const" or u.id == graph.output:
      continue
    u_value = values[u.id]  # not u.value: a cached sweep may serve other shapes
    if not jnp.issubdtype(u_value.dtype, jnp.inexact):
      table[u.id] = jnp.zeros(u_value.shape)
      continue
    g = jnp.zeros(u_value.shape, u_value.dtype)
    for v in (graph.nodes[i] for i in graph.child_ids[u.id]):  # v in S(u)
      for slot, i in enumerate(v.inputs):
        if i == u.id and pulled(v)[slot] is not None:
          g = g + pulled(v)[slot]
    table[u.id] = g
  return table


def grad(f: Callable[..., jax.Array], argnums: Union[int, Sequence[int]] = 0) -> Callable:
  """``jax.grad`` rebuilt on :func:`trace` and :func:`backward`.

  >>> import jax.numpy as jnp
  >>> grad(lambda x: (x ** 2).sum())(jnp.arange(3.0)).tolist()
  [0.0, 2.0, 4.0]

  Raises:
    ValueError: f's output is not a scalar (the message names its shape).
  """
  single = isinstance(argnums, int)
  nums = (argnums,) if single else tuple(argnums)

  def grad_f(*args):
    g = trace(f, *args)
    table = backward(g)
    sizes = np.cumsum([0] + [len(jax.tree_util.tree_leaves(a)) for a in args])
    grads = []
    for k in nums:
      ids = range(sizes[k], sizes[k + 1])  # input nodes come first, in leaf order
      if any(not jnp.issubdtype(g.nodes[i].value.dtype, jnp.inexact) for i in ids):
        raise TypeError(f"grad: argument {k} must be floating point to be differentiated.")
      grads.append(jax.tree_util.tree_unflatten(
          jax.tree_util.tree_structure(args[k]), [table[i] for i in ids]))
    return grads[0] if single else tuple(grads)

  return grad_f


# --- Printing.

_HIDDEN = ("out_sharding", "sharding", "preferred_element_type", "weak_type", "accuracy")


def _label(n: Node) -> str:
  shown = {k: v for k, v in n.params.items() if k not in _HIDDEN and v is not None}
  if n.op == "broadcast_in_dim":
    shown = {k: shown[k] for k in ("shape", "broadcast_dimensions") if k in shown}
  if not shown:
    return n.op
  return f"{n.op}[{' '.join(f'{k}={v}' for k, v in shown.items())}]"


def _fmt(a) -> str:
  return np.array2string(np.asarray(a), precision=6, threshold=8, edgeitems=2,
                         max_line_width=10 ** 6).replace("\n", "")
