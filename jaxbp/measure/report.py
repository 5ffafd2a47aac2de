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
    kinds: ``"dot_general"``, ``"conv_general_dilated"`` or ``"tap"``.
    shapes: the shape of each ``z_l`` (per iteration inside a scan).
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
      layer's weight (nan for a tap).
    sigma_b2: ``(L,)`` ``mean(b_l**2)``, its sigma_b^2 (0 without a bias, nan for a tap).
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

  def tree_flatten(self):
    return ((self.loss, self.q, self.delta_sq, dict(self.grad_sq), self.log_slope,
             self.sigma_w2, self.sigma_b2),
            (self.names, self.kinds, self.shapes, self.activations))

  @classmethod
  def tree_unflatten(cls, aux, children):
    return cls(*aux, *children)

  def __len__(self) -> int:
    return len(self.names)

  def table(self) -> str:
    """The per-layer table as text, with mean-field theory beside it where there
    is one (:meth:`theory`); a vmapped report shows its first entry."""
    q, d = _first(self.q), _first(self.delta_sq)
    theory = self.theory() if np.ndim(self.q) == 1 else None
    th = theory.full(len(self)) if theory is not None else None
    rows = [("#", "layer", "z shape", "q", "delta_sq", "ln delta_sq", "q theory",
             "ln delta_sq theory")]
    for l, (name, shape) in enumerate(zip(self.names, self.shapes)):
      ln = math.log(d[l]) if d[l] > 0 else -math.inf
      pred = ("", "") if th is None or np.isnan(th["q"][l]) else (
          f"{th['q'][l]:.4g}", f"{th['ln_delta_sq'][l]:.3f}")
      rows.append((str(l + 1), name, "x".join(map(str, shape)) or "()", f"{q[l]:.4g}",
                   f"{d[l]:.4g}", f"{ln:.3f}") + pred)
    if th is None:
      rows = [r[:6] for r in rows]
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if j != 1 else c.ljust(w) for j, (c, w) in
                       enumerate(zip(r, widths))).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"loss {float(_first(self.loss)):.6g}   log_slope (d ln delta_sq / d layer) "
                 f"{float(_first(self.log_slope)):.4g}   layers {len(self)}")
    if theory is not None:
      lines.append(theory.table())
    return "\n".join(lines)

  def summary(self) -> str:
    """Prints :meth:`table` and returns it."""
    text = self.table()
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
    """
    if isinstance(theory, str):
      theory = self.theory() if np.ndim(self.q) == 1 else None
    if isinstance(theory, theory_profile.TheoryProfile):
      theory = theory.full(len(self))
    import matplotlib  # optional, heavy: only for plotting
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    layer = np.arange(1, len(self) + 1)
    d = _first(self.delta_sq)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.4))
    with np.errstate(divide="ignore"):
      ax0.plot(layer, np.log(d), "o-", ms=3, label="measured")
    ax1.plot(layer, _first(self.q), "o-", ms=3, label="measured")
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


def _first(a) -> np.ndarray:
  # A vmapped report has leading axes: summarise its first entry.
  a = np.asarray(a)
  while a.ndim > 1:
    a = a[0]
  return a
