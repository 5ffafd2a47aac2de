"""From measured profiles to store records and report rows."""
from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.measure import diagnostics as _diag
from jaxbp.studies.depth_sweep.measure import Measurement
from jaxbp.theory import finite_width as _fw


def _seed_status(m_delta, m_weight, m_bias, forward_finite):
  """(status, first non-finite layer, pass) of one seed's profiles (layers 1-based).

  Overflow: a forward h_l or a gradient is inf/nan. The first layer is counted
  in the order the pass computes: the lowest l for the forward pass, the
  highest l (nearest the output) for the backward pass. Underflow: a delta
  norm is exactly 0 (ln = -inf), first reached going backwards.
  """
  if not forward_finite.all():
    return "overflow", int(np.argmin(forward_finite)) + 1, "forward"
  # +inf or nan is an overflow; -inf is ln 0, a norm that vanished exactly.
  blown = lambda v: np.isnan(v) | (v == np.inf)
  bad = blown(m_delta) | blown(m_weight) | blown(m_bias)
  if bad.any():
    return "overflow", int(np.nonzero(bad)[0].max()) + 1, "backward"
  if (m_delta == -np.inf).any():
    return "underflow", int(np.nonzero(m_delta == -np.inf)[0].max()) + 1, "backward"
  return "ok", None, None


def record(m: Measurement, seconds: float) -> dict:
  """A configuration's store record: every seed's profiles and its status."""
  per_seed = [_seed_status(*(np.asarray(f)[s] for f in m)) for s in range(m.log_delta_sq.shape[0])]
  return {"log_delta_sq": m.log_delta_sq, "log_weight_sq": m.log_weight_sq,
          "log_bias_sq": m.log_bias_sq,
          "status": [s[0] for s in per_seed], "first_nonfinite_layer": [s[1] for s in per_seed],
          "nonfinite_pass": [s[2] for s in per_seed], "seconds": seconds}


def as_float(rows) -> np.ndarray:
  """Stored profiles as a float array, None (a stored inf or nan) as nan."""
  # JSON has no inf or nan; write_json stored them as null, read back as nan.
  return np.array([[np.nan if v is None else v for v in r] for r in rows], float)


def finite_mean(a):
  """Mean over seeds (axis 0) of the finite entries; nan where there are none."""
  ok = np.isfinite(a)
  with np.errstate(invalid="ignore"):
    return np.where(ok.any(0), np.where(ok, a, 0.0).sum(0) / ok.sum(0), np.nan)


def fit_window(depth: int, skip: int) -> Tuple[int, int]:
  """The hidden layers ``[first, last]`` the slope is fitted over: ``skip`` left out at
  each end, at most ``(depth - 2) // 2`` so that two layers stay (depth 3 with skip 5
  fits layers [1, 3]); the sweep's ``grid`` warns when that narrows a ``skip`` asked for."""
  s = min(skip, max(0, (depth - 2) // 2))
  return 1 + s, depth - s


# One compile per (shape, window), instead of op-by-op dispatch for every row.
_fit_log_slope = jax.jit(_diag.fit_log_slope, static_argnums=(1, 2))


def summarise(point, th, rec, config) -> dict:
  """A configuration's row: its grid point, theory and the fitted slope over seeds."""
  d = point.depth
  first, last = fit_window(d, config.fit_skip)
  delta = as_float(rec["log_delta_sq"])[:, :d]      # hidden layers only
  weight = as_float(rec["log_weight_sq"])[:, :d]
  fit = lambda y: np.asarray(_fit_log_slope(jnp.asarray(y), first - 1, d - last))
  slopes, wslopes = fit(delta), fit(weight)
  S = len(slopes)
  statuses = rec["status"]
  status = "overflow" if "overflow" in statuses else "underflow" if "underflow" in statuses else "ok"
  layers = [(l, p) for l, p, s in zip(rec["first_nonfinite_layer"], rec["nonfinite_pass"], statuses)
            if s == status and l is not None]
  fwd = [l for l, p in layers if p == "forward"]
  first_bad = min(fwd) if fwd else (max(l for l, _ in layers) if layers else None)
  mean = float(np.nanmean(slopes)) if np.isfinite(slopes).any() else float("nan")
  sem = float(np.nanstd(slopes, ddof=1) / np.sqrt(np.isfinite(slopes).sum())) \
      if np.isfinite(slopes).sum() > 1 else float("nan")
  return {
      "activation": point.activation, "init": point.init, "weights": point.weights,
      "sigma_w2": point.sigma_w2, "sigma_b2": point.sigma_b2, "depth": d,
      "width": config.width, "batch": config.batch, "seeds": S,
      "status": status, "first_nonfinite_layer": first_bad,
      "nonfinite_pass": ("forward" if fwd else "backward") if layers else None,
      "q_star": th.q_star, "chi1": th.chi1, "slope_theory": th.slope,
      "slope_measured": mean, "slope_sem": sem, "slope_error": mean - th.slope,
      "slope_weight_measured": float(np.nanmean(wslopes)) if np.isfinite(wslopes).any() else float("nan"),
      "fit_first": first, "fit_last": last, "input_v0": th.v0,
      "at_fixed_point": th.at_fixed_point,
      **predictions(point, th, delta, config, mean),
  }


def predictions(point, th, delta, config, measured_slope) -> dict:
  """The finite-depth and finite-width predictions of a row beside the measurement
  (:mod:`jaxbp.theory.finite_width`), from the inputs' actual q_1 = sigma_w2 v0 + sigma_b2:

  * ``slope_layerwise``: the slope over the fit window of the infinite-width profile
    from q_1 (the variance map need not be at q*); ``slope_finite_width``: the same
    at the sweep's width, for ``ln mean_batch ||delta||^2`` over its batch;
  * ``log_ratio``: R = ln ||delta_1||^2 - ln ||delta_depth||^2 (batch-averaged norms,
    hidden layers), its mean and variance across seeds, measured and predicted.
  """
  d = point.depth
  first, last = fit_window(d, config.fit_skip)
  q1 = point.sigma_w2 * th.v0 + point.sigma_b2
  if point.sigma_w2 > 0 and q1 > 0:
    pred = {k: float(v) for k, v in _fw.sweep_predictions(
        point.activation, point.sigma_w2, point.sigma_b2, q1, d, first, last, float(config.width),
        batch=config.batch, max_depth=max(config.depths)).items()}
  else:
    pred = dict.fromkeys(("slope_layerwise", "slope_finite_width", "log_ratio_mean",
                          "log_ratio_var"), float("nan"))
  R = delta[:, 0] - delta[:, d - 1]
  ok = np.isfinite(R)
  return {
      "slope_layerwise": pred["slope_layerwise"],
      "slope_error_layerwise": measured_slope - pred["slope_layerwise"],
      "slope_finite_width": pred["slope_finite_width"],
      "slope_error_finite_width": measured_slope - pred["slope_finite_width"],
      "log_ratio_measured": float(np.mean(R[ok])) if ok.any() else float("nan"),
      "log_ratio_predicted": pred["log_ratio_mean"],
      "log_ratio_var_measured": float(np.var(R[ok], ddof=1)) if ok.sum() > 1 else float("nan"),
      "log_ratio_var_predicted": pred["log_ratio_var"],
  }
