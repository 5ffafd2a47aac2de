"""benchmarks: a quick run writes every section; every baseline gets the same gradient.

The timings themselves are not asserted (a shared CI machine makes them
noise); what is asserted is that every section and target is there, that every
method being timed computes the same gradient as ``jax.grad`` (float32 round-off),
that the sections needing torch say why when it is missing, and that a bad
config fails at construction.
"""
import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
import benchmarks as benchmark
from benchmarks import baselines, child, common, memory, methods, processes, timing
from benchmarks.config import PROCESS_METHODS, Grid

F32_RTOL = 1e-4     # float32 gradients of depth-3 nets, different summation orders


def test_quick_run_writes_every_section_target_and_same_gradient(tmp_path):
  # One test for the whole run: under pytest-xdist a shared fixture would run once per worker.
  # The processes, rnn and transformer sections have their own tests (a child process per
  # point is slow to start): tests/benchmarks/test_rnn_benchmark.py and
  # test_transformer_benchmark.py.
  sections = tuple(s for s in benchmark.SECTIONS if s not in ("processes", "rnn", "transformer"))
  config = benchmark.quick(batches=(8,), repeats=2, sections=sections)
  res = benchmark.run(config, tmp_path)

  saved = json.loads((tmp_path / "results.json").read_text())
  for name in sections + ("machine", "targets"):
    assert name in saved, name
  md = (tmp_path / "results.md").read_text()
  for heading in ("## 1a. Where a small step's time goes", "## 1b. Gradient step throughput",
                  "## 1c. Monitoring overhead",
                  "## 2. Compile time", "## 3. Peak memory", "## 4. Depth-sweep grid",
                  "## 5. Per-example gradients", "## Targets"):
    assert heading in md, heading
  for field in ("cpu", "cores", "jax", "jaxlib", "torch", "numpy", "device"):
    assert str(saved["machine"][field]) in md, field
  written = json.loads((tmp_path / "config.json").read_text())
  assert written["quick"] is True
  assert benchmark.Config(**written) == config          # config.json reads back as the config

  # Every target is reported, met or missed.
  # 7, the monitoring overhead and the very deep point's two remat variants.
  assert len(res["targets"]) == 10
  for t in res["targets"]:
    assert isinstance(t["met"], bool), t
    if t["measured"] is None:
      continue
    if "overhead" in t["target"]:
      # A relative overhead (timing noise on a tiny step may make it negative): check it
      # is the one recomputed from the section's own per-step times.
      times = res["monitor"]["times"]
      recomputed = [times[a]["median_s"] / times[b]["median_s"] - 1
                    for a, b in (k.split(" vs ") for k in res["monitor"]["overhead"])]
      assert any(abs(t["measured"] - r) <= 1e-12 * max(1.0, abs(r)) for r in recomputed), t
    else:
      assert t["measured"] > 0, t

  # Every timed method computes the same gradient.
  for row in res["throughput"]["rows"]:
    assert set(row["methods"]) >= {"jaxbp autodiff", "jaxbp hand recursion", "numpy (seed 002)"}
    for name, m in row["methods"].items():
      if m["max_rel_err"] is None:            # the matmul ceilings compute no gradient
        assert "matmul" in name
        continue
      assert m["max_rel_err"] < F32_RTOL, (row["width"], row["batch"], name, m["max_rel_err"])
      assert m["median_s"] > 0 and m["gflops"] > 0
  assert all(e < F32_RTOL for e in res["sweep"]["grid"]["max_rel_err"].values())
  assert all(e < F32_RTOL for e in res["per_example"]["max_rel_err"].values())

  # Compile: unrolled nets predicted over budget are skipped with the reason.
  rows = res["compile"]["rows"]
  assert rows["unrolled"][1000]["skipped"].startswith("skipped: predicted")
  for variant in ("scan", "scan + remat"):
    assert set(rows[variant]) == {10, 100, 1000}
    assert all(r["total_s"] > 0 for r in rows[variant].values())

  # Memory, measured in a child process.
  for variant, row in res["memory"]["rows"].items():
    for depth, r in row.items():
      assert "skipped" not in r, (variant, depth, r)
      assert r["peak_rss"] >= r["baseline_rss"] > 0
      assert r["xla_output"] >= r["param_bytes"]       # the gradients are the output
  # Per-layer remat keeps one h per layer where plain autodiff keeps three.
  d = max(res["memory"]["rows"]["autodiff, scan"])
  plain = res["memory"]["rows"]["autodiff, scan"][d]["saved_residuals"]
  remat = res["memory"]["rows"]["autodiff, scan + remat"][d]["saved_residuals"]
  assert remat < plain / 2

  # The very deep point: both remat variants measured (which keeps less depends on the
  # sizes: at width 8 the per-block weight slices outweigh the activations).
  deep = res["memory"]["deep"]
  assert set(deep) == {"autodiff, scan + block remat", "autodiff, scan + remat"}
  for r in deep.values():
    assert "skipped" not in r, r
    assert r["depth"] == 40 and r["peak_rss"] >= r["baseline_rss"] > 0
    assert r["xla_output"] >= r["param_bytes"] > 0

  # Monitoring: every program timed; a monitored step costs more than a plain one.
  assert set(res["monitor"]["overhead"]) == {"monitored step vs plain step",
                                             "fit, monitor=True (per step) vs fit (per step)",
                                             "fit, monitor=10 (per step) vs fit (per step)"}
  assert all(t["median_s"] > 0 for t in res["monitor"]["times"].values())

  # The profile splits each step into non-negative parts.
  for split in res["profile"]["split"].values():
    assert split["total_s"] > 0 and min(split["parts_s"].values()) >= 0


