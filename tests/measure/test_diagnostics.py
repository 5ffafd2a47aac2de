"""Per-layer diagnostics: the recursion against autodiff through probes, norms, Jacobians."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.core import backprop
from jaxbp.core import initializers
from jaxbp.measure import diagnostics as dg

RTOL = 1e-10     # recursion vs autodiff, float64
ATOL = 1e-14

# Jitted once per (net, loss): eager mode would compile every primitive of
# every scan separately, which is most of the cost of these tests.
_hand = jax.jit(backprop.backward, static_argnums=(0, 1, 5))
_auto = jax.jit(dg.autodiff_backward, static_argnums=(0, 1, 5))
_norms_from_deltas = jax.jit(dg.norms_from_deltas, static_argnums=0)
_layer_norms = jax.jit(dg.layer_norms, static_argnums=0)


def _net(activation="tanh", stack=False, bias=True, depth=5, residual=False, batchnorm=False,
         sizes=None):
  sizes = sizes or (3,) + (6,) * depth + (2,)
  return jaxbp.MLP(sizes, activation, stack=stack, bias=bias, residual=residual,
                   batchnorm=batchnorm)


def _setup(net, seed=0, batch=4):
  # Non-zero biases keep relu units away from the kink at z = 0.
  init = initializers.gaussian(2.0 if net.phi.name.startswith(("relu", "leaky")) else 1.5, 0.1)
  params = net.init(jax.random.PRNGKey(seed), init=init)
  kx, ky = jax.random.split(jax.random.PRNGKey(100 + seed))
  x = jax.random.normal(kx, (batch, net.sizes[0]), jnp.float64)
  y = jax.random.normal(ky, (batch, net.sizes[-1]), jnp.float64)
  return params, x, y


def _assert_trees_close(a, b, rtol=RTOL, atol=ATOL):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    assert u.shape == v.shape
    np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)


@pytest.mark.parametrize("stack", (False, True), ids=("unrolled", "stacked"))
def test_zero_probes_give_the_plain_trace(stack):
  net = _net(stack=stack)
  params, x, _ = _setup(net)
  probed = jax.jit(lambda p, x: dg.probed_trace(net, p, x, dg.zero_probes(net, x)))
  _assert_trees_close(probed(params, x), jax.jit(net.trace)(params, x), rtol=0, atol=0)


# Every activation, both losses, both layouts, in four cases (the full product is
# what tests/core/test_backprop.py covers for the recursion itself).
CASES = (("sigmoid", False, "mse"), ("tanh", True, "softmax_cross_entropy"),
         ("relu", True, "mse"), ("leaky_relu", False, "softmax_cross_entropy"))


@pytest.mark.parametrize("activation,stack,loss", CASES,
                         ids=["-".join(map(str, c)) for c in CASES])
def test_autodiff_probes_match_the_recursion(activation, stack, loss):
  net = _net(activation, stack=stack)
  params, x, y = _setup(net)
  if loss == "softmax_cross_entropy":
    y = jnp.array([0, 1, 1, 0])
  hand = _hand(net, loss, params, x, y, "mean")
  auto = _auto(net, loss, params, x, y, "mean")
  np.testing.assert_allclose(auto.value, hand.value, rtol=1e-14)
  _assert_trees_close(auto.deltas, hand.deltas)
  _assert_trees_close(auto.grads, hand.grads)


def test_gradient_norms_methods_agree():
  net = _net("tanh", stack=True)
  params, x, y = _setup(net)
  norms = [jax.jit(dg.gradient_norms, static_argnums=(0, 1, 5, 6))(
      net, "mse", params, x, y, "mean", m) for m in dg.METHODS]
  _assert_trees_close(*norms)
  # Both are the norms of jax.grad's parameter gradients.
  grads = jax.jit(jax.grad(jaxbp.objective(net, "mse")))(params, x, y)
  np.testing.assert_allclose(norms[1].weight, [np.linalg.norm(p.W) for p in
                                               jaxbp.unstack(grads, net)], rtol=1e-12)


@pytest.mark.parametrize("kind", ("residual", "batchnorm", "no_bias"))
def test_autodiff_probes_match_the_recursion_for_other_nets(kind):
  net = _net("tanh", stack=True, residual=kind == "residual", batchnorm=kind == "batchnorm",
             bias=kind != "no_bias")
  params, x, y = _setup(net)
  hand = _hand(net, "mse", params, x, y, "sum")
  auto = _auto(net, "mse", params, x, y, "sum")
  _assert_trees_close(auto.deltas, hand.deltas)
  _assert_trees_close(auto.grads, hand.grads)


def _naive_norms(net, params, x, y):
  """Norms by unstacking and jnp.linalg.norm, for comparison."""
  out = _hand(net, "mse", params, x, y, "mean")
  grads = jaxbp.unstack(out.grads, net)
  deltas = [d for g, dd in enumerate(out.deltas) for d in (dd if net.is_stacked(g) else [dd])]
  return (np.array([jnp.linalg.norm(p.W) for p in grads]),
          np.array([jnp.linalg.norm(p.b) if p.b is not None else 0.0 for p in grads]),
          np.array([jnp.linalg.norm(d) / np.sqrt(d.shape[0]) for d in deltas]))


@pytest.mark.parametrize("stack,bias,residual", ((False, True, False), (True, False, True)),
                         ids=("unrolled", "stacked-no_bias-residual"))
def test_norms_per_layer(stack, bias, residual):
  net = _net("relu", stack=stack, bias=bias, residual=residual, depth=6)
  params, x, y = _setup(net)
  out = _hand(net, "mse", params, x, y, "mean")
  expected = _naive_norms(net, params, x, y)
  from_grads = _layer_norms(net, out.grads, out.deltas)
  from_deltas = _norms_from_deltas(net, x, out.trace, out.deltas)
  for norms in (from_grads, from_deltas):
    assert all(a.shape == (net.num_layers,) for a in norms)
    for got, want in zip(norms, expected):
      np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)


def test_norms_of_nets_with_unequal_widths():
  net = jaxbp.MLP((3, 7, 5, 4, 2), "tanh")
  params, x, y = _setup(net)
  out = _hand(net, "mse", params, x, y, "mean")
  got = _norms_from_deltas(net, x, out.trace, out.deltas)
  for a, b in zip(got, _naive_norms(net, params, x, y)):
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_norms_neither_overflow_nor_underflow():
  # ||v||^2 of 1e200-sized entries is inf in float64, of 1e-200 ones 0: the
  # scaled norms are still right.
  net = _net("tanh", stack=True)
  params, x, y = _setup(net)
  out = _hand(net, "mse", params, x, y, "mean")
  ref = _norms_from_deltas(net, x, out.trace, out.deltas)
  for scale in (1e-200, 1e200):
    scaled = lambda t: jax.tree_util.tree_map(lambda d: d * scale, t)
    got = _norms_from_deltas(net, x, out.trace, scaled(out.deltas))
    for a, b in zip(got, ref):
      np.testing.assert_allclose(a, b * scale, rtol=1e-12)
    np.testing.assert_allclose(_layer_norms(net, scaled(out.grads), scaled(out.deltas)).weight,
                               ref.weight * scale, rtol=1e-12)


def test_non_finite_gradients_stay_non_finite():
  net = _net("tanh", stack=True)
  params, x, y = _setup(net)
  out = _hand(net, "mse", params, x, y, "mean")
  deltas = (out.deltas[0].at[0, 0].set(jnp.inf), out.deltas[1].at[2, 0, 0].set(jnp.nan),
            out.deltas[2] * 0)
  norms = np.asarray(_norms_from_deltas(net, x, out.trace, deltas).delta)
  assert norms[0] == np.inf and np.isnan(norms[3]) and norms[-1] == 0
  assert np.isfinite(norms[[1, 2, 4]]).all()


def test_diagnostics_jit_and_vmap_over_seeds():
  net = _net("tanh", stack=True)
  _, x, y = _setup(net)

  def diagnose(key):
    params = net.init(key, init="glorot")
    return (dg.gradient_norms(net, "mse", params, x, y),
            dg.jacobian_singular_values(net, params, x))

  keys = jax.random.split(jax.random.PRNGKey(3), 3)
  norms, svals = jax.jit(jax.vmap(diagnose))(keys)
  assert norms.delta.shape == (3, net.num_layers)
  assert svals.shape == (3, x.shape[0], min(net.sizes[0], net.sizes[-1]))
  one = jax.jit(diagnose)
  for i, k in enumerate(keys):
    _assert_trees_close(jax.tree_util.tree_map(lambda a: a[i], (norms, svals)), one(k),
                        rtol=1e-12)


@pytest.mark.parametrize("sizes,stack", (((3, 6, 6, 6, 2), True), ((2, 6, 6, 6, 4), False)),
                         ids=("in>out-stacked", "in<out-unrolled"))
def test_jacobian_matches_jacfwd_per_example(sizes, stack):
  net = _net("tanh", stack=stack, sizes=sizes)
  params, x, _ = _setup(net, batch=3)
  single = lambda xi: net.apply(params, xi[None])[0]
  want = jax.jit(jax.vmap(jax.jacfwd(single)))(x)                 # (batch, out, in)
  for mode in ("auto", "forward", "reverse"):
    got = jax.jit(dg.jacobian, static_argnums=(0, 3))(net, params, x, mode)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
  s = jax.jit(dg.jacobian_singular_values, static_argnums=0)(net, params, x)
  np.testing.assert_allclose(s, np.linalg.svd(np.asarray(want), compute_uv=False), rtol=1e-10)


def test_orthogonal_linear_net_is_an_isometry():
  # Dynamical isometry in its exact form: orthogonal layers, identity activation.
  net = jaxbp.MLP((8,) * 6, "identity", stack=True, bias=False)
  params = net.init(jax.random.PRNGKey(0), init="orthogonal")
  s = jax.jit(dg.jacobian_singular_values, static_argnums=0)(net, params, jnp.ones((2, 8)))
  np.testing.assert_allclose(s, 1.0, rtol=1e-12)


def test_jacobian_refuses_batch_norm():
  net = _net("tanh", batchnorm=True)
  params, x, _ = _setup(net)
  with pytest.raises(ValueError, match="batch-norm"):
    dg.jacobian(net, params, x)


@pytest.mark.parametrize("activation", ("sigmoid", "tanh"))
def test_scalar_chain_profile_is_the_product_form(activation):
  K = 12
  kw, kb = jax.random.split(jax.random.PRNGKey(0))
  w = 2.0 * jax.random.normal(kw, (K,), jnp.float64)
  b = 0.5 * jax.random.normal(kb, (K,), jnp.float64)
  prof = jax.jit(dg.scalar_chain_profile, static_argnums=3)(w, b, 0.3, activation)
  h_K, dh0, dw, db = jax.jit(backprop.scalar_chain, static_argnums=3)(w, b, 0.3, activation)
  np.testing.assert_allclose(prof.through[0], dh0, rtol=1e-13)
  np.testing.assert_allclose(prof.log_abs_through, np.log(np.abs(prof.through)), rtol=1e-12)
  phi = jaxbp.activations.get(activation)

  def tail(h, t):   # the chain from layer t+1 (1-based) on, started at h_t
    for s in range(t, K):
      h = phi.fn(w[s] * h + b[s])
    return h

  # h_{t-1} for every t, then through[t] = dh_K / dh_{t-1} by jax.grad of the tail.
  hs = [jnp.float64(0.3)]
  for t in range(K - 1):
    hs.append(phi.fn(w[t] * hs[-1] + b[t]))
  grads = [jax.jit(jax.grad(tail), static_argnums=1)(h, t) for t, h in enumerate(hs)]
  np.testing.assert_allclose(prof.through, grads, rtol=1e-12)
  np.testing.assert_allclose(prof.local, phi.grad(prof.z) * w, rtol=1e-14)
  np.testing.assert_allclose(tail(hs[0], 0), h_K, rtol=1e-14)


def test_fit_log_slope():
  fit = jax.jit(dg.fit_log_slope, static_argnums=(1, 2))
  layers = np.arange(1, 41, dtype=np.float64)
  y = 3.0 - 0.25 * layers           # grows by 0.25 per layer going backwards
  np.testing.assert_allclose(fit(y, 0, 0), 0.25, rtol=1e-13)
  # Transients at the ends are skipped; non-finite layers are left out.
  bent = y.copy()
  bent[:5] += 10.0
  bent[-3:] -= 7.0
  bent[20], bent[21] = np.inf, -np.inf
  batched = np.stack([y, 2 * y, bent])
  np.testing.assert_allclose(fit(batched, 5, 3), [0.25, 0.5, 0.25], rtol=1e-13)
  assert np.isnan(fit(y[:3], 1, 1))    # one layer left: no slope
