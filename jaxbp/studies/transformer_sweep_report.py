"""The transformer sweep's tables, figures and ``report.md`` (:mod:`jaxbp.studies.transformer_sweep`)."""
from __future__ import annotations

import math

import numpy as np

from jaxbp import io as _io
import jaxbp.studies.driver as driver
import jaxbp.studies.transformer_grads as grads_part

RHO_TOL, LNQ_TOL = 0.03, 0.05   # the acceptance at qk_scale = 0
RATIO_TOL = 0.2           # the issue's: last/first gradient ratios within 20% of the prediction


def _signal_rows(pts, records):
  return [_signal_row(p, r) for p, r in zip(pts, records) if p["part"] == "signal"]


def _signal_row(point, rec) -> dict:
  """One row of (a): the largest errors over blocks of the means over sequences."""
  mq, pq = np.mean(np.log(rec["measured_q"]), 0), np.mean(np.log(rec["predicted_q"]), 0)
  mr, pr = np.mean(rec["measured_rho"], 0), np.mean(rec["predicted_rho"], 0)
  row = {k: point[k] for k in ("norm", "alpha", "beta", "qk")}
  row.update(rho_error=float(np.max(np.abs(mr - pr))), lnq_error=float(np.max(np.abs(mq - pq))),
             rho_last=float(mr[-1]), rho_last_predicted=float(pr[-1]),
             lnq_last=float(mq[-1]), lnq_last_predicted=float(pq[-1]),
             rho_sd_last=float(np.std(rec["measured_rho"], 0, ddof=1)[-1]),
             lnq_sd_last=float(np.std(np.log(rec["measured_q"]), 0, ddof=1)[-1]))
  row["within"] = bool(row["rho_error"] <= RHO_TOL and row["lnq_error"] <= LNQ_TOL)
  return row


def _label(p) -> str:
  return f"{p['norm']}, α={p['alpha']}, β={p['beta']:g}"


def _plot_signal(config, pts, records, qk, path):
  plt = _io.pyplot()
  norms = list(config.norms)
  fig, axes = plt.subplots(2, len(norms), figsize=(4.2 * len(norms), 6.4), squeeze=False)
  l = np.arange(config.depth + 1)
  k = 0
  for p, rec in zip(pts, records):
    if p["part"] != "signal" or p["qk"] != qk:
      continue
    col = norms.index(p["norm"])
    colour = f"C{k % 10}"
    k += 1
    for row, (m, pr, f) in enumerate((("measured_rho", "predicted_rho", lambda a: a),
                                      ("measured_q", "predicted_q", np.log))):
      ax = axes[row, col]
      ax.plot(l, np.mean(f(np.asarray(rec[m])), 0), "-", color=colour, lw=1.2,
              label=_label(p))
      ax.plot(l, np.mean(f(np.asarray(rec[pr])), 0), "--", color=colour, lw=1.0)
  for col, norm in enumerate(norms):
    axes[0, col].set_title(f"norm={norm}", fontsize=9)
    axes[0, col].set_ylabel("ρ_l (mean token cosine)", fontsize=8)
    axes[1, col].set_ylabel("ln q_l", fontsize=8)
    axes[1, col].set_xlabel("block l", fontsize=8)
    axes[0, col].legend(fontsize=6)
  what = "qk_scale = 0 (uniform attention)" if qk == "0" else "default qk_scale"
  fig.suptitle(f"d_model {config.d_model}, T {config.tokens}, {config.seeds} seeds × "
               f"{config.batch} sequences, {what}: measured (solid) and theory (dashed)",
               fontsize=9)
  fig.tight_layout()
  _io.save_figure(fig, path)


def _plot_rank(config, rec, path):
  plt = _io.pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  l = np.arange(config.rank_depth + 1)
  for name, style in (("pure", "o-"), ("skip", "s-")):
    a = np.asarray(rec[name])
    ax.semilogy(l, np.maximum(np.mean(a, 0), 1e-300), style, ms=3,
                label=f"measured, {'pure attention' if name == 'pure' else 'with skip'}")
  ax.semilogy(l, np.maximum(rec["predicted"], 1e-300), "k--", label="kernel recursion")
  ax.semilogy(l, np.maximum(rec["cubic"], 1e-300), "k:", label="Dong's cubic law")
  ax.set_xlabel("layer")
  ax.set_ylabel("||h − 1 h̄ᵀ|| / ||h||")
  ax.set_ylim(bottom=1e-17)
  ax.legend(fontsize=7)
  fig.tight_layout()
  _io.save_figure(fig, path)


