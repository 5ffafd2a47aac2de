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

Stacked hidden layers are walked by a reversed ``lax.scan``, mirroring the
forward scan of :class:`jaxbp.nets.MLP` layer for layer.

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

from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp

import jaxbp.core.activations as _act
import jaxbp.core.conv_backprop as _conv_backprop
import jaxbp.core.losses as _losses
import jaxbp.core.nets as _nets
from jaxbp.core.convnets import ConvNet
from jaxbp.core.layers import Dense, RowScale, Trace, layer_stream, take_sample
from jaxbp.core.nets import MLP


class Backward(NamedTuple):
  """Everything one backward pass produces.

  Attributes:
    value: the loss.
    grads: dL/dparams, the same pytree as the params.
    deltas: dL/dz_k, aligned with the params (stacked groups carry a layer axis).
    trace: the forward cache it used.
  """
  value: jax.Array
  grads: Tuple[Dense, ...]
  deltas: Tuple[jax.Array, ...]
  trace: Trace


def _batch_norm_backward(delta, u, gamma, eps):
  """dL/du and dL/dgamma for ``z = gamma * uhat + beta``, ``uhat = (u - mean) / s``.

  With ``s = sqrt(var + eps)`` over a batch of m rows, differentiating through
  the batch mean and variance gives, per feature::

      dL/duhat = delta * gamma
      dL/du    = (m dL/duhat - sum_b dL/duhat - uhat sum_b (dL/duhat * uhat)) / (m s)

  The two sums are the paths through the mean and the variance: every row's
  output depends on every row's input (Ioffe & Szegedy 2015, §3).
  """
  m = u.shape[0]
  mean = jnp.mean(u, axis=0, keepdims=True)
  inv_s = jax.lax.rsqrt(jnp.mean((u - mean) ** 2, axis=0, keepdims=True) + eps)
  uhat = (u - mean) * inv_s
  d_uhat = delta * gamma[None, :]
  du = (m * d_uhat - jnp.sum(d_uhat, axis=0, keepdims=True)
        - uhat * jnp.sum(d_uhat * uhat, axis=0, keepdims=True)) * inv_s / m
  return du, jnp.sum(delta * uhat, axis=0)


def layer_backward(net: MLP, g: int, p, h_in, z, g_out, param_grads: bool = True,
                   scale: RowScale | None = None):
  """One layer, top to bottom: dL/dh_k -> (delta_k, param grads, dL/dh_{k-1}).

  The one step of the delta recursion, the hand derivative of
  :func:`jaxbp.nets.layer_forward`::

      delta_k     = dL/dh_k * phi'(z_k)          (hidden layers; the output's is given)
      dL/dh_{k-1} = delta_k @ W_k^T  (+ dL/dh_k through a residual skip)
      dL/dW_k     = h_{k-1}^T @ delta_k,   dL/db_k = sum_batch delta_k

  For the output layer ``g_out`` is delta_K itself. With ``param_grads=False``
  the batch-summed parameter gradients are not formed (``None``): only the
  deltas are wanted. With a :class:`jaxbp.nets.RowScale` the layer computed
  ``z = w * (h @ W) + b * bias`` row by row, so ``dL/dh_{k-1} = w * (delta_k @
  W^T)``; the parameter gradients are then those of the unit weights summed
  over every row, which is rarely what is wanted (the sweep takes norms of
  ``h^T delta`` per block of rows instead).
  """
  if net.is_hidden(g):
    delta = g_out * net.phi.grad(z)
  else:
    delta = g_out
  if net.is_batchnorm(g):
    du, d_gamma = _batch_norm_backward(delta, h_in @ p.W, p.gamma, net.bn_eps)
    grads = type(p)(h_in.T @ du, d_gamma, jnp.sum(delta, axis=0)) if param_grads else None
  else:
    du = delta
    grads = (Dense(h_in.T @ delta, jnp.sum(delta, axis=0) if p.b is not None else None)
             if param_grads else None)
  g_in = du @ p.W.T
  if scale is not None:
    g_in = scale.w * g_in
  if net.is_residual(g):
    g_in = g_in + g_out       # the identity skip passes dL/dh_k straight down
  return delta, grads, g_in


