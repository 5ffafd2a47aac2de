"""jaxbp.theory.recurrent against Monte Carlo: the RNN's forward variances, the untied
recursion's per-step slope and its spread, and the argument checks."""
import math

import numpy as np
import pytest

from jaxbp.theory import recurrent

ACTS = {"tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
        "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float))}


@pytest.mark.parametrize("act,s,u,b,q", [("tanh", 1.5, 0.3, 0.1, 0.7), ("relu", 1.2, 0.5, 0.0, 2.0)])
def test_variance_map_is_the_monte_carlo_expectation_plus_the_input(act, s, u, b, q):
  z = np.random.default_rng(0).standard_normal(2_000_000) * math.sqrt(q)
  f2 = ACTS[act][0](z) ** 2
  qx = 1.7
  want = s * f2.mean() + u * qx + b
  assert float(recurrent.variance_map(q, act, s, u, b, q_x=qx)) == pytest.approx(
      want, abs=4 * s * f2.std() / math.sqrt(len(z)))
  assert recurrent.input_variance(u, qx, b) == pytest.approx(u * qx + b, rel=1e-15)


def _rnn_forward_variances(act, s, u, b, n, d, steps, batch, seed, tied=True):
  """mean_{batch, units} z_t^2 of an Elman RNN (numpy), inputs of norm sqrt(d); with
  ``tied=False`` a fresh W every step."""
  rng = np.random.default_rng(seed)
  W_in = rng.standard_normal((d, n)) * math.sqrt(u / d)
  W = rng.standard_normal((n, n)) * math.sqrt(s / n)
  bias = rng.standard_normal(n) * math.sqrt(b)
  x = rng.standard_normal((steps, batch, d))
  x *= math.sqrt(d) / np.linalg.norm(x, axis=-1, keepdims=True)
  h, out = np.zeros((batch, n)), []
  for t in range(steps):
    W = W if tied else rng.standard_normal((n, n)) * math.sqrt(s / n)
    z = x[t] @ W_in + h @ W + bias
    out.append(np.mean(z * z))
    h = ACTS[act][0](z)
  return np.asarray(out)


# The tanh RNN itself; relu's untied recursion: a tied relu RNN's q_t wanders from net
# to net at this width (its mean activity meets the same W at every step), by +-40% at
# n = 800 over three seeds, which jaxbp.studies.rnn_sweep measures on the slopes.
@pytest.mark.parametrize("act,s,u,tied", [("tanh", 2.5, 0.3, True), ("relu", 1.5, 0.5, False)])
def test_variance_trajectory_and_fixed_point_match_a_wide_rnn(act, s, u, tied):
  q, ln_chi = recurrent.variance_trajectory(act, s, u, 0.05, 25)
  measured = np.mean([_rnn_forward_variances(act, s, u, 0.05, 800, 400, 25, 8, seed, tied)
                      for seed in range(3)], axis=0)
  # Each step's q-hat carries O(n^-1/2) noise that the map keeps for a few steps (relu's
  # relative noise ~ 0.75 sqrt(5 / n) a step): step by step 12%, over the settled steps 5%.
  np.testing.assert_allclose(measured, q, rtol=0.12)
  assert np.mean(measured[-10:]) == pytest.approx(np.mean(q[-10:]), rel=0.05)
  q_star = recurrent.fixed_point(act, s, u, 0.05)
  assert q[-1] == pytest.approx(q_star, rel=1e-3)
  assert float(recurrent.variance_map(q_star, act, s, u, 0.05)) == pytest.approx(q_star, rel=1e-9)
  assert recurrent.predicted_slope(act, s, u, 0.05) == pytest.approx(ln_chi[-1], abs=1e-4)
  if act == "relu":   # V(q) = s q / 2 + u + b: q* = (u + b) / (1 - s / 2), chi_1 = s / 2
    assert q_star == pytest.approx(0.55 / 0.25, rel=1e-9)
    assert recurrent.chi1(act, s, u, 0.05) == pytest.approx(0.75, rel=1e-12)


def test_relu_at_and_past_sigma_w2_2_has_no_fixed_point_but_a_slope():
  assert math.isinf(recurrent.fixed_point("relu", 2.5, 0.5, 0.0))
  assert recurrent.predicted_slope("relu", 2.5, 0.5, 0.0) == pytest.approx(math.log(1.25), 1e-12)
  assert recurrent.burn_in("relu", 2.5, 0.5, 0.0, 50) == 1


def _untied_slopes(act, s, u, b, n, d, steps, nets, first, last, seed):
  """Each net's least-squares slope of ln||delta_t||^2 per step back over [first, last]:
  the recursion with a fresh W at every step (numpy), delta_T ~ N(0, I)."""
  phi, dphi = ACTS[act]
  rng = np.random.default_rng(seed)
  W_in = rng.standard_normal((nets, d, n)) * math.sqrt(u / d)
  bias = rng.standard_normal((nets, 1, n)) * math.sqrt(b)
  x = rng.standard_normal((steps, nets, 1, d))
  x *= math.sqrt(d) / np.linalg.norm(x, axis=-1, keepdims=True)
  W = lambda t: np.random.default_rng([seed, t]).standard_normal((nets, n, n)) * math.sqrt(s / n)
  h, zs = np.zeros((nets, 1, n)), []
  for t in range(steps):
    zs.append(x[t] @ W_in + h @ W(t) + bias)
    h = phi(zs[-1])
  delta = rng.standard_normal((nets, 1, n)) * dphi(zs[-1])
  logs = [np.log(np.sum(delta ** 2, axis=(1, 2)))]
  for t in range(steps - 1, 0, -1):                # delta_t = (delta_{t+1} W_{t+1}^T) phi'(z_t)
    delta = (delta @ np.swapaxes(W(t), 1, 2)) * dphi(zs[t - 1])
    logs.append(np.log(np.sum(delta ** 2, axis=(1, 2))))
  logs = np.asarray(logs[::-1])                    # logs[t - 1] = ln||delta_t||^2
  return recurrent.fit_weights(first, last) @ logs[first - 1:last]


@pytest.mark.parametrize("act,s,u", [("relu", 1.5, 0.5), ("tanh", 1.5, 0.3)])
def test_window_slopes_predict_the_untied_recursion_at_finite_width(act, s, u):
  n, steps, first, last = 64, 40, 8, 36
  pred = recurrent.window_slopes(act, s, u, 0.05, n, steps, first, last)
  slopes = _untied_slopes(act, s, u, 0.05, n, 32, steps, 128, first, last, seed=1)
  sem = slopes.std(ddof=1) / math.sqrt(len(slopes))
  assert abs(slopes.mean() - pred["finite_width"]) < 4 * sem, (slopes.mean(), pred, sem)
  # At n = 64 the finite-width correction is many standard errors: the test can tell.
  assert abs(pred["layerwise"] - pred["finite_width"]) > 6 * sem
  assert slopes.std(ddof=1) == pytest.approx(pred["slope_sd"], rel=0.2)


def test_burn_in_is_where_ln_chi1_settles():
  _, ln_chi = recurrent.variance_trajectory("tanh", 1.0, 0.05, 0.0, 200)
  t0 = recurrent.burn_in("tanh", 1.0, 0.05, 0.0, 200, tol=1e-3)
  target = recurrent.predicted_slope("tanh", 1.0, 0.05, 0.0)
  assert 1 < t0 < 200
  assert np.all(np.abs(ln_chi[t0 - 1:] - target) <= 1e-3)
  assert abs(ln_chi[t0 - 2] - target) > 1e-3
  # The window's layerwise slope equals the fixed point's once the burn-in is skipped,
  # and not when the window starts at t = 1.
  late = recurrent.window_slopes("tanh", 1.0, 0.05, 0.0, 256, 200, t0, 190)
  early = recurrent.window_slopes("tanh", 1.0, 0.05, 0.0, 256, 200, 1, 15)
  assert late["layerwise"] == pytest.approx(target, abs=1e-3)
  assert abs(early["layerwise"] - target) > 2e-3


def test_fit_weights_read_the_slope_going_back():
  c = recurrent.fit_weights(5, 30)
  t = np.arange(5, 31)
  assert c @ (3.0 - 0.25 * t) == pytest.approx(0.25, rel=1e-12)
  assert c @ np.ones_like(t, dtype=float) == pytest.approx(0.0, abs=1e-14)


@pytest.mark.parametrize("call,words", [
    (lambda: recurrent.fixed_point("tanh", 1.0, -0.1, 0.0), ["sigma_u2", ">= 0"]),
    (lambda: recurrent.chi1("tanh", 0.0, 0.1, 0.0), ["sigma_w2", "> 0"]),
    (lambda: recurrent.variance_map(1.0, "softmax", 1.0, 0.1, 0.0), ["elementwise", "softmax"]),
    (lambda: recurrent.variance_trajectory("tanh", 1.0, 0.1, 0.0, 0), ["steps", ">= 1"]),
    (lambda: recurrent.log_gradient_stats("tanh", 1.0, 0.0, 0.0, 64, 10), ["q_1 > 0"]),
    (lambda: recurrent.window_slopes("tanh", 1.0, 0.1, 0.0, 64, 10, 5, 11), ["last <= steps"]),
    (lambda: recurrent.fit_weights(3, 3), ["first < last"]),
], ids=["sigma_u2", "sigma_w2", "softmax", "steps", "no_input", "window", "fit"])
def test_bad_arguments_name_what_is_wrong(call, words):
  with pytest.raises(ValueError) as e:
    call()
  for w in words:
    assert w in str(e.value), (w, str(e.value))
