"""Vanilla convolutional networks as pure functions over a frozen spec.

Channels last, batch first; d spatial axes (``ndim``), stride 1, odd kernels::

    h_0 = x                                            (batch, n_1, ..., n_d, c_0)
    z_l[b, x, o] = sum_{u, i} h_{l-1}[b, x + u - p, i] W_l[u, i, o] + b_l[o]
    h_l = phi(z_l)                                     (batch, n_1, ..., n_d, c_l)

with ``u`` over the taps of every spatial axis, ``p = (k - 1) / 2``, ``W_l``
HWIO, and ``x + u - p`` read modulo the size (``padding="circular"``, the
mean-field theory's, Xiao et al. 2018) or as zero outside (``"same"``).

With ``outputs=None`` the last convolution is the output layer and uses
``output_activation``. With ``outputs=n`` every convolution is hidden and a
readout follows, a :class:`Dense` layer with ``output_activation``: on the
global average pool over space, ``z = mean_x h_L[:, x, :] @ W + b``
(``readout="pool"``, ``c_L -> n``), or on the whole last feature map,
``z = flat(h_L) @ W + b`` (``readout="flatten"``, ``prod(spatial) c_L -> n``; the
spatial shape must then be given).

Parameters are a tuple of :class:`Conv` ``(W, b)``, then the readout's
``Dense``; ``stack``, ``remat`` and ``residual`` are the MLP's (:mod:`jaxbp.core.nets`),
on the hidden ``c -> c`` convolutions after the first.

A ConvNet is a plan on the family base (:mod:`jaxbp.core.base`); its layer
kinds and their hand-derived backward are in :mod:`jaxbp.core.conv_backprop`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Tuple, Union

import jaxbp.core.activations as _act
import jaxbp.core.checks as _checks
from jaxbp.core.base import Family, Group
from jaxbp.core.conv_backprop import (PADDINGS, ConvKind, FlattenReadout, PoolReadout,  # noqa: F401
                                      channel_bias, check_images, conv, dimension_numbers,
                                      global_average_pool, pad)
from jaxbp.core.layers import Conv, Dense  # noqa: F401

READOUTS = ("pool", "flatten")


@dataclasses.dataclass(frozen=True)
class ConvNet(Family):
  """A vanilla convolutional network spec: hashable, so it can be a static jit argument.

  Args:
    channels: ``(c_in, c_1, ..., c_L)``, one convolution per step.
    kernel_size: k, odd: every spatial axis has k taps, centred on the output.
    activation: the hidden convolutions' activation (name or ``Activation``).
    output_activation: the output layer's: the last convolution's with
      ``outputs=None``, else the readout's.
    padding: ``"circular"`` (periodic images, the theory's) or ``"same"`` (zeros).
    ndim: the number of spatial axes (1 for signals, 2 for images).
    outputs: None (the last convolution is the output), or n: a dense
      readout to n outputs.
    bias: whether layers have biases.
    residual: identity skips around the hidden ``c -> c`` convolutions.
    stack: store those as one stacked ``Conv`` and run them under ``lax.scan``.
    remat: checkpoint every layer (True), or blocks of k layers (an int k >= 2).
    readout: ``"pool"`` (global average pool, then dense) or ``"flatten"``
      (every position and channel into the dense layer).
    spatial: the input's spatial shape (an int for every axis, or a tuple);
      needed by ``readout="flatten"``, whose weights have ``prod(spatial) c_L`` rows.

  >>> net = ConvNet(channels=(3, 8, 8, 8), kernel_size=3, ndim=2)
  >>> params = net.init(jax.random.PRNGKey(0), init="delta_orthogonal")
  >>> net.apply(params, jnp.ones((2, 5, 5, 3))).shape
  (2, 5, 5, 8)
  """
  channels: Tuple[int, ...]
  kernel_size: int = 3
  activation: Union[str, _act.Activation] = "tanh"
  output_activation: Union[str, _act.Activation] = "identity"
  padding: str = "circular"
  ndim: int = 2
  outputs: Optional[int] = None
  bias: bool = True
  residual: bool = False
  stack: bool = False
  remat: Union[bool, int] = False
  readout: str = "pool"
  spatial: Optional[Union[int, Tuple[int, ...]]] = None

  def __post_init__(self):
    c = tuple(self.channels) if isinstance(self.channels, (list, tuple)) else self.channels
    if not isinstance(c, tuple) or len(c) < 2 or not all(_checks.is_int(s) and s >= 1 for s in c):
      raise ValueError(f"ConvNet: channels must list at least two positive ints (c_in, "
                       f"c_1, ...), e.g. (3, 16, 16); got {self.channels!r}.")
    object.__setattr__(self, "channels", tuple(int(s) for s in c))
    if self.padding not in PADDINGS:
      raise ValueError(f"ConvNet: padding must be one of {PADDINGS}, got {self.padding!r}.")
    if not _checks.is_int(self.kernel_size) or self.kernel_size < 1:
      raise ValueError(f"ConvNet: kernel_size must be a positive int, got {self.kernel_size!r}.")
    if self.kernel_size % 2 == 0:
      raise ValueError(
          f"ConvNet: padding={self.padding!r} needs an odd kernel_size, so that (k - 1) / 2 "
          f"taps on each side centre every output on its input; got {self.kernel_size}.")
    if not _checks.is_int(self.ndim) or self.ndim < 1:
      raise ValueError(f"ConvNet: ndim (spatial axes) must be a positive int, got {self.ndim!r}.")
    if self.outputs is not None:
      if not _checks.is_int(self.outputs) or self.outputs < 1:
        raise ValueError(f"ConvNet: outputs must be None or a positive int, got {self.outputs!r}.")
      object.__setattr__(self, "outputs", int(self.outputs))
    for name in ("kernel_size", "ndim"):
      object.__setattr__(self, name, int(getattr(self, name)))
    _checks.one_of(self.readout, READOUTS, "readout", "ConvNet")
    if self.spatial is not None:
      sp = (self.spatial,) * self.ndim if _checks.is_int(self.spatial) else self.spatial
      object.__setattr__(self, "spatial", _checks.int_tuple(sp, "spatial", "ConvNet"))
      if len(self.spatial) != self.ndim:
        raise ValueError(f"ConvNet: spatial must give {self.ndim} sizes (ndim={self.ndim}), "
                         f"got {self.spatial}.")
    if self.readout == "flatten" and (self.outputs is None or self.spatial is None):
      raise ValueError("ConvNet: readout='flatten' needs outputs=n and the input's spatial "
                       "shape, e.g. spatial=(8, 8): its weights have prod(spatial) * c_L rows.")
    hidden = self.channels[1:self.num_hidden + 1]
    shown = f"channels={self.channels}" + (
        "" if self.outputs is None else f" with outputs={self.outputs}")
    self._check_family("ConvNet", hidden, "hidden channels", shown)

  @property
  def num_conv(self) -> int:
    """Number of convolutions, L = len(channels) - 1."""
    return len(self.channels) - 1

  @property
  def num_hidden(self) -> int:
    """Number of hidden convolutions (those that use ``activation``)."""
    return self.num_conv if self.outputs is not None else self.num_conv - 1

  @property
  def kernel(self) -> Tuple[int, ...]:
    """The kernel's spatial shape ``(k,) * ndim``."""
    return (self.kernel_size,) * self.ndim

  @property
  def plan(self) -> Tuple[Group, ...]:
    """Convolutions (the hidden ``c -> c`` ones after the first stacked with
    ``stack``), then the readout with ``outputs=n``."""
    c, H, L = self.channels, self.num_hidden, self.num_conv
    if self.stack and H >= 2:
      layout = [(1, c[0], c[1], False), (H - 1, c[1], c[1], True)]
      layout += [(1, c[-2], c[-1], False)] * (L - H)
    else:
      layout = [(1, c[l], c[l + 1], False) for l in range(L)]
    kind = ConvKind(self.kernel, self.padding, self.bias)
    hidden = [self.outputs is not None or g < len(layout) - 1 for g in range(len(layout))]
    groups = [Group(kind, n, fi, fo, stacked=st, hidden=hidden[g],
                    residual=self.residual and g >= 1 and hidden[g])
              for g, (n, fi, fo, st) in enumerate(layout)]
    if self.outputs is not None:
      if self.readout == "flatten":
        groups.append(Group(FlattenReadout(self.bias), 1, math.prod(self.spatial) * c[-1],
                            self.outputs, hidden=False))
      else:
        groups.append(Group(PoolReadout(self.bias), 1, c[-1], self.outputs, hidden=False))
    return tuple(groups)

  def init(self, key, init="lecun", dtype=None):
    """:meth:`Family.init` with LeCun kernels by default (``delta_orthogonal`` is critical)."""
    return super().init(key, init, dtype)

  def is_readout(self, g: int) -> bool:
    """Whether params[g] is the dense readout."""
    return self.outputs is not None and g == len(self.plan) - 1

  def _params_form(self) -> str:
    return f"a tuple of {len(self.plan)} entries (Conv layers, then the Dense readout)"

  def check_input(self, x):
    """Validates ``x`` of shape ``(batch, *spatial, c_in)`` and returns it as an array."""
    return check_images(self._floating_input(x), self.ndim, self.channels[0], self.spatial)

  def __str__(self):
    extras = "".join(f", {f}=True" for f in ("stack", "residual") if getattr(self, f))
    if self.remat:
      extras += f", remat={self.remat}"
    if self.outputs is not None:
      extras += f", outputs={self.outputs}" + (
          f", readout='flatten', spatial={self.spatial}" if self.readout == "flatten" else "")
    return (f"ConvNet(channels={self.channels}, kernel_size={self.kernel_size}, "
            f"activation={self.phi.name!r}, padding={self.padding!r}, ndim={self.ndim}{extras})")
