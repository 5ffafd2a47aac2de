"""The CNN depth study on a tiny net: exact where theory is exact, resumable, validated."""
import json

import numpy as np
import pytest

from jaxbp.measure import diagnostics
from jaxbp.studies import conv_sweep

# A linear net with delta-orthogonal kernels (square Q, circular padding, no bias)
# scales ||delta|| by exactly gain = sqrt(sigma_w2) per layer: rate = ln sigma_w2.
TINY = dict(activation="identity", sigma_b2=0.0, sigma_w2=(0.5,), channels=4, size=8, ndim=1,
            depth=8, batch=2, seeds=(0, 1), skip=1)


def test_linear_delta_orthogonal_rate_is_ln_chi1_exactly(tmp_path):
  rows = conv_sweep.run(conv_sweep.Config(**TINY), tmp_path)
  by = {(r["init"], r["sigma_w2"]): r for r in rows}
  assert set(by) == {(i, s) for i in conv_sweep.INITS for s in (1.0, 0.5)}
  for s in (1.0, 0.5):
    r = by[("delta_orthogonal", s)]
    np.testing.assert_allclose(r["ln_chi1"], np.log(s), atol=1e-12)
    assert r["abs_error"] <= 1e-12 and r["seeds"] == 2
    assert np.isfinite(by[("gaussian", s)]["rate_mean"])
  profiles = json.loads((tmp_path / "profiles.json").read_text())
  assert len(profiles) == 8 and all(len(p["log_delta2"]) == 8 for p in profiles)
  assert "| delta_orthogonal | 0.5000 | -0.6931 |" in (tmp_path / "report.md").read_text()
  assert (tmp_path / "profiles.png").stat().st_size > 0
  # A rerun finds every record in the store and computes nothing.
  again = conv_sweep.run(conv_sweep.Config(**TINY), tmp_path)
  assert again == rows


def test_rate_is_minus_the_slope_between_the_skipped_ends():
  log_norms = 3.0 - 0.25 * np.arange(20) + np.r_[5.0, np.zeros(18), -4.0]
  assert float(diagnostics.fit_log_slope(log_norms, 1, 1)) == pytest.approx(0.25, abs=1e-12)


@pytest.mark.parametrize("stack", [True, False])
def test_layer_log_norms_are_every_layers_delta_in_order(stack):
  # Reference: the deltas as jax.grad with respect to zero probes on the
  # pre-activations, summed layer by layer, the stacked group's slices in turn.
  import dataclasses
  import jax
  import jax.numpy as jnp
  config = conv_sweep.Config(**dict(TINY, activation="tanh", sigma_b2=0.05))
  net = dataclasses.replace(config.net(), stack=stack)
  params = net.init(jax.random.PRNGKey(0), init=conv_sweep.initializer("gaussian", 1.5, 0.05))
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 4))
  probes = net.zero_probes(x)
  loss = lambda pr: jnp.mean((net.trace(params, x, pr).h[-1] - 0.3) ** 2)
  want = []
  for g, d in enumerate(jax.grad(loss)(probes)):
    want += [float(jnp.sum(di ** 2)) for di in d] if net.is_stacked(g) else [float(jnp.sum(d ** 2))]
  from jaxbp.core import backprop
  deltas = backprop.deltas(net, "mse", params, x, jnp.full(x.shape, 0.3))
  got = conv_sweep.layer_log_norms(net, deltas)
  assert len(got) == config.depth == len(want)
  np.testing.assert_allclose(got, np.log(want), rtol=0, atol=1e-12)


@pytest.mark.parametrize("field,value,match", [
    ("activation", "softmax", "elementwise"), ("sigma_w2", (0.0,), "sigma_w2"),
    ("sigma_b2", -1.0, "sigma_b2"), ("inits", ("he",), "inits"), ("channels", 0, "channels"),
    ("seeds", (), "seeds"), ("kernel_size", 4, "odd"), ("depth", 4, "depth"),
])
def test_bad_configs_are_named(field, value, match):
  with pytest.raises(ValueError, match=match):
    conv_sweep.Config(**{**TINY, field: value})


def test_run_grid_writes_one_table_over_activations_and_depths(tmp_path):
  config = conv_sweep.Config(**dict(TINY, seeds=(0,)))
  rows = conv_sweep.run_grid(config, tmp_path, ["identity", "tanh"], [6, 8])
  assert {(r["activation"], r["depth"]) for r in rows} == {
      (a, d) for a in ("identity", "tanh") for d in (6, 8)}
  assert len(rows) == 4 * 2 * 2          # x (2 inits x (critical + 0.5))
  for a in ("identity", "tanh"):
    for d in (6, 8):
      assert (tmp_path / f"{a}_depth{d}" / "profiles.png").exists()
  csv = (tmp_path / "results.csv").read_text().splitlines()
  assert csv[0].startswith("activation,depth,init,sigma_w2") and len(csv) == 1 + len(rows)
  report = (tmp_path / "report.md").read_text()
  assert "## tanh, depth 8" in report and "| delta_orthogonal | 0.5000 | -0.6931 |" in report
  with pytest.raises(ValueError, match="elementwise"):
    conv_sweep.run_grid(config, tmp_path / "bad", ["softmax"], [6])
  with pytest.raises(ValueError, match="at least one activation and one depth"):
    conv_sweep.run_grid(config, tmp_path / "bad", [], [6])


def test_the_script_runs_a_grid_for_several_activations_or_depths(tmp_path):
  import os
  import pathlib
  import subprocess
  import sys
  root = pathlib.Path(__file__).resolve().parents[2]
  env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  cmd = [sys.executable, str(root / "experiments" / "conv_sweep.py"), "--out", str(tmp_path),
         "--activation", "identity", "--depth", "5", "6", "--channels", "4", "--size", "8",
         "--batch", "2", "--seeds", "0", "--skip", "1", "--sigma-w2", "0.5", "--sigma-b2", "0"]
  r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
  assert r.returncode == 0, r.stderr[-1500:]
  assert len((tmp_path / "results.csv").read_text().splitlines()) == 1 + 2 * 4
  for d in (5, 6):
    assert (tmp_path / f"identity_depth{d}" / "profiles.png").exists()
  assert "## identity, depth 6" in (tmp_path / "report.md").read_text()
  bad = subprocess.run(cmd[:-1] + ["0", "0.1"], capture_output=True, text=True, env=env,
                       timeout=120)
  assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
  assert "unrecognized arguments: 0.1" in bad.stderr
