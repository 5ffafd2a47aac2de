"""Mean-field theory beside an inspected model's measurements.

Where a stretch of a ``LayerReport`` (:mod:`jaxbp.measure.report`) is a chain of
dense layers with one elementwise activation (layers ``start .. stop-1`` apply
the same ``phi`` to ``z_l``; layer ``stop`` is the dense layer reading the last
``phi(z)``), mean-field theory (:mod:`jaxbp.theory.meanfield`) predicts

  q_{l+1} = sigma_w2_{l+1} E[phi(sqrt(q_l) u)^2] + sigma_b2_{l+1},    u ~ N(0, 1),
  ||delta_l||^2 = chi_1(q_l) ||delta_{l+1}||^2,  chi_1(q_l) = sigma_w2_{l+1} E[phi'(sqrt(q_l) u)^2],

with every layer's sigma_w2, sigma_b2 read from its own weights (the report's
``sigma_w2``, ``sigma_b2``). The variance map starts from the measured q at
``start``; the backward chain from the measured delta_sq at ``stop``. Chains are
assumed plain (no skip) and wide; widths may differ only at the ends.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax.numpy as jnp
import numpy as np

from jaxbp.measure.diagnostics import fit_log_slope
from jaxbp.theory import meanfield


class TheoryProfile(NamedTuple):
  """Predictions for layers ``start .. stop`` (inclusive) of a report.

  Attributes:
    start, stop: the stretch, 0-based report indices.
    activation: its activation.
    sigma_w2, sigma_b2: the stretch's mean weight and bias variances (layers start+1 .. stop).
    q: ``(stop - start + 1,)`` predicted q_l (q[0] is the measured start).
    ln_delta_sq: the same length, predicted ln delta_sq (the last is the measured one).
    chi1: ``(stop - start,)`` chi_1(q_l) of each step, at the predicted q_l.
    chi1_end: chi_1 at the pooled sigma_w2, sigma_b2 and the last predicted q
      (for relu, whose chi_1 does not depend on q, the per-layer factor anywhere).
    slope: the least-squares slope of the predicted ln delta_sq against the layer
      index (the convention of ``LayerReport.log_slope``: ``-ln chi_1`` per layer).
    measured_slope: the same slope of the measured ln delta_sq over the stretch.
  """
  start: int
  stop: int
  activation: str
  sigma_w2: float
  sigma_b2: float
  q: np.ndarray
  ln_delta_sq: np.ndarray
  chi1: np.ndarray
  chi1_end: float
  slope: float
  measured_slope: float

  def full(self, n_layers: int) -> dict:
    """``{"q", "ln_delta_sq"}`` of length ``n_layers``, nan outside the stretch
    (for :meth:`LayerReport.plot`)."""
    out = {}
    for key in ("q", "ln_delta_sq"):
      a = np.full(n_layers, np.nan)
      a[self.start:self.stop + 1] = getattr(self, key)
      out[key] = a
    return out

  def table(self) -> str:
    return (f"theory over layers {self.start + 1}..{self.stop + 1} ({self.activation}): "
            f"sigma_w2 {self.sigma_w2:.4g}, sigma_b2 {self.sigma_b2:.4g}, chi_1 "
            f"{float(np.mean(self.chi1)):.4g} (mean), {self.chi1_end:.4g} (at the end), "
            f"slope {self.slope:.4g} (measured {self.measured_slope:.4g})")


def stretch(report, min_layers: int = 3) -> Optional[tuple[int, int, str]]:
  """The longest ``(start, stop, activation)`` chain in ``report``, or None if
  none has ``min_layers`` dense layers."""
  best, n = None, len(report)
  # A layer in a cond branch that did not run has no measurement to chain from.
  taken = [True] * n if report.taken is None or np.ndim(report.taken) != 1 else [
      bool(t) for t in np.asarray(report.taken)]
  dense = [k == "dot_general" and t for k, t in zip(report.kinds, taken)]
  for l in range(n):
    act = report.activations[l]
    if not dense[l] or act is None or (l and dense[l - 1] and report.activations[l - 1] == act):
      continue  # not the start of a chain
    e = l
    while e < n and dense[e] and report.activations[e] == act:
      e += 1
    stop = e if e < n and dense[e] else e - 1  # the dense layer reading the last phi(z)
    if stop - l + 1 >= min_layers and (best is None or stop - l > best[1] - best[0]):
      best = (l, stop, act)
  return best


def predict(report, min_layers: int = 3) -> Optional[TheoryProfile]:
  """The mean-field profile of ``report``'s longest dense chain (see the module doc).

  The report must be a single one (not vmapped). Returns None when the model has
  no such chain (convolutions, taps, unknown activations only).
  """
  if np.ndim(report.q) != 1:
    raise ValueError("predict: pass one report, not a stacked batch of them "
                     f"(q has shape {np.shape(report.q)}); pick one first, e.g. "
                     "report.at(0).theory().")
  found = stretch(report, min_layers)
  if found is None:
    return None
  s, e, act = found
  sw = np.asarray(report.sigma_w2, np.float64)
  sb = np.asarray(report.sigma_b2, np.float64)
  q = [float(report.q[s])]
  log_chi = []
  for l in range(s, e):
    log_chi.append(float(jnp.log(meanfield.chi1(act, sw[l + 1], sb[l + 1], q=q[-1]))))
    q.append(float(meanfield.variance_map(q[-1], act, sw[l + 1], sb[l + 1])))
  ln_end = float(np.log(report.delta_sq[e]))
  ln_delta = ln_end + np.concatenate([np.cumsum(log_chi[::-1])[::-1], [0.0]])
  w2, b2 = float(sw[s + 1:e + 1].mean()), float(sb[s + 1:e + 1].mean())
  chi = float(meanfield.chi1(act, w2, b2, q=q[-1]))
  # fit_log_slope is the rate going backwards: the slope against the index is its negative.
  measured = -float(fit_log_slope(jnp.log(jnp.asarray(report.delta_sq)[s:e + 1])))
  return TheoryProfile(s, e, act, w2, b2, np.array(q), ln_delta, np.exp(log_chi), chi,
                       -float(fit_log_slope(jnp.asarray(ln_delta))), measured)
