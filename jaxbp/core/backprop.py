"""The hand-derived delta recursion of the lecture notes, batched.

For the net of :mod:`jaxbp.nets` (``z_k = h_{k-1} W_k + b_k``, ``h_k = phi(z_k)``)
and a loss ``L(h_K, y)``, define ``delta_k = dL/dz_k`` (one row per example).
Then (seed 003 §4.6.4, seed 002 eqs. 10-15, seed 000 §7.7)::

    delta_K     = dL/dh_K * phi_out'(z_K)                 (output layer, eq. 10)
    delta_{k-1} = (delta_k @ W_k^T) * phi'(z_{k-1})       (hidden layers, eqs. 11, 14)
    dL/dW_k     = h_{k-1}^T @ delta_k                     (eqs. 13, 15; sums the batch)
    dL/db_k     = sum_batch delta_k

In the seeds' column form (``z = W h + b``, ``W`` of shape ``(out, in)``, one
example as a column) the same recursion reads ``delta_{k-1} = (W_k^T delta_k) *
phi'(z_{k-1})`` and ``dL/dW_k = delta_k h_{k-1}^T``: the transposes of the rows
above. Seed 002 folds the bias into ``W`` as its last row and appends a 1 to
every input (``[X, 1] @ W``); :func:`augmented_grads` runs that form.

Two output layers are fused, for stability and because the notes derive them:
sigmoid + binary cross-entropy gives ``delta_K = p - y`` and softmax +
(categorical) cross-entropy gives ``delta_K = softmax(z_K) - y`` (seed 003
§4.6.4), each divided by the reduction's count. A softmax output with any other
loss goes through the full Jacobian ``p_i (delta_ij - p_j)`` (seed 000 §7.3).

One walk serves every network family (:mod:`jaxbp.core.base`): each layer's
kind (:mod:`jaxbp.core.kinds`) supplies its hand-derived step, and the walk
only carries ``dL/dh`` down the plan. Stacked groups are walked by a reversed
``lax.scan``, mirroring the forward scan layer for layer; a tied group (a
recurrent layer) the same way over its time steps, its parameter gradient the
sum over the steps (backpropagation through time).

The batched deltas also give every example's own gradient without a batch of
backward passes: ``dW_k[i] = outer(h_{k-1}[i], delta_k[i])``
(:func:`per_example_grads`).

>>> import jax, jax.numpy as jnp, jaxbp
>>> net = jaxbp.MLP((3, 3, 2, 3), "relu")
>>> params = net.init(jax.random.PRNGKey(0))
>>> x, y = jnp.ones((4, 3)), jnp.array([0, 2, 1, 0])
>>> value, grads = value_and_grad(net, "softmax_cross_entropy", params, x, y)
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Tuple

import jax
import jax.numpy as jnp

import jaxbp.core.activations as _act
import jaxbp.core.losses as _losses
from jaxbp.core.base import Family
from jaxbp.core.kinds import batch_norm_backward as _batch_norm_backward  # noqa: F401
from jaxbp.core.layers import RowScale, Trace, layer_stream, take_sample


class Backward(NamedTuple):
  """Everything one backward pass produces.

  Attributes:
    value: the loss.
    grads: dL/dparams, the same pytree as the params.
    deltas: dL/dz, one entry per group of the net's plan (scanned groups carry a
      layer or step axis first).
    trace: the forward cache it used.
  """
  value: jax.Array
  grads: Any
  deltas: Tuple[jax.Array, ...]
  trace: Trace


def layer_backward(net: Family, g: int, p, h_in, z, g_out, param_grads: bool = True,
                   scale: RowScale | None = None):
  """One layer, top to bottom: dL/dh_k -> (delta_k, param grads, dL/dh_{k-1}).

  The one step of the delta recursion; the layer's kind supplies its own part::

      delta_k     = dL/dh_k * phi'(z_k)          (hidden layers; the output's is given)
      dL/dh_{k-1} = kind.backward(...)           (dense: delta_k @ W_k^T)
                    (+ dL/dh_k through a residual skip)
      grads       = kind.backward(...)           (dense: h_{k-1}^T @ delta_k, sum_batch delta_k)

  For the output layer ``g_out`` is delta_K itself. With ``param_grads=False``
  the batch-summed parameter gradients are not formed (``None``): only the
  deltas are wanted. With a :class:`jaxbp.nets.RowScale` the layer computed
  ``z = w * (h @ W) + b * bias`` row by row, so ``dL/dh_{k-1} = w * (delta_k @
  W^T)``; the parameter gradients are then those of the unit weights summed
  over every row, which is rarely what is wanted (the sweep takes norms of
  ``h^T delta`` per block of rows instead).
  """
  group = net.plan[g]
  delta = g_out * net.phi.grad(z) if group.hidden else g_out
  grads, g_in = group.kind.backward(h_in, p, z, delta, scale=scale, param_grads=param_grads)
  if group.residual:
    g_in = g_in + g_out       # the identity skip passes dL/dh_k straight down
  return delta, grads, g_in


def _check_reduction(reduction):
  if reduction not in ("mean", "sum"):
    raise ValueError(f"backprop: reduction must be 'mean' or 'sum', got {reduction!r}.")


def backward(net: Family, loss, params, x, y, reduction: str = "mean",
             param_grads: bool = True, scale: RowScale | None = None,
             select=None) -> Backward:
  """Runs the forward pass, then the delta recursion from the output back.

  Carries ``dL/dh`` down the net's plan; every layer turns it into its
  ``delta = dL/dh * phi'(z)``, its parameter gradients and the ``dL/dh`` of its
  input (plus the skip term for residual layers, through batch norm's
  statistics for batch-normalised ones), :func:`layer_backward`.

  Args:
    net: the network spec (any family: :class:`jaxbp.MLP`, :class:`jaxbp.ConvNet`,
      :class:`jaxbp.RNN`).
    loss: a loss name or ``jaxbp.losses.Loss``.
    params: ``net.init(...)``-shaped parameters.
    x: inputs (``net.check_input``).
    y: targets, the output's shape (or integer labels for categorical losses).
    reduction: ``"mean"`` or ``"sum"``.
    param_grads: False skips the batch-summed parameter gradients (``grads`` is
      then a tuple of ``None``); the deltas and the trace are unchanged.
    scale: per-row factors on every layer (:class:`jaxbp.nets.RowScale`): rows
      stacked from nets that differ by a weight scale and a bias scale, run on
      shared unit weights (dense layers only). Use with ``param_grads=False``.
    select: a sample index: every params leaf carries a leading sample axis and
      the net of sample ``select`` runs, its layers read one at a time
      (``trace``'s ``select``).

  Returns:
    A :class:`Backward` with the loss, the gradients and every delta.
  """
  loss = _losses.get(loss)
  _check_reduction(reduction)
  tr = net.trace(params, x, scale=scale, select=select)
  value = loss.fn(tr.h[-1], y, reduction)
  entries, plan = net.split_params(params), net.plan
  ins = net.layer_inputs(x, tr)
  G = len(entries)

  g_h = _losses.output_delta(net.phi_out, loss, tr.z[-1], tr.h[-1], y, reduction)
  grads, deltas = [None] * G, [None] * G
  for g in reversed(range(G)):
    group = plan[g]
    if not (group.stacked or group.tied):
      deltas[g], grads[g], g_h = layer_backward(net, g, take_sample(entries[g], select), ins[g],
                                                tr.z[g], g_h, param_grads, scale)
      continue
    if group.stacked:
      xs, take = layer_stream(entries[g], select)
      read = take
    else:
      fixed = take_sample(entries[g], select)
      xs = group.kind.prepare(fixed, net.entry(jnp.asarray(x))[1])
      read = lambda u, fixed=fixed: (fixed, u)
    # A next group that reads every step hands back dL/dh at every step: each is
    # added on the way down, starting from nothing above the last step.
    per_step = g + 1 < G and plan[g + 1].reads == "all"
    ext = g_h if per_step else None

    def step(g_h, xs, g=g, read=read, tied=group.tied):
      p, h_in, z, ext = xs
      g_h = g_h if ext is None else g_h + ext
      delta, grads, g_in = layer_backward(net, g, read(p), h_in, z, g_h,
                                          param_grads and not tied, scale)
      return g_in, (delta, grads)

    carry = jnp.zeros_like(ins[g][0]) if per_step else g_h
    g_h, (deltas[g], grads[g]) = jax.lax.scan(step, carry, (xs, ins[g], tr.z[g], ext),
                                              reverse=True)
    if group.tied and param_grads:
      grads[g] = group.kind.tied_grads(ins[g], fixed, tr.z[g], deltas[g],
                                       net.entry(jnp.asarray(x))[1])
  return Backward(value, net.join_params(grads), tuple(deltas), tr)


def value_and_grad(net: Family, loss, params, x, y, reduction: str = "mean"):
  """``(loss, dL/dparams)`` by the hand recursion.

  Returns the same pytree as ``jax.value_and_grad(jaxbp.objective(net, loss))``.
  """
  out = backward(net, loss, params, x, y, reduction)
  return out.value, out.grads


def grad(net: Family, loss, params, x, y, reduction: str = "mean"):
  """dL/dparams by the hand recursion."""
  return backward(net, loss, params, x, y, reduction).grads


def deltas(net: Family, loss, params, x, y, reduction: str = "mean"):
  """delta = dL/dz for every layer, aligned with the net's plan
  (``net.delta_view``: an RNN gives its recurrent ``(T, batch, hidden)`` deltas)."""
  return net.delta_view(backward(net, loss, params, x, y, reduction).deltas)


def per_example_grads(net: Family, loss, params, x, y, reduction: str = "mean"):
  """Every example's own gradient, from one batched pass of the delta recursion.

  Convention: row i of the result is the gradient of example i's own loss term,
  ``loss.fn(out[i:i+1], y[i:i+1], reduction)``: the objective on a batch of one.
  It equals ``jax.vmap(jax.grad(objective(net, loss, reduction)))`` applied to
  single-example batches ``x[i][None], y[i][None]``, and summing it over the
  batch gives the ``reduction="sum"`` gradient of the whole batch. With
  ``reduction="mean"`` an elementwise loss (MSE, binary cross-entropy) is a mean
  over the example's outputs, so every term is the summed one divided by the
  output size; a categorical loss has one term per example (per position of a
  convolutional output) and is divided by the positions. (It is *not* the
  batch-mean gradient's per-example share, which would carry an extra ``1 / batch``.)

  How: ``backward(..., reduction="sum")`` gives every example's own delta (a row
  of the batched delta, since examples do not interact), and each kind forms
  the per-example parameter gradient from it: for a dense layer the outer
  product ``dW_k[i] = outer(h_{k-1}[i], delta_k[i])``, one ``einsum`` per group,
  ``db_k[i] = delta_k[i]``. No batch of single-example backward passes.

  Args:
    net: the network spec. Batch-normalised nets are refused: their batch
      statistics couple the examples, so an example has no gradient of its own.
    loss: a loss name or ``jaxbp.losses.Loss``.
    params: ``net.init(...)``-shaped parameters.
    x: inputs.
    y: targets, the output's shape (or integer labels for categorical losses).
    reduction: ``"mean"`` or ``"sum"``, of each example's own loss.

  Returns:
    The params' pytree with a leading batch axis on every leaf: ``W``
    ``(batch, in, out)``, ``b`` ``(batch, out)``; a stacked group's leaves are
    ``(batch, L, n, n)`` and ``(batch, L, n)``.

  >>> import jax, jax.numpy as jnp, jaxbp
  >>> net = jaxbp.MLP((3, 4, 2), "tanh")
  >>> params = net.init(jax.random.PRNGKey(0))
  >>> g = per_example_grads(net, "mse", params, jnp.ones((5, 3)), jnp.zeros((5, 2)))
  >>> g[0].W.shape, g[0].b.shape
  ((5, 3, 4), (5, 4))
  """
  if any(getattr(group.kind, "couples_batch", False) for group in net.plan):
    raise ValueError(
        f"per_example_grads: {net} uses batchnorm=True, whose batch mean and variance "
        "couple the examples: an example's loss depends on every other example, so there "
        "is no per-example gradient. Use a net without batch norm (or jax.vmap(jax.grad) "
        "over batches of one, which normalises each example by itself).")
  loss = _losses.get(loss)
  _check_reduction(reduction)
  out = backward(net, loss, params, x, y, "sum", param_grads=False)
  # Each example's loss term is a sum over its outputs, or one categorical term
  # per position.
  shape = out.trace.h[-1].shape
  count = math.prod(shape[1:-1] if loss.categorical else shape[1:])
  scale = 1.0 / count if reduction == "mean" else 1.0
  entries = net.split_params(params)
  grads = []
  for g, (p, h_in, z, d) in enumerate(zip(entries, net.layer_inputs(x, out.trace),
                                          out.trace.z, out.deltas)):
    if scale != 1.0:
      d = d * scale            # on the deltas, not on the (batch, in, out) result
    kind = net.plan[g].kind
    if net.is_tied(g):
      grads.append(kind.tied_example_grads(h_in, p, z, d, net.entry(jnp.asarray(x))[1]))
    elif net.is_stacked(g):
      grads.append(jax.vmap(kind.example_grads, out_axes=1)(h_in, p, z, d))
    else:
      grads.append(kind.example_grads(h_in, p, z, d))
  return net.join_params(grads)


# -- the seeds' other two forms ------------------------------------------------


def augmented_grads(weights, x, y, activation, loss, output_activation="identity",
                    reduction="mean"):
  """Seed 002's form: biases as the last row of ``W``, inputs padded with ones.

  ``weights[k]`` has shape ``(in_k + 1, out_k)``; layer k computes
  ``phi([h, 1] @ W_k)``. Deltas skip the bias row going down (``W[:-1]``, seed
  002's ``W_{i+1}^{without bias}``) and the gradient is ``[h, 1]^T @ delta``.

  Returns:
    ``(loss, [dL/dW_k])``, each gradient the shape of its ``W_k``.
  """
  phi, phi_out, loss = _act.get(activation), _act.get(output_activation), _losses.get(loss)
  ones = lambda h: jnp.ones((h.shape[0], 1), h.dtype)
  inputs, zs, h = [], [], jnp.asarray(x)
  for k, W in enumerate(weights):
    h_aug = jnp.concatenate([h, ones(h)], axis=1)
    z = h_aug @ W
    inputs.append(h_aug)
    zs.append(z)
    h = (phi_out if k == len(weights) - 1 else phi).fn(z)
  value = loss.fn(h, y, reduction)
  g = loss.grad(h, y, reduction)
  delta = g * phi_out.grad(zs[-1]) if phi_out.elementwise else _act.softmax_vjp(zs[-1], g)
  grads = [None] * len(weights)
  for k in reversed(range(len(weights))):
    grads[k] = inputs[k].T @ delta
    if k > 0:
      delta = (delta @ weights[k][:-1].T) * phi.grad(zs[k - 1])
  return value, grads


def scalar_chain(w, b, x, activation="sigmoid"):
  """Seed 003 §4.3: a chain of one-unit layers, ``h_k = phi(w_k h_{k-1} + b_k)``.

  Returns ``(h_K, dh_K/dh_0, dh_K/dw, dh_K/db)`` from the product form of §4.4,
  ``dh_K/dh_{k-1} = prod_{t=k..K} phi'(z_t) w_t``: the reason deep sigmoid
  chains vanish, since ``phi' <= 1/4``.
  """
  phi = _act.get(activation)
  w, b = jnp.asarray(w), jnp.asarray(b)
  if w.ndim != 1 or w.shape != b.shape or w.shape[0] == 0:
    raise ValueError(f"scalar_chain: w and b must be 1-D of one equal, non-zero length (one "
                     f"entry per layer); got shapes {w.shape} and {b.shape}.")

  def step(h, wb):
    z = wb[0] * h + wb[1]
    return phi.fn(z), (h, z)

  h_K, (h_prev, z) = jax.lax.scan(step, jnp.asarray(x, w.dtype), (w, b))
  local = phi.grad(z) * w                       # dh_t/dh_{t-1} = phi'(z_t) w_t
  # dh_K/dh_{t-1} = prod_{s >= t} local_s: a reversed cumulative product.
  through = jnp.cumprod(local[::-1])[::-1]
  after = jnp.concatenate([through[1:], jnp.ones((1,), w.dtype)])  # dh_K/dh_t
  dz = after * phi.grad(z)                       # dh_K/dz_t
  return h_K, through[0], dz * h_prev, dz
