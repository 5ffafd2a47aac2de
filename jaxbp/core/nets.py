"""Multi-layer perceptrons as pure functions over a frozen spec.

Row-vector convention, batch first (seed 002's ``X W``)::

    h_0 = x                                  (batch, sizes[0])
    z_k = h_{k-1} @ W_k + b_k                W_k: (sizes[k-1], sizes[k])
    h_k = phi(z_k)      for hidden layers k = 1 .. K-1
    h_K = phi_out(z_K)  the output

The seeds write the same layer in column form, ``z = W h + b`` with ``W`` of
shape ``(out, in)`` (and PyTorch's ``nn.Linear.weight`` is stored that way):
their ``W`` is the transpose of ours.

Parameters are a tuple of :class:`Dense` ``(W, b)``, one per layer. With
``stack=True`` the identical hidden layers ``width -> width`` are stored as one
``Dense`` whose leaves carry a leading layer axis, ``W: (L, width, width)``,
``b: (L, width)``, and run under ``lax.scan``: the compiled program holds one
layer, so compile time does not grow with depth. ``remat=True`` wraps every
layer in ``jax.checkpoint``, so the backward pass recomputes activations
instead of storing them (seed 001: cache forward values, or recompute them).
``remat=k`` (an int >= 2) checkpoints the stacked hidden layers in blocks of k:
an outer ``lax.scan`` over blocks, each block an inner scan under
``jax.checkpoint``, so the backward pass keeps only every k-th activation and
recomputes one block at a time (~L / k + 3 k arrays h for L layers instead of
~L; k ~ sqrt(L) minimises it; Chen et al. 2016, "Training deep nets with
sublinear memory cost"). Without ``stack``, blocks of k consecutive layers are
checkpointed together.

Two variants for deep nets (seed 003 §4.4's remedies):

* ``residual=True``: the hidden ``width -> width`` layers (k = 2 .. K-1) add
  their input back, ``h_k = h_{k-1} + phi(z_k)`` (He et al. 2016's identity
  skip), so ``dL/dh_{k-1} = dL/dh_k + delta_k W_k^T`` never loses the identity
  path.
* ``batchnorm=True``: every hidden layer normalises its pre-activation over the
  batch (Ioffe & Szegedy 2015): ``u = h_{k-1} W_k``, ``z_k = gamma_k (u - mean u)
  / sqrt(var u + eps) + beta_k``. Such layers hold :class:`BatchNormDense`
  ``(W, gamma, beta)``; the bias is ``beta`` (a bias before the normalisation
  would be subtracted away with the mean).
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp.core.activations as _act
import jaxbp.core.initializers as _init
import jaxbp.core.losses as _losses
from jaxbp.core.layers import (BatchNormDense, Dense, RowScale, Trace, batch_norm, layer_forward,
                                layer_inputs, layer_stream, take_sample, unstack)  # noqa: F401


@dataclasses.dataclass(frozen=True)
class MLP(_act.NetActivations):
  """A fully connected network spec: hashable, so it can be a static jit argument.

  Args:
    sizes: layer widths ``(in, hidden..., out)``, at least two entries.
    activation: hidden activation, a name or ``jaxbp.activations.Activation``.
    output_activation: the last layer's activation (default identity: logits).
    bias: whether layers have biases.
    stack: store the identical ``width -> width`` hidden layers as one stacked
      ``Dense`` and run them with ``lax.scan``. Needs all hidden widths equal.
    remat: recompute activations in the backward pass (``jax.checkpoint``):
      ``True`` (or 1) checkpoints every layer, an int ``k >= 2`` blocks of k
      layers (only every k-th activation is saved). When k does not divide the
      number of stacked layers L, the last ``L mod k`` form a shorter block.
    residual: identity skips around the hidden ``width -> width`` layers.
    batchnorm: batch normalisation before every hidden activation.
    bn_eps: the variance floor of batch norm.

  >>> net = MLP(sizes=(3, 3, 2, 3), activation="relu")
  >>> params = net.init(jax.random.PRNGKey(0), init="he")
  >>> net.apply(params, jnp.ones((4, 3))).shape
  (4, 3)
  """
  sizes: Tuple[int, ...]
  activation: Union[str, _act.Activation] = "relu"
  output_activation: Union[str, _act.Activation] = "identity"
  bias: bool = True
  stack: bool = False
  remat: Union[bool, int] = False
  residual: bool = False
  batchnorm: bool = False
  bn_eps: float = 1e-5

  def __post_init__(self):
    sizes = tuple(self.sizes) if isinstance(self.sizes, (list, tuple)) else self.sizes
    if not isinstance(sizes, tuple) or len(sizes) < 2:
      raise ValueError(
          f"MLP: sizes must list at least two widths (input, output), e.g. (3, 8, 2); "
          f"got {self.sizes!r}.")
    for s in sizes:
      if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
        raise ValueError(f"MLP: every size must be a positive int; got sizes={sizes!r}.")
    object.__setattr__(self, "sizes", tuple(int(s) for s in sizes))
    # Resolve names now so that bad ones fail at construction, not inside jit.
    _act.get(self.activation)
    _act.get(self.output_activation)
    if not _act.get(self.activation).elementwise:
      raise ValueError("MLP: softmax can only be the output_activation, not a hidden one.")
    for flag in ("stack", "residual"):
      if getattr(self, flag) and len(set(self.sizes[1:-1])) > 1:
        raise ValueError(
            f"MLP: {flag}=True needs equal hidden widths, got sizes={self.sizes}. "
            f"Use {flag}=False for nets with varying widths.")
    remat = self.remat
    if not isinstance(remat, (bool, np.bool_)):
      if not isinstance(remat, (int, np.integer)) or remat < 1:
        raise ValueError(
            f"MLP: remat must be a bool or an int k >= 1 (checkpoint blocks of k layers), "
            f"got {remat!r}.")
      object.__setattr__(self, "remat", int(remat))
    else:
      object.__setattr__(self, "remat", bool(remat))
    if not (isinstance(self.bn_eps, (int, float)) and self.bn_eps > 0):
      raise ValueError(f"MLP: bn_eps must be a number > 0, got {self.bn_eps!r}.")

  @classmethod
  def uniform(cls, in_size: int, width: int, depth: int, out_size: int, **kwargs) -> "MLP":
    """A net with ``depth`` hidden layers of equal ``width``: sizes (in, width*depth, out)."""
    if not isinstance(depth, (int, np.integer)) or depth < 1:
      raise ValueError(f"MLP.uniform: depth must be an int >= 1, got {depth!r}.")
    return cls(sizes=(in_size,) + (width,) * depth + (out_size,), **kwargs)

  # -- structure ---------------------------------------------------------------

  @property
  def num_layers(self) -> int:
    """Number of affine layers, K = len(sizes) - 1."""
    return len(self.sizes) - 1

  @property
  def groups(self) -> Tuple[Tuple[int, int, int], ...]:
    """One ``(num_layers, fan_in, fan_out)`` per ``Dense`` in the params tuple.

    Without ``stack`` every group holds one layer. With it, the hidden
    ``width -> width`` layers form one group between the first and last layer.
    """
    s, K = self.sizes, self.num_layers
    if not self.stack or K < 3:
      return tuple((1, s[k], s[k + 1]) for k in range(K))
    return ((1, s[0], s[1]), (K - 2, s[1], s[1]), (1, s[-2], s[-1]))

  def is_stacked(self, g: int) -> bool:
    """Whether params[g] carries a leading layer axis."""
    return self.stack and self.num_layers >= 3 and g == 1

  def is_hidden(self, g: int) -> bool:
    """Whether params[g] is a hidden group (not the output layer)."""
    return g < len(self.groups) - 1

  def is_residual(self, g: int) -> bool:
    """Whether the layers of params[g] add their input back (k = 2 .. K-1)."""
    return self.residual and self.is_hidden(g) and g >= 1

  def is_batchnorm(self, g: int) -> bool:
    """Whether params[g] holds :class:`BatchNormDense` layers."""
    return self.batchnorm and self.is_hidden(g)

  @property
  def remat_block(self) -> int:
    """Layers per checkpointed block: 0 without remat, 1 per layer, k for ``remat=k``."""
    return 0 if self.remat is False else (1 if self.remat is True else self.remat)

  # -- parameters --------------------------------------------------------------

  def init(self, key, init: _init.InitializerLike = "he", dtype=None) -> Tuple[Dense, ...]:
    """Draws parameters, one PRNG key per layer.

    Args:
      key: a ``jax.random.PRNGKey``.
      init: a name (``"he"``, ``"glorot"``, ``"lecun"``, ``"orthogonal"``...) or an
        ``Initializer`` such as ``gaussian(sigma_w2=1.76, sigma_b2=0.05)``.
      dtype: float dtype; default float64 when x64 is enabled, else float32.
    """
    initializer = _init.get(init)
    dtype = jax.dtypes.canonicalize_dtype(dtype or jnp.float64)
    params = []
    for g, (n, fan_in, fan_out) in enumerate(self.groups):
      key, layer_key = jax.random.split(key)
      w_key, b_key = jax.random.split(layer_key)
      lead = (n,) if self.is_stacked(g) else ()
      W = initializer.weight(w_key, lead + (fan_in, fan_out), dtype)
      if self.is_batchnorm(g):
        params.append(BatchNormDense(W, jnp.ones(lead + (fan_out,), dtype),
                                     jnp.zeros(lead + (fan_out,), dtype)))
        continue
      b = initializer.bias(b_key, lead + (fan_out,), dtype) if self.bias else None
      params.append(Dense(W, b))
    return tuple(params)

  def check_params(self, params) -> None:
    """Raises a ValueError naming the first leaf whose shape does not fit this net."""
    if not isinstance(params, (tuple, list)) or len(params) != len(self.groups):
      got = len(params) if isinstance(params, (tuple, list)) else type(params).__name__
      raise ValueError(
          f"params do not fit {self}: expected a tuple of {len(self.groups)} Dense "
          f"layers, got {got}. Create them with net.init(key).")
    for g, (p, (n, fi, fo)) in enumerate(zip(params, self.groups)):
      lead = (n,) if self.is_stacked(g) else ()
      kind = BatchNormDense if self.is_batchnorm(g) else Dense
      if not isinstance(p, kind):
        raise ValueError(
            f"params[{g}] is a {type(p).__name__}, expected {kind.__name__} for net "
            f"{self}. Were the params made for another net? Create them with net.init(key).")
      if kind is BatchNormDense:
        for name in ("gamma", "beta"):
          if jnp.shape(getattr(p, name)) != lead + (fo,):
            raise ValueError(f"params[{g}].{name} has shape {jnp.shape(getattr(p, name))}, "
                             f"expected {lead + (fo,)} for net sizes={self.sizes}.")
        p = Dense(p.W, p.beta if self.bias else None)
      W, b = p
      if jnp.shape(W) != lead + (fi, fo):
        raise ValueError(
            f"params[{g}].W has shape {jnp.shape(W)}, expected {lead + (fi, fo)} for net "
            f"sizes={self.sizes}, stack={self.stack}. Were the params made for another net?")
      if self.bias and (b is None or jnp.shape(b) != lead + (fo,)):
        raise ValueError(
            f"params[{g}].b has shape {None if b is None else jnp.shape(b)}, expected "
            f"{lead + (fo,)} for net sizes={self.sizes}.")
      if not self.bias and b is not None:
        raise ValueError(f"params[{g}].b should be None: the net was built with bias=False.")

  def check_input(self, x) -> jax.Array:
    """Validates ``x`` of shape ``(batch, sizes[0])`` and returns it as an array."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise TypeError(f"x must be floating point, got dtype {x.dtype}; convert it with "
                      "x.astype(jnp.float32) (or float64).")
    if x.ndim != 2 or x.shape[1] != self.sizes[0]:
      raise ValueError(
          f"x has shape {x.shape}, expected (batch, {self.sizes[0]}) for net sizes="
          f"{self.sizes}. A single example needs a batch axis: x[None].")
    if x.shape[0] == 0:
      raise ValueError(f"x has shape {x.shape}: an empty batch (a mean over no examples "
                       "is 0/0, a nan loss); pass at least one row.")
    return x

  # -- forward -----------------------------------------------------------------

  def layer(self, g, checkpoint: Optional[bool] = None):
    """Layer g's forward, ``(h, p, probe=None, scale=None) -> (h_next, z)``.

    :func:`layer_forward` with this group's activation, skip and batch norm;
    checkpointed (``jax.checkpoint``) with per-layer remat, and ``checkpoint``
    overrides that (block remat checkpoints whole blocks instead).
    """
    phi = self.phi if self.is_hidden(g) else self.phi_out
    residual = self.is_residual(g)
    eps = self.bn_eps if self.is_batchnorm(g) else None

    def fn(h, p, probe=None, scale=None):
      return layer_forward(h, p, phi, residual=residual, batchnorm_eps=eps, probe=probe,
                           scale=scale)

    if checkpoint is None:
      checkpoint = self.remat_block == 1
    return jax.checkpoint(fn) if checkpoint else fn

  def _run_stack(self, g, h, p):
    """The stacked group g on h (outputs only), under its remat scheme."""
    k = self.remat_block
    L = p.W.shape[0]
    if k <= 1:
      layer = self.layer(g)
      return jax.lax.scan(lambda h, p: (layer(h, p)[0], None), h, p)[0]
    layer = self.layer(g, checkpoint=False)

    def block(size):
      # Layers [i k, i k + size) under one checkpoint: the backward pass keeps
      # only the block's input h and recomputes the block. The block's weights
      # are sliced out of the whole stack inside the checkpoint (not passed in
      # as scanned slices), so a remainder block copies no weights, and their
      # gradients are written back into one stack-shaped buffer.
      @jax.checkpoint
      def run(h, i):
        pb = jax.tree_util.tree_map(lambda a: jax.lax.dynamic_slice_in_dim(a, i * k, size), p)
        return jax.lax.scan(lambda h, p: (layer(h, p)[0], None), h, pb)[0]
      return run

    n, r = divmod(L, k)
    if n:
      h = jax.lax.scan(lambda h, i: (block(k)(h, i), None), h, jnp.arange(n))[0]
    if r:                             # the last L mod k layers: a shorter block
      h = block(r)(h, n)
    return h

  def trace(self, params, x, probes=None, scale: Optional[RowScale] = None,
            select=None) -> Trace:
    """Forward pass that keeps every z_k and h_k (what backprop caches).

    Args:
      params: ``init``-shaped parameters; with ``select``, every leaf carries one
        more leading axis, of samples.
      x: inputs ``(batch, sizes[0])``.
      probes: optional additions to the pre-activations, ``z_k += probes[k]``,
        shaped like the trace's ``z`` (``jaxbp.diagnostics.zero_probes``): the
        derivative with respect to ``probes[k]`` is ``delta_k``.
      scale: optional :class:`RowScale`: per-row factors on every layer's matmul
        and bias (:func:`layer_forward`).
      select: optional sample index into the params' leading axis. The layers
        read their weights one at a time from the selected sample, so a stack
        of many nets' weights is never copied to pick one.

    Returns a :class:`Trace` aligned with ``params``; stacked groups come with a
    leading layer axis.
    """
    self.check_params(params if select is None else
                      jax.tree_util.tree_map(lambda a: a[0], params))
    h = self.check_input(x)
    if probes is None:
      probes = (None,) * len(params)
    zs, hs = [], []
    for g, (p, probe) in enumerate(zip(params, probes)):
      layer = self.layer(g)
      if self.is_stacked(g):
        xs, take = layer_stream(p, select)

        def step(h, xs_probe, layer=layer, take=take):
          xs, probe = xs_probe
          h, z = layer(h, take(xs), probe, scale)
          return h, (z, h)

        h, (z, hstack) = jax.lax.scan(step, h, (xs, probe))
        zs.append(z)
        hs.append(hstack)
      else:
        h, z = layer(h, take_sample(p, select), probe, scale)
        zs.append(z)
        hs.append(h)
    return Trace(tuple(zs), tuple(hs))

  def apply(self, params, x) -> jax.Array:
    """The network output ``h_K`` for ``x`` of shape ``(batch, sizes[0])``."""
    self.check_params(params)
    h = self.check_input(x)
    k = self.remat_block
    g = 0
    while g < len(params):
      if self.is_stacked(g):
        h = self._run_stack(g, h, params[g])
        g += 1
      elif k > 1 and not self.stack:
        # Block remat of an unrolled net: k consecutive layers in one checkpoint.
        gs = tuple(range(g, min(g + k, len(params))))
        layers = [self.layer(i, checkpoint=False) for i in gs]

        @jax.checkpoint
        def block(h, ps, layers=layers):
          for layer, p in zip(layers, ps):
            h = layer(h, p)[0]
          return h

        h = block(h, tuple(params[i] for i in gs))
        g = gs[-1] + 1
      else:
        # Per-layer remat; with block remat of a stacked net, the layers
        # around the stack are checkpointed one by one.
        h, _ = self.layer(g, checkpoint=k >= 1)(h, params[g])
        g += 1
    return h

  def __str__(self):
    extras = "".join(f", {f}=True" for f in ("stack", "residual", "batchnorm") if getattr(self, f))
    if self.remat_block > 1:
      extras += f", remat={self.remat}"
    return f"MLP(sizes={self.sizes}, activation={self.phi.name!r}{extras})"


def objective(net: MLP, loss: _losses.LossLike, reduction: str = "mean"):
  """The pure scalar objective ``(params, x, y) -> loss(net.apply(params, x), y)``.

  >>> net = MLP((3, 3, 2, 3), "relu")
  >>> loss_fn = objective(net, "softmax_cross_entropy")
  >>> g = jax.grad(loss_fn)(net.init(jax.random.PRNGKey(0)), jnp.ones((2, 3)), jnp.array([0, 2]))
  """
  loss = _losses.get(loss)
  if reduction not in ("mean", "sum"):
    raise ValueError(f"objective: reduction must be 'mean' or 'sum' (a scalar), got "
                     f"{reduction!r}; call the loss's fn with reduction='none' for per-example terms.")

  def loss_fn(params, x, y):
    return loss.fn(net.apply(params, x), y, reduction)

  return loss_fn
