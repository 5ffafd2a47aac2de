"""Elman recurrent networks on the family base: one tied group, one readout.

Batch first, inputs ``x`` of shape ``(batch, T, input_size)``::

    h_0 = 0
    z_t = x_t @ W_in + h_{t-1} @ W + b        t = 1 .. T
    h_t = phi(z_t)
    out = h_T @ W_out + b_out                 readout="last": (batch, output_size)
    out_t = h_t @ W_out + b_out               readout="all":  (batch, T, output_size)

The recurrent layer is a *tied* group of the plan: the same ``(W_in, W, b)`` at
every step, run under ``lax.scan``; the input projection ``x @ W_in + b`` is one
matmul over all steps before the scan. Its hand backward is backpropagation
through time, the same walk as a deep net's (:func:`jaxbp.backprop.backward`)::

    delta_t     = (dL/dh_t) * phi'(z_t),  dL/dh_t = delta_{t+1} @ W^T (+ the readout's
                                          share at step t with readout="all")
    dL/dW       = sum_t h_{t-1}^T delta_t,   dL/dW_in = sum_t x_t^T delta_t
    dL/db       = sum_{t, batch} delta_t

the sums over the steps formed after the scan as one matmul over ``T * batch``
rows. ``backprop.deltas(rnn, ...)`` gives every ``delta_t``, ``(T, batch, hidden)``.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Tuple, Union

import jax
import jax.numpy as jnp

import jaxbp.core.activations as _act
import jaxbp.core.checks as _checks
from jaxbp.core.base import Family, Group
from jaxbp.core.kinds import DenseKind, check_bias
from jaxbp.core.layers import Dense

READOUTS = ("last", "all")


class RNNParams(NamedTuple):
  """An Elman network's parameters.

  Attributes:
    W_in: input weights ``(input_size, hidden_size)``.
    W: recurrent weights ``(hidden_size, hidden_size)``.
    b: the recurrent bias ``(hidden_size,)``, or None with ``bias=False``.
    W_out: readout weights ``(hidden_size, output_size)``.
    b_out: readout bias ``(output_size,)``, or None.
  """
  W_in: jax.Array
  W: jax.Array
  b: Optional[jax.Array]
  W_out: jax.Array
  b_out: Optional[jax.Array]


class Recurrent(NamedTuple):
  """The recurrent layer's share of :class:`RNNParams`: ``(W_in, W, b)``."""
  W_in: jax.Array
  W: jax.Array
  b: Optional[jax.Array]


@dataclasses.dataclass(frozen=True)
class RecurrentKind:
  """``z_t = u_t + h_{t-1} @ W`` with ``u = x @ W_in + b`` for all steps at once.

  A tied kind: ``forward`` and ``backward`` take ``(params, u_t)``.
  """
  bias: bool = True
  params_type = Recurrent

  def init(self, initializer, w_key, b_key, lead, fan_in, fan_out, dtype):
    in_key, rec_key = jax.random.split(w_key)
    b = initializer.bias(b_key, (fan_out,), dtype) if self.bias else None
    return Recurrent(initializer.weight(in_key, (fan_in, fan_out), dtype),
                     initializer.weight(rec_key, (fan_out, fan_out), dtype), b)

  def check(self, p, lead, fan_in, fan_out):
    for name, want in (("W_in", (fan_in, fan_out)), ("W", (fan_out, fan_out))):
      if jnp.shape(getattr(p, name)) != want:
        return f"{name} has shape {jnp.shape(getattr(p, name))}, expected {want}."
    return check_bias(p, (), fan_out, self.bias)

  def prepare(self, p, stream):
    u = stream @ p.W_in
    return u if p.b is None else u + p.b[None, None, :]

  def forward(self, h, p_u, *, scale=None):
    p, u = p_u
    if scale is not None:
      raise ValueError("backprop: a RowScale (scale=) is a feed-forward dense option; an "
                       "RNN takes none.")
    return u + h @ p.W

  def backward(self, h_in, p_u, z, delta, *, scale=None, param_grads=True):
    if param_grads:
      raise ValueError("RecurrentKind: a tied layer's gradient is the sum over its steps "
                       "(tied_grads), not one step's.")
    return None, delta @ p_u[0].W.T

  def tied_grads(self, h_ins, p, zs, deltas, stream):
    n = p.W.shape[0]
    D = deltas.reshape(-1, n)
    db = jnp.sum(D, axis=0) if p.b is not None else None
    return Recurrent(stream.reshape(-1, stream.shape[-1]).T @ D, h_ins.reshape(-1, n).T @ D, db)

  def tied_example_grads(self, h_ins, p, zs, deltas, stream):
    db = jnp.sum(deltas, axis=0) if p.b is not None else None
    return Recurrent(jnp.einsum("tbi,tbj->bij", stream, deltas),
                     jnp.einsum("tbi,tbj->bij", h_ins, deltas), db)


