"""benchmarks' rnn section: the hand BPTT row against autodiff through a plain lax.scan.

No timing is asserted (a shared machine makes it noise): what is asserted is
that a quick run writes the row with finite positive times from two fresh
processes and a passing gradient check, that the baseline computes the same
loss and gradient as the RNN (float64, against jaxbp's objective and hand
backward), that the check and the target fail on a wrong gradient, and that
merging the section into earlier results leaves everything else as it was.
"""
import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.core import backprop
import benchmarks as benchmark
from benchmarks import merge, rnn, rnn_child

COMMITTED = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "results",
                         "benchmark")


def test_quick_run_writes_the_row_from_two_processes_with_agreeing_gradients(tmp_path):
  config = benchmark.quick(sections=("rnn",))
  res = benchmark.run(config, tmp_path)
  sec = json.loads((tmp_path / "results.json").read_text())["rnn"]
  assert sec == json.loads(json.dumps(res["rnn"]))
  s = rnn.Size(**sec["size"])
  assert s == rnn.Size(8, 16, 6, 4, 3)

  pids = {r["pid"] for r in sec["records"]}
  assert [r["method"] for r in sec["records"]] == list(rnn.METHODS)
  assert len(pids) == 2 and os.getpid() not in pids         # each method in its own process
  for m in rnn.METHODS:
    v = sec["methods"][m]
    for field in ("step_s", "first_call_s", "gflops", "cpu_s"):
      assert math.isfinite(v[field]["median"]) and v[field]["median"] > 0, (m, field)
    assert v["step_s"]["n"] == 1 and v["calls"] >= rnn_child.timing.MIN_CALLS
  ratio = sec["ratio"]["of_medians"]
  assert math.isfinite(ratio) and ratio > 0
  for name in ("of_best_steps", "of_cpu_medians"):
    assert math.isfinite(sec["ratio"][name]) and sec["ratio"][name] > 0, name
  assert ratio == pytest.approx(sec["methods"][rnn.HAND]["step_s"]["median"]
                                / sec["methods"][rnn.AUTODIFF]["step_s"]["median"])
  check = sec["grad_check"]
  assert check["passed"] and check["children"] == 2
  assert check["max_rel_err"] <= rnn.GRAD_RTOL
  assert set(check["per_param"]) == set(jaxbp.RNNParams._fields)

  # Each program's scans run over the T steps, forward and back.
  for m in rnn.METHODS:
    scans = sec["ops"][m]["scans"]
    assert [(b["length"], b["reverse"]) for b in scans] == [(s.steps, False), (s.steps, True)]
    assert all(b["dots"] >= 1 for b in scans)

  (t,) = res["targets"]
  assert t["measured"] == ratio and t["threshold"] == rnn.TARGET
  assert t["met"] == (ratio <= rnn.TARGET)
  md = (tmp_path / "results.md").read_text()
  assert "## 6. RNN: hand BPTT against autodiff through lax.scan" in md
  assert "RNN hand BPTT time <= 1.2x jax.value_and_grad through lax.scan" in md
  assert "**passed**" in md


def _problem64(s):
  rnn_net = jaxbp.RNN(s.input_size, s.hidden_size, s.output_size)
  params = rnn_net.init(jax.random.PRNGKey(3), "lecun", dtype=jnp.float64)
  kx, ky = jax.random.split(jax.random.PRNGKey(4))
  x = jax.random.normal(kx, (s.batch, s.steps, s.input_size), jnp.float64)
  y = jax.random.normal(ky, (s.batch, s.output_size), jnp.float64)
  return rnn_net, params, x, y


