"""The shared normal rule (jaxbp.theory.quadrature) against closed-form Gaussian moments."""
import math

import numpy as np
import pytest

from jaxbp.theory import quadrature


@pytest.mark.parametrize("num_points", (512, 2048))
def test_normal_rule_integrates_gaussian_moments(num_points):
  z, w = quadrature.normal_rule(num_points)
  assert z.shape == w.shape == (num_points,) and (w > 0).all()
  for k in range(0, 13, 2):   # E z^k = (k - 1)!!, odd moments 0
    np.testing.assert_allclose(w @ z ** k, math.prod(range(k - 1, 0, -2)), rtol=1e-12)
    assert abs(w @ z ** (k + 1)) < 1e-12
  # relu'^2 jumps at 0, a panel edge: E[1{z > 0}] = 1/2 to round-off.
  assert abs(w @ (z > 0) - 0.5) < 1e-14
  np.testing.assert_allclose(w @ np.cos(z), math.exp(-0.5), rtol=1e-12)


@pytest.mark.parametrize("bad", (0, 8, 2047, 2048.0, True, "2048"))
def test_normal_rule_names_a_bad_count(bad):
  with pytest.raises(ValueError, match="num_points must be a positive multiple of 16"):
    quadrature.normal_rule(bad)
