"""The depth sweep's outputs: agreement with theory, result files, figures and report.

The study (:mod:`~jaxbp.studies.depth_sweep.study`) computes; this module writes.
:func:`agreement` summarises the rows against mean-field theory,
:func:`write_outputs` writes ``results.csv``, ``results.json`` (with
provenance), ``profiles.png``, ``slopes.png``, ``phase.png`` and ``report.md``,
each atomically. Overflowing configurations are marked in every figure and
listed in the report, never dropped silently.
"""
from __future__ import annotations

import os

import numpy as np

from jaxbp import io as _io
from jaxbp.studies.depth_sweep.config import NAMED_INITS, critical_line

TOLERANCE = 0.01   # nats per layer: the target agreement at width >= 500


def agreement(rows, config) -> dict:
  """Per activation, at the deepest depth: how far measured slopes are from ln chi_1."""
  deepest = max(config.depths)
  out = {"depth": deepest, "width": config.width, "tolerance": TOLERANCE, "by_activation": {}}
  for a in config.activations:
    errs = [abs(r["slope_error"]) for r in rows if r["activation"] == a and r["depth"] == deepest
            and r["status"] == "ok" and np.isfinite(r["slope_error"])]
    out["by_activation"][a] = {
        "n": len(errs), "within_tolerance": int(sum(e <= TOLERANCE for e in errs)),
        "max_abs_error": float(max(errs)) if errs else float("nan"),
        "median_abs_error": float(np.median(errs)) if errs else float("nan")}
  out["by_prediction"] = _agreement_by_prediction(rows, deepest)
  return out


# The predictions a row carries: the column of its slope and of its error.
PREDICTIONS = {"mean_field": ("slope_theory", "slope_error"),
               "layerwise": ("slope_layerwise", "slope_error_layerwise"),
               "finite_width": ("slope_finite_width", "slope_error_finite_width")}


def best_prediction(row) -> tuple:
  """``(name, slope, error)`` of the most complete prediction a row has a finite error
  for: finite width, else layerwise, else mean field (``PREDICTIONS``' names)."""
  for name in ("finite_width", "layerwise", "mean_field"):
    slope, err = PREDICTIONS[name]
    if np.isfinite(row.get(err, np.nan)):
      return name, row[slope], row[err]
  return "mean_field", row["slope_theory"], row["slope_error"]


def verdict(row) -> str:
  """The report's last column: whether the measured slope is within ``TOLERANCE`` of
  :func:`best_prediction` (naming it where it is not finite width), or how the
  configuration overflowed."""
  if row["status"] != "ok":
    return f"{row['status']} at layer {row['first_nonfinite_layer']} ({row['nonfinite_pass']})"
  name, _, err = best_prediction(row)
  if not np.isfinite(err):
    return "no prediction"
  word = "within" if abs(err) <= TOLERANCE else "outside"
  return word if name == "finite_width" else f"{word} ({name.replace('_', ' ')})"


def _agreement_by_prediction(rows, deepest) -> dict:
  """Per prediction, at the deepest depth: configurations (status ok) within TOLERANCE."""
  deep = [r for r in rows if r["depth"] == deepest and r["status"] == "ok"]
  out = {}
  for name, (_, err) in PREDICTIONS.items():
    errs = [abs(r[err]) for r in deep if np.isfinite(r.get(err, np.nan))]
    out[name] = {"n": len(errs), "within_tolerance": int(sum(e <= TOLERANCE for e in errs)),
                 "max_abs_error": float(max(errs)) if errs else float("nan")}
  return out


_CSV_COLUMNS = ("activation", "init", "weights", "sigma_w2", "sigma_b2", "depth", "width", "batch",
                "seeds", "status", "first_nonfinite_layer", "nonfinite_pass", "q_star", "chi1",
                "slope_theory", "slope_measured", "slope_sem", "slope_error",
                "slope_weight_measured", "fit_first", "fit_last", "input_v0", "at_fixed_point",
                "key", "slope_layerwise", "slope_error_layerwise", "slope_finite_width",
                "slope_error_finite_width", "log_ratio_measured", "log_ratio_predicted",
                "log_ratio_var_measured", "log_ratio_var_predicted")