def test_sections_needing_torch_say_it_is_missing(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)      # import torch -> ImportError
  config = benchmark.quick(sections=("throughput",), widths=(8,), batches=(4,), repeats=1,
                           warmup=0, min_time=0.0)
  missing = "skipped: torch not installed"
  assert baselines.torch_skip(config) == missing       # what the sweep section records too
  assert baselines.torch_skip(dataclasses.replace(config, torch=False)) == \
      "skipped: torch disabled (--no-torch)"
  res = benchmark.run(config, tmp_path)
  assert res["throughput"]["torch"] == missing
  assert res["throughput"]["rows"][0]["torch eager"] == missing
  assert not any(m.startswith("torch") for m in res["throughput"]["rows"][0]["methods"])
  assert res["targets"][0]["met"] is False and res["targets"][0]["note"] == missing
  assert res["targets"][0]["target"].startswith("one process:")
  assert missing in (tmp_path / "results.md").read_text()


# -- the config ----------------------------------------------------------------


@pytest.mark.parametrize("field,value", [
    ("widths", ()), ("widths", (0,)), ("widths", "64"), ("depth", 1), ("depth", 2.0),
    ("batches", (True,)), ("repeats", 0), ("warmup", -1), ("min_time", -0.1),
    ("min_time", float("nan")), ("matmul_n", 0), ("compile_depths", ()),
    ("compile_budget_s", 0.0), ("memory_depths", (1,)), ("memory_timeout_s", -1),
    ("memory_fresh_process", "no"), ("torch", 1), ("quick", None), ("seed", -1),
    ("sections", ()), ("sections", ("throughput", "nope")), ("sections", ("compile", "compile")),
    ("sections", "throughput"), ("per_example_batch", 0),
    ("process_methods", ()), ("process_methods", ("jaxbp autodiff", "jax")),
    ("process_methods", ("numpy (seed 002)",) * 2), ("process_rounds", 0),
    ("process_window_s", -1.0), ("process_timeout_s", 0), ("profile_width", 0),
    ("memory_deep", (1, 8, 4)), ("memory_deep", (10, 8)), ("monitor_width", 0),
    ("monitor_fit_steps", 0), ("rnn_hidden_size", 0), ("rnn_steps", 1.5), ("rnn_rounds", 0),
    ("rnn_window_s", -1.0), ("rnn_timeout_s", 0), ("rnn_input_size", True),
    ("sweep_grid", Grid(0, (1.0,), (0.0,), 4, 8, 4)),
    ("sweep_grid", Grid(1, (), (0.0,), 4, 8, 4)),
    ("sweep_grid", Grid(1, (0.0,), (0.0,), 4, 8, 4)),
    ("sweep_grid", Grid(1, (1.0,), (-0.1,), 4, 8, 4)),
    ("sweep_grid", (1, 2)), ("sweep_small_grid", "small"),
])
def test_config_rejects_a_bad_value_naming_the_field(field, value):
  with pytest.raises(ValueError, match=field):
    benchmark.Config(**{field: value})


