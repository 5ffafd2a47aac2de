"""The width study on a tiny grid: files, theory beside the samples, resume, bad flags."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from jaxbp.studies import width_sweep

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = dict(points=(("relu", "critical", 0.0), ("tanh", 1.5, 0.05)), widths=(16, 32), depth=4,
            seeds=64)


def test_runs_writes_files_and_resumes(tmp_path):
  out = tmp_path / "w"
  result = width_sweep.run(TINY, str(out))
  for name in ("results.csv", "results.json", "report.md", "width.png", "config.json"):
    assert (out / name).stat().st_size > 0, name
  rows = json.loads((out / "results.json").read_text())
  assert len(rows) == 4 and {r["width"] for r in rows} == {16, 32}
  for r in rows:
    assert r["seeds"] == 64 and r["var_measured"] > 0 and r["var_predicted"] > 0
    # 64 nets: the mean within 4 standard errors, the variance within a factor 2.
    assert abs(r["mean_measured"] - r["mean_predicted"]) < 4 * r["mean_sem"] + 0.02, r
    assert 0.5 < r["var_measured"] / r["var_predicted"] < 2.0, r
  relu = [r for r in rows if r["activation"] == "relu"]
  assert relu[0]["sigma_w2"] == pytest.approx(2.0, abs=1e-6)
  assert "| relu | critical |" in result["report"]
  before = {n: os.path.getmtime(out / "store" / n) for n in os.listdir(out / "store")
            if n.endswith(".json")}
  again = width_sweep.run(TINY, str(out))
  assert again["rows"] == result["rows"]
  assert {n: os.path.getmtime(out / "store" / n) for n in before} == before


@pytest.mark.parametrize("change,match", [
    (dict(widths=(1,)), "widths"), (dict(depth=1), "depth"), (dict(seeds=0), "seeds"),
    (dict(points=(("gelu", 1.0, 0.0),)), "unknown activation"),
    (dict(points=(("tanh", -1.0, 0.0),)), "sigma_w2"), (dict(bogus=1), "unknown config keys"),
])
def test_bad_configs_raise_naming_the_field(change, match):
  with pytest.raises(ValueError, match=match):
    width_sweep.Config.from_dict({**TINY, **change})


def test_the_script_reports_bad_flags_in_one_line(tmp_path):
  proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "width_sweep.py"), "--quick",
                         "--out", str(tmp_path / "o"), "--depth", "1"],
                        capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert proc.returncode == 2
  assert "Traceback" not in proc.stderr and "depth" in proc.stderr.strip().splitlines()[-1]
  assert not (tmp_path / "o").exists()
