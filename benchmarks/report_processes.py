"""results.md's tables and issue #15's targets for the "processes" and "profile" sections."""
from __future__ import annotations

from benchmarks.methods import LABELLED
from benchmarks.processes import AUTODIFF

# (target text, ratio name, threshold): the ratio of medians must reach the threshold at
# every size (speedups) or stay under it (the hand recursion's time).
SPEED_TARGETS = (("jaxbp autodiff >= 1.5x torch eager at every size (separate processes)",
                  "autodiff speedup over torch eager", 1.5, True),
                 ("jaxbp autodiff >= 1.3x torch.compile at every size (separate processes)",
                  "autodiff speedup over torch.compile", 1.3, True),
                 ("hand recursion time <= 1.05x autodiff at every size (separate processes)",
                  "hand / autodiff time", 1.05, False))
CEILING_TARGET = (256, 128, 0.65)


def _target(name, measured, threshold, met, note=""):
  return {"target": name, "measured": measured, "threshold": threshold, "met": bool(met),
          "note": note}


def targets(sec: dict) -> list:
  """Issue #15's targets from the processes section, each met or missed."""
  rows, out = sec["rows"], []
  for name, ratio, threshold, at_least in SPEED_TARGETS:
    have = [r for r in rows if ratio in r["ratios"]]
    if not have:
      out.append(_target(name, None, threshold, False, f"not measured: no {ratio} ratio"))
      continue
    pick = min if at_least else max
    worst = pick(have, key=lambda r: r["ratios"][ratio]["of_medians"])
    v = worst["ratios"][ratio]
    met = all((r["ratios"][ratio]["of_medians"] >= threshold) if at_least
              else (r["ratios"][ratio]["of_medians"] <= threshold) for r in have)
    spread = ("" if v["round_min"] is None
              else f"; per-round {v['round_min']:.2f}-{v['round_max']:.2f}")
    out.append(_target(name, v["of_medians"], threshold, met,
                       f"worst at width {worst['width']} batch {worst['batch']}{spread}; "
                       f"{len(have)} sizes, {sec['rounds']} rounds"))
  width, batch, frac = CEILING_TARGET
  row = next((r for r in rows if (r["width"], r["batch"]) == (width, batch)), None)
  name = f"width {width} batch {batch}: autodiff >= {frac:.0%} of the matmul ceiling"
  if row is None or AUTODIFF not in row["methods"]:
    out.append(_target(name, None, frac, False, "not measured at this size"))
  else:
    f = row["methods"][AUTODIFF]["fraction_of_matmul"]
    out.append(_target(name, f["median"], frac, f["median"] >= frac,
                       f"per-round {f['min']:.0%}-{f['max']:.0%} of a {sec['matmul_n']}^2 "
                       f"matmul timed in the same process"))
  return out


def _ms(s):
  return f"{s * 1e3:.3g}"


def _range_ms(sp):
  return f"{_ms(sp['median'])} ({_ms(sp['min'])}–{_ms(sp['max'])})"


def _ratio(v):
  if v is None:
    return "-"
  spread = "" if v["round_min"] is None else f" ({v['round_min']:.2f}–{v['round_max']:.2f})"
  return f"{v['of_medians']:.2f}{spread}"


