"""The thin experiment scripts not covered by their module's tests, on tiny flags:
they parse, run the library and write their files."""
import json
import pathlib
import sys

import pytest

from jaxbp import io as results

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _script(name):
  sys.path.insert(0, str(ROOT / "experiments"))
  try:
    return __import__(name)
  finally:
    sys.path.pop(0)


def test_train_digits_script(tmp_path, capsys):
  _script("train_digits").main(["--out", str(tmp_path), "--epochs", "2", "--sizes", "64", "16",
                                "10", "--grad-method", "backprop"])
  summary = json.loads(capsys.readouterr().out)
  assert summary["steps"] == 2 * (1438 // 32) and summary["test_accuracy"] > 0.5
  assert results.read_json(tmp_path / "config.json")["grad_method"] == "backprop"
  assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_jacobian_spectrum_script(tmp_path, capsys):
  _script("jacobian_spectrum").main(["--out", str(tmp_path), "--quick", "--width", "16",
                                     "--depths", "1", "3", "--seeds", "2"])
  assert "Var[s^2]" in capsys.readouterr().out
  rows = results.read_json(tmp_path / "spread.json")
  assert {r["depth"] for r in rows} == {1, 3}
  assert (tmp_path / "histograms.png").read_bytes()[:4] == b"\x89PNG"


def test_scripts_reject_bad_flags(tmp_path):
  with pytest.raises(SystemExit):
    _script("train_digits").main(["--out", str(tmp_path), "--optimizer", "adamw"])