@dataclasses.dataclass(frozen=True)
class SequenceReadout(DenseKind):
  """``out_t = h_t @ W + b`` at every step: ``(T, batch, n) -> (batch, T, out)``."""

  def forward(self, hs, p, *, scale=None):
    z = jnp.swapaxes(hs, 0, 1) @ p.W
    return z if p.b is None else z + p.b[None, None, :]

  def backward(self, hs, p, z, delta, *, scale=None, param_grads=True):
    grads = None
    if param_grads:
      grads = Dense(jnp.einsum("tbh,bto->ho", hs, delta),
                    jnp.sum(delta, axis=(0, 1)) if p.b is not None else None)
    return grads, jnp.einsum("bto,ho->tbh", delta, p.W)

  def example_grads(self, hs, p, z, delta):
    return Dense(jnp.einsum("tbh,bto->bho", hs, delta),
                 jnp.sum(delta, axis=1) if p.b is not None else None)


@dataclasses.dataclass(frozen=True)
class RNN(Family):
  """An Elman recurrent network spec: hashable, a static jit argument.

  Args:
    input_size, hidden_size, output_size: the widths.
    activation: ``phi`` of the recurrence (name or ``Activation``).
    output_activation: the readout's.
    readout: ``"last"`` (the output of ``h_T``) or ``"all"`` (every step's).
    bias: whether the recurrence and the readout have biases.
    remat: checkpoint every step (True) or blocks of k steps (an int k >= 2).

  >>> rnn = RNN(input_size=3, hidden_size=8, output_size=2)
  >>> params = rnn.init(jax.random.PRNGKey(0), init="lecun")
  >>> rnn.apply(params, jnp.ones((4, 5, 3))).shape
  (4, 2)
  """
  input_size: int
  hidden_size: int
  output_size: int
  activation: Union[str, _act.Activation] = "tanh"
  output_activation: Union[str, _act.Activation] = "identity"
  readout: str = "last"
  bias: bool = True
  remat: Union[bool, int] = False

  def __post_init__(self):
    for name in ("input_size", "hidden_size", "output_size"):
      object.__setattr__(self, name, _checks.positive_int(getattr(self, name), name, "RNN"))
    _checks.one_of(self.readout, READOUTS, "readout", "RNN")
    _checks.boolean(self.bias, "bias", "RNN")
    self._check_family("RNN", (), "", "")

  @property
  def plan(self) -> Tuple[Group, ...]:
    every = self.readout == "all"
    out = SequenceReadout(self.bias) if every else DenseKind(self.bias)
    return (Group(RecurrentKind(self.bias), 1, self.input_size, self.hidden_size, tied=True),
            Group(out, 1, self.hidden_size, self.output_size, hidden=False,
                  reads="all" if every else "last"))

  def entry(self, x):
    # h_0 = 0; the scan steps over time, so the sequence goes time-major.
    return jnp.zeros((x.shape[0], self.hidden_size), x.dtype), jnp.swapaxes(x, 0, 1)

  def split_params(self, params):
    if not isinstance(params, RNNParams):
      raise TypeError("RNN params are an RNNParams")
    return (Recurrent(params.W_in, params.W, params.b), Dense(params.W_out, params.b_out))

  def join_params(self, entries):
    rec, out = entries
    rec = Recurrent(None, None, None) if rec is None else rec
    out = Dense(None, None) if out is None else out
    return RNNParams(rec.W_in, rec.W, rec.b, out.W, out.b)

  def delta_view(self, deltas):
    return deltas[0]

  def _params_form(self) -> str:
    return "an RNNParams(W_in, W, b, W_out, b_out)"

  def check_input(self, x):
    """Validates ``x`` of shape ``(batch, T, input_size)`` and returns it as an array."""
    x = self._floating_input(x)
    if x.ndim != 3 or x.shape[2] != self.input_size:
      raise ValueError(f"x has shape {x.shape}, expected (batch, T, {self.input_size}) for "
                       f"{self}: batch first, then time. One sequence needs a batch axis: x[None].")
    if x.shape[0] == 0 or x.shape[1] == 0:
      raise ValueError(f"x has shape {x.shape}: an empty batch or a sequence of no steps.")
    return x

  def __str__(self):
    extras = f", remat={self.remat}" if self.remat else ""
    return (f"RNN(input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"output_size={self.output_size}, activation={self.phi.name!r}, "
            f"readout={self.readout!r}{extras})")
