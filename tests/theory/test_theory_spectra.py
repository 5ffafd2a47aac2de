"""Free-probability theory of Jacobian spectra (jaxbp.theory.spectra): the closed
forms of Pennington et al. (2017) at criticality, and the critical points."""

import numpy as np
import pytest

from jaxbp.theory import spectra


@pytest.mark.parametrize("activation,weights,sigma_b2,per_layer", [
    ("relu", "gaussian", 0.0, 2.0),        # mu_1 = mu_2 = 1/2, s_1 = -1
    ("relu", "orthogonal", 0.0, 1.0),      # s_1 = 0: no isometry for ReLU
    ("identity", "orthogonal", 0.0, 0.0),  # Saxe et al.: exact isometry
    ("identity", "gaussian", 0.0, 1.0),    # Fuss-Catalan: Var = L
], ids=["relu-gauss", "relu-orth", "linear-orth", "linear-gauss"])
def test_theory_closed_forms(activation, weights, sigma_b2, per_layer):
  t = spectra.theory(spectra.critical(activation, weights, sigma_b2), np.array([1, 10, 30]))
  np.testing.assert_allclose(t["chi1"], 1.0, atol=1e-9)
  np.testing.assert_allclose(t["mean_sq"], 1.0, atol=1e-8)
  np.testing.assert_allclose(t["var_sq"], per_layer * np.array([1, 10, 30]), atol=1e-7)


def test_tanh_orthogonal_spread_vanishes_with_q_star():
  rates = [spectra.theory(spectra.critical("tanh", "orthogonal", b), 1)["var_per_layer"]
           for b in (0.05, 1e-2, 1e-3, 1e-4)]
  assert all(a > b for a, b in zip(rates, rates[1:])) and rates[-1] < 0.02


def test_critical_nets():
  net = spectra.critical("relu", "gaussian")
  assert isinstance(net, spectra.CriticalNet) and net.name == "relu-gaussian"
  assert net.sigma_w2 == pytest.approx(2.0) and net.q_star == pytest.approx(1.0)
  tanh = spectra.critical("tanh", "orthogonal", 1e-3)
  assert tanh.sigma_w2 == pytest.approx(1.189, abs=1e-3)
  assert tanh.q_star == pytest.approx(0.107, abs=1e-3)


@pytest.mark.parametrize("args,match", [
    (("swish", "gaussian"), "swish"),
    (("softmax", "gaussian"), "elementwise"),
    (("tanh", "uniform"), "gaussian, orthogonal"),
    (("tanh", "gaussian", -1.0), "sigma_b2 must be a number >= 0"),
    (("relu", "gaussian", 0.1), "sigma_b2=0"),
], ids=["unknown-activation", "softmax", "unknown-weights", "negative-bias", "relu-bias"])
def test_critical_rejects_bad_arguments(args, match):
  with pytest.raises(ValueError, match=match):
    spectra.critical(*args)
