"""experiments/benchmark.py: --quick writes every section; every baseline gets the same gradient.

The timings themselves are not asserted (a shared CI machine makes them
noise); what is asserted is that every section and target is there, that every
method being timed computes the same gradient as ``jax.grad`` (float32 round-off),
and that the sections needing torch say why when it is missing.
"""
import dataclasses
import importlib.util
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.studies import benchmarking

_PATH = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "benchmark.py"
_spec = importlib.util.spec_from_file_location("benchmark", _PATH)
bm = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bm          # dataclasses look their module up there
_spec.loader.exec_module(bm)

F32_RTOL = 1e-4     # float32 gradients of depth-3 nets, different summation orders


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench")
  res = bm.run(bm.quick(), out)
  return out, res


def test_quick_writes_every_section(quick_run):
  out, res = quick_run
  saved = json.loads((out / "results.json").read_text())
  for name in bm.SECTIONS + ("machine", "targets"):
    assert name in saved, name
  md = (out / "results.md").read_text()
  for heading in ("## 1. Gradient step throughput", "## 2. Compile time", "## 3. Peak memory",
                  "## 4. Depth-sweep grid", "## 5. Per-example gradients", "## Targets"):
    assert heading in md, heading
  for field in ("cpu", "cores", "jax", "jaxlib", "torch", "numpy", "device"):
    assert str(saved["machine"][field]) in md, field
  assert json.loads((out / "config.json").read_text())["quick"] is True


def test_quick_targets_are_all_reported(quick_run):
  _, res = quick_run
  assert len(res["targets"]) == 7
  for t in res["targets"]:
    assert isinstance(t["met"], bool), t
    assert t["measured"] is None or t["measured"] > 0, t


def test_every_timed_method_computes_the_same_gradient(quick_run):
  _, res = quick_run
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


def test_quick_compile_skips_unrolled_over_budget_with_a_reason(quick_run):
  _, res = quick_run
  rows = res["compile"]["rows"]
  assert rows["unrolled"][1000]["skipped"].startswith("skipped: predicted")
  for variant in ("scan", "scan + remat"):
    assert set(rows[variant]) == {10, 100, 1000}
    assert all(r["total_s"] > 0 for r in rows[variant].values())


def test_quick_memory_measured_in_subprocesses(quick_run):
  _, res = quick_run
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


def test_sections_needing_torch_say_it_is_missing(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)      # import torch -> ImportError
  config = dataclasses.replace(bm.quick(), sections=("throughput",), widths=(8,), batches=(4,),
                               repeats=1, warmup=0, min_time=0.0)
  missing = "skipped: torch not installed"
  assert bm._torch_skip(config) == missing             # what the sweep section records too
  res = bm.run(config, tmp_path)
  assert res["throughput"]["torch"] == missing
  assert res["throughput"]["rows"][0]["torch eager"] == missing
  assert not any(m.startswith("torch") for m in res["throughput"]["rows"][0]["methods"])
  assert res["targets"][0]["met"] is False and res["targets"][0]["note"] == missing
  assert missing in (tmp_path / "results.md").read_text()


# -- the pieces, against independent references --------------------------------


def test_step_flops_counts_six_per_multiply_add():
  assert benchmarking.step_flops((3, 4, 2), batch=5) == 6 * 5 * (3 * 4 + 4 * 2)


@pytest.mark.parametrize("layers,block", [(9, 3), (27, 3), (999, 27), (7, 1), (64, 4)])
def test_block_size_minimises_saved_arrays(layers, block):
  assert bm._block_size(layers) == block


def test_block_size_counts_the_sliced_weights():
  # depth 1000, width 1024, batch 256: W is 4 h, so blocks shrink from 27 to 9.
  assert bm._block_size(999, h_bytes=256 * 1024, w_bytes=1024 * 1024) == 9


def _net_params_data(width=5, depth=7, batch=4, dtype=jnp.float64):
  net = jaxbp.MLP.uniform(width, width, depth, width, activation="tanh", stack=True)
  params = net.init(jax.random.PRNGKey(0), "lecun", dtype=dtype)
  kx, ky = jax.random.split(jax.random.PRNGKey(1))
  return (net, params, jax.random.normal(kx, (batch, width), dtype),
          jax.random.normal(ky, (batch, width), dtype))


def test_block_remat_variant_is_the_library_option_and_matches_autodiff():
  # A stack of 27 narrow layers over a large batch: blocks of 3.
  net, params, x, y = _net_params_data(width=2, depth=28, batch=64)
  block_net, grad_fn = bm._grad_program("autodiff, scan + block remat", 28, 2, 64)
  assert block_net.remat == bm._memory_block(28, 2, 64) == 3 and block_net.remat_block == 3
  assert bm._grad_program("autodiff, scan + remat", 28, 2, 64)[0].remat is True
  assert bm._grad_program("autodiff, scan", 28, 2, 64)[0].remat is False
  want = jax.jit(jax.grad(jaxbp.objective(net, "mse")))(params, x, y)
  got = jax.jit(grad_fn)(params, x, y)
  for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got)):
    np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def test_numpy_seed002_backprop_matches_jax_grad():
  net, params, x, y = _net_params_data(depth=3)
  unstacked = jaxbp.unstack(params, net)
  want = jax.grad(jaxbp.objective(net, "mse"))(params, x, y)
  Ws = [np.concatenate([np.asarray(p.W), np.asarray(p.b)[None, :]], axis=0) for p in unstacked]
  got = bm.numpy_grad(Ws, np.asarray(x), np.asarray(y))
  want = jaxbp.unstack(want, net)
  for g, p in zip(got, want):
    np.testing.assert_allclose(g[:-1], p.W, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g[-1], p.b, rtol=1e-12, atol=1e-14)


def test_time_interleaved_reports_medians_per_method():
  t = benchmarking.time_interleaved({"a": lambda: jnp.ones(3) * 2, "b": lambda: np.ones(3)},
                                    repeats=3, warmup=1, min_time=0.001)
  for v in t.values():
    assert v["min_s"] <= v["median_s"] <= v["max_s"] and v["repeats"] == 3 and v["number"] >= 1