def _plot_noci(rec, path):
  plt = _io.pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  rows = [r for r in rec["rows"] if r["rho0"] < 1]
  x = np.asarray([1 - r["rho0"] for r in rows])
  for name in ("Wq", "Wk", "Wo"):
    ax.loglog(x, [r[name][0] / r["Wv"][0] for r in rows], "o-", ms=3, label=f"‖d{name}‖ / ‖dWv‖")
  ax.set_xlabel("1 − ρ₀ (input tokens' cosine)")
  ax.set_ylabel("first block, ratio of gradient norms")
  ax.invert_xaxis()
  ax.legend(fontsize=7)
  fig.tight_layout()
  _io.save_figure(fig, path)


def _plot_gradients(grads, path):
  plt = _io.pyplot()
  fig, axes = plt.subplots(1, len(grads), figsize=(4.2 * len(grads), 3.6), squeeze=False)
  for ax, (depth, s) in zip(axes[0], grads):
    for k, (name, v) in enumerate(s.items()):
      l = np.arange(1, depth + 1)
      ax.semilogy(l, v["profile"], "o-", ms=3, color=f"C{k}", label=f"{name} measured")
      ax.semilogy(l, np.asarray(v["predicted_profile"]) * v["profile"][-1]
                  / v["predicted_profile"][-1], "--", color=f"C{k}")
    ax.set_title(f"depth {depth}", fontsize=9)
    ax.set_xlabel("block")
    ax.set_ylabel("Σ ‖dL/dW‖² (Wv, Wo, W1, W2)", fontsize=8)
  axes[0, 0].legend(fontsize=6, title="norm/qk_scale; dashed: theory (matched at the last block)",
                    title_fontsize=6)
  fig.tight_layout()
  _io.save_figure(fig, path)