def test_config_normalises_lists_and_grids():
  config = benchmark.Config(widths=[8, 16], sections=["compile"], compile_depths=[100, 10],
                            sweep_grid=[2, [1.0], [0.0], 4, 8, 4],
                            sweep_small_grid={"seeds": 1, "sigma_w2": [1], "sigma_b2": [0],
                                              "depth": 2, "width": 4, "batch": 2})
  assert config.widths == (8, 16) and config.sections == ("compile",)
  assert config.compile_depths == (10, 100)       # ascending: each predicts the next
  assert config.sweep_grid == Grid(2, (1.0,), (0.0,), 4, 8, 4)
  assert isinstance(config.sweep_small_grid, Grid) and config.sweep_small_grid.sigma_w2 == (1.0,)
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.depth = 3
  with pytest.raises(ValueError, match="config must be a benchmark Config"):
    benchmark.run({"quick": True}, "/tmp/unused")


def test_import_sets_no_environment_thread_count_or_jax_option():
  code = ("import os, jax; env = dict(os.environ); x64 = jax.config.jax_enable_x64\n"
          "import benchmarks, benchmarks.memory_child\n"
          "import benchmarks.child\n"
          "assert dict(os.environ) == env, set(os.environ.items()) ^ set(env.items())\n"
          "assert jax.config.jax_enable_x64 == x64\n"
          "import sys; assert not {'torch', 'flax', 'equinox'} & set(sys.modules)")
  # Unset OMP_*, so that even a setdefault of one would show.
  env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
  subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


# -- the pieces, against independent references --------------------------------


def test_step_flops_counts_six_per_multiply_add():
  assert timing.step_flops((3, 4, 2), batch=5) == 6 * 5 * (3 * 4 + 4 * 2)


@pytest.mark.parametrize("layers,block", [(9, 3), (27, 3), (999, 27), (7, 1), (64, 4)])
def test_block_size_minimises_saved_arrays(layers, block):
  assert memory.block_size(layers) == block


def test_block_size_counts_the_sliced_weights():
  # depth 1000, width 1024, batch 256: W is 4 h, so blocks shrink from 27 to 9.
  assert memory.block_size(999, h_bytes=256 * 1024, w_bytes=1024 * 1024) == 9


def _net_params_data(width=5, depth=7, batch=4, dtype=jnp.float64):
  net = jaxbp.MLP.uniform(width, width, depth, width, activation="tanh", stack=True)
  params = net.init(jax.random.PRNGKey(0), "lecun", dtype=dtype)
  kx, ky = jax.random.split(jax.random.PRNGKey(1))
  return (net, params, jax.random.normal(kx, (batch, width), dtype),
          jax.random.normal(ky, (batch, width), dtype))


def test_block_remat_variant_is_the_library_option_and_matches_autodiff():
  # A stack of 27 narrow layers over a large batch: blocks of 3.
  net, params, x, y = _net_params_data(width=2, depth=28, batch=64)
  block_net, grad_fn = memory.grad_program("autodiff, scan + block remat", 28, 2, 64)
  assert block_net.remat == memory.memory_block(28, 2, 64) == 3 and block_net.remat_block == 3
  assert memory.grad_program("autodiff, scan + remat", 28, 2, 64)[0].remat is True
  assert memory.grad_program("autodiff, scan", 28, 2, 64)[0].remat is False
  want = jax.jit(jax.grad(jaxbp.objective(net, "mse")))(params, x, y)
  got = jax.jit(grad_fn)(params, x, y)
  for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got)):
    np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def test_numpy_seed002_backprop_matches_jax_grad():
  net, params, x, y = _net_params_data(depth=3)
  unstacked = jaxbp.unstack(params, net)
  want = jax.grad(jaxbp.objective(net, "mse"))(params, x, y)
  Ws = [np.concatenate([np.asarray(p.W), np.asarray(p.b)[None, :]], axis=0) for p in unstacked]
  got = baselines.numpy_grad(Ws, np.asarray(x), np.asarray(y))
  want = jaxbp.unstack(want, net)
  for g, p in zip(got, want):
    np.testing.assert_allclose(g[:-1], p.W, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g[-1], p.b, rtol=1e-12, atol=1e-14)


def test_torch_baseline_matches_jax_grad_and_keeps_the_thread_count():
  torch = pytest.importorskip("torch")
  net = common.net(6, 3)
  params = net.init(jax.random.PRNGKey(0), "lecun", dtype=common.F32)
  x, y = common.data(jax.random.PRNGKey(1), 5, 6)
  want = jax.tree_util.tree_leaves(jax.grad(jaxbp.objective(net, "mse"))(params, x, y))
  threads = torch.get_num_threads()
  step = baselines.torch_grad_fn(torch, params, x, y)
  assert common.max_rel_err(want, [t.numpy() for t in step()]) < F32_RTOL
  assert torch.get_num_threads() == threads


