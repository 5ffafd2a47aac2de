"""Jacobian spectra: the prefix products against autodiff Jacobians, the measured
spread against Pennington et al. (2017), the experiment's files, bad configs.
The theory alone is tested in test_theory_spectra.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.measure import diagnostics
from jaxbp.studies import spectrum
from jaxbp.theory import spectra


def test_prefix_products_match_autodiff_jacobians():
  # Reference: jax.linearize of net.apply on the first l layers (jaxbp.diagnostics).
  setting = spectra.critical("tanh", "gaussian", 0.05)
  net = jaxbp.MLP((16,) * 7, "tanh", output_activation="tanh", stack=True)
  params = net.init(jax.random.PRNGKey(0), setting.initializer)
  x = 0.7 * jax.random.normal(jax.random.PRNGKey(1), (1, 16))
  depths = (2, 6)
  s = spectrum.prefix_singular_values(net, params, x, depths)
  layers = jaxbp.unstack(params, net)
  for i, depth in enumerate(depths):
    sub = jaxbp.MLP((16,) * (depth + 1), "tanh", output_activation="tanh")
    ref = diagnostics.jacobian_singular_values(sub, layers[:depth], x)[0]
    np.testing.assert_allclose(s[i], ref, rtol=1e-12, atol=1e-13)


@pytest.fixture(scope="module")
def deep_spectra():
  # Width 256, depth 30 (the brief's case): orthogonal tanh at criticality
  # (sigma_b2 = 1e-3, q* = 0.107) against Gaussian ReLU (He).
  tanh = spectrum.singular_values(jax.random.PRNGKey(1), "tanh", "orthogonal", 256, (30,),
                                  sigma_b2=1e-3, num_seeds=2)
  relu = spectrum.singular_values(jax.random.PRNGKey(1), "relu", "gaussian", 256, (30,),
                                  num_seeds=3)
  return np.asarray(tanh)[:, 0], np.asarray(relu)[:, 0]


def test_orthogonal_tanh_is_near_isometric_and_matches_theory(deep_spectra):
  tanh, _ = deep_spectra
  st = spectra.critical("tanh", "orthogonal", 1e-3)
  theory = spectra.theory(st, 30)
  sp = spectrum.spread(tanh)
  # E[s^2] = chi_1^L = 1; per network it scatters by ~0.1 (10 seeds measured:
  # 0.83 .. 1.20), so the mean of 2 is within 0.25.
  assert abs(sp["mean_sq"] - theory["mean_sq"]) < 0.25
  # Var[s^2]/E[s^2]^2 = L (mu_2/mu_1^2 - 1) = 1.32; 10 seeds gave 1.27 .. 1.37.
  assert abs(sp["var_sq_norm"] / theory["var_sq"] - 1) < 0.2
  assert sp["frac_below_floor"] == 0 and sp["log10_range"] < 1.5


def test_gaussian_relu_spreads_far_wider(deep_spectra):
  tanh, relu = deep_spectra
  t, r = spectrum.spread(tanh), spectrum.spread(relu)
  assert r["var_sq_norm"] > 10 * t["var_sq_norm"]          # theory: 60 vs 1.32
  # Every single net, not just the average: 5-95% of log10 s spans >= 5 decades
  # for ReLU (10 seeds: 9.6 .. 10.2) and < 1.5 for orthogonal tanh (1.11 .. 1.17).
  assert min(spectrum.spread(s)["log10_range"] for s in relu) > 5
  assert max(spectrum.spread(s)["log10_range"] for s in tanh) < 1.5
  # About half of a ReLU Jacobian's singular values are exact zeros.
  assert r["frac_below_floor"] > 0.45


def test_run_writes_files_and_resumes(tmp_path, monkeypatch):
  out = tmp_path / "spec"
  config = spectrum.Config(width=16, depths=(1, 3), activations=("tanh", "relu"),
                           weights=("orthogonal",), seeds=2)
  result = spectrum.run(config, str(out))
  for name in ("config.json", "provenance.json", "spread.json", "spread.csv",
               "singular_values.npz", "histograms.png", "spread.png", "report.md"):
    assert (out / name).stat().st_size > 0, name
  assert len(result["rows"]) == 4
  assert "tanh-orthogonal" in result["report"] and "Growth per layer" in result["report"]
  saved = jaxbp.results.read_json(out / "config.json")
  assert saved["depths"] == [1, 3] and saved["sigma_b2"] == {"tanh": 1e-3, "relu": 0.0}
  # A rerun loads every setting from the store: no product is computed again.
  monkeypatch.setattr(spectrum.sampling, "sample_singular_values",
                      lambda *a, **k: pytest.fail("recomputed"))
  again = spectrum.run(config, str(out))
  assert again["rows"] == result["rows"]


BAD = [
    ("unknown-activation", {"activations": ["swish"]}, ["swish", "tanh"]),
    ("unknown-weights", {"weights": ["uniform"]}, ["uniform", "gaussian", "orthogonal"]),
    ("depth-zero", {"depths": [0, 4]}, ["depth", ">= 1"]),
    ("depths-empty", {"depths": []}, ["depths is empty"]),
    ("depths-unsorted", {"depths": [8, 4]}, ["increasing"]),
    ("activations-empty", {"activations": []}, ["non-empty"]),
    ("width-zero", {"width": 0}, ["width", ">= 1"]),
    ("relu-bias", {"activations": ["relu"], "sigma_b2": {"relu": 0.1}}, ["fixed point", "sigma_b2=0"]),
    ("unknown-key", {"widht": 8}, ["widht", "valid keys"]),
]


@pytest.mark.parametrize("config,words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_raises_naming_the_field(config, words):
  with pytest.raises(ValueError) as e:
    spectrum.Config.from_dict(config)
  for w in words:
    assert w in str(e.value), (w, str(e.value))


def test_bad_config_fails_before_compute(tmp_path):
  with pytest.raises(ValueError, match="seeds must be an int >= 1"):
    spectrum.Config(seeds=0)
  with pytest.raises(ValueError, match="activations.*3"):
    spectrum.Config(activations=(3,))
  out = tmp_path / "never"
  with pytest.raises(ValueError, match="increasing"):
    spectrum.run({"depths": [8, 4]}, str(out))
  assert not out.exists()   # nothing written, nothing computed


def test_config_presets_and_sigma_b2():
  quick = spectrum.Config.quick()
  assert quick.width == 128 and quick.depths == (1, 4, 16, 32) and quick.seeds == 3
  assert spectrum.Config.from_dict(quick.to_dict()) == quick
  # one bias variance for all, or per activation (a missing one is 0)
  assert spectrum.Config(activations=("tanh", "identity"), sigma_b2=0.0).sigma_b2 == \
      {"tanh": 0.0, "identity": 0.0}
  assert spectrum.Config(activations=("relu",)).sigma_b2 == {"relu": 0.0}
  assert [n.name for n in spectrum.Config().nets()] == [
      "tanh-gaussian", "tanh-orthogonal", "relu-gaussian", "relu-orthogonal"]


def test_singular_values_bad_arguments():
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="depth"):
    spectrum.singular_values(key, "tanh", "gaussian", 8, (0,))
  with pytest.raises(ValueError, match="width"):
    spectrum.singular_values(key, "tanh", "gaussian", 0, (2,))
  with pytest.raises(ValueError, match="square net"):
    net = jaxbp.MLP((4, 4, 2), "tanh")
    spectrum.prefix_singular_values(net, net.init(key), jnp.ones((1, 4)), (1,))