def test_baseline_loop_is_the_same_loss_and_gradient_as_the_rnn():
  # In float64, independent of the benchmark's float32 check: the written-out loop
  # equals jaxbp's forward and objective, and its autodiff gradient the hand BPTT.
  s = rnn.Size(5, 7, 9, 3, 2)
  rnn_net, params, x, y = _problem64(s)
  value = rnn.elman_loss(params, x, y)
  assert value == pytest.approx(float(jaxbp.objective(rnn_net, "mse")(params, x, y)), rel=1e-12)
  hand_value, hand = rnn.program(rnn.HAND, rnn_net)(params, x, y)
  auto_value, auto = rnn.program(rnn.AUTODIFF, rnn_net)(params, x, y)
  assert float(hand_value) == pytest.approx(float(auto_value), rel=1e-12)
  assert rnn.grad_difference(hand, auto)["max_rel_err"] < 1e-12
  ref = jax.grad(jaxbp.objective(rnn_net, "mse"))(params, x, y)
  assert rnn.grad_difference(auto, ref)["max_rel_err"] < 1e-12
  # program(HAND) is the library's hand BPTT, jitted (round-off from jit's fusion only).
  assert rnn.grad_difference(hand, backprop.grad(rnn_net, "mse", params, x, y))[
      "max_rel_err"] < 1e-14


def test_step_flops_count_the_forward_and_backward_matmuls():
  # in 2, hidden 3, T 4, batch 5, out 6: per step x W_in (2*5*2*3) and h W (2*5*3*3)
  # forward; delta W^T, h^T delta (2*5*3*3 each) and x^T delta (2*5*2*3) backward.
  per_step = 2 * 5 * (2 * 3 + 3 * 3) + 2 * 5 * (2 * 3 * 3 + 2 * 3)
  assert rnn.step_flops(rnn.Size(2, 3, 4, 5, 6)) == 4 * per_step + 6 * 5 * 3 * 6


def test_grad_difference_is_per_parameter_so_a_wrong_bias_shows():
  s = rnn.Size(4, 6, 5, 3, 2)
  rnn_net, params, x, y = _problem64(s)
  grads = backprop.grad(rnn_net, "mse", params, x, y)
  wrong = grads._replace(b=grads.b * 1.01)              # 1% off, on the smallest leaf
  d = rnn.grad_difference(wrong, grads)
  assert d["per_param"]["b"] == pytest.approx(0.01, rel=1e-9)
  assert d["max_rel_err"] > rnn.GRAD_RTOL
  assert d["per_param"]["W"] == 0.0
  with pytest.raises(ValueError, match="gradient W has shape"):
    rnn.grad_difference(grads._replace(W=grads.W[:1]), grads)


def _fake_runner(times, err=1e-7):
  """A child's record without a child: the given median step time per method."""
  def runner(method, s, config):
    return {"method": method, "median_s": times[method], "min_s": 0.9 * times[method],
            "cpu": {"median_s": 0.5 * times[method]},
            "first_call_s": 1.0,
            "gflops": rnn.step_flops(s) / times[method] / 1e9, "calls": 10, "peak_rss": 1,
            "loadavg": [3.0, 3.5], "pid": 1,
            "check": {"max_rel_err": err, "per_param": {"W": err}, "loss_rel_diff": 0.0}}
  return runner


@pytest.mark.parametrize("hand_s,err,met", [(0.11, 1e-7, True), (0.13, 1e-7, False),
                                            (0.05, 1e-2, False)])
def test_target_needs_the_ratio_and_agreeing_gradients(hand_s, err, met):
  config = benchmark.quick(rnn_rounds=3)
  runner = _fake_runner({rnn.HAND: hand_s, rnn.AUTODIFF: 0.1}, err)
  sec = rnn.rnn_section(config, runner=runner)
  assert [r["round"] for r in sec["records"]] == [0, 0, 1, 1, 2, 2]
  # Rounds alternate which method runs first.
  assert [r["method"] for r in sec["records"][::2]] == [rnn.HAND, rnn.AUTODIFF, rnn.HAND]
  assert sec["ratio"]["of_medians"] == pytest.approx(hand_s / 0.1)
  assert sec["ratio"]["rounds_compared"] == 3
  assert sec["ratio"]["of_best_steps"] == pytest.approx(hand_s / 0.1)
  assert sec["ratio"]["of_cpu_medians"] == pytest.approx(hand_s / 0.1)
  t = rnn.target(sec)
  assert t["met"] is met
  assert ("missed by" in t["note"]) == (hand_s / 0.1 > rnn.TARGET)
  if err > rnn.GRAD_RTOL:
    assert "**differ**" in t["note"]


