"""CNN Jacobian spectra by matrix-free Lanczos: every singular value equals the dense SVD
of jax.jacfwd's Jacobian on a tiny net; the study's table and files; its checks."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.studies import conv_spectrum

TINY = dict(depths=(3, 6), channels=4, size=4, ndim=1, seeds=(0, 1))


@pytest.mark.parametrize("init, ndim, size, channels, depth", [
    ("gaussian", 2, 3, 4, 5),
    # Numerically rank-deficient (singular values over 30 decades): without
    # deflation the recurrence lost orthogonality and its top value came out 8e23.
    ("gaussian", 1, 8, 16, 64)])
def test_lanczos_values_are_the_dense_jacobians(init, ndim, size, channels, depth):
  config = conv_spectrum.Config(**dict(TINY, ndim=ndim, size=size, channels=channels))
  s = conv_spectrum.jacobian_singular_values(config, init, depth, seed=3)
  # The same net and input, the Jacobian formed densely.
  crit, net = config.critical(init), config.net(depth)
  p_key, x_key, _ = jax.random.split(jax.random.PRNGKey(3), 3)
  params = net.init(p_key, init=conv_spectrum.initializer(init, crit))
  shape = (size,) * ndim + (channels,)
  x = jnp.tanh(np.sqrt(crit.q_star) * jax.random.normal(x_key, shape, jnp.float64))
  n = size ** ndim * channels
  J = jax.jacfwd(lambda h: net.apply(params, h[None])[0])(x).reshape(n, n)
  dense = np.linalg.svd(np.asarray(J), compute_uv=False)
  assert s.shape == (n,) and np.all(np.isfinite(s))
  np.testing.assert_allclose(s, dense, rtol=0, atol=1e-12 * dense[0])
  kept = dense > 1e-6 * dense[0]
  np.testing.assert_allclose(s[kept], dense[kept], rtol=1e-8)


def test_delta_orthogonal_linear_net_is_an_exact_isometry():
  # Linear layers whose kernels are delta-orthogonal with gain 1 are orthogonal maps
  # (circular padding): every singular value is 1.
  config = conv_spectrum.Config(**dict(TINY, activation="identity", sigma_b2=0.0))
  assert config.critical("delta_orthogonal").sigma_w2 == pytest.approx(1.0)
  s = conv_spectrum.jacobian_singular_values(config, "delta_orthogonal", 6, seed=0)
  np.testing.assert_allclose(s, np.ones(16), atol=1e-12)


def test_run_writes_rows_beside_theory_and_resumes(tmp_path):
  jax.config.update("jax_enable_x64", True)
  config = conv_spectrum.Config(**dict(TINY, seeds=(0,)))
  out = conv_spectrum.run(config, tmp_path)
  rows = out["rows"]
  assert {(r["init"], r["depth"]) for r in rows} == {
      (i, d) for i in conv_spectrum.INITS for d in (3, 6)}
  for r in rows:
    assert r["n"] == 16 and r["seeds"] == 1
    assert r["theory_var_sq"] > 0 and np.isfinite(r["var_sq_norm"])
    assert r["s_max"] >= r["s_min"] > 0
  svals = json.loads((tmp_path / "singular_values.json").read_text())
  assert len(svals) == 4 and all(len(v["s"]) == 16 for v in svals)
  assert (tmp_path / "histograms.png").stat().st_size > 0
  assert "| delta_orthogonal | 6 |" in (tmp_path / "report.md").read_text()
  assert conv_spectrum.run(config, tmp_path)["rows"] == rows


@pytest.mark.parametrize("field,value,match", [
    ("inits", ("orthogonal",), "inits"), ("depths", (), "depths"), ("depths", (0,), "depths"),
    ("channels", 0, "channels"), ("kernel_size", 2, "odd"), ("seeds", (-1,), "seeds"),
    ("activation", "softmax", "elementwise")])
def test_config_errors(field, value, match):
  with pytest.raises(ValueError, match=match):
    conv_spectrum.Config(**{**TINY, field: value})
