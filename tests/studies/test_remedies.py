"""Remedies: a remedy trains a deep net where sigmoid/Xavier cannot; the
experiment's files, resumption, overflow status and bad configs."""

import numpy as np
import pytest

import jaxbp
from jaxbp.studies import remedies

# Depth 20 on the digits, width 32, 300 steps, 4 seeds per setting (vmapped).
# Over 16 seeds (0..15) residual sigmoid reached 0.875 .. 0.961 test accuracy
# and sigmoid/Xavier 0.078 .. 0.114 (chance 0.1): the threshold 0.8 and the
# ceiling 0.2 hold for every seed with a wide margin.
CONFIG = remedies.Config(datasets=("digits",),
                         settings=("sigmoid_xavier", "sigmoid_residual", "relu_large"),
                         depths=(20,), width=32, steps=300, seeds=4, seed=3)


def _row(result, setting):
  (row,) = [r for r in result["rows"] if r["setting"] == setting]
  return row


def test_quick_grid_remedy_trains_baseline_fails_overflow_recorded(tmp_path, monkeypatch):
  # One test, not a module fixture: under pytest-xdist each worker would train
  # the grid again.
  out = tmp_path / "remedies"
  result = remedies.run(CONFIG, str(out))
  records = {c["setting"]: r for c, r in jaxbp.results.ResultStore(out / "store").items()}

  # The remedy trains at depth 20 in every seed; the baseline stays at chance.
  assert min(records["sigmoid_residual"]["test_accuracy"]) >= 0.8
  assert max(records["sigmoid_xavier"]["test_accuracy"]) <= 0.2
  assert _row(result, "sigmoid_residual")["trains"] and not _row(result, "sigmoid_xavier")["trains"]
  # Why: at init the first layer's gradient is ~1e-12 of the last one's for
  # sigmoid/Xavier (seed 003's product of sigmoid' <= 1/4), ~1e-2 with the skips.
  assert _row(result, "sigmoid_xavier")["grad_ratio_start"] < 1e-8
  assert _row(result, "sigmoid_residual")["grad_ratio_start"] > 1e-4
  assert "digits, sigmoid_residual: depths 20" in result["report"]
  assert "digits, sigmoid_xavier: no depth" in result["report"]

  # sigma_w2 = 4 (chi_1 = 2): the loss starts ~1e3 and SGD overflows in every
  # seed; training.status says so, and the report marks it.
  assert records["relu_large"]["status"] == ["overflow"] * 4
  assert all(0 <= s < 300 for s in records["relu_large"]["overflow_step"])
  assert _row(result, "relu_large")["overflows"] == 4
  assert "(0/4) !" in result["report"]

  # Files, figures and per-layer profiles.
  for name in ("config.json", "provenance.json", "summary.json", "summary.csv", "report.md",
               "loss_curves_digits.png", "accuracy_vs_depth_digits.png",
               "grad_profiles_digits.png"):
    assert (out / name).stat().st_size > 0, name
  assert jaxbp.results.read_json(out / "config.json")["depths"] == [20]
  prov = jaxbp.results.read_json(out / "provenance.json")
  assert prov["started"] <= prov["finished"] and prov["jaxlib"]
  for name, record in records.items():
    assert np.shape(record["grad_norms_start"]) == (4, 21)   # ||dL/dW_k||, k = 1 .. 21
    assert np.shape(record["curve"]) == (4, 60)
    if name != "relu_large":
      assert record["status"] == ["ok"] * 4

  # A rerun resumes from the store: nothing is trained again.
  monkeypatch.setattr(remedies.training, "train", lambda *a, **k: pytest.fail("retrained"))
  again = remedies.run(CONFIG, str(out))
  assert repr(again["rows"]) == repr(result["rows"])   # repr: nan == nan


BAD = [
    ("unknown-setting", {"settings": ["relu_magic"]}, ["relu_magic", "sigmoid_xavier"]),
    ("unknown-dataset", {"datasets": ["mnist"]}, ["mnist", "digits", "spirals"]),
    ("depth-zero", {"depths": [0, 5]}, ["depth", ">= 1"]),
    ("depths-empty", {"depths": []}, ["depths", "empty"]),
    ("settings-empty", {"settings": []}, ["settings", "empty"]),
    ("datasets-string", {"datasets": "digits"}, ["datasets", "list"]),
    ("steps-zero", {"steps": 0}, ["steps", ">= 1"]),
    ("lr-negative", {"learning_rate": -0.1}, ["learning_rate", "> 0"]),
    ("no-threshold", {"thresholds": {"digits": 0.8}}, ["thresholds", "spirals"]),
    ("unknown-key", {"depth": [5]}, ["depth", "valid keys"]),
]


@pytest.mark.parametrize("config,words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_raises_naming_the_field(config, words):
  with pytest.raises(ValueError) as e:
    remedies.Config.from_dict(config)
  for w in words:
    assert w in str(e.value), (w, str(e.value))


def test_bad_config_fails_before_compute(tmp_path):
  with pytest.raises(ValueError, match="depths"):
    remedies.Config(depths=(5, 0))
  with pytest.raises(ValueError, match="thresholds"):
    remedies.Config(datasets=("spirals",), thresholds={"spirals": 1.5})
  with pytest.raises(ValueError, match="momentum"):
    remedies.Config(momentum=1.0)
  out = tmp_path / "never"
  with pytest.raises(ValueError, match="relu_magic"):
    remedies.run({"settings": ["relu_magic"]}, str(out))
  assert not out.exists()   # nothing written, no data loaded, nothing compiled


def test_config_presets_and_round_trip():
  quick = remedies.Config.quick()
  assert quick.datasets == ("digits",) and quick.depths == (5, 20) and quick.seeds == 2
  assert remedies.Config.from_dict(quick.to_dict()) == quick
  assert remedies.Config.from_dict({"depths": [2, 5]}).depths == (2, 5)   # lists -> tuples
  assert set(remedies.Config().settings) == set(remedies.REMEDIES)
  assert isinstance(remedies.get("relu_he"), remedies.Remedy)


def test_train_bad_arguments():
  with pytest.raises(ValueError, match="depth must be an int >= 1"):
    remedies.train("relu_he", "spirals", 0)
  with pytest.raises(ValueError, match="Unknown setting"):
    remedies.train("swish_he", "spirals", 5)
  with pytest.raises(ValueError, match="steps must be an int >= 1"):
    remedies.train("relu_he", "spirals", 5, steps=0)
  with pytest.raises(ValueError, match="Unknown dataset"):
    remedies.train("relu_he", "cifar", 5)
