"""The transformer training study's table, verdict against the anchors, curves and
``report.md`` (:mod:`jaxbp.studies.transformer_train`)."""
from __future__ import annotations

import math

import numpy as np

from jaxbp import io as _io

SETTINGS = ("post", "post_warmup", "pre", "deepnet")
STUCK = 0.95    # a final train loss above STUCK * ln(vocab) counts as stuck
SOLVED = 0.9    # test token accuracy at which the report calls the task solved


def summarise(key_list, records) -> list:
  """One row per (depth, setting): median and range over seeds."""
  groups = {}
  for k, r in zip(key_list, records):
    groups.setdefault((k["depth"], k["setting"]), []).append(r)
  rows = []
  for (depth, setting), recs in groups.items():
    row = {"depth": depth, "setting": setting, "seeds": len(recs)}
    for name in ("test_accuracy", "final_train_loss", "cpu_seconds"):
      # A non-finite run (NaN) makes the median and max NaN, so the table shows it.
      v = np.array([np.nan if r[name] is None else r[name] for r in recs], dtype=float)
      row.update({f"{name}_median": float(np.median(v)), f"{name}_min": float(np.nanmin(v))
                  if np.any(np.isfinite(v)) else math.nan, f"{name}_max": float(np.max(v))})
    row["diverged"] = int(sum(r["diverged"] for r in recs))
    row["statuses"] = " ".join(r["status"] for r in recs)
    rows.append(row)
  return rows


LABELS = {"post": "post-LN, no warm-up", "post_warmup": "post-LN, warm-up",
          "pre": "pre-LN", "deepnet": "post-LN, DeepNet alpha/beta"}


def table(rows) -> str:
  """The markdown table: median (min-max) over seeds."""
  span = lambda r, n, f: (f"{r[n + '_median']:{f}} ({r[n + '_min']:{f}}-{r[n + '_max']:{f}})")
  lines = ["| depth | setting | test token accuracy | final train loss | diverged | "
           "CPU s per run |", "|---:|---|---|---|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['depth']} | {LABELS[r['setting']]} | {span(r, 'test_accuracy', '.3f')} "
                 f"| {span(r, 'final_train_loss', '.3f')} | {r['diverged']}/{r['seeds']} | "
                 f"{r['cpu_seconds_median']:.0f} |")
  return "\n".join(lines)


def report(config, rows) -> str:
  """``report.md``: the setup, the table and what it shows against the anchors."""
  ln_v = math.log(config.vocab)
  lines = [f"# Deep transformers on token reversal (length {config.length}, vocab "
           f"{config.vocab})", "",
           f"Non-causal transformers, d_model {config.d_model}, {config.heads} heads, d_ff "
           f"{config.d_ff}, relu, learned positions; Adam lr {config.learning_rate:g} for every "
           f"setting, {config.steps} steps of batch {config.batch} (a fresh batch per step), "
           f"warm-up {config.warmup_steps('post_warmup')} steps (linear from 0) for "
           f"post_warmup only; DeepNet: skip x (2N)^(1/4), Wv/Wo/FFN init x (8N)^(-1/4). "
           f"Test: {config.test_size} held-out sequences. Seeds {list(config.seeds)} (the "
           f"init; the data are fixed). {config.dtype}. Median (min-max) over seeds; "
           f"'diverged': non-finite, or a final train loss (mean of the last {config.tail} "
           f"batches) above {STUCK:g} ln {config.vocab} = {STUCK * ln_v:.3f} (ln {config.vocab} "
           f"= {ln_v:.3f} is chance). CPU seconds are the process's, compile included.", "",
           table(rows), "", verdict(rows, config.steps), "",
           "Figure: `curves.png` (batch loss, means over "
           f"{config.curve_every} steps); every run: `runs.json`.", ""]
  return "\n".join(lines)


def verdict(rows, steps: int) -> str:
  """Per depth, each anchor's claim against the medians over seeds: post-LN
  without warm-up *fails* when most of its runs diverged; a setting *solves* the
  task at test accuracy >= SOLVED, and *helps* when its final train loss is below
  post-LN's without warm-up by more than 0.05 nats."""
  by = {(r["depth"], r["setting"]): r for r in rows}
  acc = lambda d, s: by[(d, s)]["test_accuracy_median"]
  loss = lambda d, s: by[(d, s)]["final_train_loss_median"]
  out = []
  for depth in sorted({r["depth"] for r in rows}):
    have = [s for s in SETTINGS if (depth, s) in by]
    if "post" not in have:
      continue
    out.append(f"- Depth {depth}:")
    others = [s for s in have if s != "post"]
    post = by[(depth, "post")]
    if post["diverged"] * 2 > post["seeds"]:
      what = f"shown: it fails ({post['diverged']}/{post['seeds']} runs stuck or non-finite)"
    elif others and all(acc(depth, s) > acc(depth, "post") and loss(depth, s) < loss(depth, "post")
                        for s in others):
      what = "shown: it lags (the lowest accuracy and the highest loss)"
    else:
      what = "not shown"
    out.append(f"  Xiong et al. 2020, post-LN without warm-up fails or lags: {what}.")
    for s, claim in (("post_warmup", "Xiong et al. 2020, warm-up fixes post-LN"),
                     ("pre", "Xiong et al. 2020, pre-LN trains without warm-up"),
                     ("deepnet", "Wang et al. 2022, DeepNet trains deep post-LN")):
      if s not in have:
        continue
      if acc(depth, s) >= SOLVED:
        what = "shown (solves the task)"
      elif loss(depth, s) < loss(depth, "post") - 0.05:
        what = (f"partly: it helps (loss {loss(depth, s):.2f} against "
                f"{loss(depth, 'post'):.2f}) but does not solve the task in {steps} steps")
      else:
        what = "not shown"
      out.append(f"  {claim}: {what}.")
  return "\n".join(out)


def plot_curves(config, key_list, records, path) -> None:
  """Batch loss against step, one panel per depth, one line per run, coloured by setting."""
  plt = _io.pyplot()
  depths = list(config.depths)
  fig, axes = plt.subplots(1, len(depths), figsize=(5.2 * len(depths), 4.2), squeeze=False,
                           sharey=True)
  colour = {s: f"C{i}" for i, s in enumerate(SETTINGS)}
  labelled = set()
  for k, r in zip(key_list, records):
    ax = axes[0][depths.index(k["depth"])]
    curve = np.array([np.nan if v is None else v for v in r["curve"]], dtype=float)
    steps = (np.arange(curve.size) + 0.5) * config.curve_every
    label = None if (k["depth"], k["setting"]) in labelled else LABELS[k["setting"]]
    labelled.add((k["depth"], k["setting"]))
    ax.plot(steps, curve, lw=1.0, alpha=0.8, color=colour[k["setting"]], label=label)
  for ax, depth in zip(axes[0], depths):
    ax.axhline(math.log(config.vocab), ls="--", lw=0.8, color="gray")
    ax.set(xlabel="step", title=f"depth {depth}", yscale="log")
    ax.legend(fontsize=7)
  axes[0][0].set_ylabel(f"batch loss (dashed: ln {config.vocab})")
  fig.suptitle(f"token reversal, Adam lr {config.learning_rate:g}, {len(config.seeds)} seed(s)")
  _io.save_figure(fig, path)
