"""Property-based tests: invariants of the public API over generated nets, shapes,
activations, losses, depths, values, expressions and records.

Each property holds against an independent reference: autodiff for the hand
recursions, a loop for vmap, an unrolled net for a stacked one, closed forms or
numpy for the numbers. The profile (tests/conftest.py) bounds the examples and
derandomizes them; ``--hypothesis-profile=long`` explores many more.
"""
import json
import math
import string

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import jaxbp
from jaxbp import io as results
from jaxbp.core import activations, backprop, gradcheck, graph, initializers, losses
from jaxbp.core.layers import unstack
from jaxbp.measure import diagnostics, probes
from jaxbp.theory import meanfield as mf

# Cheap properties (no new compile per example) afford more examples, the costliest fewer.
cheap = settings(max_examples=6 * settings().max_examples)
costly = settings(max_examples=max(3, settings().max_examples // 2))

ELEMENTWISE = ("identity", "relu", "leaky_relu", "sigmoid", "tanh")
SMOOTH = ("identity", "sigmoid", "tanh")
LOSSES = ("mse", "bce_with_logits", "softmax_cross_entropy")


def _close(a, b, rtol=1e-10, atol=1e-12):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    assert np.shape(u) == np.shape(v)
    np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)


# -- generated nets --------------------------------------------------------------


@st.composite
def problems(draw, stack=False, residual=False, batchnorm=False, losses_=LOSSES,
             activations_=ELEMENTWISE):
  """A net, its params, a batch and targets (values from a drawn seed). Few distinct
  shapes, so that compiled primitives are reused across examples."""
  depth = draw(st.integers(1 if not stack else 2, 3))
  n_in, n_out = 2, draw(st.sampled_from((1, 3)))
  same = stack or residual
  hidden = [3] * depth if same else [draw(st.sampled_from((2, 3))) for _ in range(depth)]
  act = draw(st.sampled_from(activations_))
  loss = draw(st.sampled_from(losses_))
  net = jaxbp.MLP((n_in, *hidden, n_out), act, stack=stack, residual=residual,
                  batchnorm=batchnorm)
  batch = draw(st.sampled_from((1, 3) if not batchnorm else (2, 3)))
  seed = draw(st.integers(0, 2 ** 16))
  # Non-zero biases: a logit of exactly 0 (dead relus, zero biases) hits the kink of
  # bce_with_logits' formula, where jax.grad is wrong (test_domain_edges).
  init = initializers.gaussian(draw(st.sampled_from((1.0, 2.0))), 0.05)
  kp, kx, ky = jax.random.split(jax.random.PRNGKey(seed), 3)
  params = net.init(kp, init)
  x = jax.random.normal(kx, (batch, n_in))
  if loss == "softmax_cross_entropy":
    y = jax.random.randint(ky, (batch,), 0, n_out)
  elif loss == "bce_with_logits":
    y = jax.random.bernoulli(ky, 0.5, (batch, n_out)).astype(x.dtype)
  else:
    y = jax.random.normal(ky, (batch, n_out))
  return net, loss, params, x, y


# 1
@given(problems())
def test_hand_backprop_equals_autodiff(p):
  net, loss, params, x, y = p
  value, grads = backprop.value_and_grad(net, loss, params, x, y)
  ref_value, ref = jax.value_and_grad(jaxbp.objective(net, loss))(params, x, y)
  np.testing.assert_allclose(value, ref_value, rtol=1e-12)
  _close(grads, ref)


# 2
@given(problems(residual=True), st.sampled_from(("mean", "sum")))
def test_residual_backprop_equals_autodiff(p, reduction):
  net, loss, params, x, y = p
  grads = backprop.grad(net, loss, params, x, y, reduction)
  _close(grads, jax.grad(jaxbp.objective(net, loss, reduction))(params, x, y))


# 3
@costly
@given(problems(batchnorm=True, activations_=SMOOTH))
def test_batchnorm_backprop_equals_autodiff(p):
  net, loss, params, x, y = p
  _close(backprop.grad(net, loss, params, x, y),
         jax.grad(jaxbp.objective(net, loss))(params, x, y), rtol=1e-8, atol=1e-10)


# 4
@given(problems())
def test_grads_have_the_tree_shapes_and_dtypes_of_the_params(p):
  net, loss, params, x, y = p
  grads = backprop.grad(net, loss, params, x, y)
  assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
  for g, w in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(params)):
    assert g.shape == w.shape and g.dtype == w.dtype


