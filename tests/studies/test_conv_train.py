"""The deep-CNN training study on a tiny net: runs, records, resumes, validates."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxbp.core import losses
from jaxbp.studies import conv_train
from jaxbp.theory import meanfield
from jaxbp.train import data, training

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


def _reference_logits(config, convs, readout, x):
  # The study's net written out without ConvNet: zero-padded ("same") 3x3
  # convolutions, tanh after each, then the dense readout on the flattened map
  # or the spatial mean.
  h = x
  for W, b in convs:
    z = jax.lax.conv_general_dilated(h, W, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jnp.tanh(z + b[None, None, None])
  f = h.reshape(h.shape[0], -1) if config.readout == "flatten" else h.mean(axis=(1, 2))
  return f @ readout.W + readout.b[None]


def _unstacked_convs(config, params):
  convs = []
  for g, p in enumerate(params[:-1]):
    if config.net().is_stacked(g):
      convs += [(p.W[i], p.b[i]) for i in range(p.W.shape[0])]
    else:
      convs.append((p.W, p.b))
  return convs


@pytest.mark.parametrize("readout", ["flatten", "pool"])
def test_the_net_is_tanh_convolutions_then_a_dense_readout(readout):
  config = conv_train.Config(**{**TINY, "readout": readout, "depth": 4})
  params = conv_train.init_params(config, jax.random.PRNGKey(3), "gaussian", 1.5)
  convs = _unstacked_convs(config, params)
  assert len(convs) == 4 and convs[0][0].shape == (3, 3, 1, 8)
  x = jax.random.normal(jax.random.PRNGKey(4), (5, 8, 8, 1))
  want = _reference_logits(config, convs, params[-1], x)
  np.testing.assert_allclose(config.net().apply(params, x), want, rtol=1e-12, atol=1e-12)


def test_init_params_redraws_only_the_readout():
  # The convolutions are ConvNet.init's under the setting's initializer; the
  # readout is N(0, 1/fan_in) with bias 0 whatever the setting.
  config = conv_train.Config(**{**TINY, "channels": 32, "depth": 3})
  key = jax.random.PRNGKey(5)
  params = conv_train.init_params(config, key, "gaussian", 4.0)
  drawn = config.net().init(jax.random.split(key)[0],
                            init=conv_train.initializer("gaussian", 4.0, config.sigma_b2))
  for a, b in zip(jax.tree_util.tree_leaves(params[:-1]), jax.tree_util.tree_leaves(drawn[:-1])):
    np.testing.assert_array_equal(a, b)
  W, b = params[-1]
  assert W.shape == (32 * 64, 10) and not np.any(b)
  # 20,480 draws: the variance times fan_in is 1 within ~4 standard errors (0.04).
  assert float(jnp.var(W)) * W.shape[0] == pytest.approx(1.0, abs=0.04)


def test_grad_ratio_is_the_first_and_last_convolutions_autodiff_gradients():
  config = conv_train.Config(**{**TINY, "depth": 4})
  x, y, _, _ = conv_train.images(data.digits())
  params = conv_train.init_params(config, jax.random.PRNGKey(0), "gaussian", 2.0)
  net = config.net()
  g = jax.grad(lambda p: losses.get("softmax_cross_entropy").fn(net.apply(p, x[:40]), y[:40],
                                                               "mean"))(params)
  convs = _unstacked_convs(config, g)
  want = np.log10(np.linalg.norm(convs[0][0]) / np.linalg.norm(convs[-1][0]))
  assert conv_train.grad_ratio(config, params, x[:40], y[:40]) == pytest.approx(want, rel=1e-10)


def test_training_is_momentum_sgd_on_batches_reshuffled_every_epoch():
  # train() against a Python loop of optax steps: every epoch a new
  # permutation of the 300 images, three batches of 100.
  config = conv_train.Config(**{**TINY, "epochs": 2, "batch_size": 100})
  x, y, _, _ = conv_train.images(data.digits())
  x, y = x[:300], y[:300]
  params = conv_train.init_params(config, jax.random.PRNGKey(0), "delta_orthogonal", 1.2)
  key = jax.random.PRNGKey(7)
  result = conv_train.train(config, params, x, y, key)
  tx = training.optimizer("momentum", config.learning_rate, momentum=config.momentum,
                          clip_norm=config.clip_norm)
  net, fn = config.net(), losses.get("softmax_cross_entropy").fn
  value_and_grad = jax.jit(jax.value_and_grad(
      lambda p, xb, yb: fn(net.apply(p, xb), yb, "mean")))
  p, s, t = params, tx.init(params), 0
  orders = [jax.random.permutation(jax.random.fold_in(key, e), 300) for e in range(2)]
  assert not np.array_equal(orders[0], orders[1])
  for order in orders:
    for i in range(3):
      idx = order[i * 100:(i + 1) * 100]
      v, g = value_and_grad(p, x[idx], y[idx])
      u, s = tx.update(g, s, p)
      p = optax.apply_updates(p, u)
      np.testing.assert_allclose(result.history.loss[t], v, rtol=1e-10)
      t += 1
  assert result.history.loss.shape == (6,) and training.status(result) == "ok"
  for a, b in zip(jax.tree_util.tree_leaves(result.params), jax.tree_util.tree_leaves(p)):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_runs_of_a_config_share_one_compiled_program():
  # Another seed or setting is new data for the same program: the training loop
  # and the init gradient compile once per config, not once per run.
  config = conv_train.Config(**{**TINY, "depth": 2, "channels": 2, "epochs": 1})
  x, y, _, _ = conv_train.images(data.digits())
  x, y = x[:64], y[:64]

  def one_run(init, sigma_w2, seed):
    params = conv_train.init_params(config, jax.random.PRNGKey(seed), init, sigma_w2)
    conv_train.grad_ratio(config, params, x, y)
    conv_train.train(config, params, x, y, jax.random.PRNGKey(seed + 1))

  one_run("gaussian", 1.0, 0)
  fits, grads = training._fit._cache_size(), conv_train._grad._cache_size()
  one_run("delta_orthogonal", 2.0, 1)
  assert (training._fit._cache_size(), conv_train._grad._cache_size()) == (fits, grads)


def test_train_refuses_a_batch_larger_than_the_data_and_wrong_images():
  config = conv_train.Config(**{**TINY, "batch_size": 64})
  params = conv_train.init_params(config, jax.random.PRNGKey(0), "gaussian", 1.0)
  key = jax.random.PRNGKey(1)
  with pytest.raises(ValueError, match="batch_size 64 is larger than the 10"):
    conv_train.train(config, params, jnp.zeros((10, 8, 8, 1)), jnp.zeros(10, jnp.int32), key)
  with pytest.raises(ValueError, match=r"\(n, 8, 8, 1\)"):
    conv_train.train(config, params, jnp.zeros((100, 64)), jnp.zeros(100, jnp.int32), key)