def test_max_rel_err_is_relative_to_the_reference_scale():
  assert common.max_rel_err([np.array([2.0, -4.0])], [np.array([2.0, -3.0])]) == 0.25
  with pytest.raises(ValueError, match="shapes differ"):
    common.max_rel_err([np.ones(2)], [np.ones(3)])


def test_hlo_summary_counts_the_dots_of_a_gradient_step():
  net = common.net(4, 2)
  params = net.init(jax.random.PRNGKey(0), "lecun", dtype=common.F32)
  x, y = common.data(jax.random.PRNGKey(1), 3, 4)
  compiled = jax.jit(jax.grad(jaxbp.objective(net, "mse"))).lower(params, x, y).compile()
  counts = common.hlo_summary(compiled)
  assert counts["dots"] == counts["dots_in_ynnpack"] + counts["dots_in_xla"]
  assert counts["dots"] >= 3     # at least a forward matmul per layer; fusion may merge others


def test_time_interleaved_reports_medians_per_method():
  t = timing.time_interleaved({"a": lambda: jnp.ones(3) * 2, "b": lambda: np.ones(3)},
                              repeats=3, warmup=1, min_time=0.001)
  for v in t.values():
    assert v["min_s"] <= v["median_s"] <= v["max_s"] and v["repeats"] == 3 and v["number"] >= 1


# -- the processes section: one method per fresh process -------------------------


def test_method_list_is_the_configs():
  assert methods.METHODS == PROCESS_METHODS


@pytest.mark.parametrize("method", [m for m in methods.METHODS if m != "torch.compile"])
def test_every_method_computes_the_reference_gradient(method):
  # torch.compile's inductor build takes tens of seconds: the child checks its
  # gradient (max_rel_err) in every full run instead.
  net, params, x, y = methods.problem(8, 4, 3)
  try:
    step, flat = methods.build(method, net, params, x, y)
  except methods.Missing as e:
    pytest.skip(str(e))
  threads = None
  if method == "torch eager, 1 thread":
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
  try:
    got = flat(step())
  finally:
    if threads is not None:
      torch.set_num_threads(threads)     # the builder set 1 for its own (child) process
  assert len(got) == 2 * len(params)
  assert common.max_rel_err(methods.reference_grads(params, x, y), got) < F32_RTOL


def test_child_prints_one_json_line_and_the_parent_aggregates_it(tmp_path):
  config = benchmark.quick(widths=(8,), batches=(4,), depth=2, warmup=1, matmul_n=32,
                           process_methods=("jaxbp autodiff", "jaxbp hand recursion"),
                           process_rounds=1, process_window_s=0.02, process_ceiling_s=0.01,
                           sections=("processes",))
  res = benchmark.run(config, tmp_path)["processes"]
  assert [(r["round"], r["method"]) for r in res["records"]] == \
      [(0, "jaxbp autodiff"), (0, "jaxbp hand recursion")]
  pids = set()
  for rec in res["records"]:
    assert "skipped" not in rec, rec
    assert rec["min_s"] <= rec["p10_s"] <= rec["median_s"] <= rec["p90_s"] <= rec["max_s"]
    assert rec["calls"] >= child.MIN_CALLS and rec["first_call_s"] > 0
    assert rec["max_rel_err"] < F32_RTOL
    assert rec["matmul"]["n"] == 32 and rec["matmul"]["gflops"] > 0
    assert rec["fraction_of_matmul"] == pytest.approx(rec["gflops"] / rec["matmul"]["gflops"])
    pids.add(rec["pid"])
  assert len(pids) == 2 and os.getpid() not in pids       # each in its own process
  (row,) = res["rows"]
  assert set(row["methods"]) == {"jaxbp autodiff", "jaxbp hand recursion"}
  assert row["ratios"]["hand / autodiff time"]["of_medians"] > 0
  md = (tmp_path / "results.md").read_text()
  assert "## 1. Gradient step throughput, each method in its own process" in md
  assert "hand recursion time <= 1.05x autodiff" in md


def test_child_reports_a_missing_framework_as_skipped(monkeypatch):
  monkeypatch.setitem(sys.modules, "equinox", None)     # import equinox -> ImportError
  rec = child.measure("equinox", 4, 2, depth=2, window=0.0, ceiling_window=0.0, matmul_n=8)
  assert rec["skipped"].startswith("skipped: equinox not installed")