def write_outputs(out_dir, config, rows, profiles, summary, figures, started):
  """Writes the sweep's files into ``out_dir`` (see the module docstring)."""
  join = lambda name: os.path.join(out_dir, name)
  _io.write_csv(join("results.csv"), {
      c: ["" if r[c] is None else r[c] for r in rows] for c in _CSV_COLUMNS})
  _io.write_json(join("results.json"), {
      "config": config.to_dict(), "seeds": list(config.seeds),
      "provenance": _io.provenance(started), "summary": summary, "rows": rows,
      "profiles": profiles})
  if figures:
    _plot_profiles(rows, profiles, config, join("profiles.png"))
    _plot_slopes(rows, config, join("slopes.png"))
    _plot_phase(rows, config, join("phase.png"))
  _io.write_text(join("report.md"), _report(rows, config, summary))


_COLORS = {"sigmoid": "tab:green", "tanh": "tab:blue", "relu": "tab:red", "leaky_relu": "tab:orange"}


def _color(a):
  return _COLORS.get(a, "tab:gray")


def _label(r):
  if r["init"] in NAMED_INITS:
    return r["init"]
  pre = "orth " if r["weights"] == "orthogonal" else ""
  crit = "critical " if "critical" in r["init"] else ""
  return f"{pre}{crit}$\\sigma_w^2$={r['sigma_w2']:.3g}, $\\sigma_b^2$={r['sigma_b2']:g}"