def backward(net: MLP, loss, params, x, y, reduction: str = "mean",
             param_grads: bool = True, scale: RowScale | None = None,
             select=None) -> Backward:
  """Runs the forward pass, then the delta recursion from the output back.

  Carries ``dL/dh_k`` down the net; every layer turns it into its
  ``delta_k = dL/dh_k * phi'(z_k)``, its parameter gradients and ``dL/dh_{k-1}``
  (plus the skip term for residual layers, through batch norm's statistics for
  batch-normalised ones), :func:`layer_backward`.

  Args:
    net: the network spec.
    loss: a loss name or ``jaxbp.losses.Loss``.
    params: ``net.init(...)``-shaped parameters.
    x: inputs ``(batch, sizes[0])``.
    y: targets, the output's shape (or integer labels for categorical losses).
    reduction: ``"mean"`` or ``"sum"``.
    param_grads: False skips the batch-summed parameter gradients (``grads`` is
      then a tuple of ``None``); the deltas and the trace are unchanged.
    scale: per-row factors on every layer (:class:`jaxbp.nets.RowScale`): rows
      stacked from nets that differ by a weight scale and a bias scale, run on
      shared unit weights. Use with ``param_grads=False``.
    select: a sample index: every params leaf carries a leading sample axis and
      the net of sample ``select`` runs, its layers read one at a time
      (``MLP.trace``'s ``select``).

  Returns:
    A :class:`Backward` with the loss, the gradients and every delta_k.

  A :class:`jaxbp.core.convnets.ConvNet` runs its own recursion
  (:mod:`jaxbp.core.conv_backprop`), without ``scale`` or ``select``.
  """
  if isinstance(net, ConvNet):
    if scale is not None or select is not None:
      raise ValueError(f"backprop: scale and select are MLP options; {net} takes neither.")
    return Backward(*_conv_backprop.backward(net, loss, params, x, y, reduction, param_grads))
  loss = _losses.get(loss)
  if reduction not in ("mean", "sum"):
    raise ValueError(f"backprop: reduction must be 'mean' or 'sum', got {reduction!r}.")
  tr = net.trace(params, x, scale=scale, select=select)
  x = jnp.asarray(x)
  value = loss.fn(tr.h[-1], y, reduction)
  G = len(params)

  def last(seq, g):  # the last layer's value in group g (groups may be stacked)
    return seq[g][-1] if net.is_stacked(g) else seq[g]

  g_h = _losses.output_delta(net.phi_out, loss, tr.z[-1], tr.h[-1], y, reduction)
  grads, deltas = [None] * G, [None] * G
  for g in reversed(range(G)):
    h_in = x if g == 0 else last(tr.h, g - 1)
    if net.is_stacked(g):
      # Layer l of the stack reads h_{l-1}: the group's input, then its own outputs.
      h_ins = jnp.concatenate([h_in[None], tr.h[g][:-1]], axis=0)
      stream, take = layer_stream(params[g], select)

      def step(g_h, xs, g=g, take=take):
        p, h_in, z = xs
        delta, grads, g_in = layer_backward(net, g, take(p), h_in, z, g_h, param_grads, scale)
        return g_in, (delta, grads)

      g_h, (deltas[g], grads[g]) = jax.lax.scan(
          step, g_h, (stream, h_ins, tr.z[g]), reverse=True)
    else:
      deltas[g], grads[g], g_h = layer_backward(net, g, take_sample(params[g], select), h_in,
                                                tr.z[g], g_h, param_grads, scale)
  return Backward(value, tuple(grads), tuple(deltas), tr)


