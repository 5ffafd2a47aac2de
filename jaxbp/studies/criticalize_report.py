"""The criticalize study's rows, report and figures, from its keys and records alone."""
from __future__ import annotations

import math

import numpy as np

from jaxbp import io as _io
from jaxbp.studies import criticalize_models as models
from jaxbp.train import data as _data

LABELS = {"default": "default", "lsuv": "LSUV", "criticalize": "criticalize",
          "theory": "theory-critical", "dks": "DKS", "tat": "TAT"}


def _groups(key_list, records):
  groups = {}
  for k, r in zip(key_list, records):
    groups.setdefault((k["model"], k["method"]), []).append((k["seed"], r))
  return groups


def summarise(key_list, records) -> list:
  """One row per (model, method): the gradient flow before (the default init of the
  same seeds) and after, medians over seeds, and the test accuracy's median and range."""
  groups = _groups(key_list, records)
  rows = []
  for (model, method), runs in groups.items():
    before = dict(groups.get((model, "default"), ()))
    med = lambda values: float(np.median(values)) if len(values) else math.nan
    flows = [r["flow"] for _, r in runs]
    prior = [before[s]["flow"] for s, _ in runs if s in before]
    acc = np.array([r["test_accuracy"] for _, r in runs])
    rows.append({
        "model": model, "method": method, "start": models.SPECS[model].start,
        "layers": flows[0]["layers"],
        "log_slope_before": med([f["log_slope"] for f in prior]),
        "spread_before": med([f["spread"] for f in prior]),
        "log_slope_after": med([f["log_slope"] for f in flows]),
        "spread_after": med([f["spread"] for f in flows]),
        "q_min": float(min(f["q_min"] for f in flows)),
        "q_max": float(max(f["q_max"] for f in flows)),
        "seconds_method": med([r["seconds_method"] for _, r in runs]),
        "seconds_method_max": float(max(r["seconds_method"] for _, r in runs)),
        "cpu_seconds_method": med([r.get("cpu_seconds_method", 0.0) for _, r in runs]),
        "test_accuracy_median": float(np.median(acc)), "test_accuracy_min": float(acc.min()),
        "test_accuracy_max": float(acc.max()), "seeds": len(runs),
        "train_accuracy_median": med([r["train_accuracy"] for _, r in runs]),
        "overflowed": int(sum(r["status"] == "overflow" for _, r in runs)),
        "seconds_train": med([r["seconds_train"] for _, r in runs]),
        "cpu_seconds_train": med([r["cpu_seconds_train"] for _, r in runs])})
  return rows


def _f(v, fmt):
  return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _applied(row) -> str:
  """LSUV's and criticalize's time to apply, compilation included (the first seed
  compiles; the median is over seeds)."""
  if row["method"] not in ("lsuv", "criticalize"):
    return "—"
  return f"{row['seconds_method']:.1f} / {row['cpu_seconds_method']:.1f}"


def _gap_lines(rows) -> list:
  """The acceptance comparison: criticalize against theory and default per model."""
  at = {(r["model"], r["method"]): r for r in rows}
  lines = []
  for model in dict.fromkeys(r["model"] for r in rows):
    c, t, d = (at.get((model, m)) for m in ("criticalize", "theory", "default"))
    if c is None:
      continue
    parts = []
    if t is not None:
      parts.append(f"{100 * (c['test_accuracy_median'] - t['test_accuracy_median']):+.1f} "
                   "points against theory-critical")
    if d is not None:
      parts.append(f"{100 * (c['test_accuracy_median'] - d['test_accuracy_median']):+.1f} "
                   "against the default init")
    if parts:
      lines.append(f"- {model}: criticalize {c['test_accuracy_median']:.3f} (median), "
                   + ", ".join(parts) + ".")
  return lines