# 5
@given(problems(), st.floats(-10, 10))
def test_finite_inputs_give_finite_outputs_and_gradients(p, scale):
  net, loss, params, x, y = p
  x = scale * x
  out = net.apply(params, x)
  value, grads = backprop.value_and_grad(net, loss, params, x, y)
  assert np.isfinite(out).all() and np.isfinite(value)
  assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))


# 6
@given(problems())
def test_jit_equals_no_jit(p):
  net, loss, params, x, y = p
  fn = lambda params, x, y: backprop.value_and_grad(net, loss, params, x, y)
  _close(jax.jit(fn)(params, x, y), fn(params, x, y), rtol=1e-12, atol=1e-14)


# 7
@given(problems(stack=True))
def test_stacked_equals_unrolled(p):
  net, loss, params, x, y = p
  flat = jaxbp.MLP(net.sizes, net.activation)
  flat_params = unstack(params, net)
  np.testing.assert_allclose(net.apply(params, x), flat.apply(flat_params, x), rtol=1e-12)
  _close(unstack(backprop.grad(net, loss, params, x, y), net),
         backprop.grad(flat, loss, flat_params, x, y), rtol=1e-12, atol=1e-14)


# 8
@costly
@given(problems(stack=True), st.sampled_from((True, 2, 3)))
def test_remat_changes_no_number(p, remat):
  net, loss, params, x, y = p
  again = jaxbp.MLP(net.sizes, net.activation, stack=True, remat=remat)
  obj = lambda n: jax.grad(jaxbp.objective(n, loss))(params, x, y)
  _close(obj(again), obj(net), rtol=1e-12, atol=1e-14)


# 9
@given(problems(), st.sampled_from(("mean", "sum")))
def test_per_example_grads_sum_to_the_summed_batch_gradient(p, reduction):
  net, loss, params, x, y = p
  per = backprop.per_example_grads(net, loss, params, x, y, reduction)
  summed = jax.tree_util.tree_map(lambda a: a.sum(0), per)
  batch = backprop.grad(net, loss, params, x, y, "sum")
  if reduction == "mean" and loss != "softmax_cross_entropy":   # a mean over the outputs
    batch = jax.tree_util.tree_map(lambda a: a / net.sizes[-1], batch)
  _close(summed, batch)
  one = jax.grad(jaxbp.objective(net, loss, reduction))(params, x[:1], y[:1])
  _close(jax.tree_util.tree_map(lambda a: a[0], per), one)


# 10
@given(st.sampled_from(ELEMENTWISE), st.lists(st.integers(0, 2 ** 20), min_size=3, max_size=3,
                                              unique=True))
def test_vmap_over_seeds_equals_a_loop(act, seeds):
  net = jaxbp.MLP((3, 4, 4, 2), act)
  x = jnp.linspace(-1, 1, 6).reshape(2, 3)
  keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
  batched = jax.vmap(lambda k: net.apply(net.init(k), x))(keys)
  for i, s in enumerate(seeds):
    np.testing.assert_allclose(batched[i], net.apply(net.init(jax.random.PRNGKey(s)), x),
                               rtol=1e-13)


# 11
@given(problems())
def test_examples_do_not_interact(p):
  net, _, params, x, _ = p
  out = net.apply(params, x)
  for i in range(x.shape[0]):
    np.testing.assert_allclose(out[i:i + 1], net.apply(params, x[i:i + 1]), rtol=1e-12,
                               atol=1e-14)


