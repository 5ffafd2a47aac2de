"""Mean-field theory checked against closed forms, Monte Carlo, and wide random nets."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.core import activations
from jaxbp.theory import meanfield as mf

B_TANH = 0.05  # sigma_b2 of the tanh experiments (Schoenholz et al. 2017)


# Quadrature against closed forms and Monte Carlo.

@pytest.mark.parametrize("q", (0.0, 0.3, 1.0, 7.5))
def test_gaussian_moments_exact(q):
  np.testing.assert_allclose(mf.gaussian_expectation(lambda u: u ** 2, q), q, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(mf.gaussian_expectation(lambda u: u ** 4, q), 3 * q ** 2, rtol=1e-12, atol=1e-15)
  relu = activations.relu.fn
  np.testing.assert_allclose(mf.gaussian_expectation(lambda u: relu(u) ** 2, q), q / 2, rtol=1e-12, atol=1e-15)


def test_gaussian_expectation_broadcasts_over_q():
  q = jnp.array([[0.5, 1.0], [2.0, 4.0]])
  np.testing.assert_allclose(mf.gaussian_expectation(lambda u: u ** 2, q), q, rtol=1e-12)


@pytest.mark.parametrize("q", (0.2, 1.0, 3.0))
def test_tanh_second_moment_vs_monte_carlo(q):
  z = np.random.default_rng(0).standard_normal(1_000_000)
  samples = np.tanh(np.sqrt(q) * z) ** 2
  stderr = samples.std() / np.sqrt(samples.size)  # ~3e-4
  quad = mf.gaussian_expectation(lambda u: jnp.tanh(u) ** 2, q)
  np.testing.assert_allclose(quad, samples.mean(), atol=5 * stderr)


# Fixed points and chi_1 in closed form.

@pytest.mark.parametrize("sigma_w2", (0.5, 1.0, 1.9))
@pytest.mark.parametrize("sigma_b2", (0.1, 1.0))
def test_relu_fixed_point_closed_form(sigma_w2, sigma_b2):
  # q = sigma_w2 q / 2 + sigma_b2  =>  q* = sigma_b2 / (1 - sigma_w2 / 2).
  expected = sigma_b2 / (1 - sigma_w2 / 2)
  np.testing.assert_allclose(mf.fixed_point("relu", sigma_w2, sigma_b2), expected, rtol=1e-10)


@pytest.mark.parametrize("sigma_w2", (2.0, 2.5))
def test_relu_without_finite_fixed_point_is_inf(sigma_w2):
  assert mf.fixed_point("relu", sigma_w2, 0.1) == np.inf
  assert mf.fixed_point("identity", sigma_w2 / 2, 0.1) == np.inf
  # chi_1 of relu does not depend on q, so it is still sigma_w2 / 2.
  np.testing.assert_allclose(mf.chi1("relu", sigma_w2, 0.1), sigma_w2 / 2, rtol=1e-12)


def test_fixed_point_satisfies_variance_map():
  for sigma_w2 in (0.5, 1.0, 1.76, 4.0):
    q = mf.fixed_point("tanh", sigma_w2, B_TANH)
    np.testing.assert_allclose(mf.variance_map(q, "tanh", sigma_w2, B_TANH), q, rtol=1e-12)
  assert mf.fixed_point("tanh", 0.8, 0.0) < 1e-12  # ordered, no bias: q* = 0


@pytest.mark.parametrize("sigma_w2", (0.5, 2.0, 3.0))
@pytest.mark.parametrize("sigma_b2", (0.0, 0.2))
def test_chi1_relu_and_leaky_relu(sigma_w2, sigma_b2):
  np.testing.assert_allclose(mf.chi1("relu", sigma_w2, sigma_b2), sigma_w2 / 2, rtol=1e-12)
  np.testing.assert_allclose(
      mf.chi1(activations.leaky_relu(0.2), sigma_w2, sigma_b2), sigma_w2 * 1.04 / 2, rtol=1e-12)
  np.testing.assert_allclose(
      mf.gradient_log_slope("relu", sigma_w2, sigma_b2), np.log(sigma_w2 / 2), rtol=1e-12, atol=1e-14)


# Critical points.

def test_critical_tanh_without_bias_is_one():
  np.testing.assert_allclose(mf.critical_sigma_w2("tanh", 0.0), 1.0, atol=1e-6)


@pytest.mark.parametrize("sigma_b2", (0.0, 0.05, 1.0))
def test_critical_relu_is_he(sigma_b2):
  np.testing.assert_allclose(mf.critical_sigma_w2("relu", sigma_b2), 2.0, rtol=1e-12)


@pytest.mark.parametrize("p", (0.01, 0.2, 0.5))
def test_critical_leaky_relu(p):
  np.testing.assert_allclose(
      mf.critical_sigma_w2(activations.leaky_relu(p), 0.1), 2 / (1 + p ** 2), rtol=1e-12)


def test_critical_tanh_with_bias_vs_monte_carlo():
  sigma_w2 = float(mf.critical_sigma_w2("tanh", B_TANH))
  assert abs(sigma_w2 - 1.76) < 0.01  # Schoenholz et al. 2017, Fig. 1
  np.testing.assert_allclose(mf.chi1("tanh", sigma_w2, B_TANH), 1.0, rtol=1e-12)
  # Independent check: both defining equations hold under Monte Carlo, at the
  # quadrature's q*, to 5 standard errors (1e6 samples: ~5e-4 on each side).
  q = float(mf.fixed_point("tanh", sigma_w2, B_TANH))
  z = np.random.default_rng(1).standard_normal(1_000_000)
  t = np.tanh(np.sqrt(q) * z)
  for samples, expected in ((sigma_w2 * t ** 2 + B_TANH, q), (sigma_w2 * (1 - t ** 2) ** 2, 1.0)):
    stderr = samples.std() / np.sqrt(samples.size)
    np.testing.assert_allclose(samples.mean(), expected, atol=5 * stderr)


def test_critical_bracket_grows_by_itself():
  # sigmoid's root lies past the first bracket [0, 20]: the default finds it.
  grown = float(mf.critical_sigma_w2("sigmoid", 0.05))
  fixed = float(mf.critical_sigma_w2("sigmoid", 0.05, hi=400.0))
  np.testing.assert_allclose(grown, fixed, rtol=1e-12)
  assert 103.0 < grown < 103.3                          # the 103.13
  np.testing.assert_allclose(mf.chi1("sigmoid", grown, 0.05), 1.0, rtol=1e-10)
  np.testing.assert_allclose(mf.chi1("sigmoid", mf.critical_sigma_w2("sigmoid", 0.0), 0.0), 1.0,
                             rtol=1e-10)
  # Batched and vmapped: every entry grows its own bracket.
  b = jnp.array([0.0, 0.05, 1.0])
  batched = mf.critical_sigma_w2("sigmoid", b)
  mapped = jax.jit(jax.vmap(lambda v: mf.critical_sigma_w2("sigmoid", v)))(b)
  np.testing.assert_allclose(batched, mapped, rtol=1e-12)
  np.testing.assert_allclose(mf.chi1("sigmoid", batched, b), 1.0, rtol=1e-10)


def test_critical_without_a_root_raises_or_is_nan_under_jit():
  with pytest.raises(ValueError, match=r"no sigma_w2 in \[0.0, 20.0\].*chi_1 <= 1 up to 20"):
    mf.critical_sigma_w2("sigmoid", 0.05, hi=20.0)
  with pytest.raises(ValueError, match="chi_1 > 1 already at lo"):
    mf.critical_sigma_w2("tanh", 0.05, lo=5.0)
  with pytest.raises(ValueError, match="sigma_b2=0.0"):      # names the entry without a root
    mf.critical_sigma_w2("sigmoid", jnp.array([0.05, 0.0]), hi=jnp.array([400.0, 20.0]))
  traced = jax.jit(lambda b: mf.critical_sigma_w2("sigmoid", b, hi=20.0))(0.05)
  assert np.isnan(traced)                                  # documented: traced cannot raise


# Depth scales.

def test_depth_scales_match_iterated_maps():
  # xi_q: (q_{l+1} - q*) / (q_l - q*) -> exp(-1 / xi_q), using phi'' of the hand-derived phi'.
  for sigma_w2 in (1.0, 2.5):
    q_star = mf.fixed_point("tanh", sigma_w2, B_TANH)
    qs = [1.01 * q_star]
    for _ in range(8):
      qs.append(mf.variance_map(qs[-1], "tanh", sigma_w2, B_TANH))
    gaps = np.abs(np.array(qs) - q_star)
    xi_q = mf.depth_scales("tanh", sigma_w2, B_TANH).xi_q
    np.testing.assert_allclose(gaps[-1] / gaps[-2], np.exp(-1 / xi_q), rtol=1e-3)
  # xi_c in the chaotic phase, where c* < 1 and chi_c(c*) != chi_1: iterate the
  # correlation map to c*, then take its slope there by central differences.
  scales = mf.depth_scales("tanh", 2.5, B_TANH)
  c_map = jax.jit(lambda c: mf.correlation_map(c, "tanh", 2.5, B_TANH))
  c_star = jax.lax.fori_loop(0, 400, lambda _, c: c_map(c), 0.9)
  assert 0 < c_star < 0.9
  slope = (c_map(c_star + 1e-5) - c_map(c_star - 1e-5)) / 2e-5
  np.testing.assert_allclose(slope, np.exp(-1 / scales.xi_c), rtol=1e-6)
  assert scales.xi_grad < 0  # gradients explode


def test_depth_scales_phases():
  ordered = mf.depth_scales("tanh", 1.0, B_TANH)
  np.testing.assert_allclose(ordered.xi_c, ordered.xi_grad, rtol=1e-12)
  np.testing.assert_allclose(
      ordered.xi_grad, -1 / np.log(mf.chi1("tanh", 1.0, B_TANH)), rtol=1e-12)
  assert mf.depth_scales("relu", 2.0, 0.0) == (np.inf, np.inf, np.inf)
  assert mf.depth_scales("tanh", mf.critical_sigma_w2("tanh", B_TANH), B_TANH).xi_grad > 1e6


# Wide random networks, built with plain jnp: theory against measurement.

_N, _L, _B = 1000, 20, 16


@jax.jit
def _simulate(w, b, x, delta, sigma_w2, sigma_b2):
  """Mean z^2 per layer, and ||delta_{l-1}||^2 / ||delta_l||^2 for l = L..2."""
  w = jnp.sqrt(sigma_w2 / _N) * w
  b = jnp.sqrt(sigma_b2) * b

  def forward(h, wb):
    z = h @ wb[0] + wb[1][None]
    return jnp.tanh(z), z

  _, zs = jax.lax.scan(forward, x, (w, b))

  def backward(d, l):
    # delta_{l-1} = (delta_l W_l^T) * phi'(z_{l-1}), written out by hand.
    d_prev = (d @ w[l].T) * (1 - jnp.tanh(zs[l - 1]) ** 2)
    return d_prev, jnp.sum(d_prev ** 2) / jnp.sum(d ** 2)

  _, ratios = jax.lax.scan(backward, delta, jnp.arange(_L - 1, 0, -1))
  return jnp.mean(zs ** 2, axis=(1, 2)), ratios[::-1]


@pytest.fixture(scope="module")
def gaussians():
  rng = np.random.default_rng(0)
  return (rng.standard_normal((_L, _N, _N)), rng.standard_normal((_L, _N)),
          rng.standard_normal((_B, _N)), rng.standard_normal((_B, _N)))


# Tolerances: 4 standard deviations of each statistic's relative error across seeds,
# measured over 24 seeds of this very setup (the noise is the weights' own, O(1/sqrt(N))
# a layer and correlated across layers through q, so neither the batch nor the layers
# average it away). Seed-to-seed sd of the mean q over layers 2-20: 1.9% (ordered), 1.3%
# (near-critical), 0.6% (chaotic), mean error 0.1-0.2%; of the mean ratio: 0.43-0.49%
# in all three. Seed 0's errors are 0.04-0.6% (q) and 0.3-0.6% (ratio).
@pytest.mark.parametrize("sigma_w2,q_rtol", ((1.0, 0.08), (1.5, 0.055), (2.5, 0.025)),
                         ids=("ordered", "near-critical", "chaotic"))
def test_wide_network_matches_theory(gaussians, sigma_w2, q_rtol):
  w, b, x, delta = gaussians
  q_star = float(mf.fixed_point("tanh", sigma_w2, B_TANH))
  # Inputs of squared norm N (q* - sigma_b2) / sigma_w2 start z_1 at q*: no transient to
  # skip (from q_1 = sigma_w2 + sigma_b2, the ordered net was still 1% off after 5 layers).
  x = x * np.sqrt(_N * (q_star - B_TANH) / sigma_w2) / np.linalg.norm(x, axis=1, keepdims=True)
  q_l, ratios = _simulate(w, b, x, delta, sigma_w2, B_TANH)
  np.testing.assert_allclose(q_l[1:].mean(), q_star, rtol=q_rtol)
  np.testing.assert_allclose(ratios[1:].mean(), mf.chi1("tanh", sigma_w2, B_TANH), rtol=0.02)


# jit, vmap, and bad input.

def test_jit_and_vmap_over_sigma_w2():
  def theory(sigma_w2):
    return (mf.fixed_point("tanh", sigma_w2, B_TANH), mf.chi1("tanh", sigma_w2, B_TANH),
            mf.gradient_log_slope("tanh", sigma_w2, B_TANH), mf.depth_scales("tanh", sigma_w2, B_TANH))

  sigma_w2 = jnp.linspace(0.5, 3.0, 6)
  batched = jax.jit(jax.vmap(theory))(sigma_w2)
  for i in (0, 2, 5):
    one = theory(float(sigma_w2[i]))
    assert jax.tree.structure(one) == jax.tree.structure(batched)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-12), batched, one)
  sigma_b2 = jnp.array([0.0, 0.05, 0.1])
  critical = jax.jit(jax.vmap(lambda b: mf.critical_sigma_w2("tanh", b)))(sigma_b2)
  np.testing.assert_allclose(critical[1], mf.critical_sigma_w2("tanh", 0.05), rtol=1e-12)
  assert critical[0] < critical[1] < critical[2]


def test_bad_input():
  with pytest.raises(ValueError, match="Unknown activation"):
    mf.chi1("swish", 1.0, 0.0)
  with pytest.raises(ValueError, match="elementwise"):
    mf.fixed_point("softmax", 1.0, 0.0)
  with pytest.raises(ValueError, match="sigma_w2"):
    mf.chi1("tanh", -1.0, 0.0)
  with pytest.raises(ValueError, match="sigma_b2"):
    mf.critical_sigma_w2("tanh", np.float64(-0.1))
  with pytest.raises(ValueError, match="sigma_b2"):
    mf.depth_scales("tanh", 1.0, np.array([0.1, -0.1]))


def _dense_expectation(f, q):
  # An independent reference: the trapezoid rule on 2e6 + 1 points of [-40, 40].
  z = np.linspace(-40.0, 40.0, 2_000_001)
  return np.sum(f(np.sqrt(q) * z) * np.exp(-z * z / 2)) * (z[1] - z[0]) / np.sqrt(2 * np.pi)


@pytest.mark.parametrize("sigma_w2", (4.0, 64.0, 114.6, 400.0))
def test_sigmoid_at_large_q_star_against_a_dense_integral(sigma_w2):
  # At q* ~ 50 sigmoid'(sqrt(q) z)^2 is a bump ~0.2 wide in z: 100 Gauss-Hermite
  # nodes (~0.3 apart) gave chi_1 = 0.99997 at sigma_w2 = 114.6 where it is 1.052.
  s = lambda u: 1 / (1 + np.exp(-u))
  q = float(mf.fixed_point("sigmoid", sigma_w2, 0.05))
  np.testing.assert_allclose(sigma_w2 * _dense_expectation(lambda u: s(u) ** 2, q) + 0.05, q,
                             rtol=1e-8)
  chi = sigma_w2 * _dense_expectation(lambda u: (s(u) * (1 - s(u))) ** 2, q)
  np.testing.assert_allclose(mf.chi1("sigmoid", sigma_w2, 0.05), chi, rtol=1e-7)


def test_critical_sigmoid_is_critical_by_the_dense_integral():
  s = lambda u: 1 / (1 + np.exp(-u))
  sw2 = float(mf.critical_sigma_w2("sigmoid", 0.05, hi=400.0))
  q = float(mf.fixed_point("sigmoid", sw2, 0.05))
  assert 100 < sw2 < 106 and 40 < q < 50
  np.testing.assert_allclose(sw2 * _dense_expectation(lambda u: (s(u) * (1 - s(u))) ** 2, q), 1.0,
                             rtol=1e-7)
