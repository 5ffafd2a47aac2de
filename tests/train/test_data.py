"""Data: the bundled digits (split, standardised, >= 95% test accuracy), spirals, teacher."""
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.studies import train_digits
from jaxbp.train import data

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def digits():
  return data.digits()


def test_digits_split_is_deterministic_and_standardised(digits):
  assert digits.x_train.shape == (1438, 64) and digits.x_test.shape == (359, 64)
  assert digits.x_train.dtype == jnp.float64
  assert sorted(np.unique(np.asarray(digits.y_train)).tolist()) == list(range(10))
  again = data.digits()
  for a, b in zip(digits, again):
    np.testing.assert_array_equal(a, b)
  x = np.asarray(digits.x_train)
  varying = x.std(axis=0) > 0
  np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-12)
  np.testing.assert_allclose(x.std(axis=0)[varying], 1.0, rtol=1e-12)
  other = data.digits(seed=1)
  assert not np.array_equal(np.asarray(other.y_test), np.asarray(digits.y_test))


def test_digits_without_sklearn_says_what_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "sklearn", None)
  monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
  with pytest.raises(ImportError, match="pip install scikit-learn"):
    data.digits()


def test_split_checks_lengths():
  with pytest.raises(ValueError, match="x has 5 rows but y has 4"):
    data.split(np.zeros((5, 2)), np.zeros(4))


def test_mlp_reaches_95_percent_on_digits(tmp_path, monkeypatch):
  # The README's figure: (64, 64, 10) ReLU, He init, SGD + momentum 0.9, lr 0.05,
  # batches of 32, 20 epochs (880 steps): the study's default Config.
  # Its speed (~1 s on 2 cores) is a benchmark figure, not asserted here.
  summary = train_digits.run(train_digits.Config(), str(tmp_path))
  assert summary["test_accuracy"] >= 0.95, summary
  assert summary["steps"] == 20 * (1438 // 32)
  for name in ("config.json", "provenance.json", "history.csv", "history.json",
               "curves.png", "summary.json"):
    assert (tmp_path / name).exists(), name
  prov = json.loads((tmp_path / "provenance.json").read_text())
  assert prov["started"] <= prov["finished"] and prov["jax"] and prov["device_kind"]
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["sizes"] == [64, 64, 10] and config["learning_rate"] == 0.05
  # A rerun loads the stored run instead of training again.
  monkeypatch.setattr(train_digits, "train", lambda *a, **k: pytest.fail("retrained"))
  assert train_digits.run(train_digits.Config(), str(tmp_path)) == summary


def test_load_names_its_sets():
  assert data.DATASETS == ("digits", "spirals")
  x, y, _, _ = data.load("spirals")
  assert x.shape[1] == data.SHAPES["spirals"][0] and int(y.max()) + 1 == data.SHAPES["spirals"][1]
  with pytest.raises(ValueError, match="Unknown dataset 'mnist'; valid names are digits, spirals"):
    data.load("mnist")


def test_two_spirals_is_a_pure_function_of_the_key():
  key = jax.random.PRNGKey(0)
  x, y = data.two_spirals(key, 101)
  assert x.shape == (101, 2) and y.shape == (101,)
  assert int(jnp.sum(y)) == 50 and int(jnp.sum(1 - y)) == 51
  x2, _ = data.two_spirals(key, 101)
  np.testing.assert_array_equal(x, x2)
  xs, ys = jax.vmap(lambda k: data.two_spirals(k, 101))(jax.random.split(key, 2))
  assert xs.shape == (2, 101, 2) and ys.shape == (2, 101)
  np.testing.assert_array_equal(ys[0], y)
  # Without noise every point lies on its spiral, at radius <= 1.
  x0, _ = data.two_spirals(key, 101, noise=0.0)
  assert (np.linalg.norm(np.asarray(x0), axis=1) <= 1.0 + 1e-12).all()


def test_teacher_labels_by_a_random_net():
  net = jaxbp.MLP((5, 8, 2), "tanh")
  t = data.teacher(jax.random.PRNGKey(1), 30, net)
  assert t.x.shape == (30, 5) and t.y.shape == (30, 2)
  np.testing.assert_allclose(t.y, net.apply(t.params, t.x), atol=1e-15)
  noisy = data.teacher(jax.random.PRNGKey(1), 30, net, noise=0.1)
  assert float(jnp.std(noisy.y - t.y)) > 0.05
