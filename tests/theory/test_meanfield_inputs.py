"""meanfield's argument checks: what is not a real number is a TypeError, a number out of
its domain a ValueError, each naming the function, the argument and what is expected;
traced arguments (jit, vmap) pass unchecked; q = inf, fixed_point's "no finite fixed
point", gives the limit q -> inf."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.theory import finite_width as fw
from jaxbp.theory import meanfield as mf

FINITE = r"must be a finite number >= 0.0"
REAL = r"must be a real number or an array of them"

BAD = [
    # The three: inf sigma_w2, negative q, a str.
    (lambda: mf.chi1("tanh", math.inf, 0.0), ValueError, rf"chi1: sigma_w2 {FINITE}, got inf"),
    (lambda: mf.gaussian_expectation(jnp.tanh, q=-1), ValueError,
     r"gaussian_expectation: q must be a number \(inf allowed\) >= 0.0, got -1"),
    (lambda: mf.chi1("tanh", "1.0", 0), TypeError, rf"chi1: sigma_w2 {REAL}, got '1.0' \(str\)"),
    # The same kinds of mistake across the other public functions.
    (lambda: mf.chi1("tanh", 1.0, None), TypeError, rf"chi1: sigma_b2 {REAL}, got None"),
    (lambda: mf.chi1("tanh", True, 0.0), TypeError, rf"chi1: sigma_w2 {REAL}, got True \(bool\)"),
    (lambda: mf.chi1("tanh", 1.0, 0.0, q=jnp.array([1.0, np.nan])), ValueError,
     r"chi1: q must be a number \(inf allowed\) >= 0.0, got nan at index \(1,\)"),
    (lambda: mf.gradient_log_slope("tanh", float("nan"), 0.0), ValueError,
     rf"gradient_log_slope: sigma_w2 {FINITE}, got nan"),
    (lambda: mf.variance_map("1", "tanh", 1.0, 0.0), TypeError, rf"variance_map: q {REAL}"),
    (lambda: mf.variance_map(1.0, "tanh", 1.0, -math.inf), ValueError,
     rf"variance_map: sigma_b2 {FINITE}, got -inf"),
    (lambda: mf.fixed_point("tanh", [1.0, -2.0], 0.0), ValueError,
     rf"fixed_point: sigma_w2 {FINITE}, got -2.0 at index \(1,\)"),
    (lambda: mf.fixed_point("tanh", 1.0, 0.0, q0=math.inf), ValueError, rf"fixed_point: q0 {FINITE}"),
    (lambda: mf.fixed_point("tanh", 1.0, 0.0, iters=2.5), ValueError, r"fixed_point: iters must be an int"),
    (lambda: mf.correlation_map(1.5, "tanh", 1.0, 0.0), ValueError,
     r"correlation_map: c must be a finite number >= -1.0 and <= 1.0, got 1.5"),
    (lambda: mf.depth_scales("tanh", 1.0, 1 + 1j), TypeError, rf"depth_scales: sigma_b2 {REAL}"),
    (lambda: mf.depth_scales("tanh", math.inf, 0.0), ValueError, rf"depth_scales: sigma_w2 {FINITE}"),
    (lambda: mf.critical_sigma_w2("tanh", math.inf), ValueError, rf"critical_sigma_w2: sigma_b2 {FINITE}"),
    (lambda: mf.critical_sigma_w2("tanh", 0.05, lo=3.0, hi=2.0), ValueError,
     r"critical_sigma_w2: the bracket needs lo < hi, got lo=3.0, hi=2.0"),
    (lambda: mf.critical_sigma_w2("tanh", 0.05, hi="20"), TypeError, rf"critical_sigma_w2: hi {REAL}"),
    (lambda: mf.critical_sigma_w2("tanh", 0.05, iters=0), ValueError, r"critical_sigma_w2: iters"),
    (lambda: mf.gaussian_expectation(3.0, 1.0), TypeError,
     r"gaussian_expectation: f must be an elementwise function, got 3.0"),
    (lambda: mf.chi1("tanh", 1.0, 0.0, num_points=100), ValueError,
     r"num_points must be a positive multiple of 16 \(an int\), got 100"),
    (lambda: mf.log_gradient_stats("tanh", "1.5", 0.0, 64, 4), TypeError,
     rf"log_gradient_stats: sigma_w2 {REAL}"),
    (lambda: mf.log_gradient_stats("tanh", 1.5, 0.0, -math.inf, 4), ValueError,
     r"log_gradient_stats: width must be a number \(inf allowed\) > 0.0, got -inf"),
    (lambda: mf.log_gradient_stats("tanh", 1.5, 0.0, 64, 4, leading_order="yes"), ValueError,
     r"log_gradient_stats: leading_order must be True or False"),
    (lambda: mf.sweep_predictions("tanh", 1.5, math.nan, 1.0, 8, 2, 6, 64), ValueError,
     r"sweep_predictions: sigma_b2 must be a finite number >= 0.0, got nan"),
    (lambda: mf.window_slope(np.zeros(8), 2.0, 6), ValueError, r"window_slope: first must be an int"),
]


@pytest.mark.parametrize("call,error,message", BAD, ids=[b[2][:40] for b in BAD])
def test_bad_arguments_are_named_errors(call, error, message):
  with pytest.raises(error, match=message):
    call()


def test_q_inf_is_the_limit_of_large_q():
  # fixed_point answers inf where q grows without bound; fed back, it means q -> inf.
  assert mf.fixed_point("relu", 2.5, 0.1) == np.inf
  np.testing.assert_allclose(mf.chi1("relu", 2.5, 0.1, q=math.inf), 1.25, rtol=1e-12)
  # Bounded phi: phi'(sqrt(q) z) -> 0 and phi^2 -> 1 off z = 0, which no node sits on.
  assert float(mf.chi1("tanh", 1.5, 0.05, q=math.inf)) == 0.0
  np.testing.assert_allclose(mf.variance_map(math.inf, "tanh", 1.5, 0.05), 1.55, rtol=1e-12)
  np.testing.assert_allclose(mf.chi1("tanh", 1.5, 0.05, q=1e12), 0.0, atol=1e-5)


def test_traced_arguments_are_not_checked_and_still_work():
  s = jnp.array([1.0, 1.5, 2.5])
  traced = jax.jit(jax.vmap(lambda v: mf.chi1("tanh", v, 0.05)))(s)
  np.testing.assert_allclose(traced, [mf.chi1("tanh", float(v), 0.05) for v in s], rtol=1e-12)
  q = jax.jit(lambda v: mf.gaussian_expectation(lambda u: u ** 2, v))(3.0)
  np.testing.assert_allclose(q, 3.0, rtol=1e-12)
  c = jax.vmap(lambda v: mf.correlation_map(v, "tanh", 1.5, 0.05))(jnp.array([0.2, 0.9]))
  np.testing.assert_allclose(c[1], mf.correlation_map(0.9, "tanh", 1.5, 0.05), rtol=1e-12)
  crit = jax.jit(lambda b: mf.critical_sigma_w2("tanh", b, hi=4.0))(0.05)
  np.testing.assert_allclose(crit, mf.critical_sigma_w2("tanh", 0.05), rtol=1e-9)
  widths = jnp.array([32.0, 64.0])
  mean, _ = jax.jit(jax.vmap(lambda w: fw.log_gradient_stats("tanh", 1.5, 0.05, w, 4)))(widths)
  np.testing.assert_allclose(mean[1], fw.log_gradient_stats("tanh", 1.5, 0.05, 64.0, 4)[0],
                             rtol=1e-12)
  # A list of numbers is an array of them.
  np.testing.assert_allclose(mf.chi1("relu", [1.0, 3.0], 0.0), [0.5, 1.5], rtol=1e-12)
