"""The deep-transformer training study: its task, its checks, its settings, and a
tiny run that trains, writes its files and resumes from its store."""
import json
import math
import os
import runpy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import io as _io
from jaxbp.studies import transformer_train as tt

TINY = dict(settings=("pre", "deepnet"), depths=(2,), seeds=(0,), d_model=8, heads=2, d_ff=16,
            batch=8, steps=6, test_size=8, tail=2, curve_every=3)


def test_targets_are_the_reversal_and_the_data_are_fixed():
  x, y = tt.reversal(jax.random.PRNGKey(3), 8, 16, 16)
  x, y = np.asarray(x), np.asarray(y)
  assert x.shape == y.shape == (8, 16)
  for i in range(16):   # position by position, not by the same slicing the code uses
    np.testing.assert_array_equal(y[:, i], x[:, 15 - i])
  assert x.min() >= 0 and x.max() <= 15 and len(np.unique(x)) == 16
  config = tt.Config(**TINY)   # batch and test_size 4 and 8
  test_x = np.asarray(tt.test_set(config)[0])
  np.testing.assert_array_equal(test_x, tt.test_set(config)[0])   # fixed
  assert test_x.shape == (8, 16)
  train_key = tt.data_keys(config)[0]
  step = lambda t: np.asarray(tt.reversal(jax.random.fold_in(train_key, t), 8, 16, 16)[0])
  assert not np.array_equal(step(0), step(1))              # a fresh batch per step
  assert not np.array_equal(step(0), test_x)               # held out
  other = np.asarray(tt.test_set(tt.Config(**TINY, data_seed=1))[0])
  assert not np.array_equal(other, test_x)


@pytest.mark.parametrize("field,value,match", [
    ("settings", (), "settings"), ("settings", "pre", "settings"),
    ("settings", ("pre", "admin"), "settings"), ("settings", ("pre", "pre"), "repeat"),
    ("depths", (), "depths"), ("depths", (0,), "depths"), ("seeds", (-1,), "seeds"),
    ("length", 1, "length"), ("vocab", 1, "vocab"), ("heads", 3, "multiple of heads"),
    ("steps", 0, "steps"), ("learning_rate", 0.0, "learning_rate"),
    ("learning_rate", float("nan"), "learning_rate"), ("warmup", 0.0, "warmup"),
    ("warmup", 1.0, "warmup"), ("tail", 7, "tail must be at most steps"),
    ("curve_every", 0, "curve_every"), ("batch", 2.5, "batch"), ("dtype", "bfloat16", "dtype")])
def test_config_errors_name_the_field(field, value, match):
  with pytest.raises(ValueError, match=match):
    tt.Config(**{**TINY, field: value})


def test_unknown_config_keys_are_named():
  with pytest.raises(ValueError, match="unknown config keys.*'depth'"):
    tt.Config.from_dict({"depth": 3})


def test_settings_are_the_anchors_nets():
  config = tt.Config(**TINY)
  post, pre, deep = (config.net(s, 8) for s in ("post", "pre", "deepnet"))
  assert (post.norm, post.skip_scale, post.residual_scale) == ("post", 1.0, 1.0)
  assert pre.norm == "pre" and pre.skip_scale == 1.0
  assert deep.norm == "post" and deep.residual_scale == 1.0
  assert deep.skip_scale == pytest.approx(16 ** 0.25)       # (2N)^(1/4), N = 8
  assert tt.deepnet_beta(8) == pytest.approx(64 ** -0.25)   # (8N)^(-1/4)
  assert config.warmup_steps("post_warmup") == 1 and config.warmup_steps("post") == 0
  assert tt.Config(steps=1000).warmup_steps("post_warmup") == 100