def report(config, rows) -> str:
  """``report.md``: the gradient-flow table and the training table."""
  n_train, n_test = (len(a) for a in _data_sizes())
  lines = [
      "# criticalize: gradient flow at init and training, against LSUV, DKS/TAT and theory",
      "",
      f"Models: {', '.join(config.models)}; width {config.width}, {config.channels} channels; "
      f"depths: jaxbp MLPs {config.mlp_depth}, ConvNet {config.conv_depth}, flax CNN "
      f"{config.cnn_depth}, equinox MLP {config.eqx_depth}, RNN T = {config.rnn_steps}. "
      f"sigma_b^2 = {config.sigma_b2:g}. LSUV and criticalize: {config.crit_batch} training "
      f"digits, max_iters {config.max_iters}, tol {config.tol:g}. Training: "
      f"{config.steps} steps ({config.cnn_steps} for the CNNs) of SGD, momentum "
      f"{config.momentum:g}, lr "
      f"{config.learning_rate:g}, batch {config.batch_size}, global norm clipped to "
      f"{config.clip_norm:g}; seeds {list(config.seeds)}; {n_train} train / {n_test} test "
      "digits; float64."] + _transformer_lines(config) + ["",
      "## Gradient flow (jaxbp.inspect, medians over seeds)", "",
      "log_slope: d ln delta_sq / d layer (positive: vanishing towards the input); spread: "
      "max over layers of |ln delta_sq - its mean| (nats); before: the default init of "
      "the same seeds.", "",
      "| model | start | method | layers | log_slope before | after | spread before | after "
      "| q range after | s to apply (wall / CPU) |",
      "|---|---|---|---:|---:|---:|---:|---:|---|---:|"]
  for r in rows:
    lines.append(
        f"| {r['model']} | {r['start']} | {LABELS[r['method']]} | {r['layers']} | "
        f"{_f(r['log_slope_before'], '+.3f')} | {_f(r['log_slope_after'], '+.4f')} | "
        f"{_f(r['spread_before'], '.2f')} | {_f(r['spread_after'], '.2f')} | "
        f"{r['q_min']:.3g}–{r['q_max']:.3g} | "
        f"{_applied(r)} |")
  lines += ["", "## Training (test accuracy over seeds)", "",
            "| model | method | test accuracy median (min–max) | train accuracy | "
            "overflowed | s per run |", "|---|---|---|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['model']} | {LABELS[r['method']]} | {r['test_accuracy_median']:.3f} "
                 f"({r['test_accuracy_min']:.3f}–{r['test_accuracy_max']:.3f}) | "
                 f"{r['train_accuracy_median']:.3f} | {r['overflowed']}/{r['seeds']} | "
                 f"{r['seconds_train']:.1f} |")
  gaps = _gap_lines(rows)
  if gaps:
    lines += ["", "## criticalize against theory and the default", ""] + gaps
  return "\n".join(lines + [""])


def _transformer_lines(config) -> list:
  """The post-LN transformer's task and training, which are not the digits' (the
  header line above is about the digit models); nothing when it is not run."""
  if "post_ln_transformer" not in config.models:
    return []
  w = config.tf_width
  return ["", f"post_ln_transformer: jaxbp.Transformer, {config.tf_depth} post-LN blocks of "
          f"width {w} ({models.TF_HEADS} heads, relu FFN of {2 * w}), LeCun init; its own "
          f"task, token reversal ({models.TF_LENGTH} tokens from {models.TF_VOCAB}, "
          "non-causal; the loss the token-mean cross-entropy, the accuracy the held-out "
          "token accuracy, chance 1/16), not the digits. LSUV and criticalize measure on "
          f"{config.crit_batch} fixed sequences. Training: {config.tf_steps} steps of Adam, "
          f"lr {config.tf_learning_rate:g}, batch {config.batch_size}, no clipping, one "
          "fixed stream for every seed (SGD with momentum does not train a deep post-LN "
          "transformer); no theory-critical init, no DKS/TAT (attention and LayerNorm)."]


def _data_sizes():
  d = _data.digits()
  return d.y_train, d.y_test


def plot_profiles(key_list, records, path):
  """ln delta_sq minus its mean against the layer, one panel per model, one line per
  method (the first seed)."""
  plt = _io.pyplot()
  groups = _groups(key_list, records)
  names = list(dict.fromkeys(m for m, _ in groups))
  cols = min(4, len(names))
  nrows = -(-len(names) // cols)
  fig, axes = plt.subplots(nrows, cols, figsize=(3.8 * cols, 3.0 * nrows), squeeze=False)
  for ax, model in zip(axes.flat, names):
    for (m, method), runs in groups.items():
      ln = np.asarray(runs[0][1]["flow"]["ln_delta_sq"])
      if m == model and np.all(np.isfinite(ln)):   # one colour per method in every panel
        ax.plot(np.arange(1, len(ln) + 1), ln - ln.mean(), lw=1,
                color=f"C{list(LABELS).index(method)}", label=LABELS[method])
    ax.set(title=model, xlabel="layer", ylabel="ln delta_sq − mean")
    ax.legend(frameon=False, fontsize=7)
  for ax in list(axes.flat)[len(names):]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def plot_accuracy(key_list, records, path):
  """Test accuracy per seed (dots) by model and method."""
  plt = _io.pyplot()
  groups = _groups(key_list, records)
  names = list(dict.fromkeys(m for m, _ in groups))
  fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(names)), 3.6))
  methods = list(LABELS)
  for (model, method), runs in groups.items():
    x = names.index(model) + (methods.index(method) - 2.5) * 0.12
    acc = [r["test_accuracy"] for _, r in runs]
    ax.plot([x] * len(acc), acc, "o", ms=4, color=f"C{methods.index(method)}",
            label=LABELS[method])
  handles, labels = ax.get_legend_handles_labels()
  keep = dict(zip(labels, handles))
  ax.legend(keep.values(), keep.keys(), frameon=False, fontsize=7, ncol=3)
  ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
  ax.set(ylabel="test accuracy", ylim=(0, 1))
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