def test_schedule_rotates_the_methods_every_round():
  order = processes.schedule(("a", "b", "c"), [(8, 4), (16, 4)], rounds=3)
  assert len(order) == 3 * 2 * 3
  firsts = [order[i][3] for i in range(0, len(order), 3)]
  assert firsts == ["a", "a", "b", "b", "c", "c"]       # round r starts with method r
  for r in range(3):
    in_round = [o for o in order if o[0] == r]
    assert sorted(in_round) == sorted((r, w, b, m) for w, b in [(8, 4), (16, 4)]
                                      for m in "abc")


def _fake_record(method, width, batch, config, seconds):
  return {"method": method, "width": width, "batch": batch, "median_s": seconds,
          "first_call_s": 10 * seconds, "gflops": 1.0 / seconds, "step_flops": 1,
          "fraction_of_matmul": 0.1 / seconds, "matmul": {"gflops": 10.0},
          "max_rel_err": 1e-7, "threads": None, "peak_rss": 1}


def test_parent_aggregates_medians_spreads_and_ratios_over_rounds():
  # Fake children: torch eager takes 2, 3, 4 s over the rounds; jaxbp autodiff always 1 s
  # but for a 2 s round; hand recursion fails in one round.
  times = {"jaxbp autodiff": [1.0, 2.0, 1.0], "torch eager": [2.0, 3.0, 4.0],
           "jaxbp hand recursion": [1.1, None, 1.2]}
  calls = []

  def runner(method, width, batch, config):
    r = sum(1 for c in calls if c == method)
    calls.append(method)
    t = times[method][r]
    if t is None:
      return {"method": method, "width": width, "batch": batch, "skipped": "failed: boom"}
    return _fake_record(method, width, batch, config, t)

  config = benchmark.quick(widths=(8,), batches=(4,), process_rounds=3,
                           process_methods=tuple(times))
  res = processes.processes(config, runner=runner)
  (row,) = res["rows"]
  ad, te = row["methods"]["jaxbp autodiff"], row["methods"]["torch eager"]
  assert ad["step_s"] == {"median": 1.0, "min": 1.0, "max": 2.0, "n": 3}
  assert te["step_s"] == {"median": 3.0, "min": 2.0, "max": 4.0, "n": 3}
  assert ad["first_call_s"]["median"] == 10.0
  speed = row["ratios"]["autodiff speedup over torch eager"]
  assert speed["of_medians"] == 3.0
  assert (speed["round_min"], speed["round_max"]) == (1.5, 4.0)   # 3/2 and 4/1
  hand = row["ratios"]["hand / autodiff time"]
  assert hand["of_medians"] == pytest.approx(1.15) and hand["round_max"] == pytest.approx(1.2)
  assert row["skipped"]["jaxbp hand recursion"].startswith("1 of 3 rounds: failed: boom")
  assert row["methods"]["jaxbp hand recursion"]["step_s"]["n"] == 2


def test_child_command_passes_the_config():
  config = benchmark.quick(depth=4, matmul_n=64, process_window_s=0.5, seed=3)
  cmd = processes.child_command("torch.compile", 16, 8, config)
  assert cmd[1:6] == ["-m", "benchmarks.child", "torch.compile", "16", "8"]
  args = child.parse(cmd[3:])
  assert (args.depth, args.matmul_n, args.window, args.seed) == (4, 64, 0.5, 3)


def test_only_the_labelled_child_changes_a_thread_count_or_the_environment():
  # Baselines run with their users' defaults. The one row that changes a thread
  # count is "torch eager, 1 thread", which methods.py builds inside its own child
  # process; no other benchmark module may set threads or environment variables.
  import pathlib
  import re
  root = pathlib.Path(benchmark.__file__).parent
  banned = re.compile(r"set_num_threads|set_num_interop_threads|threadpool|"
                      r"os\.environ\[[^]]+\]\s*=|os\.environ\.(setdefault|update)|putenv")
  offenders = {}
  for path in sorted(root.glob("*.py")):
    code = (line.strip() for line in path.read_text().splitlines())
    hits = [line for line in code if banned.search(line) and not line.startswith(("#", "``"))]
    if path.name == "methods.py":
      assert hits == ["torch.set_num_threads(threads)"], hits
    elif hits:
      offenders[path.name] = hits
  assert not offenders, offenders
  assert methods.LABELLED == ("torch eager, 1 thread",)