@pytest.mark.slow
def test_deepnet_scales_value_output_and_ffn_weights_only():
  config, key = tt.Config(**TINY), jax.random.PRNGKey(5)
  deep = tt.init_params(config, "deepnet", 2, key)
  post = tt.init_params(config, "post", 2, key)    # same draws, unscaled
  b = tt.deepnet_beta(2)
  flat = lambda p: dict(jax.tree_util.tree_flatten_with_path(p)[0])
  d, p = flat(deep), flat(post)
  scaled = {"Wv", "Wo", "ffn1.W", "ffn2.W"}
  seen = set()
  for path, leaf in p.items():
    name = jax.tree_util.keystr(path)
    hit = [s for s in scaled if name.endswith("." + s)]
    seen.update(hit)
    np.testing.assert_allclose(d[path], leaf * (b if hit else 1.0), rtol=1e-6)
  assert seen == scaled


def test_warmup_starts_from_zero_and_ramps_linearly():
  tx, g = tt.adam(1e-2, 10), {"w": jnp.ones(3)}

  def updates(g):   # six Adam steps on a constant gradient, in one compiled scan
    def body(state, _):
      u, state = tx.update(g, state)
      return state, -u["w"][0]
    return jax.lax.scan(body, tx.init(g), None, length=6)[1]
  # Adam's normalised step on a constant gradient is 1, so the update is the rate.
  np.testing.assert_allclose(jax.jit(updates)(g), [0.0, 1e-3, 2e-3, 3e-3, 4e-3, 5e-3],
                             rtol=1e-4, atol=1e-9)


def test_script_errors_are_one_line(tmp_path, capsys):
  path = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "transformer_train.py")
  with pytest.raises(SystemExit) as e:
    runpy.run_path(path)["main"](["--quick", "--steps", "0", "--out", str(tmp_path)])
  assert e.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "steps must be an int >= 1" in err


@pytest.mark.slow
def test_tiny_run_trains_writes_and_resumes(tmp_path, monkeypatch):
  config = tt.Config(**TINY)
  rows = tt.run(config, tmp_path)
  assert [(r["depth"], r["setting"]) for r in rows] == [(2, "pre"), (2, "deepnet")]
  runs = json.loads((tmp_path / "runs.json").read_text())
  assert len(runs) == 2 and all(len(r["curve"]) == 2 for r in runs)
  for name in ("results.csv", "runs.csv", "curves.png", "report.md"):
    assert (tmp_path / name).exists()
  assert "| 2 | pre-LN |" in (tmp_path / "report.md").read_text()
  for r in runs:
    assert 0 <= r["test_accuracy"] <= 1 and r["cpu_seconds"] > 0
    assert r["diverged"] == (r["status"] != "ok")
  # The first batch loss is the init's loss on batch 0, recomputed here by hand.
  net = config.net("pre", 2)
  params = tt.init_params(config, "pre", 2, jax.random.PRNGKey(0))
  x, y = tt.reversal(jax.random.fold_in(tt.data_keys(config)[0], 0), 8, 16, 16)
  logits = np.asarray(net.apply(params, x), dtype=np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  by_hand = -np.mean(np.take_along_axis(logp, np.asarray(y)[..., None], -1))
  assert runs[0]["first_loss"] == pytest.approx(by_hand, rel=1e-5)
  # A rerun computes nothing; with one stored run removed, it computes that one.
  calls = []
  stored = {k: v for k, v in runs[1].items() if k not in ("setting", "depth", "seed")}
  monkeypatch.setattr(tt, "train_one", lambda *a: calls.append(a) or stored)
  assert tt.run(config, tmp_path) == rows and calls == []
  deepnet_key = tt.keys(config)[1]
  assert deepnet_key["setting"] == "deepnet"
  os.remove(_io.ResultStore(tmp_path / "store").path(deepnet_key))
  tt.run(config, tmp_path)
  assert [a[1:] for a in calls] == [("deepnet", 2, 0)]


@pytest.mark.slow
def test_pre_ln_learns_the_reversal_at_small_depth():
  # Depth 2, 200 Adam steps: well above chance (1/16) on the held-out set.
  config = tt.Config(depths=(2,), d_model=32, heads=2, d_ff=64, steps=200, learning_rate=3e-3)
  r = tt.train_one(config, "pre", 2, 0)
  assert r["status"] == "ok" and r["test_accuracy"] > 0.9, r["test_accuracy"]
  assert r["final_train_loss"] < 0.5 * math.log(16)