# 12
@given(problems(batchnorm=True, activations_=SMOOTH), st.randoms(use_true_random=False))
def test_a_batch_permutation_permutes_outputs_and_keeps_the_loss(p, rnd):
  net, loss, params, x, y = p
  perm = np.array(rnd.sample(range(x.shape[0]), x.shape[0]))
  np.testing.assert_allclose(net.apply(params, x[perm]), net.apply(params, x)[perm], rtol=1e-10,
                             atol=1e-12)
  obj = jaxbp.objective(net, loss)
  np.testing.assert_allclose(obj(params, x[perm], y[perm]), obj(params, x, y), rtol=1e-12)


# 13
@given(problems())
def test_hand_deltas_equal_autodiff_probes(p):
  net, loss, params, x, y = p
  _close(backprop.backward(net, loss, params, x, y).deltas,
         probes.autodiff_backward(net, loss, params, x, y).deltas)


# 14
@given(problems(), st.sampled_from(("forward", "reverse")))
def test_jacobians_match_jax_jacobian(p, mode):
  net, _, params, x, _ = p
  J = diagnostics.jacobian(net, params, x, mode)
  for b in range(x.shape[0]):
    ref = jax.jacobian(lambda v: net.apply(params, v[None])[0])(x[b])
    np.testing.assert_allclose(J[b], ref, rtol=1e-12, atol=1e-14)


# 15
@given(problems(losses_=("mse",)))
def test_gradient_norms_agree_between_methods(p):
  net, loss, params, x, y = p
  _close(diagnostics.gradient_norms(net, loss, params, x, y, method="backprop"),
         diagnostics.gradient_norms(net, loss, params, x, y, method="autodiff"))


