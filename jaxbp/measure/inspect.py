"""Gradient flow of any JAX model: ``inspect(loss_fn, params, *args)``.

``loss_fn`` is any pure function ``(params, *args) -> scalar``: plain JAX,
flax.linen ``apply``, a merged flax.nnx module, an equinox module. jaxbp traces
it to a jaxpr, finds its layers (:mod:`jaxbp.measure.probing`), re-runs it with
a zero probe on every layer's pre-activation ``z_l`` (:mod:`jaxbp.measure.probe_run`)
and differentiates once with respect to the params and the probes:
``d L / d probe_l = delta_l``.

>>> import jax, jax.numpy as jnp
>>> def loss_fn(params, x):
...   h = jnp.tanh(x @ params["W1"] + params["b1"])
...   return jnp.mean((h @ params["W2"]) ** 2)
>>> params = {"W1": jnp.ones((3, 4)) / 3, "b1": jnp.zeros(4), "W2": jnp.ones((4, 2))}
>>> report = inspect(loss_fn, params, jnp.ones((5, 3)))
>>> report.names
('W1 · dot_general', 'W2 · dot_general')
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp.measure.probe_run as probe_run
import jaxbp.measure.probing as probing
from jaxbp.measure.diagnostics import fit_log_slope
from jaxbp.measure.report import LayerReport
from jaxbp.measure.sites import TAP_PREFIX, Flag, Notes


@functools.lru_cache(maxsize=None)
def _marker(name: str):
  # A jit whose name carries the tap's: it survives into the jaxpr as a `jit`
  # equation that probing recognises. Its body multiplies by one rather than
  # returning x, because jit drops outputs that merely forward an input.
  def ident(x):
    return x * jnp.ones((), x.dtype)
  ident.__name__ = ident.__qualname__ = TAP_PREFIX + name
  return jax.jit(ident)


def tap(x: jax.Array, name: str) -> jax.Array:
  """Marks ``x`` as a layer for :func:`inspect`; returns ``x`` unchanged.

  Use it where the point of interest is not a matmul, e.g. after a LayerNorm:
  ``h = jaxbp.tap(nn.LayerNorm()(h), "ln1")``. Outside ``inspect`` it is the
  identity (one multiply by 1).
  """
  if not isinstance(name, str) or not name:
    raise TypeError(f"tap: name must be a non-empty string, got {name!r}.")
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.inexact):
    raise TypeError(f"tap: x must be floating point to carry a gradient, got {x.dtype}.")
  return _marker(name)(x)


def _key(k) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def path_str(path) -> str:
  """``params/Dense_2/kernel`` for a pytree key path."""
  return "/".join(_key(k) for k in path)


def is_array(leaf) -> bool:
  """An array leaf (what the data args pass as data)."""
  return isinstance(leaf, (jax.Array, np.ndarray, np.generic))


def is_float(leaf) -> bool:
  """A floating-point array leaf: what inspect differentiates and criticalize may scale."""
  return is_array(leaf) and jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)


class FlatCall(NamedTuple):
  """``loss_fn(params, *args)`` as ``fn(w, x)`` of two flat lists: ``w`` the float
  leaves of the params (at positions ``wrt`` among all its ``leaves``, named by
  ``names``), ``x`` the array leaves of the args (at positions ``data``); every
  other leaf is held as given."""
  fn: Callable
  leaves: list
  treedef: Any
  wrt: list
  names: list
  arg_leaves: list
  data: list

  def spec(self):
    """Abstract ``(w, x)`` for tracing ``fn``."""
    s = lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a))
    return ([s(self.leaves[k][1]) for k in self.wrt], [s(self.arg_leaves[k]) for k in self.data])


def flat_call(loss_fn: Callable[..., Any], params, args, where: str) -> FlatCall:
  """Splits ``params`` and ``args`` into the leaves that are traced and those held
  fixed (:class:`FlatCall`); shared by :func:`inspect` and :func:`jaxbp.criticalize`
  so both see the same leaves in the same order.

  Raises:
    TypeError: the params have no floating-point array leaf.
  """
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  wrt = [k for k, (_, leaf) in enumerate(leaves) if is_float(leaf)]
  if not wrt:
    raise TypeError(
        f"{where}: the params have no floating-point array leaf "
        f"(their leaves: {_shapes(params)}). Pass the model's weights, e.g. flax "
        "variables, nnx.split(model)[1] or an equinox module, as the first argument.")
  names = [path_str(leaves[k][0]) or "params" for k in wrt]
  arg_leaves, arg_def = jax.tree_util.tree_flatten(args)
  data = [k for k, leaf in enumerate(arg_leaves) if is_array(leaf)]

  def fn(w, x):
    full = [leaf for _, leaf in leaves]
    for k, v in zip(wrt, w):
      full[k] = v
    a = list(arg_leaves)
    for k, v in zip(data, x):
      a[k] = v
    return loss_fn(jax.tree_util.tree_unflatten(treedef, full),
                   *jax.tree_util.tree_unflatten(arg_def, a))

  return FlatCall(fn, leaves, treedef, wrt, names, arg_leaves, data)


def _shapes(tree) -> str:
  return str(jax.tree_util.tree_map(
      lambda a: f"{jnp.result_type(a)}{list(np.shape(a))}" if is_array(a) else type(a).__name__,
      tree))


def _no_layer_hint(notes: Notes, data: list) -> str:
  hints = []
  if notes.constant_operand or not data:
    hints.append(
        f"{notes.constant_operand} matmul/conv(s) read a weight from the params and a "
        "constant: " if notes.constant_operand else "No array was passed as data: ")
    hints[-1] += ("data closed over in loss_fn (a global, or a lambda's captured x) is a "
                  "constant to inspect. Pass it as an argument: inspect(loss_fn, params, x, y) "
                  "with loss_fn(params, x, y).")
  if notes.opaque:
    hints.append(f"inspect does not look inside {', '.join(sorted(notes.opaque))}; a layer "
                 "there needs a jaxbp.tap.")
  return "".join(" " + h for h in hints)


def inspect(loss_fn: Callable[..., Any], params, *args) -> LayerReport:
  """Per-layer forward q, backward delta_sq and per-leaf grad_sq of any model.

  Args:
    loss_fn: pure ``(params, *args) -> scalar``.
    params: any pytree; its floating-point array leaves are differentiated,
      everything else (ints, PRNG keys, functions in an equinox module) is
      held fixed.
    *args: the data (pytrees of arrays; other leaves are passed through as is).

  Returns:
    A :class:`LayerReport` (a pytree: usable under ``jit`` and ``vmap``). A
    layer's ``z`` is its matmul/conv output plus its bias, in the model's layout
    (``(batch, out)`` for a model vmapped over the batch), before any
    normalisation; a model that normalises ``z`` by its own statistics gets a
    second row after the normalisation (kind ``"norm"``). Layers in every branch
    of a ``lax.cond``/``switch`` are listed; ``report.taken`` marks those that ran.

  Raises:
    TypeError: the params have no floating-point leaf; the loss is not floating point.
    ValueError: the loss is not a scalar; no layer is found; a layer's z is empty
      (an empty batch); the args do not fit the model's shapes; a ``while_loop``
      over the params or data.
  """
  return inspect_with_grads(loss_fn, params, *args)[0]


def inspect_with_grads(loss_fn: Callable[..., Any], params, *args, has_aux: bool = False):
  """:func:`inspect`, and ``dL/dparams`` from the same backward pass:
  ``(report, grads)``, grads shaped like params (zeros for non-float array
  leaves, other leaves passed through), for an optimiser step (:mod:`jaxbp.measure.monitor`).

  With ``has_aux=True``, ``loss_fn`` returns ``(loss, aux)`` (as for
  ``jax.value_and_grad(..., has_aux=True)``) and the result is
  ``(report, grads, aux)``: a training loop keeps the model's output for its
  accuracy without a second forward pass."""
  flat = flat_call(loss_fn, params, args, "jaxbp.inspect")
  leaves, treedef, wrt, names = flat.leaves, flat.treedef, flat.wrt, flat.names

  def flat_fn(w, x):
    out = flat.fn(w, x)
    if has_aux and not (isinstance(out, (tuple, list)) and len(out) == 2):
      raise TypeError("jaxbp.inspect: with has_aux=True, loss_fn must return a pair "
                      f"(loss, aux), got {type(out).__name__}.")
    return out

  w0 = [leaves[k][1] for k in wrt]
  x0 = [flat.arg_leaves[k] for k in flat.data]
  try:
    closed, out_shape = jax.make_jaxpr(flat_fn, return_shape=True)(*flat.spec())
  except (TypeError, ValueError) as err:
    # JAX's own errors (a tracer used as a bool, say) take a tracer, not a message, in
    # their constructors: re-raise those as the builtin class they derive from.
    cls = type(err) if type(err) in (TypeError, ValueError) else (
        TypeError if isinstance(err, TypeError) else ValueError)
    raise cls(
        f"jaxbp.inspect: loss_fn(params, *args) could not be traced. Check that the args "
        f"have the shapes and dtypes the model expects; got args {_shapes(args)}.\n"
        f"The error from tracing: {err}") from err
  out = closed.out_avals
  aux_def = jax.tree_util.tree_structure(out_shape[1]) if has_aux else None
  if (len(out) != 1 and not has_aux) or out[0].shape != ():
    got = ", ".join(str(a.shape) for a in out)
    raise ValueError(
        f"jaxbp.inspect: loss_fn must return one scalar{' and its aux' if has_aux else ''}, "
        f"it returned outputs of shapes {got}. Reduce the loss (e.g. .mean())"
        f"{'' if has_aux else ' and drop any auxiliary outputs'}.")
  if not jnp.issubdtype(out[0].dtype, jnp.inexact):
    raise TypeError(f"jaxbp.inspect: the loss must be floating point, got {out[0].dtype}.")

  jaxpr = closed.jaxpr
  in_flags = ([Flag(param=True, origin=frozenset([k])) for k in range(len(w0))]
              + [Flag(data=True)] * len(x0))
  notes = Notes()
  plan, _ = probing.analyse(jaxpr, in_flags, names, notes)
  sites = probe_run.layer_sites(plan)
  if not sites:
    raise ValueError(
        "jaxbp.inspect: no layer found in loss_fn. A layer is a dot_general or "
        "conv_general_dilated with one operand from the params alone (the weight) and one "
        "from the data; if your model has none there (or the weights are not in `params`), "
        "mark the points to measure with jaxbp.tap(x, name)." + _no_layer_hint(notes, x0))
  empty = [(name, shape) for name, _, shape, _ in sites if 0 in shape]
  if empty:
    raise ValueError(
        f"jaxbp.inspect: layer {empty[0][0]!r} has an empty z of shape {empty[0][1]}: is the "
        f"batch empty? q, delta_sq and log_slope would all be nan. Pass at least one example; "
        f"got args {_shapes(args)}.")

  def objective(w, probes):
    outs, zs = probe_run.run(jaxpr, closed.consts, list(w) + list(x0), plan, probes)
    return outs[0], (zs, outs[1:])

  (value, (zs, aux)), (grads, deltas) = jax.value_and_grad(
      objective, argnums=(0, 1), has_aux=True)(w0, probe_run.zero_probes(plan))
  q = probe_run.per_layer(plan, zs, lambda z: jnp.mean(jnp.square(z["z"])))
  delta_sq = probe_run.per_layer(plan, deltas, lambda d: jnp.sum(jnp.square(d)))
  grad_sq = {n: jnp.sum(jnp.square(g)) for n, g in zip(names, grads)}
  # Fixed numeric leaves (step counters, int buffers) get zero gradients, so an
  # optimiser leaves them be; PRNG keys and non-arrays pass through as they are.
  full = [jnp.zeros_like(leaf) if is_array(leaf) and jnp.issubdtype(leaf.dtype, jnp.number)
          else leaf for _, leaf in leaves]
  for k, g in zip(wrt, grads):
    full[k] = g
  report = LayerReport(
      names=tuple(f"{name} · {kind}" for name, kind, _, _ in sites),
      kinds=tuple(site[1] for site in sites),
      shapes=tuple(site[2] for site in sites),
      activations=tuple(site[3] for site in sites),
      loss=value, q=q, delta_sq=delta_sq, grad_sq=grad_sq,
      # fit_log_slope is the rate going backwards; the report's field is the
      # slope against the layer index, its negative.
      log_slope=-fit_log_slope(jnp.log(delta_sq)),
      sigma_w2=probe_run.per_layer(plan, zs, lambda z: z["sigma_w2"]),
      sigma_b2=probe_run.per_layer(plan, zs, lambda z: z["sigma_b2"]),
      taken=probe_run.per_layer(plan, zs, lambda z: z["taken"]))
  grads = jax.tree_util.tree_unflatten(treedef, full)
  if has_aux:
    return report, grads, jax.tree_util.tree_unflatten(aux_def, aux)
  return report, grads
