"""The deep-CNN training study on a tiny net: runs, records, resumes, validates."""
import json

import numpy as np
import pytest

from jaxbp.studies import conv_train
from jaxbp.theory import meanfield

TINY = dict(settings=(("delta_orthogonal", "critical"), ("gaussian", 0.5)), depth=3, channels=8,
            epochs=2, batch_size=32, learning_rate=0.05, sigma_b2=0.05, seeds=(0,))


def test_tiny_run_trains_and_writes_its_table(tmp_path):
  rows = conv_train.run(conv_train.Config(**TINY), tmp_path)
  assert [(r["init"], r["critical"]) for r in rows] == [("delta_orthogonal", True),
                                                        ("gaussian", False)]
  crit = float(meanfield.critical_sigma_w2("tanh", 0.05))
  assert rows[0]["sigma_w2"] == pytest.approx(crit)
  assert rows[0]["chi1"] == pytest.approx(1.0, abs=1e-6)
  assert rows[1]["chi1"] < 1
  for r in rows:
    assert 0.0 <= r["test_accuracy_min"] <= r["test_accuracy_mean"] <= 1.0
    assert np.isfinite(r["log10_grad_ratio"])
  # Two epochs of 1,437 images in batches of 32 beat chance (10%) by far at depth 3.
  assert rows[0]["test_accuracy_mean"] > 0.3, rows[0]
  runs = json.loads((tmp_path / "runs.json").read_text())
  assert len(runs) == 2 and all(r["steps"] == 2 * (1437 // 32) for r in runs)
  assert "| delta_orthogonal | " in (tmp_path / "report.md").read_text()
  assert conv_train.run(conv_train.Config(**TINY), tmp_path) == rows   # resumed, not rerun


@pytest.mark.parametrize("field,value,match", [
    ("settings", (), "settings"), ("settings", (("orthogonal", 1.0),), "setting"),
    ("settings", (("gaussian", -1.0),), "setting"), ("settings", "gaussian", "settings"),
    ("depth", 1, "depth must be an int >= 2"), ("kernel_size", 4, "odd"), ("learning_rate", 0.0, "learning_rate"),
    ("momentum", 1.0, "momentum"), ("seeds", (), "seeds"), ("sigma_b2", -0.1, "sigma_b2"),
    ("padding", "valid", "padding")])
def test_config_errors(field, value, match):
  with pytest.raises(ValueError, match=match):
    conv_train.Config(**{**TINY, field: value})