# 16
@settings(max_examples=max(2, settings().max_examples // 2))
@given(problems(losses_=("mse",), activations_=SMOOTH))
def test_central_differences_agree_with_backprop(p):
  net, loss, params, x, y = p
  numeric = gradcheck.numerical_grad(jaxbp.objective(net, loss), params, x, y)
  assert gradcheck.max_relative_error(numeric, backprop.grad(net, loss, params, x, y)) < 1e-6


# -- activations and losses ------------------------------------------------------------


floats = st.floats(-40, 40, allow_subnormal=False)   # XLA's CPU flushes subnormals to 0
vectors = st.lists(floats, min_size=6, max_size=6).map(np.array)


# 17
@cheap
@given(st.sampled_from(ELEMENTWISE), vectors)
def test_hand_activation_derivatives_equal_autodiff(name, x):
  act = activations.get(name)
  x = np.where(np.abs(x) > 1e-9, x, 1.0)     # off relu's kink, where one-sided choices differ
  # phi' <= 1, and autodiff's 1 - s loses digits as s -> 1: an absolute few eps.
  np.testing.assert_allclose(act.grad(jnp.asarray(x)), jax.vmap(jax.grad(act.fn))(jnp.asarray(x)),
                             rtol=1e-12, atol=4 * np.finfo(float).eps)


# 18
@cheap
@given(vectors)
def test_activation_symmetries(x):
  x = jnp.asarray(x)
  s, t, r = activations.sigmoid.fn, activations.tanh.fn, activations.relu.fn
  np.testing.assert_allclose(s(x) + s(-x), 1.0, rtol=1e-15)
  np.testing.assert_allclose(t(-x), -t(x), rtol=0, atol=0)
  np.testing.assert_allclose(r(x) - r(-x), x, rtol=0, atol=0)
  np.testing.assert_allclose(t(x), 2 * s(2 * x) - 1, rtol=1e-13, atol=1e-15)


# 19
@cheap
@given(vectors, floats)
def test_softmax_is_a_shift_invariant_distribution(v, shift):
  z = jnp.asarray(v.reshape(2, 3))
  p = activations.softmax(z)
  assert (p >= 0).all() and (p <= 1).all()
  np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-14)
  np.testing.assert_allclose(activations.softmax(z + shift), p, rtol=1e-12, atol=1e-300)
  m = v.reshape(2, 3).max(-1, keepdims=True)
  ref = (v.reshape(2, 3) - m) - np.log(np.exp(v.reshape(2, 3) - m).sum(-1, keepdims=True))
  np.testing.assert_allclose(activations.log_softmax(z), ref, rtol=1e-13, atol=1e-14)
  g = jnp.asarray(np.cos(np.arange(z.size)).reshape(z.shape))
  np.testing.assert_allclose(activations.softmax_vjp(z, g),
                             jax.vjp(activations.softmax, z)[1](g)[0], rtol=1e-10, atol=1e-14)


@st.composite
def loss_cases(draw):
  name = draw(st.sampled_from(losses.names()))
  b, n = draw(st.sampled_from((1, 3))), draw(st.sampled_from((1, 3)))
  rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
  h = rng.normal(size=(b, n)) * draw(st.sampled_from((0.1, 1.0, 5.0)))
  loss = losses.get(name)
  if name in ("bce", "binary_cross_entropy"):
    h = 1 / (1 + np.exp(-h))                  # probabilities, inside (0, 1)
  if name == "cross_entropy":
    h = np.exp(h) / np.exp(h).sum(-1, keepdims=True)
  if loss.categorical:
    y = rng.integers(0, n, size=b)
  elif name.startswith("b"):
    y = rng.integers(0, 2, size=(b, n)).astype(float)
  else:
    y = rng.normal(size=(b, n))
  return loss, jnp.asarray(h), jnp.asarray(y)


# 20
@cheap
@given(loss_cases(), st.sampled_from(("mean", "sum")))
def test_hand_loss_gradients_equal_autodiff(case, reduction):
  loss, h, y = case
  np.testing.assert_allclose(loss.grad(h, y, reduction),
                             jax.grad(lambda h: loss.fn(h, y, reduction))(h), rtol=1e-10,
                             atol=1e-14)


# 21
@cheap
@given(loss_cases())
def test_loss_reductions_agree_and_are_non_negative(case):
  loss, h, y = case
  terms = loss.fn(h, y, "none")
  assert (terms >= -1e-15).all()
  np.testing.assert_allclose(loss.fn(h, y, "sum"), terms.sum(), rtol=1e-13)
  np.testing.assert_allclose(loss.fn(h, y, "mean"), terms.sum() / terms.size, rtol=1e-13)


# -- initializers ------------------------------------------------------------------


# 22
@given(st.integers(0, 2 ** 16), st.integers(1, 6), st.integers(1, 6),
       st.floats(0.1, 4.0), st.sampled_from(("orthogonal", "gaussian")))
def test_initializers_are_deterministic_and_orthogonal_is_an_isometry(seed, n_in, n_out, g, kind):
  init = (initializers.orthogonal(g) if kind == "orthogonal" else initializers.gaussian(g ** 2))
  key = jax.random.PRNGKey(seed)
  W = init.weight(key, (n_in, n_out), jnp.float64)
  assert W.shape == (n_in, n_out) and W.dtype == jnp.float64
  np.testing.assert_array_equal(W, init.weight(key, (n_in, n_out), jnp.float64))
  if kind == "orthogonal":   # every singular value is the gain
    np.testing.assert_allclose(np.linalg.svd(W, compute_uv=False), g, rtol=1e-12)


# -- graph: generated expressions -----------------------------------------------------


@jax.custom_vjp
def _cube(a):
  return a ** 3


_cube.defvjp(lambda a: (a ** 3, a), lambda a, g: (3 * a ** 2 * g,))

UNARY = {
    "neg": lambda a: -a, "tanh": jnp.tanh, "sin": jnp.sin, "cos": jnp.cos,
    "sigmoid": jax.nn.sigmoid, "square": jnp.square, "abs": jnp.abs,
    "exp_tanh": lambda a: jnp.exp(jnp.tanh(a)), "exp2_tanh": lambda a: jnp.exp2(jnp.tanh(a)),
    "expm1_tanh": lambda a: jnp.expm1(jnp.tanh(a)), "log_1p_sq": lambda a: jnp.log(1 + a * a),
    "log1p_sq": lambda a: jnp.log1p(a ** 2), "sqrt_1p_sq": lambda a: jnp.sqrt(1 + a * a),
    "rsqrt_1p_sq": lambda a: jax.lax.rsqrt(1 + a * a), "cube": lambda a: a ** 3,
    "roll_concat": lambda a: jnp.concatenate([a[1:], a[:1]]),
    "sum_bcast": lambda a: a.sum() + 0 * a, "max_bcast": lambda a: jnp.max(a) + a,
    "min_bcast": lambda a: jnp.min(a) * a, "outer_sum": lambda a: (a[:, None] * a[None, :]).sum(1),
    "where": lambda a: jnp.where(a > 0, a, 0.5 * a), "relu": jax.nn.relu,
    "gate": lambda a: a * (a > 0.5), "reshape_t": lambda a: a.reshape(1, 3).T.reshape(3),
    "squeeze": lambda a: jnp.squeeze(a[None, :], 0),
    "rounding": lambda a: a * jnp.sign(a) + jnp.floor(a) + jnp.round(a) + jnp.ceil(a),
    "compare": lambda a: jnp.where(((a >= 0.2) & ~(a < -0.3)) | (a == 0.7) | (a <= -2)
                                   | (a != a), a, 2 * a),
    "finite": lambda a: jnp.where(jnp.isfinite(a), a, 0.0) * jax.lax.iota(a.dtype, 3),
    "checkpoint": jax.checkpoint(lambda a: jnp.sin(a) * a), "copy": lambda a: jnp.array(a) + a,
    "custom_vjp": _cube,
    "stop": lambda a: a + jax.lax.stop_gradient(a) ** 2,
}
BINARY = {
    "add": jnp.add, "sub": jnp.subtract, "mul": jnp.multiply,
    "div": lambda a, b: a / (1 + b * b), "max": jnp.maximum, "min": jnp.minimum,
    "pow": lambda a, b: (1 + a * a) ** jnp.tanh(b), "dot": lambda a, b: jnp.dot(a, b) * a,
}
expressions = st.recursive(
    st.sampled_from(("x", "y")),
    lambda inner: st.one_of(st.tuples(st.sampled_from(sorted(UNARY)), inner),
                            st.tuples(st.sampled_from(sorted(BINARY)), inner, inner)),
    max_leaves=6)


def _evaluate(expr, x, y):
  if isinstance(expr, str):
    return {"x": x, "y": y}[expr]
  if len(expr) == 2:
    return UNARY[expr[0]](_evaluate(expr[1], x, y))
  return BINARY[expr[0]](_evaluate(expr[1], x, y), _evaluate(expr[2], x, y))


# 23
# Six distinct values in (-2, 2), 0.01 apart and at least 0.005 from 0: no ties at
# max/min and off abs's kink, without filtering.
_DISTINCT = st.lists(st.integers(0, 399), min_size=6, max_size=6, unique=True).map(
    lambda ks: [(k - 199.5) / 100 for k in ks])


@given(expressions, _DISTINCT)
def test_graph_grad_equals_jax_grad_on_generated_expressions(expr, values):
  v = np.array(values)
  x, y = jnp.asarray(v[:3]), jnp.asarray(v[3:])
  f = lambda x, y: jnp.sum(_evaluate(expr, x, y))
  ours = graph.grad(f, argnums=(0, 1))(x, y)
  ref = jax.grad(f, argnums=(0, 1))(x, y)
  _close(ours, ref, rtol=1e-10, atol=1e-12)
  g = graph.trace(f, x, y)
  # The two sums may add the terms in another order: round-off is relative to the
  # terms' magnitudes, not to a sum that cancels to ~0.
  scale = float(jnp.sum(jnp.abs(_evaluate(expr, x, y))))
  np.testing.assert_allclose(g.nodes[g.output].value, f(x, y), rtol=1e-13, atol=1e-14 * scale)


# 24
def _primitives(jaxpr):
  for e in jaxpr.eqns:
    yield e.primitive.name
    for v in e.params.values():
      inner = getattr(v, "jaxpr", v)
      if hasattr(inner, "eqns"):
        yield from _primitives(inner)


def test_generated_expressions_cover_the_supported_primitives():
  seen = set()
  x = jnp.array([0.3, -1.2, 0.7])
  for fn in UNARY.values():
    seen |= set(_primitives(jax.make_jaxpr(fn)(x).jaxpr))
  for fn in BINARY.values():
    seen |= set(_primitives(jax.make_jaxpr(fn)(x, x).jaxpr))
  differentiable = set(graph.supported_primitives()) - {
      "closed_call", "core_call", "pjit", "checkpoint"}  # other JAX versions' names
  assert differentiable - seen == set(), sorted(differentiable - seen)


# -- mean-field theory ---------------------------------------------------------------


variances = st.floats(0.0, 50.0, allow_subnormal=False)


# 25
@given(st.sampled_from(ELEMENTWISE), st.lists(variances, min_size=4, max_size=4),
       st.floats(0.1, 4.0), st.floats(0.0, 1.0))
def test_the_variance_map_is_nondecreasing_in_q(act, qs, sigma_w2, sigma_b2):
  # phi^2 grows with |u| for every registered activation, so E[phi(sqrt(q) z)^2] does.
  q = jnp.asarray(sorted(qs))
  v = np.asarray(mf.variance_map(q, act, sigma_w2, sigma_b2))
  assert (np.diff(v) >= -1e-12 * v[1:]).all()
  assert (v >= sigma_b2 - 1e-15).all()


# 26
@given(st.sampled_from(("tanh", "sigmoid", "relu")), st.lists(st.floats(-1, 1), min_size=4,
                                                             max_size=4), st.floats(0.2, 3.0))
def test_the_correlation_map_is_nondecreasing_and_fixes_one(act, cs, sigma_w2):
  # dc'/dc = sigma_w2 E[phi'(u_1) phi'(u_2)] >= 0 when phi' >= 0.
  c = jnp.asarray(sorted(cs))
  out = np.asarray(mf.correlation_map(c, act, sigma_w2, 0.05))
  assert (np.diff(out) >= -1e-12).all() and (np.abs(out) <= 1 + 1e-12).all()
  np.testing.assert_allclose(mf.correlation_map(1.0, act, sigma_w2, 0.05), 1.0, rtol=1e-12)


# 27
@given(st.sampled_from(ELEMENTWISE), st.floats(0.1, 3.0), st.floats(0.0, 1.0))
def test_the_fixed_point_is_fixed(act, sigma_w2, sigma_b2):
  q = mf.fixed_point(act, sigma_w2, sigma_b2)
  assume(np.isfinite(q))
  np.testing.assert_allclose(mf.variance_map(q, act, sigma_w2, sigma_b2), q, rtol=1e-7,
                             atol=1e-12)


# 28
LEAKY = {p: activations.leaky_relu(p) for p in (0.0, 0.01, 0.5)}   # one compile each


@cheap
@given(variances, variances, st.sampled_from((0.0, 0.01, 0.5)))
def test_relu_chi1_is_half_sigma_w2_and_leaky_adds_the_slope(sigma_w2, sigma_b2, p):
  # Half the smallest normal float is subnormal, which XLA's CPU flushes to 0.
  assume(sigma_w2 == 0.0 or sigma_w2 * (1 + p * p) / 2 >= np.finfo(np.float64).tiny)
  np.testing.assert_allclose(mf.chi1("relu", sigma_w2, sigma_b2), sigma_w2 / 2, rtol=1e-12)
  np.testing.assert_allclose(mf.chi1(LEAKY[p], sigma_w2, sigma_b2),
                             sigma_w2 * (1 + p * p) / 2, rtol=1e-12)


# 29
@costly
@given(st.sampled_from(("tanh", "sigmoid")), st.floats(0.0, 1.0))
def test_critical_sigma_w2_separates_the_phases(act, sigma_b2):
  crit = float(mf.critical_sigma_w2(act, sigma_b2))
  np.testing.assert_allclose(mf.chi1(act, crit, sigma_b2), 1.0, rtol=1e-8)
  assert mf.chi1(act, 0.9 * crit, sigma_b2) < 1 < mf.chi1(act, 1.1 * crit, sigma_b2)


# 30
@costly
@given(st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3, unique=True))
def test_the_tanh_critical_line_rises_with_the_bias(sigma_b2):
  # More bias variance pushes q* up and E[tanh'^2] down: criticality needs more weight.
  b = np.sort(sigma_b2)
  assume(np.diff(b).min() > 1e-3)
  crit = np.asarray(mf.critical_sigma_w2("tanh", jnp.asarray(b)))
  assert (np.diff(crit) > 0).all()