def _slope(x, y) -> float:
  return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def write(session, config, pts, records) -> dict:
  """Tables, figures and ``report.md``; returns ``{"rows", "report"}``."""
  lines = ["# Signal propagation through transformers at init", "",
           f"d_model {config.d_model}, {config.heads} heads, d_ff {config.d_ff} (relu), "
           f"T {config.tokens}; input tokens equicorrelated, q₀ = {config.q0:g}, ρ₀ = "
           f"{config.rho0:g}; {config.seeds} seeds × {config.batch} sequences; float64. "
           "Theory: jaxbp.theory.attention, started from each sequence's own input kernel.", ""]
  rows = _signal_rows(pts, records)
  out = {"signal": rows}
  if rows:
    driver.write_table(session, "signal", rows)
    for qk in ("0", "default"):
      _plot_signal(config, pts, records, qk, session.path(f"signal_qk{qk}.png"))
    ok = [r for r in rows if r["qk"] == "0"]
    lines += [f"## (a) q and ρ through depth {config.depth}", "",
              f"At qk_scale = 0 (exact at infinite width): {sum(r['within'] for r in ok)} of "
              f"{len(ok)} settings within {RHO_TOL} in ρ and {LNQ_TOL} in ln q at every block. "
              "At the default qk_scale the theory averages over Gaussian logits (its "
              "docstring says what that neglects); its errors are as measured. ± is the "
              "spread (s.d.) over sequences at the last block; the mean over "
              f"{config.seeds} seeds × {config.batch} sequences has a standard error of "
              "about s.d. / √seeds (sequences of one seed share its weights).", "",
              "| norm | α | β | qk_scale | max err ρ | max err ln q | ρ_L measured | "
              "ρ_L theory | ln q_L measured | ln q_L theory | within |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
      lines.append(f"| {r['norm']} | {r['alpha']} | {r['beta']:g} | {r['qk']} | "
                   f"{r['rho_error']:.4f} | {r['lnq_error']:.4f} | {r['rho_last']:.4f} ± "
                   f"{r['rho_sd_last']:.4f} | {r['rho_last_predicted']:.4f} | "
                   f"{r['lnq_last']:.3f} ± {r['lnq_sd_last']:.3f} | {r['lnq_last_predicted']:.3f} | "
                   f"{'yes' if r['within'] else 'no'} |")
    lines += ["", "Figures: `signal_qk0.png`, `signal_qkdefault.png`.", ""]
  for p, rec in zip(pts, records):
    if p["part"] == "rank":
      _io.write_json(session.path("rank.json"), rec)
      _plot_rank(config, rec, session.path("rank.png"))
      pure, skip = np.mean(rec["pure"], 0), np.mean(rec["skip"], 0)
      lines += ["## (b) Rank collapse of pure attention (Dong et al. 2021)", "",
                "| layer | pure attention | kernel recursion | cubic law | with skip |",
                "|---:|---:|---:|---:|---:|"]
      lines += [f"| {l} | {pure[l]:.3e} | {rec['predicted'][l]:.3e} | {rec['cubic'][l]:.3e} | "
                f"{skip[l]:.3f} |" for l in range(len(pure))]
      lines += ["", "Figure: `rank.png`.", ""]
  grads = [(p["grad_depth"], grads_part.summary(config, p["grad_depth"], rec))
           for p, rec in zip(pts, records) if p["part"] == "gradient"]
  if grads:
    _io.write_json(session.path("gradient.json"), {str(d): s for d, s in grads})
    _plot_gradients(grads, session.path("gradient.png"))
    out["gradient"] = grads
    cells = [(d, name, v) for d, s in grads for name, v in s.items()]
    ok = [c for c in cells if abs(c[2]["relative_error"]) <= RATIO_TOL]
    lines += ["## (c) Gradient norm per block at init (Xiong et al. 2020)", "",
              "Loss: a random linear readout of the output, `sum G * y`; per block the sum "
              "over Wv, Wo, W1, W2 of ‖dL/dW‖², mean over seeds; last block / first block, "
              "measured and predicted (jaxbp.theory.attention_gradients: exact at infinite "
              "width for qk_scale 0, uniform attention approximated at the default). "
              f"Within {RATIO_TOL:.0%} of the prediction: {len(ok)} of {len(cells)}.", "",
              "| depth | norm | qk_scale | last/first measured | predicted | error | seed range |",
              "|---:|---|---|---:|---:|---:|---|"]
    for d, name, v in cells:
      norm, qk = name.split("/")
      lo, hi = min(v["seed_ratios"]), max(v["seed_ratios"])
      lines.append(f"| {d} | {norm} | {qk} | {v['last_over_first']:.3f} | "
                   f"{v['predicted_last_over_first']:.3f} | {v['relative_error']:+.1%} | "
                   f"{lo:.3f}–{hi:.3f} |")
    lines += ["", "Figure: `gradient.png`.", ""]
  for p, rec in zip(pts, records):
    if p["part"] == "noci":
      _io.write_json(session.path("noci.json"), rec)
      _plot_noci(rec, session.path("noci.png"))
      rs = [r for r in rec["rows"] if r["rho0"] < 1]
      lines += ["## (d) Query and key gradients as the tokens align (Noci et al. 2022)", "",
                "| ρ₀ | ‖dWq‖ | ‖dWk‖ | ‖dWv‖ | ‖dWo‖ | ‖dWq‖/‖dWv‖ |",
                "|---:|---:|---:|---:|---:|---:|"]
      lines += [f"| {r['rho0']:g} | {r['Wq'][0]:.3e} | {r['Wk'][0]:.3e} | {r['Wv'][0]:.3e} | "
                f"{r['Wo'][0]:.3e} | {r['Wq'][0] / r['Wv'][0]:.3e} |" for r in rs]
      if len(rs) >= 3:
        x = [1 - r["rho0"] for r in rs[-3:]]
        lines += ["", f"First block, log-log slope against 1 − ρ₀ over the three most aligned "
                  f"inputs: ‖dWq‖/‖dWv‖ {_slope(x, [r['Wq'][0] / r['Wv'][0] for r in rs[-3:]]):.2f}, "
                  f"‖dWk‖/‖dWv‖ {_slope(x, [r['Wk'][0] / r['Wv'][0] for r in rs[-3:]]):.2f}."]
      lines += ["", "Figure: `noci.png`.", ""]
  text = "\n".join(lines)
  driver.finish(session, text)
  return {"rows": out, "report": text}
