"""Per-layer gradient diagnostics: norms, deltas by two routes, Jacobian spectra.

Seed 003 §4.4 writes backprop as a product. For one unit per layer
(``h_t = phi(z_t)``, ``z_t = w_t h_{t-1} + b_t``)::

    dL/dh_{k-1} = dL/dh_K  prod_{t=k..K} phi'(z_t) w_t

and for a layer of width n the same product is a product of matrices: in the
row convention of :mod:`jaxbp.nets`,
``delta_{k-1} = (delta_k W_k^T) * phi'(z_{k-1})``, ``dL/dW_k = h_{k-1}^T delta_k``.
If the factors are small the product vanishes; if they are large it explodes.
Mean-field theory makes "small" and "large" precise: for a wide net with
``W ~ N(0, sigma_w2 / n)`` whose pre-activations sit at the fixed point q*,

    E ||delta_{l-1}||^2 = chi_1 E ||delta_l||^2,   chi_1 = sigma_w2 E_z[phi'(sqrt(q*) z)^2],

so ``log ||delta_l||^2`` changes by ``ln chi_1`` per layer going backwards
(Schoenholz et al. 2017; :func:`jaxbp.meanfield.gradient_log_slope`), and
:func:`fit_log_slope` measures that change.

Everything here is a pure function of arrays and a static net spec, and returns
one stacked array per quantity (a value per layer, stacked groups unstacked),
so it jits and vmaps over seeds and configurations.

The per-layer deltas come two ways, which agree to round-off:

* the hand recursion, :func:`jaxbp.backprop.backward`;
* autodiff, :func:`autodiff_backward`: the forward pass adds a zero "probe"
  ``p_k`` to every pre-activation, ``z_k = h_{k-1} W_k + b_k + p_k``, so that
  ``dL/dp_k = dL/dz_k = delta_k`` exactly; ``jax.grad`` with respect to the
  probes gives every delta, per example, in one reverse pass.

References:
  Schoenholz, Gilmer, Ganguli & Sohl-Dickstein, "Deep information propagation",
    ICLR 2017.
  Pennington, Schoenholz & Ganguli, "Resurrecting the sigmoid in deep learning
    through dynamical isometry: theory and practice", NeurIPS 2017.

>>> import jax, jax.numpy as jnp, jaxbp
>>> net = jaxbp.MLP((4, 8, 8, 8, 2), "tanh", stack=True)
>>> params = net.init(jax.random.PRNGKey(0), init="glorot")
>>> x, y = jnp.ones((3, 4)), jnp.zeros((3, 2))
>>> gradient_norms(net, "mse", params, x, y).weight.shape   # one per affine layer
(4,)
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxbp.core import activations as _act
from jaxbp.core import backprop as _backprop
from jaxbp.core import nets as _nets
from jaxbp.core.kinds import BatchNormKind, DenseKind
from jaxbp.measure.probes import autodiff_backward, probed_trace, zero_probes  # noqa: F401


class GradientNorms(NamedTuple):
  """Per-layer gradient sizes, each of shape ``(K,)`` for K affine layers.

  Attributes:
    weight: ``||dL/dW_k||_F``.
    bias: ``||dL/db_k||`` (of ``beta`` for batch-norm layers; 0 without biases).
    delta: ``sqrt(mean_b ||delta_k[b]||^2)``, the root-mean-square over the batch
      of the per-example ``||dL/dz_k||``. Its square is the ``E||delta_l||^2`` of
      mean-field theory.
  """
  weight: jax.Array
  bias: jax.Array
  delta: jax.Array


class ChainProfile(NamedTuple):
  """Seed 003 §4.4's product form, layer by layer, for a chain of K scalar units.

  Attributes:
    z: pre-activations ``z_t = w_t h_{t-1} + b_t``, ``(K,)``.
    local: ``dh_t/dh_{t-1} = phi'(z_t) w_t``.
    through: ``dh_K/dh_{t-1} = prod_{s=t..K} phi'(z_s) w_s``; ``through[0]`` is
      ``dh_K/dh_0``.
    log_abs_through: ``sum_{s=t..K} ln|phi'(z_s) w_s|``, the same product in log
      form, which neither underflows nor overflows for long chains.
  """
  z: jax.Array
  local: jax.Array
  through: jax.Array
  log_abs_through: jax.Array


# -- per-layer reductions --------------------------------------------------------


def scaled_norm(a, axes):
  """``sqrt(sum a^2)`` over ``axes``, scaled by max|a| so that squaring never
  overflows (|a| ~ 1e200 in exploding nets) or underflows (~1e-200 in vanishing
  ones). 0 stays 0, inf stays inf, nan stays nan."""
  m = jnp.max(jnp.abs(a), axis=axes, keepdims=True)
  scale = jnp.where((m > 0) & jnp.isfinite(m), m, jnp.ones_like(m))
  return jnp.squeeze(scale, axes) * jnp.sqrt(jnp.sum((a / scale) ** 2, axis=axes))


def per_layer(net: _nets.Family, arrays, reduce: Callable, steps: bool = False) -> jax.Array:
  """Applies ``reduce`` to every layer's array and stacks the results, ``(K, ...)``.

  Args:
    net: the spec the arrays belong to.
    arrays: one entry (an array, or a pytree of them) per params group, e.g.
      ``trace.z`` or ``deltas``; a stacked group carries a leading layer axis,
      which is walked (vmapped) through.
    reduce: ``array -> array`` for one layer, e.g. ``lambda d: jnp.sum(d ** 2)``.
    steps: the arrays are trace-aligned (``z``, ``h``, deltas), so a tied group
      (an RNN's recurrence) carries a leading step axis, walked like a stack's
      layers; its parameters and gradients carry none.

  >>> import jaxbp
  >>> net = jaxbp.MLP((2, 3, 3, 3, 1), "relu", stack=True)
  >>> tr = net.trace(net.init(jax.random.PRNGKey(0)), jnp.ones((5, 2)))
  >>> per_layer(net, tr.z, lambda z: z.shape[-1] * jnp.ones(())).tolist()
  [3.0, 3.0, 3.0, 1.0]
  """
  tree = jax.tree_util
  stacks = [a if net.is_stacked(g) or (steps and net.is_tied(g))
            else tree.tree_map(lambda v: v[None], a) for g, a in enumerate(arrays)]
  shapes = {tuple((v.shape[1:], v.dtype) for v in tree.tree_leaves(a)) for a in stacks}
  if len(shapes) == 1:
    # Equal layer shapes (a uniform net): one (K, ...) stack, one vmapped reduce,
    # so XLA compiles the reduction once, not once per group.
    return jax.vmap(reduce)(tree.tree_map(lambda *v: jnp.concatenate(v), *stacks))
  return jnp.concatenate([jax.vmap(reduce)(a) for a in stacks], axis=0)


def _refuse_tied(net, where):
  if any(net.is_tied(g) for g in range(len(net.plan))):
    raise ValueError(
        f"{where}: {net} has a tied (recurrent) layer: one gradient for all its steps, so "
        "there is no per-layer table of gradients beside the per-step deltas; take the "
        "deltas per step with per_layer(net, deltas, reduce, steps=True).")


def _couples_batch(net) -> bool:
  return any(getattr(group.kind, "couples_batch", False) for group in net.plan)


def _bias_of(p):
  return p.beta if isinstance(p, _nets.BatchNormDense) else p.b


def layer_norms(net: _nets.Family, grads, deltas) -> GradientNorms:
  """:class:`GradientNorms` from gradients and deltas aligned with the params.

  Takes the output of any backward pass (:func:`jaxbp.backprop.backward`,
  :func:`autodiff_backward`), for plain, residual or batch-norm nets.
  """
  _refuse_tied(net, "layer_norms")
  grads = net.split_params(grads)
  weight = per_layer(net, [p.W for p in grads], lambda w: scaled_norm(w, tuple(range(w.ndim))))
  biases = [_bias_of(p) for p in grads]
  if any(b is None for b in biases):
    bias = jnp.zeros_like(weight)   # no biases: the empty gradient has norm 0
  else:
    bias = per_layer(net, biases, lambda b: scaled_norm(b, (0,)))
  # ||delta||_F / sqrt(batch): the per-example root-mean-square norm.
  delta = per_layer(net, deltas,
                    lambda d: scaled_norm(d, tuple(range(d.ndim))) / jnp.sqrt(d.shape[0]))
  return GradientNorms(weight, bias, delta)


layer_inputs = _nets.layer_inputs   # every layer's input h_{k-1}, aligned with params


def gram_norm(h, d):
  """``||h^T d||_F`` without forming ``h^T d``, each side scaled by its max as in
  :func:`scaled_norm`, so nothing overflows."""
  # ||h^T d||_F^2 = sum_{b,c} (h_b . h_c)(d_b . d_c): two (batch, batch) Gram
  # matrices instead of the (in, out) gradient, each side scaled by its max so
  # nothing overflows. The logs add where the products would not fit.
  mh = jnp.max(jnp.abs(h))
  md = jnp.max(jnp.abs(d))
  sh = jnp.where((mh > 0) & jnp.isfinite(mh), mh, 1.0)
  sd = jnp.where((md > 0) & jnp.isfinite(md), md, 1.0)
  hs, ds = h / sh, d / sd
  inner = jnp.sum((hs @ hs.T) * (ds @ ds.T))
  return sh * sd * jnp.sqrt(jnp.maximum(inner, 0.0))


def norms_from_deltas(net: _nets.Family, x, trace: _nets.Trace, deltas,
                      blocks: int | None = None) -> GradientNorms:
  """:class:`GradientNorms` from the deltas and the forward trace, without forming dW.

  ``dL/dW_k = h_{k-1}^T delta_k`` and ``dL/db_k = sum_batch delta_k``, and
  ``||h^T d||_F^2 = sum_{b,c} (h_b . h_c)(d_b . d_c)``: O(batch^2 n) work per
  layer instead of O(batch n^2). When nothing else reads the gradients, XLA
  drops their computation, so a deep, wide sweep needs neither the time nor
  the (L, n, n) memory of dW. Equal to :func:`layer_norms` to round-off, for
  plain and residual nets (batch norm's dW goes through the batch statistics).

  Args:
    blocks: None, or C: the batch holds C nets' examples stacked along the rows,
      configuration-major (``backprop.backward(..., scale=RowScale(...))``),
      and every norm is taken per block of ``batch / C`` rows. Each field is
      then ``(K, C)``.
  """
  _refuse_tied(net, "norms_from_deltas")
  if any(type(group.kind) not in (DenseKind, BatchNormKind) for group in net.plan):
    raise ValueError(f"norms_from_deltas: {net} has layers whose dW is not h^T delta "
                     "(convolutions, readouts); use layer_norms(net, grads, deltas).")
  if _couples_batch(net):
    raise ValueError("norms_from_deltas: batch-norm layers' dW is not h^T delta; use "
                     "layer_norms(net, grads, deltas) with the grads of backprop.backward.")
  if blocks is None:
    each = lambda fn: fn
  else:
    if jnp.shape(x)[0] % blocks:
      raise ValueError(f"norms_from_deltas: {jnp.shape(x)[0]} rows do not split into "
                       f"blocks={blocks} equal blocks.")
    split = lambda a: a.reshape((blocks, a.shape[0] // blocks) + a.shape[1:])
    each = lambda fn: lambda *a: jax.vmap(fn)(*map(split, a))
  weight = per_layer(net, tuple(zip(layer_inputs(net, x, trace), deltas)),
                     lambda hd: each(gram_norm)(*hd))
  if net.bias:
    bias = per_layer(net, deltas, each(lambda d: scaled_norm(jnp.sum(d, axis=0), (0,))))
  else:
    bias = jnp.zeros_like(weight)
  delta = per_layer(net, deltas,
                    each(lambda d: scaled_norm(d, (0, 1)) / jnp.sqrt(d.shape[0])))
  return GradientNorms(weight, bias, delta)


METHODS = ("backprop", "autodiff")


def gradient_norms(net: _nets.Family, loss, params, x, y, reduction: str = "mean",
                   method: str = "backprop") -> GradientNorms:
  """``||dL/dW_k||``, ``||dL/db_k||`` and the RMS ``||delta_k||``, one per layer.

  Args:
    net, loss, params, x, y, reduction: as for :func:`jaxbp.backprop.backward`.
    method: ``"backprop"`` (the hand recursion) or ``"autodiff"`` (``jax.grad``
      through zero probes, :func:`autodiff_backward`).

  Returns:
    :class:`GradientNorms`, each field ``(K,)``.
  """
  if method not in METHODS:
    raise ValueError(f"gradient_norms: method must be one of {METHODS}, got {method!r}.")
  run = _backprop.backward if method == "backprop" else autodiff_backward
  out = run(net, loss, params, x, y, reduction)
  return layer_norms(net, out.grads, out.deltas)


# -- fitting the per-layer rate --------------------------------------------------


def fit_log_slope(log_sq_norms, skip_input: int = 0, skip_output: int = 0) -> jax.Array:
  """The per-layer change of ``log ||delta_l||^2`` going backwards, by least squares.

  Fits ``log ||delta_l||^2 ~ a - s l`` over layers ``l = 1 .. L`` (the last
  axis), leaving out ``skip_input`` layers at the input end, ``skip_output`` at
  the output end and every non-finite entry (overflowed or exactly vanished
  layers). ``s`` estimates ``ln chi_1``: negative when gradients vanish towards
  the input, positive when they explode.

  Args:
    log_sq_norms: ``(..., L)``, e.g. ``2 log GradientNorms.delta`` of the hidden layers.
    skip_input, skip_output: static counts of transient layers to leave out.

  Returns:
    ``(...)`` slopes; nan where fewer than two layers remain.

  >>> float(fit_log_slope(jnp.array([5.0, 4.0, 3.0, 2.0])))   # e^1 larger per layer down
  1.0
  """
  y = jnp.asarray(log_sq_norms)
  L = y.shape[-1]
  layer = jnp.broadcast_to(jnp.arange(1, L + 1, dtype=jnp.result_type(y, float)), y.shape)
  keep = (layer > skip_input) & (layer <= L - skip_output) & jnp.isfinite(y)
  w = keep.astype(layer.dtype)
  y = jnp.where(keep, y, 0.0)
  n = jnp.sum(w, axis=-1)
  safe_n = jnp.maximum(n, 1.0)
  l_mean = jnp.sum(w * layer, axis=-1) / safe_n
  y_mean = jnp.sum(w * y, axis=-1) / safe_n
  dl = (layer - l_mean[..., None]) * w
  slope = jnp.sum(dl * (y - y_mean[..., None]), axis=-1) / jnp.maximum(
      jnp.sum(dl * dl, axis=-1), jnp.finfo(layer.dtype).tiny)
  # d log||delta_l||^2 / dl = -ln chi_1: going backwards is going down in l.
  return jnp.where(n >= 2, -slope, jnp.nan)


# -- the input-output Jacobian ---------------------------------------------------


def jacobian(net: _nets.Family, params, x, mode: str = "auto") -> jax.Array:
  """Per-example input-output Jacobians ``J[b] = d h_K[b] / d h_0[b]``, ``(batch, out, in)``.

  ``mode="forward"`` pushes the ``in`` basis vectors through ``jax.linearize``
  (a vmapped jvp: one forward pass, ``in`` tangent passes), giving columns;
  ``"reverse"`` pulls the ``out`` basis vectors back through ``jax.vjp`` (a
  vmapped vjp), giving rows; ``"auto"`` takes whichever needs fewer passes.
  A tangent ``e`` broadcast to every row gives every example's ``J[b] e`` at
  once, since examples do not interact, which is why batch-norm nets (whose
  rows are coupled through the batch statistics) are refused.

  >>> import jaxbp
  >>> net = jaxbp.MLP((3, 6, 6, 2), "tanh")
  >>> J = jacobian(net, net.init(jax.random.PRNGKey(0)), jnp.ones((5, 3)))
  >>> J.shape
  (5, 2, 3)
  """
  if _couples_batch(net):
    raise ValueError(
        "jacobian: a batch-norm net couples the examples of a batch, so there is no "
        "per-example Jacobian; use net with batchnorm=False, or differentiate "
        "net.apply on the whole batch with jax.jacfwd.")
  if mode not in ("auto", "forward", "reverse"):
    raise ValueError(f"jacobian: mode must be 'auto', 'forward' or 'reverse', got {mode!r}.")
  x = net.check_input(x)
  if x.ndim != 2:
    raise ValueError(f"jacobian: takes nets whose examples are vectors, (batch, in); got x of "
                     f"shape {x.shape} for {net}.")
  f = lambda x: net.apply(params, x)
  n_in, n_out = x.shape[1], jax.eval_shape(f, x).shape[-1]
  if mode == "forward" or (mode == "auto" and n_in <= n_out):
    _, push = jax.linearize(f, x)
    cols = jax.vmap(lambda e: push(jnp.broadcast_to(e, x.shape)))(jnp.eye(n_in, dtype=x.dtype))
    return jnp.transpose(cols, (1, 2, 0))           # (in, batch, out) -> (batch, out, in)
  out, pull = jax.vjp(f, x)
  rows = jax.vmap(lambda e: pull(jnp.broadcast_to(e, out.shape))[0])(
      jnp.eye(n_out, dtype=out.dtype))
  return jnp.transpose(rows, (1, 0, 2))             # (out, batch, in) -> (batch, out, in)


def jacobian_singular_values(net: _nets.Family, params, x, mode: str = "auto") -> jax.Array:
  """Singular values of every example's :func:`jacobian`, ``(batch, min(in, out))``, descending.

  All equal to 1 is dynamical isometry (Pennington et al. 2017): every direction
  of the output gradient reaches the input with its size kept.
  """
  return jnp.linalg.svd(jacobian(net, params, x, mode), compute_uv=False)


# -- the scalar chain's product form ---------------------------------------------


def scalar_chain_profile(w, b, x, activation="sigmoid") -> ChainProfile:
  """Seed 003 §4.4 for ``h_t = phi(w_t h_{t-1} + b_t)``, t = 1 .. K, layer by layer.

  Runs the chain of :func:`jaxbp.backprop.scalar_chain` and returns every factor
  ``phi'(z_t) w_t`` of the product and every partial product
  ``dh_K/dh_{t-1}``. With sigmoid, ``phi' <= 1/4``, so ``|w_t| < 4`` makes every
  factor shrink the gradient: the vanishing gradient in its simplest form.

  >>> prof = scalar_chain_profile(jnp.ones(10), jnp.zeros(10), 0.0, "sigmoid")
  >>> round(float(prof.log_abs_through[0] / 10), 4)   # ln sigma'(z) per layer, z -> 0.659
  -1.4763
  """
  phi = _act.get(activation)
  w, b = jnp.asarray(w), jnp.asarray(b)

  def step(h, wb):
    z = wb[0] * h + wb[1]
    return phi.fn(z), z

  _, z = jax.lax.scan(step, jnp.asarray(x, w.dtype), (w, b))
  local = phi.grad(z) * w
  # dh_K/dh_{t-1} = prod_{s >= t} local_s: reversed cumulative product / sum.
  through = jnp.cumprod(local[::-1])[::-1]
  log_abs = jnp.cumsum(jnp.log(jnp.abs(local))[::-1])[::-1]
  return ChainProfile(z, local, through, log_abs)
