"""The studies behind the thin experiment scripts, on tiny configs (the scripts
only parse flags into a Config and call ``run``), and the scripts' handling of
bad flag values: one argparse-style line, exit status 2, before any compute."""
import pathlib
import subprocess
import sys

import pytest

from jaxbp import io as results
from jaxbp.studies import spectrum
from jaxbp.studies import train_digits

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_train_digits_run(tmp_path):
  config = train_digits.Config(epochs=2, sizes=(64, 16, 10), grad_method="backprop")
  summary = train_digits.run(config, str(tmp_path))
  assert summary["steps"] == 2 * (1438 // 32) and summary["test_accuracy"] > 0.5
  assert results.read_json(tmp_path / "config.json")["grad_method"] == "backprop"
  assert results.read_json(tmp_path / "summary.json") == summary
  assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
  assert "| test |" in (tmp_path / "report.md").read_text()


BAD_TRAIN = [
    ({"optimizer": "adamw"}, ["optimizer", "adamw", "sgd"]),
    ({"activation": "swish"}, ["activation", "swish", "tanh"]),
    ({"sizes": (64, 16, 3)}, ["sizes", "10 classes"]),
    ({"dataset": "mnist"}, ["dataset", "mnist", "digits"]),
    ({"epochs": 0}, ["epochs", ">= 1"]),
    ({"learning_rate": 0.0}, ["learning_rate", "> 0"]),
    ({"grad_method": "numeric"}, ["grad_method", "autodiff"]),
    ({"epoch": 3}, ["epoch", "valid keys"]),
]


@pytest.mark.parametrize("config,words", BAD_TRAIN, ids=[str(b[0]) for b in BAD_TRAIN])
def test_train_digits_bad_config_raises(config, words):
  with pytest.raises(ValueError) as e:
    train_digits.Config.from_dict(config)
  for w in words:
    assert w in str(e.value), (w, str(e.value))


def test_jacobian_spectrum_quick_run(tmp_path):
  out = spectrum.run(spectrum.Config.quick(width=16, depths=(1, 3), seeds=2), str(tmp_path))
  assert "Var[s^2]" in out["report"]
  rows = results.read_json(tmp_path / "spread.json")
  assert {r["depth"] for r in rows} == {1, 3}
  assert (tmp_path / "histograms.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("script,flags,words", [
    ("train_digits.py", ["--activation", "swish"], ["activation", "swish"]),
    ("remedies.py", ["--depths", "0"], ["depth", ">= 1"]),
    ("jacobian_spectrum.py", ["--depths", "8", "4"], ["increasing"]),
    ("himmelblau.py", ["--steps", "0"], ["steps", ">= 1"]),
], ids=["train_digits", "remedies", "jacobian_spectrum", "himmelblau"])
def test_scripts_report_bad_flags_like_argparse(tmp_path, script, flags, words):
  out = tmp_path / "never"
  proc = subprocess.run([sys.executable, str(ROOT / "experiments" / script), "--out", str(out),
                         *flags], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr
  error = proc.stderr.strip().splitlines()[-1]
  assert error.startswith(f"{script}: error: ") and "Traceback" not in proc.stderr
  for w in words:
    assert w in error, (w, error)
  assert not out.exists()   # failed before any compute or file


def test_debug_brings_the_traceback_back(tmp_path):
  cmd = [sys.executable, str(ROOT / "experiments" / "himmelblau.py"), "--out",
         str(tmp_path / "o"), "--steps", "0"]
  quiet = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
  loud = subprocess.run(cmd + ["--debug"], capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
  assert "steps must be an int >= 1" in quiet.stderr.strip().splitlines()[-1]
  assert loud.returncode != 0 and "Traceback" in loud.stderr and "ValueError" in loud.stderr
