"""The depth sweep on tiny grids: files, theory agreement, resume, devices, bad configs."""
import json
import os
import pathlib
import runpy
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

from jaxbp import io as results
from jaxbp.studies import depth_sweep as sweep
from jaxbp.studies.depth_sweep import report
from jaxbp.studies.depth_sweep import schedule

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Two activations, every init, two depths: 4 measurement programs, 22 configurations.
TINY = dict(activations=("tanh", "relu"), inits=sweep.INITS, sigma_w2=(1.0, 2.5),
            sigma_b2=(0.0, 0.05), depths=(10,), width=24, batch=4, seeds=(0, 1), skip=2)


def _rows(out):
  return results.read_json(os.path.join(out, "results.json"))["rows"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, worker_id):
  # One sweep for the whole session: under xdist every worker's base temp shares a
  # parent, the first worker there computes and the others wait for its summary
  # (each worker would otherwise run the same 25-second sweep).
  root = tmp_path_factory.getbasetemp()
  root = root if worker_id == "master" else root.parent
  out, done = root / "depth_sweep_tiny", root / "depth_sweep_tiny.json"
  try:
    os.close(os.open(root / "depth_sweep_tiny.lock", os.O_CREAT | os.O_EXCL))
  except FileExistsError:
    deadline = time.time() + 900
    while not done.exists():
      assert time.time() < deadline, "the worker running the shared sweep never finished"
      time.sleep(0.2)
    shared = json.loads(done.read_text())
    assert "error" not in shared, shared
    return str(out), shared
  try:
    summary = sweep.run(TINY, str(out))
  except BaseException as e:
    done.write_text(json.dumps({"error": repr(e)}))
    raise
  tmp = root / "depth_sweep_tiny.tmp"
  tmp.write_text(json.dumps(summary))
  os.replace(tmp, done)
  return str(out), summary


