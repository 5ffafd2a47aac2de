"""Every public numeric function at the edges of its domain: 0, subnormal, tiny, the
kink, saturation, exp overflow, huge, the largest float.

Each returns a finite value (checked against a closed form or numpy where one
exists), or a documented inf (an overflow, log 0, no fixed point), or raises
saying why; never a silent nan.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.core import activations, backprop, losses
from jaxbp.measure import diagnostics
from jaxbp.theory import meanfield as mf
from jaxbp.theory import spectra

BIG = np.finfo(np.float64).max
TINY = np.finfo(np.float64).tiny          # XLA on CPU flushes subnormals to zero
POS = [0.0, 5e-324, 1e-300, 1e-8, 1.0, 30.0, 800.0, 1e300, BIG]
EDGES = np.array(sorted(set(POS) | {-v for v in POS}))


def _stable_sigmoid(x):
  with np.errstate(over="ignore"):
    e = np.exp(-np.abs(x))
  return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


REFERENCE = {   # name: (phi, phi')
    "identity": (lambda x: x, lambda x: np.ones_like(x)),
    "relu": (lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(float)),
    "leaky_relu": (lambda x: np.where(x > 0, x, 0.01 * x), lambda x: np.where(x > 0, 1.0, 0.01)),
    "sigmoid": (_stable_sigmoid, lambda x: _stable_sigmoid(x) * _stable_sigmoid(-x)),
    # 1 / cosh^2, not 1 - tanh^2: the latter rounds to 0 from |x| ~ 19 on.
    "tanh": (np.tanh, lambda x: 1 / np.cosh(np.minimum(np.abs(x), 710.0)) ** 2),
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
@pytest.mark.parametrize("dtype", (np.float64, np.float32))
def test_activations_and_their_derivatives_at_the_edges(name, dtype):
  act = activations.get(name)
  with np.errstate(over="ignore"):
    x = EDGES.astype(dtype)      # in float32, 1e300 and BIG become inf: dropped
  x = x[np.isfinite(x)]
  fn, grad = np.asarray(act.fn(jnp.asarray(x))), np.asarray(act.grad(jnp.asarray(x)))
  assert fn.dtype == dtype and np.isfinite(fn).all() and np.isfinite(grad).all()
  phi, dphi = REFERENCE[name]
  tol = dict(rtol=4 * np.finfo(dtype).eps, atol=np.finfo(dtype).tiny)
  np.testing.assert_allclose(fn, phi(x.astype(float)).astype(dtype), **tol)
  kink = np.abs(x) < np.finfo(dtype).tiny        # subnormals flush to 0 on XLA's CPU
  np.testing.assert_allclose(grad[~kink], dphi(x[~kink].astype(float)).astype(dtype), **tol)
  assert 0 <= grad[kink].min() and grad[kink].max() <= 1       # a subgradient at the kink


def test_softmax_rows_at_the_edges():
  z = jnp.array([[BIG, -BIG, 0.0], [0.0, 0.0, 0.0], [1e300, 1e300, -1e300], [5e-324, 0.0, -1e-300],
                 [800.0, -800.0, 30.0], [-BIG, -BIG, -BIG]])
  p, logp = activations.softmax(z), activations.log_softmax(z)
  assert np.isfinite(p).all() and (p >= 0).all()
  np.testing.assert_allclose(p.sum(-1), 1.0, rtol=2e-16)
  assert not np.isnan(logp).any() and (logp <= 0).all()
  # -inf only where the exact log-probability is below -BIG (it overflows).
  assert np.array_equal(np.isinf(logp), np.array([[0, 1, 0]] + [[0, 0, 0]] * 5, bool))
  np.testing.assert_allclose(logp[1], -np.log(3.0), rtol=1e-15)
  assert np.isfinite(activations.softmax_jacobian(z)).all()


# -- losses ----------------------------------------------------------------------


@pytest.mark.parametrize("label", (0.0, 1.0))
def test_bce_with_logits_is_finite_for_every_finite_logit(label):
  z = jnp.asarray(EDGES)[:, None]
  y = jnp.full_like(z, label)
  loss = np.asarray(losses.get("bce_with_logits").fn(z, y, "none"))
  grad = np.asarray(losses.get("bce_with_logits").grad(z, y, "sum"))
  with np.errstate(over="ignore"):
    expected = np.maximum(EDGES, 0) - EDGES * label + np.log1p(np.exp(-np.abs(EDGES)))
  np.testing.assert_allclose(loss[:, 0], expected, rtol=1e-15, atol=TINY)
  assert (loss >= 0).all() and np.isfinite(grad).all() and (np.abs(grad) <= 1).all()


def test_mse_overflows_to_inf_never_nan():
  h = jnp.asarray(EDGES)[:, None]
  y = jnp.zeros_like(h)
  loss = np.asarray(losses.mse.fn(h, y, "none"))[:, 0]
  grad = np.asarray(losses.mse.grad(h, y, "sum"))[:, 0]
  with np.errstate(over="ignore", under="ignore"):
    # inf exactly where the square overflows; subnormals flush to 0.
    np.testing.assert_allclose(loss, EDGES ** 2, rtol=1e-15, atol=TINY)
    np.testing.assert_allclose(grad, 2 * EDGES, rtol=1e-15, atol=TINY)
  assert not np.isnan(loss).any() and not np.isnan(grad).any()


SCE_ROWS = [[0.0, 0.0, 0.0], [1e300, -1e300, 0.0], [-1e300, 1e300, 0.0], [BIG, BIG, BIG],
            [800.0, -800.0, 5e-324], [30.0, -30.0, 0.0]]


@pytest.mark.parametrize("row", range(len(SCE_ROWS)))
def test_softmax_cross_entropy_at_extreme_logits(row):
  h = jnp.array([SCE_ROWS[row]] * 3)
  y = jnp.arange(3)
  loss = np.asarray(losses.softmax_cross_entropy.fn(h, y, "none"))
  grad = np.asarray(losses.softmax_cross_entropy.grad(h, y, "sum"))
  x = np.array(SCE_ROWS[row])
  m = x.max()
  expected = (m - x) + np.log1p(np.sum(np.exp(x - m)) - 1)   # logsumexp - h_y, in numpy
  # logsumexp(h) - h_y cancels: its absolute error is ~eps |max h|.
  np.testing.assert_allclose(loss, expected, rtol=1e-15, atol=4 * np.finfo(float).eps * m)
  assert np.isfinite(grad).all() and (np.abs(grad) <= 1).all()


@pytest.mark.parametrize("label", (0.0, 1.0))
def test_autodiff_of_bce_with_logits_at_a_zero_logit(label):
  loss = losses.get("bce_with_logits")
  grad = jax.grad(lambda h: loss.fn(h, jnp.array([[label]]), "sum"))(jnp.zeros((1, 1)))
  assert float(grad[0, 0]) == 0.5 - label      # = sigmoid(0) - y, what loss.grad gives


def test_softmax_cross_entropy_over_the_whole_float_range():
  loss = losses.softmax_cross_entropy.fn(jnp.array([[BIG, -BIG, 0.0]]), jnp.array([0]), "none")
  assert np.asarray(loss)[0] == 0.0


@pytest.mark.parametrize("p,y", [(0.5, 0.0), (0.5, 1.0), (1e-300, 0.0), (1 - 2 ** -53, 1.0),
                                 (0.0, 1.0), (1.0, 0.0)])
def test_bce_on_probabilities_is_finite_or_inf(p, y):
  h, t = jnp.array([[p]]), jnp.array([[y]])
  loss = np.asarray(losses.binary_cross_entropy.fn(h, t, "sum")).item()
  grad = np.asarray(losses.binary_cross_entropy.grad(h, t, "sum")).item()
  with np.errstate(divide="ignore"):
    expected = -(y * np.log(p) if y else 0.0) - ((1 - y) * np.log1p(-p) if y < 1 else 0.0)
  # log(1 - p) has an absolute error of ~eps (1 - p rounds).
  np.testing.assert_allclose(loss, expected, rtol=1e-12, atol=np.finfo(float).eps)
  assert not np.isnan(grad)
  assert np.isinf(loss) == np.isinf(grad)          # log 0: both inf (a certain wrong answer)


@pytest.mark.parametrize("p", (0.0, 1.0))
def test_bce_gradient_at_a_perfect_prediction(p):
  grad = np.asarray(losses.binary_cross_entropy.grad(jnp.array([[p]]), jnp.array([[p]]),
                                                    "sum")).item()
  assert grad == (1.0 if p == 0.0 else -1.0)


def test_cross_entropy_on_one_hot_probabilities():
  p = jnp.eye(3)
  loss = np.asarray(losses.cross_entropy.fn(p, jnp.arange(3), "none"))
  wrong = np.asarray(losses.cross_entropy.fn(p, jnp.array([1, 2, 0]), "none"))
  assert (loss == 0).all() and (wrong == np.inf).all()                 # log 0
  grad = np.asarray(losses.cross_entropy.grad(p, jnp.arange(3), "sum"))
  np.testing.assert_array_equal(grad, -np.eye(3))


def test_a_loss_over_an_empty_batch_raises():
  with pytest.raises(ValueError, match="empty"):
    losses.mse.fn(jnp.zeros((0, 2)), jnp.zeros((0, 2)), "mean")


# -- nets and backprop -------------------------------------------------------------


NET_INPUTS = [0.0, 5e-324, 1e-300, 1.0, 1e150, 1e300, BIG]


@pytest.mark.parametrize("activation", ("tanh", "sigmoid"))
def test_saturated_nets_have_finite_losses_and_exact_gradients(activation):
  # Bounded hidden units: any finite input gives a finite output and gradient.
  net = jaxbp.MLP((3, 8, 8, 2), activation)
  params = net.init(jax.random.PRNGKey(0), "glorot")
  hand = jax.jit(lambda p, x, y: backprop.value_and_grad(net, "mse", p, x, y))
  auto = jax.jit(jax.value_and_grad(jaxbp.objective(net, "mse")))
  for v in NET_INPUTS:
    x = jnp.array([[v, -v, 0.5 * v], [-v, v, 1.0]])
    y = jnp.zeros((2, 2))
    value, grads = hand(params, x, y)
    ref_value, ref = auto(params, x, y)
    assert np.isfinite(value)
    np.testing.assert_allclose(value, ref_value, rtol=1e-14)
    scale = max(np.abs(r).max() for r in jax.tree_util.tree_leaves(ref))
    for g, r in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref)):
      assert np.isfinite(g).all(), (activation, v)
      # Saturated units: the hand recursion's exact 0 against autodiff's ~1e-17.
      np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-14 * scale)


def test_relu_nets_are_finite_up_to_where_the_square_overflows():
  net = jaxbp.MLP((3, 8, 8, 2), "relu")
  params = net.init(jax.random.PRNGKey(0), "he")
  hand = jax.jit(lambda p, x, y: backprop.value_and_grad(net, "mse", p, x, y))
  for v in (0.0, 5e-324, 1e-300, 1.0, 1e100):
    x = jnp.array([[v, -v, 0.5 * v], [-v, v, 1.0]])
    value, grads = hand(params, x, jnp.zeros((2, 2)))
    assert np.isfinite(value) and all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))


@pytest.mark.parametrize("call", (
    lambda net, p, x, y: net.apply(p, x),
    lambda net, p, x, y: net.trace(p, x),
    lambda net, p, x, y: backprop.value_and_grad(net, "mse", p, x, y),
    lambda net, p, x, y: backprop.backward(net, "mse", p, x, y),
    lambda net, p, x, y: backprop.per_example_grads(net, "mse", p, x, y),
    lambda net, p, x, y: backprop.deltas(net, "mse", p, x, y),
    lambda net, p, x, y: jaxbp.objective(net, "mse")(p, x, y),
    lambda net, p, x, y: jax.grad(jaxbp.objective(net, "mse"))(p, x, y),
    lambda net, p, x, y: diagnostics.gradient_norms(net, "mse", p, x, y),
    lambda net, p, x, y: diagnostics.jacobian(net, p, x),
), ids=("apply", "trace", "value_and_grad", "backward", "per_example_grads", "deltas",
        "objective", "jax.grad", "gradient_norms", "jacobian"))
@pytest.mark.parametrize("stack", (False, True))
def test_an_empty_batch_raises(call, stack):
  net = jaxbp.MLP((3, 4, 4, 4, 2), "tanh", stack=stack)
  params = net.init(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match=r"x has shape \(0, 3\): an empty batch"):
    call(net, params, jnp.zeros((0, 3)), jnp.zeros((0, 2)))


def test_fit_log_slope_documents_nan_below_two_layers():
  assert np.isnan(diagnostics.fit_log_slope(jnp.array([1.0])))
  assert np.isnan(diagnostics.fit_log_slope(jnp.array([1.0, -jnp.inf, jnp.inf])))
  assert diagnostics.fit_log_slope(jnp.array([0.0, -jnp.inf, -2.0])) == 1.0


# -- mean-field theory --------------------------------------------------------------


SIGMA_W2 = [0.0, 1e-300, 1e-8, 1.0, 2.0, 1e4, 1e8, 1e300]
SIGMA_B2 = [0.0, 1e-300, 0.05, 1e8, 1e300]
MF_ACTIVATIONS = ("tanh", "sigmoid", "relu", "leaky_relu", "identity")
DEPTH_EDGES = [(0.0, 0.0), (1e-300, 1e300), (1.0, 0.05), (1e4, 0.0), (1e8, 1e8), (1e300, 0.05)]


@pytest.mark.parametrize("activation", MF_ACTIVATIONS)
def test_fixed_points_chi1_and_depth_scales_over_the_grid(activation):
  s, b = (jnp.asarray(a).reshape(-1) for a in np.meshgrid(SIGMA_W2, SIGMA_B2))
  q = np.asarray(mf.fixed_point(activation, s, b))
  chi = np.asarray(mf.chi1(activation, s, b))
  assert not np.isnan(q).any() and (q >= 0).all()            # inf: no finite fixed point
  assert np.isfinite(chi).all() and (chi >= 0).all()
  # The depth scales solve a 2-D fixed point each: the grid's corners and extremes.
  scales = mf.depth_scales(activation, jnp.array(DEPTH_EDGES)[:, 0], jnp.array(DEPTH_EDGES)[:, 1])
  for name, xi in zip(scales._fields, scales):
    assert not np.isnan(xi).any(), (activation, name, np.isnan(xi))
  finite = np.isfinite(q)
  np.testing.assert_allclose(mf.variance_map(q[finite], activation, s[finite], b[finite]),
                             q[finite], rtol=1e-7)          # q* really is fixed
  if activation in ("relu", "leaky_relu", "identity"):       # chi_1 = sigma_w2 E[phi'^2]
    slope2 = {"relu": 0.5, "leaky_relu": (1 + 0.01 ** 2) / 2, "identity": 1.0}[activation]
    np.testing.assert_allclose(chi, np.asarray(s) * slope2, rtol=1e-12)


@pytest.mark.parametrize("activation", MF_ACTIVATIONS)
def test_the_variance_map_at_the_edges_of_q(activation):
  q = jnp.array([0.0, 5e-324, 1e-300, 1.0, 1e100, 1e300])
  v = np.asarray(mf.variance_map(q, activation, 1.0, 0.05))
  assert np.isfinite(v).all() and (v >= 0.05).all()
  closed = {"relu": q / 2, "identity": q, "leaky_relu": q * (1 + 0.01 ** 2) / 2}
  if activation in closed:
    np.testing.assert_allclose(v, closed[activation] + 0.05, rtol=1e-12)
  q = jnp.array([0.0, 1e-280, 1.0, 1e100, 1e300])   # below ~1e-290, q z^2 flushes to 0
  np.testing.assert_allclose(mf.gaussian_expectation(lambda u: u ** 2, q), q, rtol=1e-12)


def _arc_cosine(c):
  # The relu correlation map with sigma_b2 = 0 (Cho & Saul 2009), independent of q.
  return (np.sqrt(1 - c * c) + (np.pi - np.arccos(c)) * c) / np.pi


@pytest.mark.parametrize("q", (0.0, 5e-324, 1e-300, 1.0, 1e100, 1e300))
def test_the_relu_correlation_map_is_the_arc_cosine_kernel_at_every_q(q):
  c = np.array([-1.0, -0.5, 0.0, 0.5, 0.9, 1.0])
  # 5e-7: the 2-D product rule's error along relu's kink, which no panel edge follows.
  np.testing.assert_allclose(mf.correlation_map(jnp.asarray(c), "relu", 2.0, 0.0, q=q),
                             _arc_cosine(c), atol=5e-7)


@pytest.mark.parametrize("activation", ("tanh", "sigmoid", "identity"))
@pytest.mark.parametrize("q", (0.0, 5e-324, 1.0, 1e300))
def test_smooth_correlation_maps_stay_correlations(activation, q):
  c = jnp.array([-1.0, 0.0, 0.5, 1.0])
  for b in (0.0, 0.05):
    out = np.asarray(mf.correlation_map(c, activation, 1.5, b, q=q))
    assert np.isfinite(out).all() and (np.abs(out) <= 1 + 1e-12).all()
    np.testing.assert_allclose(out[-1], 1.0, rtol=1e-12)     # c = 1 is always fixed
    if b == 0.0 and activation != "sigmoid":
      np.testing.assert_allclose(out[0], -1.0, rtol=1e-12)   # odd phi: c = -1 too


@pytest.mark.parametrize("activation,sigma_b2,root", (
    ("tanh", 0.0, 1.0), ("tanh", 1e-300, 1.0), ("relu", 1e300, 2.0), ("sigmoid", 0.0, None),
    ("sigmoid", 1.0, None), ("tanh", 1.0, None)))
def test_critical_points_at_the_edges_of_sigma_b2(activation, sigma_b2, root):
  sw = float(mf.critical_sigma_w2(activation, sigma_b2))
  if root is not None:
    np.testing.assert_allclose(sw, root, rtol=1e-7)
  np.testing.assert_allclose(mf.chi1(activation, sw, sigma_b2), 1.0, rtol=1e-7)


@pytest.mark.parametrize("activation", ("tanh", "sigmoid"))
def test_no_critical_point_within_the_limit_raises(activation):
  # Huge biases saturate bounded units: chi_1 stays below 1 up to MAX_SIGMA_W2.
  with pytest.raises(ValueError, match=r"no sigma_w2 in \[0.0, 65536.0\].*chi_1 <= 1 up to"):
    mf.critical_sigma_w2(activation, 1e8)


def test_spectra_critical_nets_at_the_edges():
  for activation, weights, b in (("sigmoid", "gaussian", 0.05), ("tanh", "orthogonal", 0.0),
                                 ("relu", "gaussian", 0.0)):
    net = spectra.critical(activation, weights, b)
    assert np.isfinite(net.sigma_w2) and np.isfinite(net.q_star)
    np.testing.assert_allclose(mf.chi1(activation, net.sigma_w2, b), 1.0, rtol=1e-7)
    for depth in (1, 10, 1000):
      assert all(np.isfinite(v) for v in spectra.theory(net, depth).values())
