"""experiments/accelerator_check.py in --smoke mode on the CPU: every step's numbers and the
report, and a step that runs out of time loses none of the others."""
import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _script():
  spec = importlib.util.spec_from_file_location("accelerator_check",
                                                ROOT / "experiments" / "accelerator_check.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


acc = _script()


def test_smoke_run_writes_every_measuring_step(tmp_path):
  # The pytest step is left out here: it is a pytest run inside a pytest run, and
  # the tests it runs are in the suite already.
  res = acc.main(["--out", str(tmp_path), "--smoke", "--steps", "peak", "jit_grad",
                  "depth_sweep", "deep_net"])
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["mode"] == "smoke" and set(saved["steps"]) == set(res["steps"])
  for step, rec in res["steps"].items():
    assert rec["status"] == "ok", (step, rec)
  peak = res["steps"]["peak"]["result"]
  assert peak["device"]["platform"] == "cpu"
  assert all(peak[k]["tflops"] > 0 for k in ("float32", "float32_highest", "bfloat16"))
  rows = res["steps"]["jit_grad"]["result"]["rows"]
  sizes = acc.SIZES["smoke"]
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
  for text in ("# Accelerator check", "| bfloat16 |", "% of peak", "Depth sweep:",
               f"Depth {sizes['deep_depth']},"):
    assert text in md, text


def test_a_step_over_its_time_box_is_recorded_and_the_run_goes_on(tmp_path):
  rec = acc.launch("peak", smoke=True, out=str(tmp_path), timeout=0.01)
  assert rec["status"] == "timeout" and rec["limit_s"] == 0.01
  res = acc.main(["--out", str(tmp_path), "--smoke", "--budget", "1", "--steps", "peak",
                  "deep_net"])
  assert {r["status"] for r in res["steps"].values()} == {"skipped: out of budget"}
  md = (tmp_path / "results.md").read_text()
  assert "peak: skipped: out of budget" in md
  assert len(acc.TEST_K) > 0 and sum(acc.LIMITS.values()) <= 480
