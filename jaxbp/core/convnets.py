"""Vanilla convolutional networks as pure functions over a frozen spec.

Channels last, batch first; d spatial axes (``ndim``), stride 1, odd kernels::

    h_0 = x                                            (batch, n_1, ..., n_d, c_0)
    z_l[b, x, o] = sum_{u, i} h_{l-1}[b, x + u - p, i] W_l[u, i, o] + b_l[o]
    h_l = phi(z_l)                                     (batch, n_1, ..., n_d, c_l)

with ``x`` and ``u`` multi-indices, ``u`` over the taps ``0 .. k-1`` of every
spatial axis, ``p = (k - 1) / 2`` and ``W_l`` of shape ``(k, ..., k, c_{l-1},
c_l)`` (HWIO). The index ``x + u - p`` is read modulo the spatial size with
``padding="circular"`` (the mean-field theory's, Xiao et al. 2018: every
position is alike) and as zero outside the image with ``padding="same"``. Both
are a VALID convolution of the input padded by ``p`` on each side
(:func:`pad`): wrapped, or with zeros.

With ``outputs=None`` the last convolution is the output layer and uses
``output_activation``. With ``outputs=n`` every convolution is hidden and a
readout follows: a global average pool over space and a :class:`Dense` layer
``c_L -> n`` with ``output_activation``, ``z = mean_x h_L[:, x, :] @ W + b``.

Parameters are a tuple of :class:`Conv` ``(W, b)``, then the readout's
``Dense``. As for :class:`jaxbp.core.nets.MLP`, ``stack=True`` stores the
identical hidden ``c -> c`` convolutions after the first as one ``Conv`` with a
leading layer axis and runs them under ``lax.scan``, so compile time does not
grow with depth; ``remat=True`` checkpoints every layer. ``residual=True``
adds the input back around those hidden ``c -> c`` layers, ``h_l = h_{l-1} +
phi(z_l)``.

The hand-derived backward pass is :mod:`jaxbp.core.conv_backprop`.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp.core.activations as _act
import jaxbp.core.initializers as _init
from jaxbp.core.layers import Dense, Trace, layer_forward

PADDINGS = ("circular", "same")


class Conv(NamedTuple):
  """One stride-1 convolution ``z = conv(h, W) + b`` (or a stack, with a leading axis).

  Attributes:
    W: the kernel, ``(k, ..., k, c_in, c_out)`` (HWIO); ``(L, k, ..., k, c, c)`` stacked.
    b: biases ``(c_out,)``, ``(L, c)`` stacked; None when the net has no bias.
  """
  W: jax.Array
  b: Optional[jax.Array]


def dimension_numbers(ndim: int) -> jax.lax.ConvDimensionNumbers:
  """Channels-last input and output, HWIO kernel, for ``ndim`` spatial axes."""
  spatial = tuple(range(1, ndim + 1))
  return jax.lax.ConvDimensionNumbers(lhs_spec=(0, ndim + 1) + spatial,
                                      rhs_spec=(ndim + 1, ndim) + tuple(range(ndim)),
                                      out_spec=(0, ndim + 1) + spatial)


def pad(h, kernel: Tuple[int, ...], padding: str):
  """``h`` (batch, *spatial, c) padded by ``(k - 1) / 2`` taps on each side of every
  spatial axis: wrapped around for ``"circular"``, zeros for ``"same"``."""
  widths = [(0, 0)] + [((k - 1) // 2, k // 2) for k in kernel] + [(0, 0)]
  return jnp.pad(h, widths, mode="wrap" if padding == "circular" else "constant")


def conv(h, W, padding: str):
  """``conv(h, W)[b, x, o] = sum_{u, i} h[b, x + u - p, i] W[u, i, o]``, stride 1.

  A VALID cross-correlation (``lax.conv_general_dilated``) of the padded input
  (:func:`pad`), so the output has the input's spatial shape.
  """
  d = W.ndim - 2
  return jax.lax.conv_general_dilated(pad(h, W.shape[:d], padding), W, (1,) * d, "VALID",
                                      dimension_numbers=dimension_numbers(d))


def channel_bias(b, ndim: int):
  """A bias ``(c,)`` shaped to add to ``(batch, *spatial, c)`` under strict rank promotion."""
  return b.reshape((1,) * (ndim + 1) + b.shape)


def conv_layer_forward(h, p: Conv, phi: _act.Activation, padding: str, residual: bool = False):
  """One convolution layer: ``z = conv(h, W) + b``, ``h_next = phi(z)`` (``+ h`` if residual).

  Returns ``(h_next, z)``.
  """
  z = conv(h, p.W, padding)
  if p.b is not None:
    z = z + channel_bias(p.b, h.ndim - 2)
  a = phi.fn(z)
  return (h + a if residual else a), z


def global_average_pool(h):
  """The mean over the spatial axes: ``(batch, *spatial, c) -> (batch, c)``."""
  return jnp.mean(h, axis=tuple(range(1, h.ndim - 1)))


def _positive_int(value) -> bool:
  return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 1


@dataclasses.dataclass(frozen=True)
class ConvNet(_act.NetActivations):
  """A vanilla convolutional network spec: hashable, so it can be a static jit argument.

  Args:
    channels: ``(c_in, c_1, ..., c_L)``, one convolution per step.
    kernel_size: k, odd: every spatial axis has k taps, centred on the output.
    activation: the hidden convolutions' activation (name or ``Activation``).
    output_activation: the output layer's: the last convolution's with
      ``outputs=None``, else the readout's.
    padding: ``"circular"`` (periodic images, the theory's) or ``"same"`` (zeros).
    ndim: the number of spatial axes (1 for signals, 2 for images).
    outputs: None (the last convolution is the output), or n: global average
      pool and a dense ``c_L -> n`` readout.
    bias: whether layers have biases.
    residual: identity skips around the hidden ``c -> c`` convolutions.
    stack: store those as one stacked ``Conv`` and run them under ``lax.scan``.
    remat: checkpoint every layer (``jax.checkpoint``).

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
  remat: bool = False

  def __post_init__(self):
    c = tuple(self.channels) if isinstance(self.channels, (list, tuple)) else self.channels
    if not isinstance(c, tuple) or len(c) < 2 or not all(_positive_int(s) for s in c):
      raise ValueError(f"ConvNet: channels must list at least two positive ints (c_in, "
                       f"c_1, ...), e.g. (3, 16, 16); got {self.channels!r}.")
    object.__setattr__(self, "channels", tuple(int(s) for s in c))
    if self.padding not in PADDINGS:
      raise ValueError(f"ConvNet: padding must be one of {PADDINGS}, got {self.padding!r}.")
    if not _positive_int(self.kernel_size):
      raise ValueError(f"ConvNet: kernel_size must be a positive int, got {self.kernel_size!r}.")
    if self.kernel_size % 2 == 0:
      raise ValueError(
          f"ConvNet: padding={self.padding!r} needs an odd kernel_size, so that (k - 1) / 2 "
          f"taps on each side centre every output on its input; got {self.kernel_size}.")
    if not _positive_int(self.ndim):
      raise ValueError(f"ConvNet: ndim (spatial axes) must be a positive int, got {self.ndim!r}.")
    if self.outputs is not None and not _positive_int(self.outputs):
      raise ValueError(f"ConvNet: outputs must be None or a positive int, got {self.outputs!r}.")
    for name in ("kernel_size", "ndim"):
      object.__setattr__(self, name, int(getattr(self, name)))
    if self.outputs is not None:
      object.__setattr__(self, "outputs", int(self.outputs))
    if not _act.get(self.activation).elementwise:
      raise ValueError("ConvNet: softmax can only be the output_activation, not a hidden one.")
    _act.get(self.output_activation)
    if not isinstance(self.remat, (bool, np.bool_)):
      raise ValueError(f"ConvNet: remat must be a bool, got {self.remat!r}.")
    hidden = self.channels[1:self.num_hidden + 1]
    for flag in ("stack", "residual"):
      if getattr(self, flag) and len(set(hidden)) > 1:
        raise ValueError(
            f"ConvNet: {flag}=True needs equal hidden channels, got channels={self.channels}"
            f"{'' if self.outputs is None else f' with outputs={self.outputs}'}.")

  # -- structure ---------------------------------------------------------------

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
  def groups(self) -> Tuple[Tuple[int, int, int], ...]:
    """One ``(num_layers, c_in, c_out)`` per params entry (the readout's last)."""
    c, H, L = self.channels, self.num_hidden, self.num_conv
    if self.stack and H >= 2:
      conv = [(1, c[0], c[1]), (H - 1, c[1], c[1])] + [(1, c[-2], c[-1])] * (L - H)
    else:
      conv = [(1, c[l], c[l + 1]) for l in range(L)]
    if self.outputs is not None:
      conv.append((1, c[-1], self.outputs))
    return tuple(conv)

  def is_stacked(self, g: int) -> bool:
    """Whether params[g] carries a leading layer axis."""
    return self.stack and self.num_hidden >= 2 and g == 1

  def is_readout(self, g: int) -> bool:
    """Whether params[g] is the dense readout."""
    return self.outputs is not None and g == len(self.groups) - 1

  def is_hidden(self, g: int) -> bool:
    """Whether params[g] holds hidden convolutions."""
    return not self.is_readout(g) and (self.outputs is not None or g < len(self.groups) - 1)

  def is_residual(self, g: int) -> bool:
    """Whether the layers of params[g] add their input back."""
    return self.residual and self.is_hidden(g) and g >= 1

  # -- parameters --------------------------------------------------------------

  def init(self, key, init: _init.InitializerLike = "lecun", dtype=None):
    """Draws parameters, one PRNG key per params entry (per layer within a stack).

    Args:
      key: a ``jax.random.PRNGKey``.
      init: a name (``"delta_orthogonal"``, ``"lecun"``, ``"he"``...) or an
        ``Initializer`` such as ``gaussian(sigma_w2=1.76, sigma_b2=0.05)``; kernels
        are drawn by its conv form (fan-in ``k^d c_in``), the readout by its dense one.
      dtype: float dtype; default float64 when x64 is enabled, else float32.
    """
    initializer = _init.get(init)
    dtype = jax.dtypes.canonicalize_dtype(dtype or jnp.float64)
    params = []
    for g, (n, c_in, c_out) in enumerate(self.groups):
      key, layer_key = jax.random.split(key)
      w_key, b_key = jax.random.split(layer_key)
      if self.is_readout(g):
        b = initializer.bias(b_key, (c_out,), dtype) if self.bias else None
        params.append(Dense(initializer.weight(w_key, (c_in, c_out), dtype), b))
        continue
      shape = self.kernel + (c_in, c_out)
      if self.is_stacked(g):
        keys = jax.random.split(w_key, n)
        W = jax.vmap(lambda k: _init.conv_weight(initializer, k, shape, dtype))(keys)
        lead = (n,)
      else:
        W, lead = _init.conv_weight(initializer, w_key, shape, dtype), ()
      b = initializer.bias(b_key, lead + (c_out,), dtype) if self.bias else None
      params.append(Conv(W, b))
    return tuple(params)

  def check_params(self, params) -> None:
    """Raises a ValueError naming the first leaf whose shape does not fit this net."""
    if not isinstance(params, (tuple, list)) or len(params) != len(self.groups):
      got = len(params) if isinstance(params, (tuple, list)) else type(params).__name__
      raise ValueError(f"params do not fit {self}: expected a tuple of {len(self.groups)} "
                       f"entries (Conv layers, then the Dense readout), got {got}. Create "
                       "them with net.init(key).")
    for g, (p, (n, c_in, c_out)) in enumerate(zip(params, self.groups)):
      kind = Dense if self.is_readout(g) else Conv
      if not isinstance(p, kind):
        raise ValueError(f"params[{g}] is a {type(p).__name__}, expected {kind.__name__} for "
                         f"net {self}. Create the params with net.init(key).")
      lead = (n,) if self.is_stacked(g) else ()
      want = (c_in, c_out) if kind is Dense else lead + self.kernel + (c_in, c_out)
      got = jnp.shape(p.W)
      if got != want:
        if kind is Conv and len(got) != len(want):
          why = (f"a kernel has layout {'(L, ' if lead else '('}k{', k' * (self.ndim - 1)}, "
                 f"c_in, c_out) (HWIO) for ndim={self.ndim}")
        elif kind is Conv and got[len(lead):-2] != self.kernel:
          why = f"kernel_size={self.kernel_size}"
        else:
          why = f"channels {c_in} -> {c_out}"
        raise ValueError(f"params[{g}].W has shape {got}, expected {want}: {why}. Were the "
                         "params made for another net?")
      if self.bias and (p.b is None or jnp.shape(p.b) != lead + (c_out,)):
        raise ValueError(f"params[{g}].b has shape {None if p.b is None else jnp.shape(p.b)}, "
                         f"expected {lead + (c_out,)} for net channels={self.channels}.")
      if not self.bias and p.b is not None:
        raise ValueError(f"params[{g}].b should be None: the net was built with bias=False.")

  def check_input(self, x) -> jax.Array:
    """Validates ``x`` of shape ``(batch, *spatial, c_in)`` and returns it as an array."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise TypeError(f"x must be floating point, got dtype {x.dtype}; convert it with "
                      "x.astype(jnp.float32) (or float64).")
    c_in, want = self.channels[0], "(batch" + ", n" * self.ndim + f", {self.channels[0]})"
    if x.ndim != self.ndim + 2:
      raise ValueError(
          f"x has shape {x.shape} (rank {x.ndim}), expected rank {self.ndim + 2}: {want}, "
          f"channels last, for ndim={self.ndim}. A single example needs a batch axis: x[None].")
    if x.shape[-1] != c_in:
      hint = (" It looks channels-first: move the channels last with jnp.moveaxis(x, 1, -1)."
              if x.shape[1] == c_in else "")
      raise ValueError(f"x has shape {x.shape}, expected {want}: {c_in} input channels, "
                       f"last.{hint}")
    if x.size == 0:
      raise ValueError(f"x has shape {x.shape}: an empty batch or image.")
    return x

  # -- forward -----------------------------------------------------------------

  def layer(self, g):
    """Group g's layer forward, ``(h, p) -> (h_next, z)``, checkpointed with remat."""
    if self.is_readout(g):
      phi_out = self.phi_out

      def fn(h, p):
        return layer_forward(global_average_pool(h), p, phi_out)
    else:
      phi = self.phi if self.is_hidden(g) else self.phi_out
      padding, residual = self.padding, self.is_residual(g)

      def fn(h, p):
        return conv_layer_forward(h, p, phi, padding, residual)

    return jax.checkpoint(fn) if self.remat else fn

  def trace(self, params, x) -> Trace:
    """Forward pass that keeps every z_l and h_l, aligned with the params (stacked
    groups with a leading layer axis; the readout's are ``(batch, outputs)``)."""
    self.check_params(params)
    h = self.check_input(x)
    zs, hs = [], []
    for g, p in enumerate(params):
      layer = self.layer(g)
      if self.is_stacked(g):

        def step(h, p, layer=layer):
          h, z = layer(h, p)
          return h, (z, h)

        h, (z, hstack) = jax.lax.scan(step, h, p)
        zs.append(z)
        hs.append(hstack)
      else:
        h, z = layer(h, p)
        zs.append(z)
        hs.append(h)
    return Trace(tuple(zs), tuple(hs))

  def apply(self, params, x) -> jax.Array:
    """The network output: ``(batch, *spatial, c_L)``, or ``(batch, outputs)``."""
    self.check_params(params)
    h = self.check_input(x)
    for g, p in enumerate(params):
      layer = self.layer(g)
      if self.is_stacked(g):
        h = jax.lax.scan(lambda h, p, layer=layer: (layer(h, p)[0], None), h, p)[0]
      else:
        h = layer(h, p)[0]
    return h

  def __str__(self):
    extras = "".join(f", {f}=True" for f in ("stack", "residual", "remat") if getattr(self, f))
    if self.outputs is not None:
      extras += f", outputs={self.outputs}"
    return (f"ConvNet(channels={self.channels}, kernel_size={self.kernel_size}, "
            f"activation={self.phi.name!r}, padding={self.padding!r}, ndim={self.ndim}{extras})")
