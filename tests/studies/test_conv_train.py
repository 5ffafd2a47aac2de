"""The deep-CNN training study on a tiny net: runs, records, resumes, validates."""
import json

import numpy as np
import pytest

from jaxbp.studies import conv_train
from jaxbp.theory import meanfield

TINY = dict(settings=(("delta_orthogonal", "critical"), ("gaussian", 0.5)), depth=3, channels=8,
            epochs=2, batch_size=32, learning_rate=0.05, sigma_b2=0.05, seeds=(0,))


def test_tiny_run_trains_and_writes_its_table(tmp_path):
  rows = conv_train.run(conv_train.Config(**TINY), tmp_path)
  assert [(r["init"], r["critical"]) for r in rows] == [("delta_orthogonal", True),
                                                        ("gaussian", False)]
  crit = float(meanfield.critical_sigma_w2("tanh", 0.05))
  assert rows[0]["sigma_w2"] == pytest.approx(crit)
  assert rows[0]["chi1"] == pytest.approx(1.0, abs=1e-6)
  assert rows[1]["chi1"] < 1
  for r in rows:
    assert 0.0 <= r["test_accuracy_min"] <= r["test_accuracy_mean"] <= 1.0
    assert np.isfinite(r["log10_grad_ratio"])
  # Two epochs of 1,437 images in batches of 32 beat chance (10%) by far at depth 3.
  assert rows[0]["test_accuracy_mean"] > 0.3, rows[0]
  runs = json.loads((tmp_path / "runs.json").read_text())
  assert len(runs) == 2 and all(r["steps"] == 2 * (1438 // 32) for r in runs)
  assert "| delta_orthogonal | " in (tmp_path / "report.md").read_text()
  assert conv_train.run(conv_train.Config(**TINY), tmp_path) == rows   # resumed, not rerun


@pytest.mark.parametrize("field,value,match", [
    ("settings", (), "settings"), ("settings", (("orthogonal", 1.0),), "setting"),
    ("settings", (("gaussian", -1.0),), "setting"), ("settings", "gaussian", "settings"),
    ("depth", 1, "depth must be an int >= 2"), ("kernel_size", 4, "odd"), ("learning_rate", 0.0, "learning_rate"),
    ("momentum", 1.0, "momentum"), ("seeds", (), "seeds"), ("sigma_b2", -0.1, "sigma_b2"),
    ("padding", "valid", "padding"), ("readout", "max", "readout"),
    ("clip_norm", 0.0, "clip_norm")])
def test_config_errors(field, value, match):
  with pytest.raises(ValueError, match=match):
    conv_train.Config(**{**TINY, field: value})


def test_pool_readout_is_convnet_with_outputs():
  # The study's pool readout is ConvNet(outputs=10): same params, same logits.
  import jax
  import jax.numpy as jnp
  from jaxbp.core.convnets import Conv, ConvNet
  config = conv_train.Config(**{**TINY, "readout": "pool", "depth": 4})
  params = conv_train.init_params(config, jax.random.PRNGKey(3), "gaussian", 1.5)
  layers = []
  for g, p in enumerate(params.conv):
    if config.net().is_stacked(g):
      layers += [Conv(p.W[i], p.b[i]) for i in range(p.W.shape[0])]
    else:
      layers.append(p)
  ref = ConvNet(channels=(1,) + (config.channels,) * config.depth, activation="tanh",
                padding=config.padding, outputs=10)
  x = jax.random.normal(jax.random.PRNGKey(4), (5, 8, 8, 1))
  want = ref.apply(tuple(layers) + (params.readout,), x)
  got = conv_train.logits(config, params, x)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_compiled_loop_equals_plain_optax_steps():
  # train()'s lax.scan against a Python loop of optax steps over the same batches.
  import jax
  import optax
  from jaxbp.train import training
  config = conv_train.Config(**{**TINY, "epochs": 1, "batch_size": 100})
  from jaxbp.train import data
  x, y, _, _ = conv_train.images(data.digits())
  x, y = x[:300], y[:300]
  params = conv_train.init_params(config, jax.random.PRNGKey(0), "delta_orthogonal", 1.2)
  key = jax.random.PRNGKey(7)
  trained, values = conv_train.train(config, params, x, y, key)
  tx = training.optimizer("momentum", config.learning_rate, momentum=config.momentum,
                          clip_norm=config.clip_norm)
  order = jax.random.permutation(jax.random.split(key, 1)[0], x.shape[0])
  p, s, loss = params, tx.init(params), conv_train.loss_fn(config)
  for t in range(x.shape[0] // 100):
    idx = order[t * 100:(t + 1) * 100]
    v, g = jax.value_and_grad(loss)(p, x[idx], y[idx])
    u, s = tx.update(g, s, p)
    p = optax.apply_updates(p, u)
    np.testing.assert_allclose(values[t], v, rtol=1e-10)
  assert values.shape == (x.shape[0] // 100,)
  for a, b in zip(jax.tree_util.tree_leaves(trained), jax.tree_util.tree_leaves(p)):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_train_refuses_a_batch_larger_than_the_data_and_wrong_images():
  import jax
  import jax.numpy as jnp
  config = conv_train.Config(**{**TINY, "batch_size": 64})
  params = conv_train.init_params(config, jax.random.PRNGKey(0), "gaussian", 1.0)
  key = jax.random.PRNGKey(1)
  with pytest.raises(ValueError, match="batch_size 64 is larger than the 10"):
    conv_train.train(config, params, jnp.zeros((10, 8, 8, 1)), jnp.zeros(10, jnp.int32), key)
  with pytest.raises(ValueError, match=r"\(n, 8, 8, 1\)"):
    conv_train.train(config, params, jnp.zeros((100, 64)), jnp.zeros(100, jnp.int32), key)
