"""Exploding runs, determinism and config files as data."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import io as results
from jaxbp.train import training


def _exploding():
  # ReLU at sigma_w^2 = 16 (chi_1 = 8 per layer) over 12 layers, then a large
  # learning rate: the loss and gradients overflow within a few steps.
  net = jaxbp.MLP.uniform(4, 16, 12, 2, activation="relu", stack=True)
  params = net.init(jax.random.PRNGKey(0), jaxbp.initializers.gaussian(16.0))
  x = jax.random.normal(jax.random.PRNGKey(1), (32, 4))
  y = jax.random.normal(jax.random.PRNGKey(2), (32, 2))
  return net, params, x, y


@pytest.mark.parametrize("tol", (None, 1e-12), ids=("scan", "while_loop"))
def test_overflow_is_recorded_and_the_finite_part_kept(tol):
  net, params, x, y = _exploding()
  out = training.fit(net, "mse", params, x, y, training.optimizer("sgd", 1.0), steps=40, tol=tol)
  assert training.status(out) == "overflow"
  t = int(out.overflow_step)
  assert 0 < t < 40
  assert 0 <= int(out.overflow_layer) <= len(params)
  loss = np.asarray(out.history.loss)
  assert np.all(np.isfinite(loss[:t])), "history before the overflow must be finite"
  assert np.all(np.isnan(loss[t + 1:])), "rows after the overflow are NaN"
  assert not np.isfinite(out.history.grad_norm[t]) or not np.isfinite(loss[t])
  assert int(out.num_steps) == t
  for leaf in jax.tree_util.tree_leaves(out.params):
    assert np.all(np.isfinite(leaf)), "params stay at the last finite values"
  # Replaying the first t updates reproduces those params exactly.
  again = training.fit(net, "mse", params, x, y, training.optimizer("sgd", 1.0), steps=t)
  assert training.status(again) == "ok"
  for a, b in zip(jax.tree_util.tree_leaves(again.params), jax.tree_util.tree_leaves(out.params)):
    np.testing.assert_array_equal(a, b)


def test_overflow_layer_names_the_first_non_finite_gradient():
  net = jaxbp.MLP((2, 3, 1), "identity")
  params = net.init(jax.random.PRNGKey(0))
  x = jnp.array([[1.0, 2.0], [3.0, 1e300]])   # finite h, but (h - y)^2 and dL/dW_1 overflow
  out = training.fit(net, "mse", params, x, jnp.zeros((2, 1)), training.optimizer("sgd", 0.1), steps=3)
  assert training.status(out) == "overflow"
  assert int(out.overflow_step) == 0
  assert int(out.overflow_layer) == 0


def test_same_config_and_seed_give_bitwise_identical_results():
  net = jaxbp.MLP.uniform(8, 16, 4, 3, activation="tanh", stack=True)
  x = jax.random.normal(jax.random.PRNGKey(1), (64, 8))
  y = jax.random.randint(jax.random.PRNGKey(2), (64,), 0, 3)

  def run():
    params = net.init(jax.random.PRNGKey(0), "glorot")
    return training.fit(net, "softmax_cross_entropy", params, x, y,
                        training.optimizer("momentum", 0.05), steps=50, batch_size=16,
                        key=jax.random.PRNGKey(3))

  a, b = run(), run()
  for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(u, v)


def test_config_files_are_parsed_as_data(tmp_path):
  (tmp_path / "c.json").write_text('{"depths": [2, 10], "activation": "tanh"}')
  (tmp_path / "c.toml").write_text('depths = [2, 10]\nactivation = "__import__(\'os\').system(\'false\')"\n')
  assert results.read_config(tmp_path / "c.json") == {"depths": [2, 10], "activation": "tanh"}
  toml = results.read_config(tmp_path / "c.toml")
  assert toml["activation"].startswith("__import__")   # a string, never evaluated
  (tmp_path / "c.pkl").write_bytes(b"\x80\x04K\x01.")
  with pytest.raises(ValueError, match=r"\.json or \.toml"):
    results.read_config(tmp_path / "c.pkl")
  (tmp_path / "bad.json").write_text('{"depths": [2, 10')
  with pytest.raises(ValueError, match="not valid JSON"):
    results.read_config(tmp_path / "bad.json")
  (tmp_path / "list.json").write_text("[1, 2]")
  with pytest.raises(ValueError, match="table/object"):
    results.read_config(tmp_path / "list.json")
  (tmp_path / "nan.json").write_text('{"a": NaN}')
  with pytest.raises(ValueError):
    results.read_config(tmp_path / "nan.json")
