"""jaxbp.measure.monitor: gradient flow recorded inside a compiled optax loop.

References: plain optax steps with jax.grad (the trajectory must be the same)
and jaxbp.inspect called afresh at the recorded steps' params, in float64; the
files are read back (CSV with jaxbp.io, TensorBoard events with its protobuf).
"""
import struct

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxbp.io.files import read_csv
from jaxbp.measure.inspect import inspect
from jaxbp.measure.monitor import monitor, run
from jaxbp.train.monitoring import write_monitor

TOL = dict(rtol=1e-10, atol=1e-12)


def loss_fn(p, x, y):
  h = jnp.tanh(x @ p["W1"] + p["b1"][None, :])
  return jnp.mean((h @ p["W2"] - y) ** 2)


def _setup(T=6):
  k = jax.random.split(jax.random.PRNGKey(0), 4)
  params = {"W1": jax.random.normal(k[0], (3, 8), jnp.float64) / 2,
            "b1": 0.3 * jax.random.normal(k[2], (8,), jnp.float64),   # nonzero: folds into z
            "W2": jax.random.normal(k[1], (8, 2), jnp.float64) / 3}
  xs = jax.random.normal(jax.random.fold_in(k[2], 1), (T, 5, 3), jnp.float64)
  ys = jax.random.normal(k[3], (T, 5, 2), jnp.float64)
  return params, xs, ys


def test_step_is_an_optax_step_and_reports_the_params_before_it():
  params, xs, ys = _setup()
  tx = optax.adam(1e-2)
  new, state, report = monitor(loss_fn, tx)(params, tx.init(params), xs[0], ys[0])
  updates, _ = tx.update(jax.grad(loss_fn)(params, xs[0], ys[0]), tx.init(params), params)
  want = optax.apply_updates(params, updates)
  for k in params:
    np.testing.assert_allclose(new[k], want[k], **TOL)
  np.testing.assert_allclose(report.delta_sq, inspect(loss_fn, params, xs[0], ys[0]).delta_sq,
                             **TOL)


def test_run_records_every_other_step_on_the_same_trajectory():
  params, xs, ys = _setup()
  tx = optax.sgd(0.1, momentum=0.9)
  final, _, reports = run(loss_fn, tx, params, (xs, ys), every=2)
  assert reports.delta_sq.shape == (3, 2) and reports.names == ("W1 · dot_general",
                                                                "W2 · dot_general")
  p, state = params, tx.init(params)
  for t in range(6):
    if t % 2 == 0:
      want = inspect(loss_fn, p, xs[t], ys[t])
      np.testing.assert_allclose(reports.delta_sq[t // 2], want.delta_sq, **TOL)
      np.testing.assert_allclose(reports.grad_sq["W1"][t // 2], want.grad_sq["W1"], **TOL)
    updates, state = tx.update(jax.grad(loss_fn)(p, xs[t], ys[t]), state, p)
    p = optax.apply_updates(p, updates)
  for k in params:
    np.testing.assert_allclose(final[k], p[k], **TOL)
  with pytest.raises(ValueError, match="dividing the 6 steps"):
    run(loss_fn, tx, params, (xs, ys), every=4)
  # The stacked reports print one recorded step, and say which.
  assert reports.table().startswith("entry 0 [0] of 3 stacked")
  assert reports.table(-1).startswith("entry 2 [2] of 3 stacked")


def test_step_names_a_missing_or_foreign_opt_state():
  params, xs, ys = _setup()
  step = monitor(loss_fn, optax.adam(1e-2))
  with pytest.raises(TypeError, match="opt_state must be .*tx.init\\(params\\).*got None"):
    step(params, None, xs[0], ys[0])
  with pytest.raises(TypeError, match="opt_state must be"):
    step(params, optax.sgd(0.1).init(params), xs[0], ys[0])


def _events(path):
  from tensorboardX.proto import event_pb2
  with open(path, "rb") as f:
    while header := f.read(12):
      (length,) = struct.unpack("<Q", header[:8])
      yield event_pb2.Event.FromString(f.read(length))
      f.read(4)


def test_written_csv_and_tensorboard_read_back(tmp_path):
  pytest.importorskip("tensorboardX")
  params, xs, ys = _setup()
  _, _, reports = run(loss_fn, optax.sgd(0.05), params, (xs, ys), every=2)
  paths = write_monitor(reports, tmp_path, every=2)
  cols = read_csv(paths["csv"])
  np.testing.assert_array_equal(cols["step"], [0, 2, 4])
  np.testing.assert_allclose(cols["delta_sq/002"], reports.delta_sq[:, 1], rtol=1e-15)
  np.testing.assert_allclose(cols["grad_sq/b1"], reports.grad_sq["b1"], rtol=1e-15)
  tags = {}
  for path in (tmp_path / "tensorboard").iterdir():
    for event in _events(path):
      for v in event.summary.value:
        tags.setdefault(v.tag, []).append((event.step, v))
  assert [s for s, _ in tags["delta_sq/001"]] == [0, 1, 2]
  np.testing.assert_allclose([v.simple_value for _, v in tags["delta_sq/001"]],
                             reports.delta_sq[:, 0], rtol=1e-6)
  assert [s for s, _ in tags["grad/ln_delta_sq"]] == [4]
  assert tags["grad/ln_grad_sq"][0][1].histo.num == 3