def test_a_failed_child_is_reported_and_the_target_not_measured():
  def runner(method, s, config):
    return {"method": method, "skipped": "failed (exit 1): boom"}
  sec = rnn.rnn_section(benchmark.quick(), runner=runner)
  t = rnn.target(sec)
  assert t["measured"] is None and not t["met"] and "boom" in t["note"]


@pytest.mark.skipif(not os.path.isfile(os.path.join(COMMITTED, "results.md")),
                    reason="no committed benchmark results to merge into")
def test_merge_adds_the_section_and_its_target_and_keeps_the_rest(tmp_path):
  dest = tmp_path / "dest"
  shutil.copytree(COMMITTED, dest)
  before_md = (dest / "results.md").read_text().split("\n")
  before = json.loads((dest / "results.json").read_text())
  old_rnn_rows = [line for line in before_md if line.startswith("| RNN hand BPTT")]
  config = benchmark.quick(sections=("rnn",))
  sec = rnn.rnn_section(config, runner=_fake_runner({rnn.HAND: 0.1, rnn.AUTODIFF: 0.1}))
  res = {"config": {"sections": ["rnn"]}, "rnn": sec, "time": "then", "seconds": 1.0,
         "machine": {"cpu": "a cpu", "cores": 2, "device": "cpu:cpu", "jax": "j",
                     "jaxlib": "jl", "numpy": "np", "python": "py"}}
  for _ in range(2):       # a second merge replaces the first, adding nothing
    merged = merge.merge_into(res, dest)
  after_md = (dest / "results.md").read_text().split("\n")
  after = json.loads((dest / "results.json").read_text())
  assert after == merged

  # Every other section and target is as it was; the rnn section and target are the new ones.
  for key in before:
    if key not in ("rnn", "targets", "merged"):
      assert after[key] == before[key], key
  kept = [t for t in before["targets"] if not t["target"].startswith("RNN hand BPTT")]
  assert after["targets"][:len(kept)] == kept
  assert after["targets"][len(kept):] == [rnn.target(sec)]
  assert after["rnn"] == json.loads(json.dumps(sec))
  assert [m["sections"] for m in after["merged"]] == [
      m["sections"] for m in before.get("merged", []) if m["sections"] != ["rnn"]] + [["rnn"]]

  heading = "## 6. RNN: hand BPTT against autodiff through lax.scan"
  assert after_md.count(heading) == 1
  assert after_md.index(heading) < after_md.index("## Targets")
  next_heading = lambda md, i: next(j for j in range(i + 1, len(md)) if md[j].startswith("## "))
  start = after_md.index(heading)
  end = next_heading(after_md, start)
  assert "a cpu" in after_md[start + 2]              # the run's own machine, under the heading
  rows = [line for line in after_md if line.startswith("| RNN hand BPTT")]
  assert len(rows) == 1
  # Outside the rnn section and its target row, the file is unchanged line for line.
  old_section = ([i for i, line in enumerate(before_md) if line == heading] or [None])[0]
  old_rest = before_md if old_section is None else (
      before_md[:old_section] + before_md[next_heading(before_md, old_section):])
  new_rest = after_md[:start] + after_md[end:]
  assert [x for x in new_rest if x not in rows] == [x for x in old_rest if x not in old_rnn_rows]


def test_merge_refuses_a_directory_without_results_or_the_out_directory(tmp_path):
  with pytest.raises(ValueError, match="results.json does not exist"):
    merge.check_into(tmp_path)
  (tmp_path / "results.json").write_text("{}")
  (tmp_path / "results.md").write_text("")
  with pytest.raises(ValueError, match="is the --out directory"):
    merge.check_into(tmp_path, tmp_path)
  merge.check_into(tmp_path, tmp_path / "elsewhere")
