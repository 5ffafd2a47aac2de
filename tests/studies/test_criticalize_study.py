"""The criticalize study: its Config's checks, its DKS/TAT wrapper against the kernel
maps computed here by quadrature, its models' inits, and a tiny run that writes every
file and resumes."""
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import io as results
from jaxbp.studies import criticalize_dks as dks_
from jaxbp.studies import criticalize_models as models
from jaxbp.studies import criticalize_report as _report
from jaxbp.studies import criticalize_study as study
from jaxbp.theory import meanfield


def _gauss(order=200):
  z, w = np.polynomial.hermite_e.hermegauss(order)
  return z, w / w.sum()


def _leaky_c_map(c, slope):
  # The arc-cosine kernel of a unit-Q leaky relu, E[phi(u) phi(v)] / E[phi(u)^2] for
  # (u, v) standard normal with correlation c (Cho & Saul 2009, with the linear part).
  relu = (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / math.pi
  return ((1 - slope) ** 2 * relu + 2 * slope * c) / (1 + slope ** 2)


@pytest.mark.parametrize("fields,words", [
    ({"models": ("mlp",)}, ["models", "mlp", "tanh_mlp_0.5"]),
    ({"models": ()}, ["models", "non-empty"]),
    ({"methods": "lsuv"}, ["methods", "non-empty list"]),
    ({"methods": ("gradinit",)}, ["methods", "gradinit", "criticalize"]),
    ({"width": 0}, ["width", "an int >= 1"]),
    ({"rnn_steps": 8}, ["rnn_steps", ">= 9"]),
    ({"sigma_b2": -0.1}, ["sigma_b2", ">= 0"]),
    ({"tol": 0.0}, ["tol", "> 0"]),
    ({"momentum": 1.0}, ["momentum", "[0, 1)"]),
    ({"seeds": ()}, ["seeds", "non-empty"]),
    ({"seed": 3}, ["unknown config keys", "seed"]),
    ({"tf_width": 18}, ["tf_width", "multiple", "4 heads", "18"]),
    ({"tf_learning_rate": 0.0}, ["tf_learning_rate", "> 0"]),
], ids=["model", "no_models", "methods_str", "method", "width", "rnn_steps", "sigma_b2", "tol",
        "momentum", "seeds", "unknown", "tf_width", "tf_lr"])
def test_bad_config_names_the_field(fields, words):
  with pytest.raises(ValueError) as e:
    study.Config.from_dict(fields)
  for w in words:
    assert w in str(e.value), (w, str(e.value))


def test_which_methods_apply_and_the_keys():
  assert not study.applies("rnn", "dks") and not study.applies("rnn", "tat")
  assert not study.applies("flax_cnn", "theory") and not study.applies("relu_mlp", "dks")
  assert study.applies("relu_mlp", "tat") and study.applies("tanh_convnet", "theory")
  config = study.Config(models=("rnn", "eqx_mlp"), seeds=(0, 4))
  got = [(k["model"], k["method"], k["seed"]) for k in study.keys(config)]
  assert got[:2] == [("rnn", "default", 0), ("rnn", "default", 4)]
  assert {m for mo, m, _ in got if mo == "rnn"} == {"default", "lsuv", "criticalize", "theory"}
  assert {m for mo, m, _ in got if mo == "eqx_mlp"} == {"default", "lsuv", "criticalize", "dks",
                                                        "tat"}


def test_transformer_runs_default_lsuv_criticalize_and_only_its_keys_hold_its_fields():
  config = study.Config(models=("rnn", "post_ln_transformer"), seeds=(0,))
  got = study.keys(config)
  tf = [k for k in got if k["model"] == "post_ln_transformer"]
  assert [k["method"] for k in tf] == ["default", "lsuv", "criticalize"]
  assert {k["tf_depth"] for k in tf} == {48} and {k["tf_learning_rate"] for k in tf} == {5e-4}
  # The other models' keys (and so their stored runs) do not depend on the
  # transformer's fields.
  others = [k for k in got if k["model"] != "post_ln_transformer"]
  assert others and not any(f in k for k in others for f in study.TF_FIELDS)
  moved = study.keys(study.Config(models=("rnn",), seeds=(0,), tf_depth=3))
  assert moved == others
  with pytest.raises(ValueError, match="no theory-critical"):
    models.build("post_ln_transformer", config).init(jax.random.PRNGKey(0), "theory")


def test_sequence_inputs_are_the_rows_then_blanks():
  x = jnp.arange(2 * 64, dtype=jnp.float32).reshape(2, 64)
  seq = models.inputs("sequence", x, 11)
  assert seq.shape == (2, 11, 8)
  np.testing.assert_array_equal(seq[:, :8], x.reshape(2, 8, 8))
  assert not np.any(seq[:, 8:])
  assert models.inputs("image", x).shape == (2, 8, 8, 1)


def test_tat_leaky_relu_has_unit_q_and_the_configured_c0():
  # TAT on a chain of 20 leaky relus: each layer keeps q = 1 (E[phi^2] = 1 under
  # N(0, 1)), and the 20-fold composition of the C map takes 0 to eta = 0.9.
  fn = dks_.transformed("leaky_relu", "tat", 20)
  z, w = _gauss()
  f = np.asarray(fn(jnp.asarray(z)))
  assert np.sum(w * f ** 2) == pytest.approx(1.0, abs=1e-6)
  pos, neg = float(fn(jnp.asarray(2.0))), float(fn(jnp.asarray(-2.0)))
  slope = neg / -pos
  assert 0 < slope < 1 and float(fn(jnp.asarray(0.0))) == pytest.approx(0.0, abs=1e-12)
  c = 0.0
  for _ in range(20):
    c = _leaky_c_map(c, slope)
  assert c == pytest.approx(0.9, abs=1e-4)


@pytest.mark.slow
def test_suo_draws_orthogonal_weights_and_zero_biases():
  tree = {"W": jnp.ones((32, 8)), "b": jnp.ones(8), "K": jnp.ones((3, 3, 4, 4)),
          "E": jnp.ones((8, 32)), "S": jnp.ones((2, 3, 3, 4, 4)), "n": 3}
  p = dks_.suo(jax.random.PRNGKey(0), tree)
  np.testing.assert_allclose(p["W"].T @ p["W"], np.eye(8), atol=1e-5)   # columns orthonormal
  # Fan-out above fan-in: rows orthonormal, scaled by sqrt(out/in) to keep q.
  np.testing.assert_allclose(p["E"] @ p["E"].T, 4 * np.eye(8), atol=1e-5)
  centre = p["K"][1, 1]
  np.testing.assert_allclose(centre.T @ centre, np.eye(4), atol=1e-5)
  assert float(jnp.abs(p["K"]).sum() - jnp.abs(centre).sum()) == 0   # delta: centre tap only
  assert not np.any(p["b"]) and p["n"] == 3
  for slab in p["S"]:   # a stack of kernels: each its own delta-orthogonal draw
    np.testing.assert_allclose(slab[1, 1].T @ slab[1, 1], np.eye(4), atol=1e-5)
    assert float(jnp.abs(slab).sum() - jnp.abs(slab[1, 1]).sum()) == 0
  assert not np.allclose(p["S"][0], p["S"][1])


def test_normalise_gives_unit_mean_square_per_example():
  x = np.random.default_rng(1).normal(size=(5, 8, 8, 1)) * np.arange(1, 6)[:, None, None, None]
  got = np.asarray(dks_.normalise(x))
  np.testing.assert_allclose(np.mean(got ** 2, axis=(1, 2, 3)), 1, rtol=1e-12)
  np.testing.assert_allclose(got * np.sqrt(np.mean(x ** 2, axis=(1, 2, 3)))[:, None, None, None],
                             x, rtol=1e-12)   # a positive scale per example, nothing else


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tanh", "gelu"])
def test_dks_chain_has_unit_q_and_slope_zeta(name):
  # DKS on a chain of 10 layers: Q(1) = 1 and the network's C-map slope at 1,
  # (E[phi'(z)^2])^10, is the default maximal slope zeta = 1.5.
  fn = dks_.transformed(name, "dks", 10)
  z, w = _gauss()
  f = np.asarray(fn(jnp.asarray(z)))
  df = np.asarray(jax.vmap(jax.grad(fn))(jnp.asarray(z)))
  assert np.sum(w * f ** 2) == pytest.approx(1.0, abs=1e-6)
  assert np.sum(w * df ** 2) ** 10 == pytest.approx(1.5, rel=1e-4)
  assert dks_.c_map_moments(fn) == pytest.approx((np.sum(w * f ** 2), np.sum(w * df ** 2)),
                                                 rel=1e-6)


@pytest.mark.slow
def test_model_inits_follow_their_laws():
  config = study.Config(width=256, mlp_depth=3, conv_depth=3, channels=64, sigma_b2=0.05)
  key = jax.random.PRNGKey(0)
  crit = float(meanfield.critical_sigma_w2("tanh", 0.05))
  for name, scheme, want in (("tanh_mlp_4", "default", 4.0), ("tanh_mlp_0.5", "theory", crit),
                             ("relu_mlp", "default", 1.0), ("relu_mlp", "theory", 2.0)):
    params = models.build(name, config).init(key, scheme)
    assert 256 * float(jnp.var(params[1].W)) == pytest.approx(want, rel=0.03), (name, scheme)
  conv = models.build("tanh_convnet", config).init(key, "theory")
  stack = conv[1].W   # the hidden convolutions, stacked: (conv_depth - 1, 3, 3, 64, 64)
  assert stack.shape == (2, 3, 3, 64, 64)
  for w in stack:     # delta-orthogonal: the centre tap is gain * orthogonal
    np.testing.assert_allclose(w[1, 1].T @ w[1, 1], crit * np.eye(64), atol=1e-8)
    assert float(jnp.abs(w).sum() - jnp.abs(w[1, 1]).sum()) == 0
  rnn = models.build("rnn", config).init(key, "default")
  assert 256 * float(jnp.var(rnn.W)) == pytest.approx(2.0, rel=0.03)   # He


TINY = dict(models=("tanh_mlp_0.5", "eqx_mlp"), methods=("default", "lsuv", "criticalize",
                                                         "theory", "tat"),
            width=8, mlp_depth=3, eqx_depth=3, crit_batch=16, steps=5, max_iters=3)


@pytest.mark.slow
def test_tiny_run_writes_every_file_and_resumes(tmp_path):
  config = study.Config.quick(**TINY)
  out = study.run(config, str(tmp_path))
  rows = {(r["model"], r["method"]): r for r in out["rows"]}
  assert set(rows) == {("tanh_mlp_0.5", m) for m in TINY["methods"]} | {
      ("eqx_mlp", m) for m in ("default", "lsuv", "criticalize", "tat")}
  for r in out["rows"]:
    assert 0 <= r["test_accuracy_min"] <= r["test_accuracy_median"] <= r["test_accuracy_max"]
    assert math.isfinite(r["log_slope_after"]) and r["q_min"] <= r["q_max"]
  default = rows[("tanh_mlp_0.5", "default")]
  # The default init's "after" is its "before"; TAT's q sits near 1 by construction.
  assert default["log_slope_before"] == default["log_slope_after"]
  assert rows[("eqx_mlp", "tat")]["q_max"] < 3
  assert "| tanh_mlp_0.5 |" in out["report"] and "TAT" in out["report"]
  for name in ("profiles.png", "accuracy.png"):
    assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
  runs = results.read_json(tmp_path / "runs.json")
  assert len(runs) == len(study.keys(config))
  again = study.run(config, str(tmp_path))   # resumes: the same numbers from the store
  assert again["rows"] == out["rows"]
  with pytest.raises(ValueError, match="another config"):
    study.run(study.Config.quick(**{**TINY, "steps": 6}), str(tmp_path))


@pytest.mark.slow
def test_tiny_transformer_runs_and_reports_its_task():
  # Depth 2, width 16, 5 Adam steps: the flow is finite and the token accuracy a
  # fraction; ~20 s, nearly all compilation (inspect, criticalize, the loop).
  config = study.Config.quick(models=("post_ln_transformer",),
                              methods=("default", "criticalize"), tf_depth=2, tf_width=16,
                              tf_steps=5, crit_batch=16, max_iters=3)
  key_list = study.keys(config)
  with warnings.catch_warnings():   # 3 iterations are too few: layers off target
    warnings.simplefilter("ignore", UserWarning)
    records = [study.run_one(config, k["model"], k["method"], k["seed"]) for k in key_list]
  for r in records:
    flow = r["flow"]
    assert flow["layers"] == 2 * 6 + 1   # q, k, v, o, FFN in and out per block; the readout
    assert math.isfinite(flow["log_slope"]) and math.isfinite(flow["spread"])
    assert np.all(np.isfinite(flow["ln_delta_sq"])) and 0 < flow["q_min"] <= flow["q_max"]
    assert 0 <= r["test_accuracy"] <= 1 and 0 <= r["train_accuracy"] <= 1
    assert r["status"] == "ok" and math.isfinite(r["test_loss"])
  assert records[1]["info"]["iters"] >= 1 and records[1]["seconds_method"] > 0
  text = _report.report(config, _report.summarise(key_list, records))
  assert "| post_ln_transformer |" in text
  assert "token reversal" in text and "Adam" in text and "lr 0.0005" in text