# -- measurements ----------------------------------------------------------------------


# 31
@cheap
@given(st.floats(-5, 5), st.floats(-100, 100), st.sampled_from((5, 12)), st.integers(0, 3),
       st.integers(0, 3))
def test_fit_log_slope_recovers_a_line(slope, offset, layers, skip_in, skip_out):
  assume(layers - skip_in - skip_out >= 2)
  l = np.arange(1, layers + 1)
  y = offset - slope * l
  np.testing.assert_allclose(diagnostics.fit_log_slope(jnp.asarray(y), skip_in, skip_out),
                             slope, rtol=1e-9, atol=1e-9 * (1 + abs(offset)))


# 32
CHAIN = jax.jit(backprop.scalar_chain, static_argnums=3)
CHAIN_GRAD = jax.jit(jax.grad(lambda w, b, x, act: backprop.scalar_chain(w, b, x, act)[0],
                              argnums=(0, 1, 2)), static_argnums=3)


@cheap
@given(st.sampled_from((1, 4)), st.lists(st.floats(-3, 3), min_size=8, max_size=8),
       st.floats(-3, 3), st.sampled_from(("sigmoid", "tanh")))
def test_the_scalar_chain_product_equals_autodiff(n, wb, x, act):
  w, b = jnp.asarray(wb[:n]), jnp.asarray(wb[4:4 + n])
  h, dx, dw, db = CHAIN(w, b, x, act)
  ref = CHAIN_GRAD(w, b, jnp.asarray(x), act)
  _close((dw, db, dx), ref, rtol=1e-10, atol=1e-14)


