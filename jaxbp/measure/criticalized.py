"""What :func:`jaxbp.criticalize` returns beside the params, and what it says
when a layer misses its target."""
from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import numpy as np

from jaxbp.measure.report import LayerReport

WHERE = "jaxbp.criticalize"


class Criticalized(NamedTuple):
  """What :func:`~jaxbp.measure.criticalize.criticalize` did, beside the new params.

  Attributes:
    report: the :class:`~jaxbp.measure.report.LayerReport` of the new params.
    before: the report of the params as given.
    scales: ``(L,)`` per report row, the factor its weight was multiplied by
      (the same for rows that share a weight); nan for a row with no weight of
      its own (a tap, a norm row, a weight built from several leaves).
    reached: ``(L,)`` bool, whether the row met its target to ``tol``: its gain
      ``|ln(delta_sq[l-1] / delta_sq[l])| <= tol`` (a first layer: q in the start
      band), or for ``"forward"`` ``|ln q| <= tol``. True for rows without a scale.
    iters: the number of updates made: gain steps (at most ``max_iters``) and,
      for ``"gradient"``, profile-descent steps (at most ``descent_steps``);
      ``report`` and the returned params are those of the best iterate.
    converged: every row reached its target.
  """
  report: LayerReport
  before: LayerReport
  scales: jax.Array
  reached: jax.Array
  iters: jax.Array
  converged: jax.Array


def warn_missed(names, info: Criticalized, target: str, max_iters: int, guard) -> None:
  """Warns, naming the rows that missed their target and why, grouped by reason."""
  # Only on concrete results: under jit the caller reads info.reached.
  if isinstance(info.reached, jax.core.Tracer):
    return
  reached = np.asarray(info.reached)
  delta_sq, q = np.asarray(info.report.delta_sq), np.asarray(info.report.q)
  missed = np.flatnonzero(~reached)
  if not len(missed):
    return
  # One line per reason, naming its first layers: after a profile descent most
  # rows miss tol for the same reason, and fifty copies of it hide the others.
  groups = {}
  for r in missed:
    label = names[r]
    if target == "gradient" and not delta_sq[r] > 0:
      why = "no gradient reaches it (delta_sq 0: a dead ReLU layer, or unused by the loss)"
    elif target == "forward" and not q[r] > 0:
      why = "its output is 0 (q 0)"
    elif not guard[0] <= q[r] <= guard[1]:
      why = f"q is outside the band {guard} that gain 1 would leave"
      label += f" (q {q[r]:.3g})"
    elif int(info.iters) > max_iters:
      why = "its gain is not within tol after the gain steps and the profile descent"
    else:
      why = f"not within tol after {max_iters} iterations (raise max_iters)"
    groups.setdefault(why, []).append(label)
  reasons = []
  for why, labels in groups.items():
    more = f" and {len(labels) - 4} more" if len(labels) > 4 else ""
    reasons.append(f"{', '.join(labels[:4])}{more}: {why}")
  ld = np.log(delta_sq[delta_sq > 0])
  profile = (f" The profile: log_slope {float(info.report.log_slope):.3g} nats/layer, "
             f"ln delta_sq within {np.max(np.abs(ld - ld.mean())):.3g} nats of its mean."
             if target == "gradient" and len(ld) else "")
  warnings.warn(f"{WHERE}: {len(missed)} layer(s) did not reach the {target} target: "
                + "; ".join(reasons) + "." + profile, stacklevel=3)
