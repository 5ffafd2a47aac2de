"""Seed 000 §7.8: Himmelblau's four minima by gradient descent, from the seed's starts and a grid."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.studies import himmelblau
from jaxbp.train import landscapes

MINIMA = landscapes.HIMMELBLAU_MINIMA


def test_himmelblau_vanishes_with_zero_gradient_at_its_minima():
  p = jnp.asarray(MINIMA)
  np.testing.assert_allclose(landscapes.himmelblau(p), 0.0, atol=1e-9)
  np.testing.assert_allclose(jax.vmap(jax.grad(landscapes.himmelblau))(p), 0.0, atol=1e-4)
  assert float(landscapes.himmelblau(jnp.array([0.0, 0.0]))) == 170.0   # 11^2 + 7^2


def test_other_functions_vanish_at_their_minima():
  assert float(landscapes.rosenbrock(jnp.array([1.0, 1.0]))) == 0.0
  assert float(landscapes.quadratic_bowl(jnp.zeros(2))) == 0.0
  traj = landscapes.descend(landscapes.quadratic_bowl, jnp.array([3.0, 1.0]), 0.1, 300)
  np.testing.assert_allclose(traj.points[-1], 0.0, atol=1e-12)
  # GD on a quadratic contracts each axis by (1 - eta lambda) per step: x_t = 3 * 0.9^t.
  np.testing.assert_allclose(traj.points[10, 0], 3.0 * 0.9 ** 10, rtol=1e-12)


@pytest.mark.parametrize("start, minimum", [((1.0, 0.0), 0), ((-4.0, 0.0), 2), ((4.0, 0.0), 3)],
                         ids=["1_0", "-4_0", "4_0"])
def test_seed_starts_reach_three_of_the_four_minima(start, minimum):
  # The seed's update x -= 0.01 * grad for 200 steps.
  traj = landscapes.descend(landscapes.himmelblau, jnp.array(start), 0.01, 200)
  assert traj.points.shape == (201, 2)
  np.testing.assert_allclose(traj.points[-1], MINIMA[minimum], atol=1e-6)
  assert float(traj.values[-1]) < 1e-20
  assert (np.diff(np.asarray(traj.values)) <= 1e-12).all()   # descent: f never rises


def test_a_vmapped_grid_of_starts_finds_all_four():
  traj = landscapes.descend(landscapes.himmelblau, landscapes.grid(-5.0, 5.0, 11), 0.01, 200)
  assert traj.points.shape == (121, 201, 2)
  found = landscapes.distinct(traj.points[:, -1], landscapes.himmelblau)
  assert len(found) == 4
  assert sorted(landscapes.nearest(found, MINIMA, atol=1e-5).tolist()) == [0, 1, 2, 3]


def test_descend_takes_an_optax_optimizer_and_checks_shapes():
  import optax
  traj = landscapes.descend(landscapes.himmelblau, jnp.array([1.0, 0.0]),
                            tx=optax.sgd(0.005, momentum=0.5), steps=300)
  np.testing.assert_allclose(traj.points[-1], MINIMA[0], atol=1e-6)
  with pytest.raises(ValueError, match=r"\(2,\) or \(m, 2\)"):
    landscapes.descend(landscapes.himmelblau, jnp.zeros(3))


def test_nearest_marks_diverged_and_far_points():
  pts = np.array([[3.0, 2.0], [np.nan, np.nan], [0.0, 0.0]])
  assert landscapes.nearest(pts, MINIMA).tolist() == [0, -1, -1]


def test_study_writes_plot_and_minima(tmp_path):
  returned = himmelblau.run(himmelblau.Config(grid=(-5.0, 5.0, 7.0)), str(tmp_path))
  with open(tmp_path / "contour.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  summary = json.loads((tmp_path / "minima.json").read_text())
  assert summary == returned
  assert "| (1.0, 0.0) | (3.000000, 2.000000) |" in (tmp_path / "report.md").read_text()
  assert [s["minimum"] for s in summary["seed_starts"]] == [0, 2, 3]
  assert summary["all_known_found"] and summary["known_found"] == [0, 1, 2, 3]
  assert sum(summary["grid_counts"]) + summary["grid_diverged"] <= 49
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["learning_rate"] == 0.01 and config["steps"] == 200
  assert config["grid"] == [-5.0, 5.0, 7]


BAD = [
    ({"function": "ackley"}, ["function", "ackley", "himmelblau"]),
    ({"steps": 0}, ["steps", ">= 1"]),
    ({"learning_rate": -0.01}, ["learning_rate", "> 0"]),
    ({"grid": (5.0, -5.0, 11)}, ["grid", "low < high"]),
    ({"grid": (-5.0, 5.0, 7.5)}, ["grid", "int >= 1"]),
    ({"starts": ((1.0, 0.0, 2.0),)}, ["starts", "(x, y)"]),
    ({"extent": (0.0, 1.0)}, ["extent", "4 finite numbers"]),
    ({"step": 10}, ["step", "valid keys"]),
]


@pytest.mark.parametrize("config,words", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_config_raises_naming_the_field(config, words):
  with pytest.raises(ValueError) as e:
    himmelblau.Config.from_dict(config)
  for w in words:
    assert w in str(e.value), (w, str(e.value))