# -- the store and files -----------------------------------------------------------------


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 63)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=16)
configs = st.dictionaries(st.text(string.ascii_letters, min_size=1, max_size=6),
                          st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
                          min_size=1, max_size=5)


# 33
@cheap
@given(configs, json_values)
def test_the_store_round_trips_any_json_record(tmp_path_factory, config, record):
  store = results.ResultStore(tmp_path_factory.mktemp("store"))
  store.save(config, record)
  assert store.done(config)
  assert store.load(config) == record
  same = lambda v: json.dumps(v, sort_keys=True)
  assert same(store.load(config)) == same(record)                 # -0.0 and types kept
  assert list(store.items()) == [(results.jsonable(config), record)]


# 34
@cheap
@given(configs, st.randoms(use_true_random=False))
def test_config_keys_ignore_key_order_and_see_values(config, rnd):
  items = list(config.items())
  rnd.shuffle(items)
  assert results.config_key(dict(items)) == results.config_key(config)
  k = sorted(config)[0]
  changed = dict(config, **{k: [config[k]]})
  assert results.config_key(changed) != results.config_key(config)


# 35
@cheap
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=6))
def test_csv_round_trips_floats_and_json_stores_nonfinite_as_null(tmp_path_factory, column):
  d = tmp_path_factory.mktemp("csv")
  results.write_csv(d / "t.csv", {"v": np.array(column, float)})
  np.testing.assert_array_equal(results.read_csv(d / "t.csv")["v"], np.array(column, float))
  results.write_json(d / "t.json", column)
  back = results.read_json(d / "t.json")
  assert back == [v if math.isfinite(v) else None for v in column]


# 36
@cheap
@given(st.binary(max_size=2000))
def test_atomic_write_round_trips_bytes_and_leaves_nothing_else(tmp_path_factory, data):
  d = tmp_path_factory.mktemp("bytes")
  results.atomic_write(d / "f", data)
  assert (d / "f").read_bytes() == data
  assert [p.name for p in d.iterdir()] == ["f"]

