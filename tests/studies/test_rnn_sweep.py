"""The RNN sweep: its untied control is the RNN's own recursion when tied, a tiny run
writes every file and resumes, and bad configs are one clear error."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import io as results
from jaxbp.core import backprop
from jaxbp.studies import rnn_sweep


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_control_with_one_matrix_is_the_rnns_bptt(activation):
  rnn, params, x, y = rnn_sweep.draw(jax.random.PRNGKey(3), activation, 1.8, 0.5, 0.1, 1.0,
                                     width=12, input_size=5, steps=9, batch=3)
  want = backprop.deltas(rnn, "mse", params, x, y)
  got = rnn_sweep.control_deltas(activation, params, x, y, lambda t: params.W)
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
  # Another matrix per step is another recursion: the control reads weight_at(t).
  fresh = rnn_sweep.control_deltas(activation, params, x, y, lambda t: params.W * (1.0 + 0.1 * t))
  assert not np.allclose(fresh, want, rtol=1e-3)


def test_draw_follows_the_config_scales():
  rnn, params, x, y = rnn_sweep.draw(jax.random.PRNGKey(0), "tanh", 2.0, 0.5, 0.2, 3.0,
                                     width=200, input_size=100, steps=4, batch=2)
  np.testing.assert_allclose(jnp.sum(x * x, axis=-1), 100 * 3.0, rtol=1e-12)   # q_x exactly
  assert float(jnp.var(params.W)) * 200 == pytest.approx(2.0, rel=0.02)
  assert float(jnp.var(params.W_in)) * 100 == pytest.approx(0.5, rel=0.03)
  assert float(jnp.var(params.b)) == pytest.approx(0.2, rel=0.3)


TINY = dict(points=(("relu", 2.5, 0.5),), width=8, input_size=4, steps=16, batch=2, seeds=2,
            skip=2)


def test_tiny_run_writes_the_table_and_figures_and_resumes(tmp_path):
  config = rnn_sweep.Config.quick(**TINY)
  out = rnn_sweep.run(config, str(tmp_path))
  (row,) = out["rows"]
  assert row["phase"] == "chaotic" and row["first"] == 2 and row["last"] == 14
  assert row["predicted_fixed_point"] == pytest.approx(np.log(1.25), rel=1e-12)
  for case in ("tied", "untied"):
    assert np.isfinite(row[f"{case}_slope"]) and row[f"{case}_seed_sd"] > 0
    assert row[f"{case}_within"] == (abs(row[f"{case}_error"]) <= rnn_sweep.TOLERANCE)
  assert "| relu chaotic" in out["report"] and "finite width" in out["report"]
  for name in ("profiles.png", "slopes.png"):
    assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
  saved = results.read_json(tmp_path / "results.json")
  assert saved[0]["tied_slope"] == row["tied_slope"]
  profiles = results.read_json(tmp_path / "profiles.json")
  assert np.asarray(profiles[0]["tied"]).shape == (2, 16)
  # The row's slope is the mean of the examples' fits to the stored profile (the batch
  # mean of ln||delta_t||^2 is linear in the examples' logs).
  w = np.zeros(16)
  w[row["first"] - 1:row["last"]] = rnn_sweep.recurrent.fit_weights(row["first"], row["last"])
  assert np.mean(np.asarray(profiles[0]["tied"]) @ w) == pytest.approx(row["tied_slope"],
                                                                        rel=1e-9)
  again = rnn_sweep.run(config, str(tmp_path))   # resumes: the same numbers from the store
  assert again["rows"] == out["rows"]
  with pytest.raises(ValueError, match="another config"):
    rnn_sweep.run(rnn_sweep.Config.quick(**{**TINY, "seeds": 3}), str(tmp_path))


@pytest.mark.parametrize("fields,words", [
    ({"points": (("tanh", 1.0),)}, ["(activation, sigma_w2, sigma_u2)"]),
    ({"points": (("swish", 1.0, 0.1),)}, ["unknown activation", "swish"]),
    ({"points": (("tanh", -1.0, 0.1),)}, ["sigma_w2", "> 0"]),
    ({"points": (("tanh", 1.0, 0.0),)}, ["sigma_u2 * q_x + sigma_b2", "> 0"]),
    ({"points": ()}, ["points", "non-empty"]),
    ({"steps": 10, "skip": 5}, ["steps", ">= 13"]),
    ({"seeds": 1}, ["seeds", ">= 2"]),
    ({"width": True}, ["width", "an int >= 1"]),
    ({"widths": 3}, ["unknown config keys", "widths"]),
], ids=["pair", "activation", "sigma_w2", "no_input", "no_points", "steps", "seeds", "bool",
        "unknown"])
def test_bad_config_names_the_field(fields, words):
  with pytest.raises(ValueError) as e:
    rnn_sweep.Config.from_dict(fields)
  for w in words:
    assert w in str(e.value), (w, str(e.value))
