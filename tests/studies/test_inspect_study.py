"""experiments/inspect_model.py: each example model runs and writes its files; bad
flags are parser errors.

The numbers themselves are checked in test_inspect*.py; here the example
models are small and the check is on the files and the layer count.
"""
import importlib.util
import json
import pathlib

import pytest

from jaxbp.studies import inspect_model

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _script():
  spec = importlib.util.spec_from_file_location("inspect_model_script",
                                                ROOT / "experiments" / "inspect_model.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("model,layers", [("mlp", 4), ("scan_mlp", 4), ("flax_cnn", 3),
                                          ("eqx_resnet", 10)])
def test_each_model_writes_its_report(tmp_path, model, layers, capsys):
  _script().main(["--model", model, "--out", str(tmp_path), "--width", "8", "--depth", "3",
                  "--batch", "4"])
  assert json.loads(capsys.readouterr().out)["layers"] == layers
  rows = json.loads((tmp_path / "layers.json").read_text())
  assert len(rows) == layers
  text = (tmp_path / "report.md").read_text()
  assert "ln delta_sq" in text and (tmp_path / "profile.png").stat().st_size > 1000
  assert (("theory over layers" in text) == (model in ("mlp", "scan_mlp")))


def test_bad_flags_are_parser_errors(tmp_path):
  with pytest.raises(SystemExit):
    _script().main(["--model", "mlp", "--out", str(tmp_path), "--width", "0"])
  with pytest.raises(ValueError, match="model must be one of"):
    inspect_model.Config(model="vit")
