"""experiments/accelerator_check.py in --smoke mode on the CPU, through every step the device
tests included; the tests step's verdicts; a step cut short keeps its finished pieces."""
import importlib.util
import json
import pathlib
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:      # benchmarks/ is the checkout's, not installed
  sys.path.insert(0, str(ROOT))

from benchmarks import accelerator as acc  # noqa: E402
from benchmarks import accelerator_steps as steps  # noqa: E402


def _script():
  spec = importlib.util.spec_from_file_location("accelerator_check",
                                                ROOT / "experiments" / "accelerator_check.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_smoke_run_runs_every_step_the_device_tests_included(tmp_path, capsys):
  res = _script().main(["--out", str(tmp_path), "--smoke"])
  assert tuple(res["steps"]) == acc.STEPS
  for step, rec in res["steps"].items():
    assert rec["status"] == "ok", (step, rec)
    assert not rec.get("partial"), step
  # The tests step ran the marked tests it names, on the device there is, and they passed.
  tests = res["steps"]["tests"]
  assert tests["missing"] == [] and tests["failed"] == [] and tests["collection_errors"] == []
  assert tests["passed"] >= len(acc.SMOKE_TESTS)
  assert sorted(tests["files"]) == sorted(acc.marked_tests())
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["mode"] == "smoke" and set(saved["steps"]) == set(acc.STEPS)
  peak = res["steps"]["peak"]["result"]
  assert peak["device"]["platform"] == "cpu"
  assert all(peak[k]["tflops"] > 0 for k in ("float32", "float32_highest", "bfloat16"))
  rows = res["steps"]["jit_grad"]["result"]["rows"]
  sizes = steps.SIZES["smoke"]
  assert [(r["width"], r["batch"]) for r in rows] == [
      (w, b) for w in sizes["widths"] for b in sizes["batches"]]
  assert all(r["seconds"] > 0 and r["fraction_of_peak"] > 0 for r in rows)
  sweep = res["steps"]["depth_sweep"]["result"]
  assert sweep["config"]["depths"] == [sizes["sweep_depth"]]
  assert (tmp_path / "depth_sweep" / "results.csv").exists()
  deep = res["steps"]["deep_net"]["result"]
  assert deep["depth"] == sizes["deep_depth"]
  assert all(v["finite"] for v in deep["variants"].values())
  md = (tmp_path / "results.md").read_text()
  for text in ("# Accelerator check", f"Tests (`-m {acc.MARKER}`): {tests['passed']} passed",
               "| bfloat16 |", "% of peak", "Depth sweep:", f"Depth {sizes['deep_depth']},"):
    assert text in md, text
  out = capsys.readouterr().out
  assert f"results in {tmp_path / 'results.md'}" in out      # it says where the results are


def test_the_marker_selects_exactly_the_named_device_tests():
  # Read from the test sources: every test the check names exists and carries the marker,
  # and no other test does (each one costs accelerator time); the smoke tests are among them.
  marked = [name for names in acc.marked_tests().values() for name in names]
  assert sorted(marked) == sorted(acc.DEVICE_TESTS)
  assert set(acc.SMOKE_TESTS) <= set(acc.DEVICE_TESTS)
  config = ROOT / "pyproject.toml"
  assert f'"{acc.MARKER}: ' in config.read_text()              # registered with pytest


def _junit(tmp_path, source, smoke=True):
  """The tests step's verdict on a real pytest run of ``source`` (a test module)."""
  (tmp_path / "test_fake.py").write_text(textwrap.dedent(source))
  (tmp_path / "pytest.ini").write_text(f"[pytest]\nmarkers =\n  {acc.MARKER}: x\n")
  junit = str(tmp_path / "out.xml")
  cmd = acc.tests_command(smoke, junit, ["test_fake.py"])
  proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
  verdict = acc.tests_outcome(junit, proc.returncode, smoke)
  # Had the run been cut off at its end, its verbose log would count the same tests.
  progress = acc.tests_progress(proc.stdout)
  assert (progress["passed"], len(progress["failed"])) == (verdict["passed"],
                                                           len(verdict["failed"]))
  return verdict


MARK = f"@pytest.mark.{acc.MARKER}"


def test_tests_step_fails_when_a_named_test_is_missing_fails_or_none_is_selected(tmp_path):
  deltas, rows = acc.SMOKE_TESTS
  good = f"""
      import pytest
      {MARK}
      def {deltas}(): pass
      {MARK}
      @pytest.mark.parametrize("activation,weights", [("tanh", "gaussian")])
      def {rows}(activation, weights): pass
      def test_unmarked_is_not_run(): raise AssertionError
  """
  assert _junit(tmp_path, good)["status"] == "ok"
  missing = _junit(tmp_path, good.replace(f"def {rows}", "def test_renamed"))
  assert missing["status"] == "failed" and missing["missing"] == [rows]
  assert "did not run" in missing["reason"]
  failing = _junit(tmp_path, good.replace(f"def {deltas}(): pass",
                                          f"def {deltas}(): assert False"))
  assert failing["status"] == "failed" and "1 test(s) failed" in failing["reason"]
  unmarked = _junit(tmp_path, good.replace(MARK, ""))
  assert unmarked["status"] == "failed" and unmarked["passed"] == 0
  assert "selected none" in unmarked["reason"]
  broken = _junit(tmp_path, "import no_such_module_here\n" + textwrap.dedent(good))
  assert broken["status"] == "failed" and "did not import" in broken["reason"]
  full = _junit(tmp_path, good, smoke=False)     # a full check expects every named test
  assert full["status"] == "failed" and set(full["missing"]) == set(acc.DEVICE_TESTS) - {
      deltas, rows}


def test_a_step_cut_short_keeps_its_finished_pieces(tmp_path, monkeypatch):
  # In the child: a piece that raises is recorded and the step goes on; one that kills
  # the process leaves the pieces before it on disk.
  real = steps.matmul_rate

  def flaky(n, dtype, precision, min_time):
    if precision == "highest":
      raise MemoryError("RESOURCE_EXHAUSTED: out of memory")
    if dtype is jnp.bfloat16:
      raise KeyboardInterrupt                # stands for the kill at the time limit
    return real(n, dtype, precision, min_time)
  monkeypatch.setattr(steps, "matmul_rate", flaky)
  with pytest.raises(KeyboardInterrupt):
    steps.run_step("peak", True, str(tmp_path))
  saved = json.loads(pathlib.Path(steps.step_path(str(tmp_path), "peak")).read_text())
  assert saved["float32"]["tflops"] > 0 and "complete" not in saved
  assert saved["float32_highest"]["error"].startswith("MemoryError: RESOURCE_EXHAUSTED")
  # In the parent: a child that saved those pieces and then ran out of time; what it saved
  # is the step's (partial) result.
  def child_then_timeout(cmd, env, timeout, log):
    assert cmd[2:4] == ["benchmarks.accelerator_steps", "peak"] and "--smoke" in cmd
    pathlib.Path(steps.step_path(cmd[cmd.index("--out") + 1], "peak")).write_text(
        json.dumps(saved))
    rec = {"seconds": 1.0, "limit_s": timeout, "output_tail": "", "output": "", "log": log}
    return dict(rec, returncode=0) if saved.get("complete") else dict(rec, status="timeout")
  monkeypatch.setattr(acc, "_run", child_then_timeout)
  rec = acc.launch("peak", True, str(tmp_path), timeout=3.0)
  assert rec["status"] == "timeout" and rec["partial"] is True
  assert rec["result"]["float32"] == saved["float32"]
  # Had it finished, the step would say that a piece failed.
  saved["complete"] = True
  assert acc.launch("peak", True, str(tmp_path), timeout=3.0)["status"] == \
      "ok but 1 of its pieces failed"
  md = acc.markdown({"mode": "smoke", "seconds": 3.0, "budget_s": 9.0, "steps": {"peak": rec}})
  assert "| peak | timeout (partial) |" in md and "| float32 | " in md
  assert "error: MemoryError" in md
  # The tests step cut off: what finished is counted from pytest's verbose log.
  log = ("tests/core/test_a.py::test_x[1] PASSED   [ 33%]\n"
         "tests/core/test_a.py::test_x[2] FAILED   [ 66%]\n")
  monkeypatch.setattr(acc, "_run", lambda cmd, env, timeout, path: {
      "status": "timeout", "seconds": timeout, "limit_s": timeout, "output_tail": log,
      "output": log, "log": path})
  rec = acc.launch("tests", True, str(tmp_path), timeout=3.0)
  assert rec["status"] == "timeout" and rec["passed"] == 1
  assert rec["failed"] == ["tests/core/test_a.py::test_x[2]"]
  assert "after 2 test(s), 1 failed" in rec["reason"]


def test_a_step_over_its_time_box_is_recorded_and_the_run_goes_on(tmp_path):
  rec = acc.launch("peak", smoke=True, out=str(tmp_path), timeout=0.01)
  assert rec["status"] == "timeout" and rec["limit_s"] == 0.01
  res = acc.run(acc.Config(smoke=True, budget_s=1.0, steps=("peak", "deep_net")), tmp_path)
  assert {r["status"] for r in res["steps"].values()} == {"skipped: out of budget"}
  md = (tmp_path / "results.md").read_text()
  assert "peak: skipped: out of budget" in md
  assert sum(acc.LIMITS.values()) <= acc.Config().budget_s


def test_the_parent_never_touches_the_device(tmp_path):
  # Each step's process needs the whole device: the parent must not start a JAX backend
  # (which would take most of a GPU's memory), neither on import nor in a run.
  code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
          "from benchmarks import accelerator as acc\n"
          "res = acc.run(acc.Config(smoke=True, steps=('peak',)), sys.argv[2])\n"
          "assert res['steps']['peak']['status'] == 'ok', res\n"
          "from jax._src import xla_bridge\n"
          "assert not xla_bridge.backends_are_initialized()\n")
  proc = subprocess.run([sys.executable, "-c", code, str(ROOT), str(tmp_path)], timeout=300,
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("field,value", [("smoke", 1), ("budget_s", 0.0), ("budget_s", "480"),
                                         ("steps", ()), ("steps", ("peak", "peak")),
                                         ("steps", ("nope",))])
def test_config_rejects_a_bad_value_naming_the_field(field, value):
  with pytest.raises(ValueError, match=field):
    acc.Config(**{field: value})


def test_script_reports_a_bad_flag_in_one_line(tmp_path):
  proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "accelerator_check.py"),
                         "--out", str(tmp_path / "never"), "--budget", "0"],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert "budget_s must be a finite number > 0" in proc.stderr.strip().splitlines()[-1]
  assert not (tmp_path / "never").exists()


def test_sweep_depth_fits_the_weights_in_a_quarter_of_the_device_pool():
  layer = 4 * 4096 * 4096                            # one float32 4096 x 4096 matrix
  for pool in (0.92 * 80e9, 0.92 * 141e9):
    d = steps.sweep_depth(4096, 1000, pool)
    assert d * layer <= pool / 4 < (d + 1) * layer   # the deepest that fits, no deeper
  assert steps.sweep_depth(4096, 1000, 1e15) == 1000   # room for all: the depth asked
  assert steps.sweep_depth(4096, 1000, None) == 1000   # a device that does not say (CPU)