def _plot_profiles(rows, profiles, config, path):
  """ln ||delta_l||^2 against layer at the deepest depth, theory dashed."""
  plt = _io.pyplot()
  deepest = max(config.depths)
  acts = config.activations
  fig, axes = plt.subplots(1, len(acts), figsize=(4.6 * len(acts), 4), squeeze=False)
  for ax, a in zip(axes[0], acts):
    sel = [r for r in rows if r["activation"] == a and r["depth"] == deepest]
    # Every named and critical init; the gaussian grid at one sigma_b2 (the middle one).
    b_mid = config.sigma_b2[len(config.sigma_b2) // 2]
    sel = [r for r in sel if r["init"] != "gaussian" or r["sigma_b2"] == b_mid]
    cmap = plt.get_cmap("viridis")
    for i, r in enumerate(sel):
      y = np.asarray(profiles[r["key"]]["log_delta_sq_mean"], float)[:deepest]
      l = np.arange(1, deepest + 1)
      top = y[r["fit_last"] - 1] if np.isfinite(y[r["fit_last"] - 1]) else 0.0
      color = cmap(i / max(1, len(sel) - 1))
      ax.plot(l, y - top, color=color, lw=1.2, label=_label(r))
      if np.isfinite(r["slope_theory"]):
        # Theory: ln chi_1 per layer going down, through the top of the fit window.
        ax.plot(l, (r["fit_last"] - l) * r["slope_theory"], color=color, lw=0.8, ls="--")
      if r["status"] != "ok" and r["first_nonfinite_layer"]:
        j = min(r["first_nonfinite_layer"], deepest) - 1
        finite = np.isfinite(y)
        yy = (y - top)[finite][-1] if finite.any() else 0.0
        ax.plot([l[j]], [yy], "x", color="red", ms=9, mew=2)
    ax.set(title=f"{a}, depth {deepest}, width {config.width}", xlabel="layer l",
           ylabel=r"$\ln\,\overline{\|\delta_l\|^2} - \ln\,\overline{\|\delta_{top}\|^2}$")
    ax.legend(fontsize=6, loc="best")
  fig.suptitle("Gradient-norm profiles (solid: measured, mean of seeds; dashed: "
               r"$(l_{top} - l)\ln\chi_1$; red x: overflow)", fontsize=9)
  fig.tight_layout()
  _io.save_figure(fig, path)


def _plot_slopes(rows, config, path):
  """Measured slope against ln chi_1, and the error at the deepest depth."""
  plt = _io.pyplot()
  deepest = max(config.depths)
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
  usable = [r for r in rows if r["fit_last"] - r["fit_first"] >= 2 and np.isfinite(r["slope_theory"])]
  lims = [np.inf, -np.inf]
  for a in config.activations:
    for r in (r for r in usable if r["activation"] == a):
      ok = r["status"] == "ok"
      y = r["slope_measured"] if np.isfinite(r["slope_measured"]) else r["slope_theory"]
      ax.plot(r["slope_theory"], y, "o" if ok else "x", color=_color(a) if ok else "red",
              ms=3 + 4 * r["depth"] / deepest, alpha=0.8, mew=2)
      lims = [min(lims[0], r["slope_theory"], y), max(lims[1], r["slope_theory"], y)]
    ax.plot([], [], "o", color=_color(a), label=a)
  ax.plot([], [], "x", color="red", mew=2, label="overflow / underflow")
  if np.isfinite(lims).all():
    ax.plot(lims, lims, "k-", lw=0.6, label="measured = theory")
  ax.set(xlabel=r"theory $\ln\chi_1$ (nats / layer)", ylabel="measured slope (nats / layer)",
         title="measured vs predicted slope (marker size: depth)")
  ax.legend(fontsize=7)
  deep = [r for r in usable if r["depth"] == deepest and r["status"] == "ok"]
  for a in config.activations:
    rr = [r for r in deep if r["activation"] == a]
    ax2.errorbar([r["slope_theory"] for r in rr], [r["slope_error"] for r in rr],
                 yerr=[r["slope_sem"] for r in rr], fmt="o", ms=4, color=_color(a), label=a)
  ax2.axhspan(-TOLERANCE, TOLERANCE, color="0.85", label=f"$\\pm${TOLERANCE} nats")
  ax2.axhline(0, color="k", lw=0.6)
  ax2.set(xlabel=r"theory $\ln\chi_1$", ylabel="measured - theory",
          title=f"error at depth {deepest}, width {config.width} (bars: s.e.m. over seeds)")
  ax2.legend(fontsize=7)
  fig.tight_layout()
  _io.save_figure(fig, path)


def _plot_phase(rows, config, path):
  """sigma_w2 x sigma_b2 heatmaps of the measured slope, with the chi_1 = 1 line."""
  plt = _io.pyplot()
  deepest = max(config.depths)
  acts = config.activations
  fig, axes = plt.subplots(1, len(acts), figsize=(4.4 * len(acts), 3.8), squeeze=False)
  for ax, a in zip(axes[0], acts):
    ws, bs = config.sigma_w2[a], config.sigma_b2
    grid_rows = {(r["sigma_w2"], r["sigma_b2"]): r for r in rows if r["activation"] == a
                 and r["depth"] == deepest and r["init"] == "gaussian"}
    if not ws or not grid_rows:
      ax.set_axis_off()
      continue
    m = np.full((len(bs), len(ws)), np.nan)
    for i, b in enumerate(bs):
      for j, w in enumerate(ws):
        r = grid_rows.get((w, b))
        if r is not None and r["status"] == "ok":
          m[i, j] = r["slope_measured"]
    vmax = max(0.05, np.nanmax(np.abs(m)) if np.isfinite(m).any() else 1.0)
    im = ax.imshow(m, origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
    for i, b in enumerate(bs):
      for j, w in enumerate(ws):
        r = grid_rows.get((w, b))
        if r is None:
          continue
        text = (f"{r['slope_measured']:.3f}\n({r['slope_theory']:.3f})" if r["status"] == "ok"
                else f"{r['status']}\nl={r['first_nonfinite_layer']}")
        dark = r["status"] == "ok" and abs(r["slope_measured"]) > 0.6 * vmax
        ax.text(j, i, text, ha="center", va="center", fontsize=6,
                color="red" if r["status"] != "ok" else "w" if dark else "k")
    # chi_1 = 1 in index coordinates: interpolate the critical sigma_w2 on the grid.
    fine = np.linspace(min(bs), max(bs), 41) if len(bs) > 1 else np.array(bs)
    crit = critical_line(a, fine)
    ok = np.isfinite(crit) & (crit >= min(ws)) & (crit <= max(ws))
    if ok.any() and len(ws) > 1:
      x = np.interp(crit[ok], ws, np.arange(len(ws)))
      y = np.interp(fine[ok], bs, np.arange(len(bs))) if len(bs) > 1 else np.zeros(ok.sum())
      ax.plot(x, y, "k-", lw=2, label=r"$\chi_1 = 1$")
      ax.legend(fontsize=7, loc="upper left")
    ax.set_xticks(range(len(ws)), [f"{w:g}" for w in ws])
    ax.set_yticks(range(len(bs)), [f"{b:g}" for b in bs])
    ax.set(xlabel=r"$\sigma_w^2$", ylabel=r"$\sigma_b^2$", title=f"{a}, depth {deepest}")
    fig.colorbar(im, ax=ax, label="measured slope, nats/layer")
  fig.suptitle(r"Phase diagram: measured per-layer slope (theory $\ln\chi_1$ in brackets); "
               r"vanishing < 0 < exploding", fontsize=9)
  fig.tight_layout()
  _io.save_figure(fig, path)


def _fmt(v, spec=".4f"):
  return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def _report(rows, config, summary) -> str:
  deepest = max(config.depths)
  lines = [
      "# Depth sweep: gradient-norm slopes against mean-field theory", "",
      f"Width {config.width}, batch {config.batch}, seeds {list(config.seeds)}, "
      f"{config.dtype}, depths {list(config.depths)}, {summary['configurations']} configurations "
      f"({summary['computed']} computed in this run, {summary['devices']} device(s)).", "",
      "Per configuration, ``ln mean_batch ||delta_l||^2`` is fitted by least squares "
      f"against the layer index over hidden layers [skip+1, depth-skip] ({_skip_text(config)}), "
      "one fit per seed; the table gives the mean (± standard error over seeds) of the "
      "per-layer change going backwards, beside the mean-field prediction "
      "``ln chi_1`` (jaxbp.meanfield.gradient_log_slope). Inputs start at q* (at v0 = 1 "
      "where q* = 0 or is infinite); the loss is a random linear readout, so delta at the "
      "output is standard normal and independent of the forward pass.", "",
      f"## Agreement with ln χ₁ at depth {deepest} (target: within {TOLERANCE} nats/layer)",
      "",
      "| activation | configurations | within tolerance | max abs error | median abs error |",
      "|---|---|---|---|---|"]
  for a, s in summary["by_activation"].items():
    lines.append(f"| {a} | {s['n']} | {s['within_tolerance']} | {_fmt(s['max_abs_error'])} | "
                 f"{_fmt(s['median_abs_error'])} |")
  misses = [r for r in rows if r["depth"] == deepest and r["status"] == "ok"
            and np.isfinite(r["slope_error"]) and abs(r["slope_error"]) > TOLERANCE]
  lines += ["", f"## Measured vs predicted, depth {deepest}", "",
            "Three predictions of the slope (see the next section): mean field ``ln χ₁`` at "
            "q*, the layerwise infinite-width profile, and that profile at finite width, the "
            "best of them. The error is the measured slope minus the finite-width one; the "
            f"last column says whether it is within ±{TOLERANCE} (against the layerwise or "
            "mean-field prediction, named, where a row has no finite-width one).", "",
            "| activation | init | σ_w² | σ_b² | q* | χ₁ | predicted ln χ₁ | layerwise | "
            "finite width | measured | error | within ±" + f"{TOLERANCE}? |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    if r["depth"] != deepest:
      continue
    lines.append(
        f"| {r['activation']} | {r['init']} | {r['sigma_w2']:.4g} | {r['sigma_b2']:g} | "
        f"{_fmt(r['q_star'], '.4g')} | {_fmt(r['chi1'], '.4f')} | {_fmt(r['slope_theory'])} | "
        f"{_fmt(r.get('slope_layerwise'))} | {_fmt(r.get('slope_finite_width'))} | "
        f"{_fmt(r['slope_measured'])} ± {_fmt(r['slope_sem'])} | "
        f"{_fmt(best_prediction(r)[2], '+.4f')} | {verdict(r)} |")
  lines += _finite_sections(rows, config, summary)
  bad = [r for r in rows if r["status"] != "ok"]
  lines += ["", "## Notes", ""]
  describe = lambda r: (f"{r['activation']} {r['init']} σ_w²={r['sigma_w2']:.4g} "
                        f"σ_b²={r['sigma_b2']:g}: {r['slope_error']:+.4f} ± {_fmt(r['slope_sem'])}")
  off = [r for r in misses if not r["at_fixed_point"]]
  on = [r for r in misses if r["at_fixed_point"]]
  if on:
    lines.append(f"- {len(on)} configuration(s) at depth {deepest} with inputs at q* miss the "
                 "tolerance: " + "; ".join(map(describe, on)) + ".")
  if off:
    lines.append(
        f"- {len(off)} miss(es) where q* = 0 (no biases, chi_1 <= 1): the inputs cannot sit "
        "at q* = 0 without killing relu nets, so they start at v0 = 1 and q_l decays towards 0; "
        "at chi_1 = 1 it decays only like 1/l (tanh: q_l ~ 1/(2l)), so chi_1(q_l) < 1 all along "
        "the net and the measured slope is below ln chi_1(q*) = 0: " +
        "; ".join(map(describe, off)) + ".")
  if not misses:
    lines.append(f"- Every configuration at depth {deepest} with status ok is within {TOLERANCE}.")
  if bad:
    lines.append(f"- {len(bad)} configuration(s) overflowed or underflowed (slopes fitted on "
                 "their finite layers; marked red in the figures): " + "; ".join(
                     f"{r['activation']} {r['init']} σ_w²={r['sigma_w2']:.4g} depth {r['depth']}: "
                     f"{r['status']} at layer {r['first_nonfinite_layer']}" for r in bad[:20]) + ".")
  lines += [
      "- Finite width: per layer, ``||delta_{l-1}||^2 / ||delta_l||^2`` is a random ratio with "
      "mean chi_1 and relative variance (3 kappa - 1) / width (kappa = E[phi'^4] / E[phi'^2]^2), "
      "so one example's log averages ln chi_1 - (3 kappa - 1) / (2 width); averaging "
      "``||delta||^2`` over the batch before the log takes most of that back. The "
      "finite-width columns model both (jaxbp.theory.finite_width).",
      "", "Figures: `profiles.png`, `slopes.png`, `phase.png`. Data: `results.csv`, "
      "`results.json`, `store/`.", ""]
  return "\n".join(lines)


def _skip_text(config) -> str:
  if config.skip is not None:
    return f"skip = {config.skip}"
  return (f"skip = {config.max_skip}, fewer where a depth is too shallow to keep two layers: "
          "(depth - 2) // 2")


def _finite_sections(rows, config, summary):
  """The report's sections on the layerwise and finite-width predictions and the spread."""
  deepest = max(config.depths)
  by = summary.get("by_prediction", {})
  lines = ["", f"## Agreement under each prediction, depth {deepest}", "",
           "Mean field: ``ln chi_1(q*)``. Layerwise: the infinite-width profile from the "
           "inputs' actual q_1 (the variance map run layer by layer, not at q*), fitted over "
           "the same window. Finite width: that profile with the finite-width terms at "
           f"width {config.width}, for ``ln mean_batch ||delta||^2`` over batch {config.batch} "
           "(jaxbp.theory.finite_width.sweep_predictions).", "",
           "| prediction | configurations | within tolerance | max abs error |", "|---|---|---|---|"]
  for name, s in by.items():
    lines.append(f"| {name.replace('_', ' ')} | {s['n']} | {s['within_tolerance']} | "
                 f"{_fmt(s['max_abs_error'])} |")
  deep = [r for r in rows if r["depth"] == deepest]
  lines += ["", f"## Spread across seeds, depth {deepest}", "",
            "R = ln mean_batch ||delta_1||^2 - ln mean_batch ||delta_depth||^2 over the hidden "
            f"layers, one value per seed ({len(config.seeds)} seeds: the measured variance is "
            f"itself uncertain by a factor ~ 1 ± {np.sqrt(2 / max(1, len(config.seeds) - 1)):.1f}).",
            "", "| activation | init | σ_w² | σ_b² | R measured | R predicted | Var R measured | "
            "Var R predicted |", "|---|---|---|---|---|---|---|---|"]
  for r in deep:
    lines.append(
        f"| {r['activation']} | {r['init']} | {r['sigma_w2']:.4g} | {r['sigma_b2']:g} | "
        f"{_fmt(r['log_ratio_measured'], '.3f')} | {_fmt(r['log_ratio_predicted'], '.3f')} | "
        f"{_fmt(r['log_ratio_var_measured'], '.4f')} | {_fmt(r['log_ratio_var_predicted'], '.4f')} |")
  return lines