def test_writes_results_figures_and_report(tiny):
  out, summary = tiny
  for name in ("results.csv", "results.json", "config.json", "report.md",
               "profiles.png", "slopes.png", "phase.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  for name in ("profiles.png", "slopes.png", "phase.png"):
    with open(os.path.join(out, name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  data = results.read_json(os.path.join(out, "results.json"))
  assert data["seeds"] == [0, 1] and data["config"]["width"] == 24
  assert {"jax", "jaxlib", "platform", "device_kind", "started", "finished"} <= set(data["provenance"])
  assert data["provenance"]["started"] <= data["provenance"]["finished"]
  rows = data["rows"]
  n_inits = 2 * 2 + 2 + 2 + 3    # gaussian grid, critical x2, orthogonal_critical x2, named
  assert len(rows) == summary["configurations"] == 2 * n_inits
  for r in rows:
    assert len(data["profiles"][r["key"]]["log_delta_sq_mean"]) == r["depth"] + 1
  with open(os.path.join(out, "results.csv")) as f:
    header = f.readline().strip().split(",")
    assert len(f.readlines()) == len(rows)
  assert {"slope_measured", "slope_theory", "status", "first_nonfinite_layer"} <= set(header)
  report = open(os.path.join(out, "report.md")).read()
  assert "| activation | init |" in report and "predicted ln χ₁" in report
  he = [r for r in rows if r["activation"] == "relu" and r["init"] == "he" and r["depth"] == 10]
  assert f"{he[0]['slope_measured']:.4f}" in report
  # "he" and gaussian(2.0, 0.0) are one computation, stored once.
  assert summary["distinct"] < summary["configurations"]


def test_resume_computes_nothing_and_changes_nothing(tiny):
  out, _ = tiny
  store = os.path.join(out, "store")
  before = {n: os.path.getmtime(os.path.join(store, n)) for n in os.listdir(store)}
  rows = _rows(out)
  again = sweep.run(TINY, out, figures=False)
  assert again["computed"] == 0
  assert _rows(out) == rows
  assert {n: os.path.getmtime(os.path.join(store, n)) for n in os.listdir(store)} == before


def test_killed_run_resumes_without_losing_a_configuration(tiny, tmp_path, monkeypatch):
  full_dir, full = tiny
  saved = []
  real_save = results.ResultStore.save

  def save_then_die(self, key, record):
    real_save(self, key, record)
    saved.append(key)
    if len(saved) == 2:
      raise KeyboardInterrupt   # killed right after the second configuration
  monkeypatch.setattr(results.ResultStore, "save", save_then_die)
  with pytest.raises(KeyboardInterrupt):
    sweep.run(TINY, str(tmp_path), figures=False)
  assert len(os.listdir(tmp_path / "store")) == 2      # both finished ones are on disk
  monkeypatch.setattr(results.ResultStore, "save", real_save)
  resumed = sweep.run(TINY, str(tmp_path), figures=False)
  assert resumed["computed"] == full["computed"] - 2
  assert _rows(tmp_path) == _rows(full_dir)


def test_tiny_memory_budget_splits_groups_without_changing_numbers(tiny, tmp_path):
  # memory_gb too small for one configuration's rows: one configuration per group
  # and several calls per family (the last padded), against the one-group run.
  out, _ = tiny
  sweep.run(dict(TINY, memory_gb=1e-9), str(tmp_path), figures=False)
  for a, b in zip(_rows(tmp_path), _rows(out)):
    assert a["key"] == b["key"] and a["status"] == b["status"]
    np.testing.assert_allclose(a["slope_measured"], b["slope_measured"], rtol=1e-12, atol=1e-14)


def test_slopes_agree_with_mean_field_theory(tmp_path):
  # Width 256, 30 hidden layers (20 fitted), 8 seeds. Tolerance 0.025 nats per
  # layer = the finite-width bias (~ -2/width ~ -0.008; -0.009 +- 0.004 measured
  # for relu/He with 32 seeds) plus ~2 standard errors of an 8-seed mean (0.007
  # for relu, 0.005 for tanh). Measured: relu -0.014, tanh +0.001 and -0.003.
  config = dict(activations=("tanh", "relu"), inits=("gaussian", "he"),
                sigma_w2={"tanh": (1.5, 3.0), "relu": ()}, sigma_b2=(0.05,), depths=(30,),
                width=256, batch=8, seeds=tuple(range(8)), skip=5)
  sweep.run(config, str(tmp_path), figures=False)
  rows = {(r["activation"], r["init"], r["sigma_w2"]): r for r in _rows(tmp_path)}
  checked = [rows["tanh", "gaussian", 1.5], rows["tanh", "gaussian", 3.0], rows["relu", "he", 2.0]]
  for r in checked:
    assert r["status"] == "ok"
    assert abs(r["slope_measured"] - r["slope_theory"]) < 0.025, r
  assert checked[0]["slope_theory"] < -0.05 and checked[1]["slope_theory"] > 0.15  # both phases


def test_overflow_is_recorded_not_raised(tmp_path):
  # relu with sigma_w2 = 1e12: every layer multiplies the signal by ~7e5, so
  # float64 overflows in the forward pass around layer 50.
  config = dict(activations=("relu",), inits=("gaussian",), sigma_w2=(1e12,),
                sigma_b2=(0.0,), depths=(70,), width=16, batch=2, seeds=(0,), skip=2)
  summary = sweep.run(config, str(tmp_path))
  (row,) = _rows(tmp_path)
  assert row["status"] == "overflow" and row["nonfinite_pass"] == "forward"
  assert 40 <= row["first_nonfinite_layer"] <= 60
  assert summary["by_activation"]["relu"]["n"] == 0        # not counted as agreement
  assert "overflow at layer" in open(tmp_path / "report.md").read()


@pytest.mark.device
@pytest.mark.parametrize("activation", ("tanh", "relu"))
@pytest.mark.parametrize("weights", ("gaussian", "orthogonal"))
def test_row_stacked_program_equals_measure_per_configuration(activation, weights):
  # measure_rows runs C configurations of a seed as one net of C * batch rows on
  # the unscaled weights (scales on the rows); each must be measure's net exactly.
  import jax
  import jax.numpy as jnp
  depth, width, batch = 7, 16, 3
  net = sweep.sweep_net(activation, depth, width)
  family = ("gaussian", "orthogonal")
  samples = [sweep.draw_samples(net, family, batch, s, jnp.float64)[family.index(weights)]
             for s in (0, 1)]
  sw2 = np.array([0.5, 1.0, 2.0, 3.0, 4.0])
  sb2 = np.array([0.0, 0.05, 0.3, 0.1, 0.0])
  v0 = np.array([1.0, 0.8, 1.7, 0.3, 2.0])
  single = jax.jit(sweep.measure, static_argnums=0)
  rows = jax.jit(sweep.measure_rows, static_argnums=0)
  # and the sweep's grouped form: both seeds, two groups each (3 + 2 configurations, padded)
  items = [(s, w, b, v) for w, b, v in zip(sw2, sb2, v0) for s in (0, 1)]
  stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *samples)
  args, first = sweep.group_items(items, 3)
  grouped = jax.jit(sweep.measure_groups, static_argnums=0)(net, stacked, *map(jnp.asarray, args))
  grouped = [np.asarray(a).reshape((-1,) + a.shape[2:])[first] for a in grouped]
  for s, sample in enumerate(samples):
    m = rows(net, sample, sw2, sb2, v0)
    for c in range(len(sw2)):
      ref = single(net, sample, sw2[c], sb2[c], v0[c])
      for f in range(3):
        assert np.all(np.isfinite(ref[f]))
        np.testing.assert_allclose(m[f][c], ref[f], rtol=1e-12, atol=0)
        np.testing.assert_allclose(grouped[f][2 * c + s], ref[f], rtol=1e-12, atol=0)
      assert np.array_equal(m.forward_finite[c], ref.forward_finite)
      assert np.array_equal(grouped[3][2 * c + s], ref.forward_finite)


_SHARDED = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    from jaxbp.studies import depth_sweep as sweep
    assert jax.local_device_count() == 4, jax.devices()
    summary = sweep.run(json.loads(sys.argv[1]), sys.argv[2], figures=False)
    print(json.dumps(summary["devices"]))
""")


def test_four_devices_give_the_numbers_of_one(tmp_path):
  # 3 configurations x 2 seeds = 6 items: not a multiple of 4, so padding is exercised.
  config = dict(activations=("tanh",), inits=("gaussian",), sigma_w2=(0.5, 1.5, 4.0),
                sigma_b2=(0.05,), depths=(6,), width=16, batch=3, seeds=(0, 1), skip=1)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _SHARDED, json.dumps(config), str(tmp_path / "four")],
                        env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().splitlines()[-1] == "4"
  sweep.run(config, str(tmp_path / "one"), figures=False)
  four, one = _rows(tmp_path / "four"), _rows(tmp_path / "one")
  for a, b in zip(four, one):
    assert a["key"] == b["key"] and a["status"] == b["status"] == "ok"
    np.testing.assert_allclose(a["slope_measured"], b["slope_measured"], rtol=1e-12, atol=1e-14)
  p4 = results.read_json(tmp_path / "four" / "results.json")["profiles"]
  p1 = results.read_json(tmp_path / "one" / "results.json")["profiles"]
  for k in p1:
    np.testing.assert_allclose(p4[k]["log_delta_sq_mean"], p1[k]["log_delta_sq_mean"], rtol=1e-12)


@pytest.mark.parametrize("change,match", (
    ({"activations": ("tanh", "swish")}, "unknown activation 'swish'"),
    ({"activations": ("softmax",)}, "unknown activation 'softmax'"),
    ({"inits": ("he", "kaiming_uniform")}, "unknown init 'kaiming_uniform'"),
    ({"depths": (10, 0)}, "depth must be an int >= 1"),
    ({"depths": (2.5,)}, "depth must be an int >= 1"),
    ({"depths": ()}, "depths is empty"),
    ({"activations": []}, "activations is empty"),
    ({"seeds": ()}, "seeds is empty"),
    ({"sigma_w2": (1.0, -2.0)}, "finite numbers >= 0"),
    ({"inits": ("gaussian",), "sigma_w2": {"relu": (2.0,)}}, "no configurations for 'tanh'"),
    ({"width": 0}, "width must be an int >= 1"),
    ({"dtype": "float16"}, "dtype must be one of"),
    ({"depth": (10,)}, "unknown keys \\['depth'\\]"),
), ids=("activation", "softmax", "init", "depth0", "depth_float", "no_depths", "no_activations",
        "no_seeds", "negative_sigma", "empty_gaussian_grid", "width", "dtype", "unknown_key"))
def test_bad_configs_fail_before_any_compute(change, match, tmp_path, monkeypatch):
  def no_compute(*args, **kwargs):
    raise AssertionError("computed before validating")
  monkeypatch.setattr(schedule, "compute", no_compute)
  with pytest.raises(ValueError, match=match):
    sweep.run(dict(TINY, **change), str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def test_the_script_runs(tmp_path):
  config = tmp_path / "c.json"
  config.write_text(json.dumps({"inits": ["he"], "seeds": [3]}))
  proc = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "depth_sweep.py"), "--out", str(tmp_path / "o"),
       "--config", str(config), "--activations", "relu", "--depths", "3", "--width", "8",
       "--batch", "2"], capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (row,) = _rows(tmp_path / "o")
  assert (row["activation"], row["init"], row["depth"], row["width"]) == ("relu", "he", 3, 8)


@pytest.mark.parametrize("flags,match", (
    (["--width", "0"], "width must be an int >= 1"),
    (["--depths", "-1"], "depth must be an int >= 1"),
    (["--activations", "gelu"], "unknown activation 'gelu'"),
    (["--config", "missing.json"], "missing.json"),
), ids=("width", "depths", "activation", "config"))
def test_the_script_reports_bad_flags_in_one_line(flags, match, tmp_path):
  proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "depth_sweep.py"),
                         "--quick", "--out", str(tmp_path / "o"), *flags],
                        capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert proc.returncode == 2
  assert "Traceback" not in proc.stderr and match in proc.stderr.strip().splitlines()[-1]
  assert not (tmp_path / "o").exists()


def test_report_sets_layerwise_and_finite_width_predictions_beside_mean_field(tiny):
  out, summary = tiny
  rows = _rows(out)
  with open(os.path.join(out, "results.csv")) as f:
    header = f.readline().strip().split(",")
  new = {"slope_layerwise", "slope_error_layerwise", "slope_finite_width",
         "slope_error_finite_width", "log_ratio_measured", "log_ratio_predicted",
         "log_ratio_var_measured", "log_ratio_var_predicted"}
  assert new <= set(header) and new <= set(rows[0])
  assert header.index("key") < min(header.index(c) for c in new)   # old columns keep their places
  for r in rows:
    assert np.isclose(r["slope_error_layerwise"], r["slope_measured"] - r["slope_layerwise"])
    assert np.isclose(r["slope_error_finite_width"],
                      r["slope_measured"] - r["slope_finite_width"])
    assert r["log_ratio_var_predicted"] > 0
    if r["activation"] == "relu":   # chi_1 does not depend on q: layerwise is ln chi_1
      assert abs(r["slope_layerwise"] - r["slope_theory"]) < 1e-9
  # tanh without biases: q* = 0, the inputs start at v0 = 1 and q_l decays; mean field
  # says 0, the layerwise profile says what the net does.
  for r in (r for r in rows if r["activation"] == "tanh" and r["init"] == "xavier"):
    assert abs(r["slope_error_layerwise"]) < 0.03 < abs(r["slope_error"]), r
  by = summary["by_prediction"]
  assert set(by) == {"mean_field", "layerwise", "finite_width"}
  assert all(v["n"] == summary["by_activation"]["tanh"]["n"] * 2 for v in by.values())
  report = open(os.path.join(out, "report.md")).read()
  assert "## Agreement under each prediction" in report and "## Spread across seeds" in report
  assert f"| layerwise | {by['layerwise']['n']} | {by['layerwise']['within_tolerance']} |" in report


def test_presets_are_valid_as_they_are_and_a_skip_asked_for_still_warns():
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    for config in (sweep.Config.quick(), sweep.Config()):
      sweep.grid(config)
  # The quick preset fits the windows it always fitted: all of depth 2, four layers
  # left out at each end of 16 and 48.
  q = sweep.QUICK
  assert [sweep.fit_window(d, q.fit_skip) for d in q.depths] == [(1, 2), (5, 12), (5, 44)]
  with pytest.warns(UserWarning, match="skip=4 would leave fewer than two layers to fit at "
                                       "depth 2"):
    sweep.grid(sweep.Config.quick(skip=4))
  with pytest.raises(ValueError, match="skip must be an int >= 0"):
    sweep.Config.quick(skip=True)


def test_the_readme_main_command_warns_nothing(tmp_path, monkeypatch):
  # The README's main command, `depth_sweep.py --quick --out out/depth_sweep`, up to
  # the study's grid and theory (where a preset's warning was raised), not the compute.
  seen = {}

  def grid_only(config, out_dir, figures=True):
    with warnings.catch_warnings():
      warnings.simplefilter("error")
      points = sweep.grid(config)
      sweep.theory(points)
    seen["config"] = config
    return {}
  monkeypatch.setattr(sweep, "run", grid_only)
  main = runpy.run_path(str(ROOT / "experiments" / "depth_sweep.py"))["main"]
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    main(["--quick", "--out", str(tmp_path / "o")])
  assert seen["config"] == sweep.QUICK


def test_verdict_is_against_the_finite_width_prediction():
  row = dict(status="ok", slope_theory=-0.10, slope_error=0.001, slope_layerwise=-0.10,
             slope_error_layerwise=0.001, slope_finite_width=-0.05,
             slope_error_finite_width=-0.049)
  assert report.verdict(row) == "outside"            # "ok" against ln chi_1, 5x off the best
  assert report.best_prediction(row) == ("finite_width", -0.05, -0.049)
  assert report.verdict(dict(row, slope_error=0.049, slope_error_finite_width=0.004)) == "within"
  no_fw = dict(row, slope_finite_width=float("nan"), slope_error_finite_width=float("nan"))
  assert report.verdict(no_fw) == "within (layerwise)"
  assert report.verdict(dict(no_fw, slope_error_layerwise=float("nan"),
                             slope_error=-0.02)) == "outside (mean field)"
  assert report.verdict(dict(row, status="overflow", first_nonfinite_layer=7,
                             nonfinite_pass="forward")) == "overflow at layer 7 (forward)"


def test_measured_vs_predicted_table_shows_every_prediction_and_the_verdict(tiny):
  out, _ = tiny
  text = open(os.path.join(out, "report.md")).read()
  table = text.split("## Measured vs predicted")[1].split("\n\n")[2].splitlines()
  header = [c.strip() for c in table[0].strip("|").split("|")]
  assert header[6:] == ["predicted ln χ₁", "layerwise", "finite width", "measured", "error",
                        "within ±0.01?"]
  cells = {tuple(c.strip() for c in line.strip("|").split("|")[:4]): [
      c.strip() for c in line.strip("|").split("|")] for line in table[2:]}
  deep = [r for r in _rows(out) if r["depth"] == max(TINY["depths"])]
  assert len(cells) == len(deep) > 0
  for r in deep:
    c = cells[(r["activation"], r["init"], f"{r['sigma_w2']:.4g}", f"{r['sigma_b2']:g}")]
    assert c[7:9] == [f"{r['slope_layerwise']:.4f}", f"{r['slope_finite_width']:.4f}"]
    # Decided here from the measured and predicted slopes, not the stored error.
    off = r["slope_measured"] - r["slope_finite_width"]
    assert c[10] == f"{off:+.4f}"
    assert c[11] == ("within" if abs(off) <= report.TOLERANCE else "outside"), (c, off)
