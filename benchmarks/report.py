"""The benchmark's report: issues #6's, #15's and #20's targets, met or missed, and results.md."""
from __future__ import annotations

import benchmarks.report_processes as report_processes
import benchmarks.rnn as rnn
import benchmarks.transformer as transformer
from benchmarks.monitor_overhead import monitor_md
from benchmarks.throughput import MATMUL, SHAPE_MATMUL


def _target(name, measured, threshold, met, note=""):
  """One target's row: what it asks, the measured value, the threshold, met or not, a note."""
  return {"target": name, "measured": measured, "threshold": threshold, "met": bool(met),
          "note": note}


def targets(res: dict) -> list:
  """Issues #15's (separate processes) and #6's targets, each met or missed with its value."""
  out = report_processes.targets(res["processes"]) if res.get("processes") else []
  tp = res.get("throughput")
  if tp:
    rows = tp["rows"]
    if "autodiff_speedup_over_torch" in rows[0]:
      worst = min(rows, key=lambda r: r["autodiff_speedup_over_torch"])
      torch_frac = worst["methods"]["torch eager"]["fraction_of_matmul"]
      out.append(_target(
          "one process: jaxbp autodiff >= 1.5x PyTorch eager (default threads) at every size",
          worst["autodiff_speedup_over_torch"], 1.5, worst["autodiff_speedup_over_torch"] >= 1.5,
          f"worst at width {worst['width']} batch {worst['batch']}, where torch eager "
          f"runs at {torch_frac:.0%} of the matmul rate: 1.5x would need autodiff at "
          f"{1.5 * torch_frac:.0%}"))
    else:
      out.append(_target("one process: jaxbp autodiff >= 1.5x PyTorch eager at every size", None,
                         1.5, False,
                         tp["torch"]))
    big = max(rows, key=lambda r: (r["width"], r["batch"]))
    out.append(_target(
        f"one process: width {big['width']} batch {big['batch']}: autodiff >= 75% of the "
        "matmul rate",
        big["autodiff_fraction_of_matmul"], 0.75, big["autodiff_fraction_of_matmul"] >= 0.75,
        f"{big['methods']['jaxbp autodiff']['gflops']:.0f} of {big['matmul_gflops']:.0f} "
        f"GFLOP/s ({tp['matmul_n']}^2 matmul, timed interleaved); of one matmul of the step's "
        f"shape ({big['batch']}x{big['width']} @ {big['width']}x{big['width']}): "
        f"{big['autodiff_fraction_of_shape_matmul']:.0%}"))
    worst = max(rows, key=lambda r: r["hand_over_autodiff_time"])
    out.append(_target(
        "one process: hand recursion time <= 1.05x autodiff at every size",
        worst["hand_over_autodiff_time"],
        1.05, worst["hand_over_autodiff_time"] <= 1.05,
        f"worst at width {worst['width']} batch {worst['batch']}"))
  mon = res.get("monitor")
  if mon:
    over = mon["overhead"]
    step = over["monitored step vs plain step"]
    out.append(_target(
        f"monitoring overhead <= 15% of a plain step (width {mon['width']}, depth "
        f"{mon['depth']}, batch {mon['batch']})", step, 0.15, step <= 0.15,
        "; ".join(f"{k}: {v:+.1%}" for k, v in over.items())))
  comp = res.get("compile")
  if comp:
    scan = comp["rows"]["scan"]
    lo, hi = min(scan), max(scan)
    ratio = scan[hi]["total_s"] / scan[lo]["total_s"]
    out.append(_target(f"scan compile at depth {hi} <= 1.5x depth {lo}", ratio, 1.5, ratio <= 1.5,
                       f"{scan[hi]['total_s']:.2f} s vs {scan[lo]['total_s']:.2f} s"))
  mem = res.get("memory")
  if mem:
    plain, remat = mem["rows"]["autodiff, scan"], mem["rows"]["autodiff, scan + remat"]
    block = mem["rows"]["autodiff, scan + block remat"]
    depths = [d for d in plain if "skipped" not in plain[d] and "skipped" not in remat[d]]
    if depths:
      d = max(depths)
      act = remat[d]["xla_temp"] / plain[d]["xla_temp"]
      note = (f"depth {d}: step peak +{remat[d]['step_extra'] / 2**20:.0f} vs "
              f"+{plain[d]['step_extra'] / 2**20:.0f} MiB, of which the gradients "
              f"(output) are {plain[d]['xla_output'] / 2**20:.0f} MiB; XLA temporaries "
              f"(activations) {remat[d]['xla_temp'] / 2**20:.0f} vs "
              f"{plain[d]['xla_temp'] / 2**20:.0f} MiB = {act:.2f}")
      if "skipped" not in block[d]:
        note += (f"; block remat (k={block[d]['block']}): temporaries "
                 f"{block[d]['xla_temp'] / 2**20:.0f} MiB = "
                 f"{block[d]['xla_temp'] / plain[d]['xla_temp']:.3f}, step peak ratio "
                 f"{block[d]['step_extra'] / plain[d]['step_extra']:.2f}")
      note += (f"; the gradients (= parameter size) alone are "
               f"{plain[d]['param_bytes'] / plain[d]['step_extra']:.2f} of the no-remat peak, "
               "a floor no remat can go below")
      best = min((v for v in (remat, block) if "skipped" not in v[d]),
                 key=lambda v: v[d]["xla_temp"])
      act = best[d]["xla_temp"] / plain[d]["xla_temp"]
      which = "block remat" if best is block else "per-layer remat"
      out.append(_target(f"remat activation memory (XLA temporaries) at depth {d} <= 10% of "
                         "without", act, 0.10, act <= 0.10, f"{which}; " + note))
    else:
      out.append(_target("remat activation memory at the deepest depth <= 10% of without",
                         None, 0.10, False, "not measured: " + "; ".join(
                             str(v.get("skipped")) for v in plain.values() if "skipped" in v)))
    for r in mem.get("deep", {}).values():
      if "skipped" in r:
        continue
      gb = r["peak_rss"] / 1e9
      out.append(_target(
          f"depth-{r['depth']} MLP, width {r['width']}: one gradient step within 2 GB peak "
          f"({r['variant']})", gb, 2.0, gb <= 2.0,
          f"process peak {gb:.2f} GB (resident-set high-water mark), the step adding "
          f"{r['step_extra'] / 1e9:.2f} GB; float32 params alone are "
          f"{r['param_bytes'] / 1e9:.2f} GB and their gradients as much again; batch "
          f"{r['batch']}, {r['step_s']:.1f} s per step"))
  if res.get("sweep"):
    sw, small = res["sweep"]["grid"], res["sweep"].get("small_nets")
    note = (f"{sw['configs']} configs, depth {sw['depth']}, width {sw['width']}, batch "
            f"{sw['batch']}: {sw['item_flops'] / 1e6:.0f} MFLOP per config, loop "
            f"{sw['times']['loop of jitted calls']['median_s'] / sw['configs'] * 1e3:.2f} "
            "ms per call")
    if small:
      note += (f"; small nets (width {small['width']}, depth {small['depth']}, {small['configs']} "
               f"configs): {small['vmapped_speedup_over_loop']:.1f}x")
    note += ("; the ceiling is the matmul shape: a seed's configurations give "
             f"{sw['batch']} x (configs per seed) rows per matmul, far below the ~400 rows at "
             "which this CPU's matmuls reach most of their large-matrix rate")
    out.append(_target("vmapped sweep >= 5x faster than the per-config loop",
                       sw["vmapped_speedup_over_loop"], 5.0, sw["vmapped_speedup_over_loop"] >= 5,
                       note))
  pe = res.get("per_example")
  if pe:
    note = f"batch {pe['batch']}, width {pe['width']}, depth {pe['depth']}"
    if "per_example_grads_speedup" in pe:
      note += (f"; backprop.per_example_grads (hand deltas + einsum): "
               f"{pe['per_example_grads_speedup']:.1f}x the loop, "
               f"{pe['per_example_grads_over_vmap_time']:.2f} of vmap(grad)'s time")
    out.append(_target("vmap(grad) >= 20x faster than the loop", pe["speedup"], 20.0,
                       pe["speedup"] >= 20, note))
  if res.get("rnn"):
    out.append(rnn.target(res["rnn"]))
  if res.get("transformer"):
    out.append(transformer.target(res["transformer"]))
  return out


