"""What :func:`jaxbp.measure.inspect.inspect` returns: a per-layer report that is a pytree.

The layer names, kinds and shapes are static (the pytree's aux data), so a
report passes through ``jit`` and ``vmap``; the numbers are its leaves and
gain a leading axis under ``vmap``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional, Tuple

import jax
import numpy as np

import jaxbp.measure.theory_profile as theory_profile


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class LayerReport:
  """Gradient flow of one model at one point, layer by layer in execution order.

  Attributes:
    names: ``path · primitive`` per layer, e.g. ``params/Dense_2/kernel · dot_general``;
      a layer inside ``lax.scan`` carries its iteration, ``.../kernel[3] · dot_general``;
      a tap carries its name, ``ln1 · tap``.
    kinds: ``"dot_general"``, ``"conv_general_dilated"``, ``"norm"`` or ``"tap"``. The
      probe of a matmul or conv sits on its output plus its bias, before any
      normalisation; where the model then normalises that ``z`` by its own
      statistics (batch or layer norm), a ``"norm"`` row follows with the probe
      after the normalisation, its scale and its shift, named after the same weight
      (``params/Dense_0/kernel · norm``).
    shapes: the shape of each ``z_l`` (per iteration inside a scan), in the
      model's layout (a model vmapped over the batch shows ``(batch, out)``).
    activations: the elementwise op applied to ``z_l`` when it is one mean-field
      theory knows (``"tanh"``, ``"sigmoid"``, ``"relu"``), else None.
    loss: the loss value.
    q: ``(L,)`` mean over batch and units of ``z_l**2``.
    delta_sq: ``(L,)`` sum over batch and units of ``delta_l**2``, ``delta_l = dL/dz_l``.
    grad_sq: ``||dL/dleaf||**2`` per float param leaf, keyed by its path.
    log_slope: the least-squares slope of ``ln delta_sq`` against the layer index
      ``l = 1..L``: positive when gradients vanish towards the input; mean-field
      theory predicts ``-ln chi_1`` for a chain of equal dense layers.
    sigma_w2: ``(L,)`` ``fan_in * mean(W_l**2)``, the mean-field sigma_w^2 of the
      layer's weight (nan for a tap or norm row).
    sigma_b2: ``(L,)`` ``mean(b_l**2)``, its sigma_b^2 (0 without a bias, nan for a
      tap or norm row).
    taken: ``(L,)`` bool, False for a layer in a ``lax.cond``/``switch`` branch that
      did not run: its q and delta_sq are 0, its sigma_w2/sigma_b2 nan, and
      log_slope leaves it out. None (all taken) for a report built by hand.

  A report stacked along leading axes (``jax.vmap(inspect)``, or
  ``fit(..., monitor=k).reports`` over steps) keeps one row per layer; :meth:`at`
  picks one entry, and :meth:`table`/:meth:`summary` show the entry ``index``.
  """
  names: Tuple[str, ...]
  kinds: Tuple[str, ...]
  shapes: Tuple[Tuple[int, ...], ...]
  activations: Tuple[Optional[str], ...]
  loss: jax.Array
  q: jax.Array
  delta_sq: jax.Array
  grad_sq: Mapping[str, jax.Array]
  log_slope: jax.Array
  sigma_w2: jax.Array
  sigma_b2: jax.Array
  taken: Optional[jax.Array] = None

  def tree_flatten(self):
    return ((self.loss, self.q, self.delta_sq, dict(self.grad_sq), self.log_slope,
             self.sigma_w2, self.sigma_b2, self.taken),
            (self.names, self.kinds, self.shapes, self.activations))

  @classmethod
  def tree_unflatten(cls, aux, children):
    return cls(*aux, *children)

  def __len__(self) -> int:
    return len(self.names)

  @property
  def lead_shape(self) -> Tuple[int, ...]:
    """The leading (stacked) axes of the arrays: ``()`` for a single report."""
    return tuple(np.shape(self.q)[:-1])

  def _index(self, index) -> Tuple[int, ...]:
    lead = self.lead_shape
    n = math.prod(lead)
    if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
      if not -n <= index < n:
        raise IndexError(f"LayerReport: index {index} is out of range for {n} stacked "
                         f"entries (leading axes {lead}).")
      return tuple(int(i) for i in np.unravel_index(int(index) % n, lead))
    if not (isinstance(index, tuple) and len(index) == len(lead) and all(
        isinstance(i, (int, np.integer)) and not isinstance(i, bool) and 0 <= i < m
        for i, m in zip(index, lead))):
      raise IndexError(f"LayerReport: index must be an int below {n} or a tuple of "
                       f"{len(lead)} non-negative ints within the leading axes {lead}, "
                       f"got {index!r}.")
    return tuple(int(i) for i in index)

  def at(self, index) -> "LayerReport":
    """The single report at ``index`` of a stacked one: an int (row-major over
    the leading axes, negative from the end) or a tuple, one int per leading axis."""
    if not self.lead_shape:
      raise IndexError("LayerReport.at: this report is a single one (q has shape "
                       f"{np.shape(self.q)}), there is nothing to index.")
    index = self._index(index)
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[index], self)

  def table(self, index=0) -> str:
    """The per-layer table as text, with mean-field theory beside it where there
    is one (:meth:`theory`). A stacked report shows its entry ``index`` (see
    :meth:`at`; the first by default) and says which in its first line."""
    if self.lead_shape:
      at = self._index(index)
      flat = int(np.ravel_multi_index(at, self.lead_shape))
      return (f"entry {flat} {list(at)} of {math.prod(self.lead_shape)} stacked (leading "
              f"axes {self.lead_shape}); table(index=k) shows another\n"
              + self.at(at).table())
    q, d = np.asarray(self.q), np.asarray(self.delta_sq)
    taken = np.ones(len(self), bool) if self.taken is None else np.asarray(self.taken)
    theory = self.theory()
    th = theory.full(len(self)) if theory is not None else None
    rows = [("#", "layer", "z shape", "q", "delta_sq", "ln delta_sq", "q theory",
             "ln delta_sq theory")]
    for l, (name, shape) in enumerate(zip(self.names, self.shapes)):
      ln = math.log(d[l]) if d[l] > 0 else -math.inf
      pred = ("", "") if th is None or np.isnan(th["q"][l]) else (
          f"{th['q'][l]:.4g}", f"{th['ln_delta_sq'][l]:.3f}")
      values = (f"{q[l]:.4g}", f"{d[l]:.4g}", f"{ln:.3f}") if taken[l] else (
          "not taken", "", "")
      rows.append((str(l + 1), name, "x".join(map(str, shape)) or "()") + values + pred)
    if th is None:
      rows = [r[:6] for r in rows]
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if j != 1 else c.ljust(w) for j, (c, w) in
                       enumerate(zip(r, widths))).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"loss {float(self.loss):.6g}   log_slope (d ln delta_sq / d layer) "
                 f"{float(self.log_slope):.4g}   layers {len(self)}")
    if "norm" in self.kinds:
      lines.append("a matmul/conv row's z is before normalisation; its '· norm' row is after "
                   "it (normalised, scaled and shifted)")
    if not taken.all():
      lines.append(f"{int((~taken).sum())} layer(s) in cond branches not taken: q and "
                   "delta_sq 0, left out of log_slope")
    if theory is not None:
      lines.append(theory.table())
    return "\n".join(lines)

  def summary(self, index=0) -> str:
    """Prints :meth:`table` (of entry ``index`` of a stacked report) and returns it."""
    text = self.table(index)
    print(text)
    return text

  def theory(self, min_layers: int = 3):
    """Mean-field predictions beside the measurements over the longest chain of
    dense layers with one activation: a
    :class:`~jaxbp.measure.theory_profile.TheoryProfile`, or None if there is none."""
    return theory_profile.predict(self, min_layers)

  def plot(self, path, theory="auto"):
    """Writes the per-layer profile to ``path``: ln delta_sq and q against layer,
    the mean-field prediction dashed where there is one.

    Args:
      path: the figure's file (its suffix picks the format: .png, .pdf, .svg).
      theory: ``"auto"`` (:meth:`theory`), None (no theory), a
        :class:`~jaxbp.measure.theory_profile.TheoryProfile`, or a mapping with
        ``"q"`` and/or ``"ln_delta_sq"`` arrays of length L (nan where none).

    A stacked report plots its first entry (``report.at(k).plot(...)`` for another).
    """
    if self.lead_shape:
      return self.at(0).plot(path, theory)
    if isinstance(theory, str):
      theory = self.theory()
    if isinstance(theory, theory_profile.TheoryProfile):
      theory = theory.full(len(self))
    import matplotlib  # optional, heavy: only for plotting
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    layer = np.arange(1, len(self) + 1)
    d = np.asarray(self.delta_sq)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.4))
    with np.errstate(divide="ignore"):
      ax0.plot(layer, np.log(d), "o-", ms=3, label="measured")
    ax1.plot(layer, np.asarray(self.q), "o-", ms=3, label="measured")
    if theory is not None:
      for ax, key in ((ax0, "ln_delta_sq"), (ax1, "q")):
        if key in theory:
          ax.plot(layer, np.asarray(theory[key]), "--", label="theory")
    ax0.set(xlabel="layer l", ylabel="ln delta_sq", title="backward: ln sum delta_l^2")
    ax1.set(xlabel="layer l", ylabel="q", title="forward: mean z_l^2")
    for ax in (ax0, ax1):
      ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