def processes_md(sec: dict) -> list:
  """The processes section: step times, ratios, then first-call (compile) times."""
  labelled = ", ".join(f"*{m}*" for m in LABELLED if m in sec["methods"])
  lines = ["## 1. Gradient step throughput, each method in its own process", "",
           f"tanh MLP, MSE, depth {sec['depth']} (in = width = out), float32. Every (method, "
           "size) point is a fresh `python -m benchmarks.child` process with the "
           f"environment as the user has it (OMP_WAIT_POLICY: {sec['omp_wait_policy']}); it "
           f"times steps for {sec['window_s']:g} s after warm-up (median per step), then a "
           f"jitted {sec['matmul_n']}² float32 matmul, the ceiling, for "
           f"{sec['ceiling_window_s']:g} s. {sec['rounds']} rounds, methods in rotated order; "
           "each cell is the median over rounds with the min–max over rounds in brackets. "
           + (f"{labelled} changes a default: an extra, labelled row, not a baseline. "
              if labelled else "")
           + "The gradient of every method is checked against a float64 NumPy reference "
           "(*max rel err*).", "",
           "| width | batch | method | ms/step | GFLOP/s | % of matmul | max rel err | threads |",
           "|---:|---:|---|---:|---:|---:|---:|---:|"]
  for r in sec["rows"]:
    for m, v in r["methods"].items():
      f = v["fraction_of_matmul"]
      lines.append(f"| {r['width']} | {r['batch']} | {m} | {_range_ms(v['step_s'])} | "
                   f"{v['gflops']['median']:.1f} | {f['median']:.0%} ({f['min']:.0%}–"
                   f"{f['max']:.0%}) | {v['max_rel_err']:.1e} | {v['threads'] or '-'} |")
    for m, why in r["skipped"].items():
      lines.append(f"| {r['width']} | {r['batch']} | {m} | {why} | | | | |")
  names = [n for n in ("autodiff speedup over torch eager", "autodiff speedup over torch.compile",
                       "autodiff speedup over torch eager, 1 thread", "hand / autodiff time",
                       "flax / autodiff time", "equinox / autodiff time",
                       "raw jax / autodiff time", "numpy / autodiff time")
           if any(n in r["ratios"] for r in sec["rows"])]
  lines += ["", "Ratios of the medians above (the min–max of the same ratio taken round by "
            "round in brackets). *Speedup over X* is X's time / jaxbp autodiff's time; "
            "*A / autodiff time* above 1 means A is slower.", "",
            "| width | batch | jaxbp autodiff ms | % of matmul | " + " | ".join(names) + " |",
            "|---:|---:|---:|---:|" + "---:|" * len(names)]
  for r in sec["rows"]:
    ad = r["methods"].get(AUTODIFF)
    cells = [_range_ms(ad["step_s"]) if ad else "-",
             f"{ad['fraction_of_matmul']['median']:.0%}" if ad else "-"]
    cells += [_ratio(r["ratios"].get(n)) for n in names]
    lines.append(f"| {r['width']} | {r['batch']} | " + " | ".join(cells) + " |")
  methods = [m for m in sec["methods"] if any(m in r["methods"] for r in sec["rows"])]
  lines += ["", "First call (tracing and compiling where the method compiles; one step for "
            "eager methods), seconds, median (min–max) over rounds:", "",
            "| width | batch | " + " | ".join(methods) + " |",
            "|---:|---:|" + "---:|" * len(methods)]
  for r in sec["rows"]:
    cells = []
    for m in methods:
      v = r["methods"].get(m)
      sp = v["first_call_s"] if v else None
      cells.append("-" if sp is None else f"{sp['median']:.2f} ({sp['min']:.2f}–{sp['max']:.2f})")
    lines.append(f"| {r['width']} | {r['batch']} | " + " | ".join(cells) + " |")
  lines.append("")
  return lines


def profile_md(sec: dict) -> list:
  """The profile section: the three programs and the split of a step."""
  lines = [f"## 1a. Where a small step's time goes (width {sec['width']}, batch {sec['batch']}, "
           f"depth {sec['depth']})", "",
           "Jitted programs on the same arguments, timed interleaved in one process: a no-op "
           "call (*dispatch*: the call with the step's pytree of arguments and the wait), the "
           "step's matmuls alone (same shapes and order, nothing else), and the full step. "
           "*matmul compute* = matmuls − dispatch, *elementwise and the rest* = step − "
           "matmuls.", "", "| program | ms per call |", "|---|---:|"]
  for name, t in sec["times"].items():
    lines.append(f"| {name} | {t['median_s'] * 1e3:.4g} |")
  lines += ["", "| step | total ms | dispatch | matmul compute | elementwise and the rest |",
            "|---|---:|---:|---:|---:|"]
  for step, s in sec["split"].items():
    cells = [f"{s['parts_s'][k] * 1e3:.3g} ms ({s['shares'][k]:.0%})"
             for k in ("dispatch", "matmul compute", "elementwise and the rest")]
    lines.append(f"| {step} | {s['total_s'] * 1e3:.3g} | " + " | ".join(cells) + " |")
  lines += ["", f"The step's {sec['dots']} matmuls take {sec['seconds_per_dot'] * 1e6:.3g} µs "
            f"each on average, {sec['matmul_gflops']:.1f} GFLOP/s (the large-matmul ceiling is "
            "in section 1's tables).", ""]
  return lines