def _ms(s):
  """Seconds as milliseconds, 3 significant digits."""
  return f"{s * 1e3:.3g}"


def _mib(b):
  """Bytes as MiB ("-" for None): whole MiB from 10 MiB up, two decimals below."""
  if b is None:
    return "-"
  return f"{b / 2**20:,.0f}" if abs(b) >= 10 * 2**20 else f"{b / 2**20:.2f}"


def _throughput_md(tp: dict) -> list:
  """Section 1's tables."""
  n = tp["matmul_n"]
  lines = ["## 1b. Gradient step throughput, every method in one process",
           "", f"tanh MLP, MSE, depth {tp['rows'][0]['depth']} (in = width = out), one step = "
           "6 · batch · Σ in·out flops. The frameworks share this process's cores, so their "
           "ratios here measure contention as much as speed: section 1 is the comparison. "
           "The ceiling is a jitted "
           f"{n}×{n} float32 matmul (2·{n}³ flops), timed in the same interleaved rounds as "
           "each row's methods; *% of matmul* is relative to that row's ceiling. "
           f"torch: {tp['torch']}.", "",
           "| width | batch | method | ms/step | GFLOP/s | % of matmul | speed vs torch eager "
           "| max rel err |",
           "|---:|---:|---|---:|---:|---:|---:|---:|"]
  for r in tp["rows"]:
    tt = r["methods"]["torch eager"]["median_s"] if "torch eager" in r["methods"] else None
    for name, t in r["methods"].items():
      vs = f"{tt / t['median_s']:.2f}x" if tt and name not in (MATMUL, SHAPE_MATMUL) else "-"
      lines.append(f"| {r['width']} | {r['batch']} | {name} | {_ms(t['median_s'])} | "
                   f"{t['gflops']:.1f} | {t['fraction_of_matmul']:.0%} | {vs} | "
                   f"{'-' if t['max_rel_err'] is None else format(t['max_rel_err'], '.1e')} |")
  lines += ["", "| width | batch | autodiff / torch eager speed "
            "| hand / autodiff time "
            "| scan / unrolled time | numpy / autodiff time "
            "| autodiff % of large matmul | autodiff % of step-shape matmul |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in tp["rows"]:
    sp = r.get("autodiff_speedup_over_torch")
    lines.append(f"| {r['width']} | {r['batch']} | {'-' if sp is None else f'{sp:.2f}x'} | "
                 f"{r['hand_over_autodiff_time']:.2f} | {r['scan_over_autodiff_time']:.2f} | "
                 f"{r['numpy_over_autodiff_time']:.2f} | "
                 f"{r['autodiff_fraction_of_matmul']:.0%} | "
                 f"{r['autodiff_fraction_of_shape_matmul']:.0%} |")
  for r in tp["rows"]:
    if "hlo_autodiff" in r:
      lines += ["", f"Optimised HLO at width {r['width']} batch {r['batch']} (op counts): "
                f"autodiff {r['hlo_autodiff']}; hand recursion {r['hlo_hand']}."]
  lines.append("")
  return lines


def _compile_md(comp: dict) -> list:
  """Section 2's table."""
  depths = sorted({int(d) for v in comp["rows"].values() for d in v})
  lines = ["## 2. Compile time against depth", "",
           f"`jit(grad(objective))`, width {comp['width']}, batch {comp['batch']}: "
           "trace + lower + XLA compile, seconds (lower / compile in brackets).", "",
           "| variant | " + " | ".join(f"depth {d}" for d in depths) + " |",
           "|---|" + "---:|" * len(depths)]
  for name, row in comp["rows"].items():
    cells = []
    for d in depths:
      r = row.get(d, row.get(str(d)))
      if r is None:
        cells.append("-")
      elif "skipped" in r:
        cells.append(r["skipped"])
      else:
        cells.append(f"{r['total_s']:.2f} ({r['lower_s']:.2f} / {r['compile_s']:.2f})")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines.append("")
  return lines


def _memory_md(mem: dict) -> list:
  """Section 3's table."""
  lines = ["## 3. Peak memory against depth", "",
           f"Width {mem['width']}, batch {mem['batch']}, one `jit` gradient step per fresh "
           "subprocess. *step peak*: resident-set high-water mark during the step minus the "
           "resident set just before it (parameters, data and the compiled program already "
           "there); it includes the gradients themselves (= parameter size). *XLA temp*: the "
           "compiled program's temporary buffers (activations kept for the backward pass and "
           "scratch). *saved residuals*: what autodiff stores for the backward pass "
           f"(`saved_residuals`, arguments excluded). One h is {_mib(mem['h_bytes'])} MiB. "
           "*block remat (k)* is `MLP(stack=True, remat=k)`: the stacked layers checkpointed "
           "in blocks of k, only every k-th activation saved (k minimises saved block inputs "
           "+ one block's recomputed activations + one block's sliced weights and weight "
           "gradients; ~sqrt(depth / 3) if the weights were negligible). The two ratio "
           "columns divide by *autodiff, scan* (no remat) at the same depth: *peak ratio* "
           "the whole step peak, *activation ratio* the XLA temporaries. The gradients are "
           "part of every step's peak and are as large as the parameters, so remat cannot "
           "bring the total below (parameter size) / (no-remat peak): that floor is the "
           "*gradient floor* column, and only the activation ratio can approach 0.", "",
           "| variant | depth | params MiB | step peak MiB | XLA temp MiB "
           "| XLA temp / (depth·h) | saved residuals MiB | XLA output MiB | step s "
           "| peak ratio | activation ratio | gradient floor |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  plain_rows = mem["rows"].get("autodiff, scan", {})
  for name, row in mem["rows"].items():
    for d, r in row.items():
      if "skipped" in r:
        lines.append(f"| {name} | {d} | {r['skipped']} | | | | | | | | | |")
        continue
      label = name + (f" (k={r['block']})" if r.get("block") else "")
      base = plain_rows.get(d)
      if base and "skipped" not in base:
        ratios = (f"{r['step_extra'] / base['step_extra']:.2f} | "
                  f"{r['xla_temp'] / base['xla_temp']:.3f} | "
                  f"{r['param_bytes'] / base['step_extra']:.2f}")
      else:
        ratios = "- | - | -"
      lines.append(f"| {label} | {d} | {_mib(r['param_bytes'])} | {_mib(r['step_extra'])} | "
                   f"{_mib(r['xla_temp'])} | {r['xla_temp'] / (int(d) * mem['h_bytes']):.2f} | "
                   f"{_mib(r['saved_residuals'])} | "
                   f"{_mib(r['xla_output'])} | {r['step_s']:.2f} | {ratios} |")
  deep = mem.get("deep")
  if deep:
    lines += ["", "One very deep net, each variant in a fresh process (process peak: the "
              "resident-set high-water mark of the whole process, parameters included):", "",
              "| variant | depth | width | batch | params MiB | process peak MiB "
              "| step peak MiB | XLA temp MiB | step s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in deep.items():
      if "skipped" in r:
        lines.append(f"| {name} | {r['depth']} | {r['width']} | {r['batch']} | {r['skipped']} "
                     "| | | | |")
        continue
      label = name + (f" (k={r['block']})" if r.get("block") else "")
      lines.append(f"| {label} | {r['depth']} | {r['width']} | {r['batch']} | "
                   f"{_mib(r['param_bytes'])} | {_mib(r['peak_rss'])} | {_mib(r['step_extra'])} "
                   f"| {_mib(r['xla_temp'])} | {r['step_s']:.2f} |")
  lines.append("")
  return lines


def _sweep_md(sweep: dict) -> list:
  """Section 4's tables."""
  lines = ["## 4. Depth-sweep grid", "",
           "`jaxbp.studies.depth_sweep.measure` per configuration: scale the seed's unit "
           "sample (drawn once per seed beforehand, as the sweep does), hand-recursion deltas, "
           "per-layer ‖δ‖², ‖dW‖², ‖db‖² (‖dW‖ from Gram matrices, dW never formed). The "
           "sweep's own program (`jaxbp.studies.depth_sweep.measure_groups`: a seed's "
           "configurations stacked as rows of one net on the seed's shared weights, seeds "
           "vmapped, one jitted call) "
           "against a Python loop of one jitted `measure` call per configuration, against "
           "the same loop in PyTorch eager.", ""]
  for key, title in (("grid", "The sweep's grid"), ("small_nets", "Small nets, same grid shape")):
    sw = sweep.get(key)
    if not sw:
      continue
    lines += [f"{title}: {sw['seeds']} seeds × {len(sw['sigma_w2'])} σ_w² × "
              f"{len(sw['sigma_b2'])} σ_b² = {sw['configs']} configurations, tanh, depth "
              f"{sw['depth']}, width {sw['width']}, batch {sw['batch']} "
              f"({sw['item_flops'] / 1e6:.2g} MFLOP each). First vmapped call (with compile) "
              f"{sw['vmapped_first_call_s']:.2f} s. Max relative difference from the vmapped "
              "results: " + ", ".join(f"{k} {v:.1e}" for k, v in sw["max_rel_err"].items()) + ".",
              "", "| method | ms per grid | time / vmapped |", "|---|---:|---:|"]
    v = sw["times"]["vmapped program"]["median_s"]
    for name, t in sw["times"].items():
      lines.append(f"| {name} | {_ms(t['median_s'])} | {t['median_s'] / v:.2f} |")
    if "torch loop" in sw:
      lines.append(f"| torch loop | {sw['torch loop']} | |")
    lines.append("")
  return lines


def _per_example_md(pe: dict) -> list:
  """Section 5's table."""
  lines = ["## 5. Per-example gradients", "",
           f"tanh MLP depth {pe['depth']}, width {pe['width']}, batch {pe['batch']}.", "",
           "| method | ms per batch | time / vmap(grad) | speedup over the loop |",
           "|---|---:|---:|---:|"]
  v = pe["times"]["vmap(grad)"]["median_s"]
  loop_s = pe["times"]["loop of jitted grads"]["median_s"]
  for name, t in pe["times"].items():
    lines.append(f"| {name} | {_ms(t['median_s'])} | {t['median_s'] / v:.2f} | "
                 f"{loop_s / t['median_s']:.1f}x |")
  hlo = (f" Optimised HLO (counts): vmap(grad) {pe['hlo_vmap_grad']}; from deltas "
         f"{pe['hlo_from_deltas']}." if "hlo_vmap_grad" in pe else "")
  lines += ["", f"The per-example gradients are {_mib(pe['gradient_bytes'])} MiB.{hlo} "
            "Max relative difference from vmap(grad): " + ", ".join(
                f"{k} {e:.1e}" for k, e in pe["max_rel_err"].items()) + ".", ""]
  return lines


SECTION_MARKDOWN = (("processes", report_processes.processes_md),
                    ("profile", report_processes.profile_md), ("monitor", monitor_md),
                    ("throughput", _throughput_md), ("compile", _compile_md),
                    ("memory", _memory_md), ("sweep", _sweep_md),
                    ("per_example", _per_example_md), ("rnn", rnn.rnn_md),
                    ("transformer", transformer.transformer_md))


def section_markdown(name: str, sec: dict) -> list:
  """One section's lines of results.md, its ``## `` heading first."""
  return dict(SECTION_MARKDOWN)[name](sec)


def target_row(t: dict) -> str:
  """One target's row of the targets table."""
  meas = "-" if t["measured"] is None else f"{t['measured']:.3g}"
  return (f"| {t['target']} | {meas} | {t['threshold']} | "
          f"{'met' if t['met'] else '**missed**'} | {t['note']} |")


def markdown(res: dict) -> str:
  """results.md: the machine, one table per section, the targets."""
  m = res["machine"]
  lines = ["# jaxbp benchmark", "",
           f"Run {res['time']}"
           f"{' (--quick: tiny sizes, not for reading)' if res['config']['quick'] else ''}"
           f", {res['seconds']:.0f} s. Median of repeats after warm-up, methods timed interleaved; "
           "float32.", "",
           "| CPU | cores | device | jax | jaxlib | torch | torch threads | numpy | python "
           "| OMP_WAIT_POLICY |",
           "|---|---|---|---|---|---|---|---|---|---|",
           f"| {m['cpu']} | {m['cores']} | {m['device']} | {m['jax']} | {m['jaxlib']} | "
           f"{m['torch']} | {m.get('torch_threads') or '-'} | {m['numpy']} | {m['python']} | "
           f"{m['omp_wait_policy']} |", ""]
  for name, section_md in SECTION_MARKDOWN:
    if res.get(name):
      lines += section_md(res[name])
  lines += ["## Targets", "", "| target | measured | threshold | met | note |",
            "|---|---:|---:|---|---|"]
  lines += [target_row(t) for t in res["targets"]]
  return "\n".join(lines) + "\n"