def value_and_grad(net: MLP, loss, params, x, y, reduction: str = "mean"):
  """``(loss, dL/dparams)`` by the hand recursion.

  Returns the same pytree as ``jax.value_and_grad(jaxbp.objective(net, loss))``.
  """
  out = backward(net, loss, params, x, y, reduction)
  return out.value, out.grads


def grad(net: MLP, loss, params, x, y, reduction: str = "mean"):
  """dL/dparams by the hand recursion."""
  return backward(net, loss, params, x, y, reduction).grads


def deltas(net: MLP, loss, params, x, y, reduction: str = "mean"):
  """delta_k = dL/dz_k for every layer, aligned with the params tuple."""
  return backward(net, loss, params, x, y, reduction).deltas


def per_example_grads(net: MLP, loss, params, x, y, reduction: str = "mean"):
  """Every example's own gradient, from one batched pass of the delta recursion.

  Convention: row i of the result is the gradient of example i's own loss term,
  ``loss.fn(h_K[i:i+1], y[i:i+1], reduction)``: the objective on a batch of one.
  It equals ``jax.vmap(jax.grad(objective(net, loss, reduction)))`` applied to
  single-example batches ``x[i][None], y[i][None]``, and summing it over the
  batch gives the ``reduction="sum"`` gradient of the whole batch. With
  ``reduction="mean"`` an elementwise loss (MSE, binary cross-entropy) is a mean
  over the example's outputs, so every term is the summed one divided by the
  output width; a categorical loss has one term per example and is unchanged.
  (It is *not* the batch-mean gradient's per-example share, which would carry an
  extra ``1 / batch``.)

  How: ``backward(..., reduction="sum")`` gives every example's own
  ``delta_k`` (a row of the batched delta, since examples do not interact), and
  the batch-summed ``dL/dW_k = h_{k-1}^T delta_k`` taken per example is an outer
  product, ``dW_k[i] = outer(h_{k-1}[i], delta_k[i])``: one
  ``einsum("bi,bj->bij")`` per group, ``db_k[i] = delta_k[i]``. No batch of
  single-example backward passes, and no layout copies.

  Args:
    net: the network spec. Batch-normalised nets are refused: their batch
      statistics couple the examples, so an example has no gradient of its own.
    loss: a loss name or ``jaxbp.losses.Loss``.
    params: ``net.init(...)``-shaped parameters.
    x: inputs ``(batch, sizes[0])``.
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
  if isinstance(net, ConvNet):
    raise TypeError(f"per_example_grads: takes an MLP, got {net}; for a ConvNet use "
                    "jax.vmap(jax.grad(objective(net, loss))) over batches of one.")
  if net.batchnorm:
    raise ValueError(
        f"per_example_grads: {net} uses batchnorm=True, whose batch mean and variance "
        "couple the examples: an example's loss depends on every other example, so there "
        "is no per-example gradient. Use a net without batch norm (or jax.vmap(jax.grad) "
        "over batches of one, which normalises each example by itself).")
  loss = _losses.get(loss)
  if reduction not in ("mean", "sum"):
    raise ValueError(f"backprop: reduction must be 'mean' or 'sum', got {reduction!r}.")
  out = backward(net, loss, params, x, y, "sum", param_grads=False)
  # Each example's loss term is a sum over its outputs, or one categorical term.
  count = 1 if loss.categorical else net.sizes[-1]
  scale = 1.0 / count if reduction == "mean" else 1.0
  grads = []
  for g, (p, h_in, d) in enumerate(zip(params, _nets.layer_inputs(net, x, out.trace),
                                       out.deltas)):
    if scale != 1.0:
      d = d * scale            # on the (batch, out) deltas, not the (batch, in, out) result
    if net.is_stacked(g):
      dW = jnp.einsum("lbi,lbj->blij", h_in, d)
      db = jnp.swapaxes(d, 0, 1)
    else:
      dW = jnp.einsum("bi,bj->bij", h_in, d)
      db = d
    grads.append(Dense(dW, db if p.b is not None else None))
  return tuple(grads)


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
