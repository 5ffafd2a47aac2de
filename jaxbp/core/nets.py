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
``remat=k`` checkpoints blocks of k layers (~L / k + 3 k stored activations
instead of ~L; k ~ sqrt(L) is best; Chen et al. 2016).

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
from typing import Tuple, Union

import numpy as np

import jaxbp.core.activations as _act
import jaxbp.core.checks as _checks
import jaxbp.core.losses as _losses
from jaxbp.core.base import Family, Group
from jaxbp.core.kinds import BatchNormKind, DenseKind, layer_forward  # noqa: F401
from jaxbp.core.layers import (BatchNormDense, Dense, RowScale, Trace, batch_norm,  # noqa: F401
                                layer_inputs, layer_stream, take_sample, unstack)


@dataclasses.dataclass(frozen=True)
class MLP(Family):
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
    if not all(_checks.is_int(s) and s >= 1 for s in sizes):
      raise ValueError(f"MLP: every size must be a positive int; got sizes={sizes!r}.")
    object.__setattr__(self, "sizes", tuple(int(s) for s in sizes))
    self._check_family("MLP", self.sizes[1:-1], "hidden widths", f"sizes={self.sizes}")
    if not (isinstance(self.bn_eps, (int, float)) and self.bn_eps > 0):
      raise ValueError(f"MLP: bn_eps must be a number > 0, got {self.bn_eps!r}.")

  @classmethod
  def uniform(cls, in_size: int, width: int, depth: int, out_size: int, **kwargs) -> "MLP":
    """A net with ``depth`` hidden layers of equal ``width``: sizes (in, width*depth, out)."""
    if not isinstance(depth, (int, np.integer)) or depth < 1:
      raise ValueError(f"MLP.uniform: depth must be an int >= 1, got {depth!r}.")
    return cls(sizes=(in_size,) + (width,) * depth + (out_size,), **kwargs)

  @property
  def num_layers(self) -> int:
    """Number of affine layers, K = len(sizes) - 1."""
    return len(self.sizes) - 1

  @property
  def plan(self) -> Tuple[Group, ...]:
    """Dense layers; with ``stack`` (and K >= 3) the hidden ``width -> width``
    layers form one stacked group between the first and the last layer."""
    s, K = self.sizes, self.num_layers
    hidden = BatchNormKind(self.bn_eps) if self.batchnorm else DenseKind(self.bias)
    if self.stack and K >= 3:
      layout = [(1, s[0], s[1], False), (K - 2, s[1], s[1], True), (1, s[-2], s[-1], False)]
    else:
      layout = [(1, s[k], s[k + 1], False) for k in range(K)]
    last = len(layout) - 1
    return tuple(Group(hidden if g < last else DenseKind(self.bias), n, fi, fo, stacked=st,
                       hidden=g < last, residual=self.residual and 1 <= g < last)
                 for g, (n, fi, fo, st) in enumerate(layout))

  def is_batchnorm(self, g: int) -> bool:
    """Whether params[g] holds :class:`BatchNormDense` layers."""
    return isinstance(self.plan[g].kind, BatchNormKind)

  def _params_form(self) -> str:
    return f"a tuple of {len(self.plan)} Dense layers"

  def check_input(self, x):
    """Validates ``x`` of shape ``(batch, sizes[0])`` and returns it as an array."""
    x = self._floating_input(x)
    if x.ndim != 2 or x.shape[1] != self.sizes[0]:
      raise ValueError(
          f"x has shape {x.shape}, expected (batch, {self.sizes[0]}) for net sizes="
          f"{self.sizes}. A single example needs a batch axis: x[None].")
    if x.shape[0] == 0:
      raise ValueError(f"x has shape {x.shape}: an empty batch (a mean over no examples "
                       "is 0/0, a nan loss); pass at least one row.")
    return x

  def __str__(self):
    extras = "".join(f", {f}=True" for f in ("stack", "residual", "batchnorm") if getattr(self, f))
    if self.remat_block > 1:
      extras += f", remat={self.remat}"
    return f"MLP(sizes={self.sizes}, activation={self.phi.name!r}{extras})"


def objective(net: Family, loss: _losses.LossLike, reduction: str = "mean"):
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
