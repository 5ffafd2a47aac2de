"""training.fit(..., monitor=k): gradient flow recorded inside the compiled loop.

References: the same fit without monitor (the trajectory must not change),
jaxbp.inspect called afresh on the params a shorter fit reached, and the hand
recursion's deltas (backprop.backward) at the start, in float64.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.core import backprop
from jaxbp.io.files import read_csv
from jaxbp.train import training
from jaxbp.train.monitoring import write_monitor

LOSS = "softmax_cross_entropy"
TX = training.optimizer("momentum", 0.1)


@pytest.fixture(scope="module")
def blobs():
  kx, kp = jax.random.split(jax.random.PRNGKey(3))
  x = jax.random.normal(kx, (24, 4), jnp.float64)
  y = jnp.argmax(x[:, :3], axis=1)
  net = jaxbp.MLP((4, 6, 6, 3), "tanh")
  return net, net.init(kp, "glorot"), x, y


def _same(a, b, rtol=1e-12, atol=1e-14):
  for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


def _inspect_at(net, params, x, y):
  return jaxbp.inspect(jaxbp.objective(net, LOSS), params, x, y)


@pytest.mark.parametrize("every, batch_size, tol", [(True, None, None), (3, 8, None),
                                                     (2, None, 1e-12)],
                         ids=["every_step", "every_3rd_minibatch", "every_2nd_while_loop"])
def test_monitor_leaves_the_trajectory_unchanged(blobs, every, batch_size, tol):
  net, params, x, y = blobs
  kw = dict(steps=7, batch_size=batch_size, key=jax.random.PRNGKey(1), tol=tol)
  plain = training.fit(net, LOSS, params, x, y, TX, **kw)
  seen = training.fit(net, LOSS, params, x, y, TX, monitor=every, **kw)
  assert plain.reports is None
  _same(plain.params, seen.params)
  _same(plain.history, seen.history)
  k = int(every)
  rows = -(-7 // k)
  assert seen.reports.delta_sq.shape == (rows, 3)
  assert seen.reports.q.shape == (rows, 3)
  assert set(seen.reports.grad_sq) == {"0/W", "0/b", "1/W", "1/b", "2/W", "2/b"}
  assert all(v.shape == (rows,) for v in seen.reports.grad_sq.values())
  # The recorded loss is the history's loss at the recorded steps.
  np.testing.assert_allclose(seen.reports.loss, seen.history.loss[::k], rtol=1e-13)


def test_recorded_rows_equal_inspect_at_the_params_of_that_step(blobs):
  net, params, x, y = blobs
  seen = training.fit(net, LOSS, params, x, y, TX, steps=5, monitor=4)
  for row, t in enumerate((0, 4)):
    at_t = params if t == 0 else training.fit(net, LOSS, params, x, y, TX, steps=t).params
    ref = _inspect_at(net, at_t, x, y)
    np.testing.assert_allclose(seen.reports.delta_sq[row], ref.delta_sq, rtol=1e-10)
    np.testing.assert_allclose(seen.reports.q[row], ref.q, rtol=1e-10)
    for name, g in ref.grad_sq.items():
      np.testing.assert_allclose(seen.reports.grad_sq[name][row], g, rtol=1e-10)
  # Row 0 against the hand recursion's deltas (sum over batch and units of delta_l^2).
  hand = backprop.backward(net, LOSS, params, x, y)
  np.testing.assert_allclose(seen.reports.delta_sq[0],
                             [float(jnp.sum(d ** 2)) for d in hand.deltas], rtol=1e-10)


def test_stacked_net_reports_every_scanned_layer():
  net = jaxbp.MLP.uniform(3, 8, 6, 2, activation="tanh", stack=True)
  params = net.init(jax.random.PRNGKey(0))
  x = jax.random.normal(jax.random.PRNGKey(1), (10, 3), jnp.float64)
  y = jax.random.normal(jax.random.PRNGKey(2), (10, 2), jnp.float64)
  out = training.fit(net, "mse", params, x, y, TX, steps=4, monitor=True)
  assert out.reports.delta_sq.shape == (4, len(_inspect_at(net, params, x, y)))
  assert out.reports.delta_sq.shape[1] >= 7
  assert np.all(np.isfinite(out.reports.delta_sq))


def test_rows_after_a_stop_or_an_overflow_are_nan(blobs):
  net, params, x, y = blobs
  stopped = training.fit(net, LOSS, params, x, y, TX, steps=50, tol=0.3, monitor=2)
  assert training.status(stopped) == "converged"
  t = int(stopped.num_steps)
  assert 0 < t < 50
  delta = np.asarray(stopped.reports.delta_sq)
  assert np.all(np.isfinite(delta[: t // 2 + 1])) and np.all(np.isnan(delta[t // 2 + 1:]))

  wide = jaxbp.MLP.uniform(4, 16, 12, 2, activation="relu", stack=True)
  wp = wide.init(jax.random.PRNGKey(0), jaxbp.initializers.gaussian(16.0))
  wx = jax.random.normal(jax.random.PRNGKey(1), (32, 4))
  wy = jax.random.normal(jax.random.PRNGKey(2), (32, 2))
  boom = training.fit(wide, "mse", wp, wx, wy, training.optimizer("sgd", 1.0), steps=40,
                      monitor=True)
  assert training.status(boom) == "overflow"
  t = int(boom.overflow_step)
  assert np.all(np.isnan(np.asarray(boom.reports.delta_sq)[t + 1:]))
  assert np.all(np.isfinite(np.asarray(boom.reports.q)[:t]))


def test_fit_reports_write_csv(blobs, tmp_path):
  net, params, x, y = blobs
  out = training.fit(net, LOSS, params, x, y, TX, steps=6, monitor=3)
  paths = write_monitor(out.reports, tmp_path, every=3)
  cols = read_csv(paths["csv"])
  np.testing.assert_array_equal(cols["step"], [0, 3])
  np.testing.assert_allclose(cols["delta_sq/002"], out.reports.delta_sq[:, 1], rtol=1e-12)


@pytest.mark.parametrize("change, match", [
    (dict(monitor="yes"), "monitor must be True, False or an int"),
    (dict(monitor=-2), "monitor must be True, False or an int"),
    (dict(monitor=1.5), "monitor must be True, False or an int"),
    (dict(monitor=True, grad_method="backprop"), "grad_method='autodiff'"),
])
def test_monitor_errors(blobs, change, match):
  net, params, x, y = blobs
  with pytest.raises(ValueError, match=match):
    training.fit(net, LOSS, params, x, y, TX, steps=2, **change)


def test_inspect_with_grads_keeps_aux_from_the_same_pass(blobs):
  net, params, x, y = blobs

  def loss_and_out(p, x, y):
    out = net.apply(p, x)
    return jaxbp.losses.get(LOSS).fn(out, y, "mean"), {"out": out}

  report, grads, aux = jaxbp.inspect_with_grads(loss_and_out, params, x, y, has_aux=True)
  np.testing.assert_allclose(aux["out"], net.apply(params, x), rtol=1e-14)
  _same(grads, jax.grad(jaxbp.objective(net, LOSS))(params, x, y))
  with pytest.raises(TypeError, match=r"pair \(loss, aux\)"):
    jaxbp.inspect_with_grads(jaxbp.objective(net, LOSS), params, x, y, has_aux=True)
