"""The hand-derived delta recursion against jax.grad and finite differences, in float64."""
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.core import backprop
from jaxbp.core import gradcheck

ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "leaky_relu")
# (loss, output activation): every loss with the output it is meant for, plus
# the fused pairs (sigmoid + BCE, softmax + CE) and a softmax output that must
# go through the full Jacobian (softmax + MSE).
LOSS_CASES = (
    ("mse", "identity"),
    ("binary_cross_entropy", "sigmoid"),
    ("binary_cross_entropy_with_logits", "identity"),
    ("softmax_cross_entropy", "identity"),
    ("cross_entropy", "softmax"),
    ("mse", "softmax"),
)
DEPTHS = (1, 2, 5, 30)   # number of affine layers
IN, WIDTH, OUT = 3, 4, 3
RTOL_AUTODIFF = 1e-10
RTOL_FD = 1e-6


def _net(activation, out_act, depth, bias, stack):
  sizes = (IN,) + (WIDTH,) * (depth - 1) + (OUT,)
  return jaxbp.MLP(sizes, activation, output_activation=out_act, bias=bias, stack=stack)


def _data(loss, batch, key):
  kx, ky = jax.random.split(key)
  x = jax.random.normal(kx, (batch, IN), jnp.float64)
  if loss in ("softmax_cross_entropy", "cross_entropy"):
    y = jax.random.randint(ky, (batch,), 0, OUT)
  elif loss.startswith("binary"):
    y = jax.random.uniform(ky, (batch, OUT), jnp.float64)  # soft targets in (0, 1)
  else:
    y = jax.random.normal(ky, (batch, OUT), jnp.float64)
  return x, y


def _init_for(activation):
  # Keep deep nets in a regime where gradients neither vanish to 0 nor blow up,
  # so that relative errors measure the recursion, not underflow.
  return {"relu": "he", "leaky_relu": "he", "identity": "lecun"}.get(activation, "glorot")


def _params(net, activation, seed):
  # Non-zero biases, so that a dead ReLU unit sits at z = b != 0, not on the kink.
  params = net.init(jax.random.PRNGKey(seed), init=_init_for(activation))
  if not net.bias:
    return params
  keys = jax.random.split(jax.random.PRNGKey(1000 + seed), len(params))
  return tuple(jaxbp.Dense(p.W, 0.1 * jax.random.normal(k, p.b.shape, p.b.dtype))
               for p, k in zip(params, keys))


def _dead_layers(net, grads):
  """1-based layers with an all-zero gradient leaf (W, b, gamma or beta)."""
  return [k + 1 for k, layer in enumerate(jaxbp.unstack(grads, net))
          if not all(bool(jnp.any(leaf != 0)) for leaf in jax.tree_util.tree_leaves(layer))]


def _assert_live(net, grads, what="gradient"):
  # Dead ReLUs (or an underflow) would make a hand-vs-reference comparison 0 against 0.
  dead = _dead_layers(net, grads)
  assert not dead, (f"{what}: layers {dead} have an all-zero gradient leaf, so comparing it "
                    "tests nothing; choose a key or inputs that keep every layer live")


def _live_params(net, activation, seed, inputs, tries=64):
  """``_params`` for the first seed from ``seed`` on whose ReLU net some example of
  each input batch has an active unit in every hidden layer, so that the gradient
  reaches every layer. A narrow deep ReLU net is dead for most keys (width 4,
  depth 30, no bias: about 1 in 12), and comparing its zeros would test nothing.
  Other activations keep ``seed``; the tests assert liveness on every gradient."""
  if activation != "relu":
    return _params(net, activation, seed)

  def live(s):
    trace = [net.trace(_params(net, activation, s), x) for x in inputs]
    flags = []
    for t in trace:
      hidden = [z.reshape((-1,) + z.shape[-2:]) for z in t.z[:-1]]   # (layers, batch, width)
      if hidden:                                                      # depth 1 has none
        active = jnp.concatenate([jnp.any(z > 0, axis=-1) for z in hidden])  # (layers, batch)
        flags.append(jnp.any(jnp.all(active, axis=0)))
    return jnp.all(jnp.stack(flags)) if flags else jnp.array(True)

  if bool(live(seed)):        # most nets are live: no search, no compile
    return _params(net, activation, seed)
  # One compile for all the tries: eager dispatch of 64 deep traces takes longer.
  ok = np.asarray(jax.jit(jax.vmap(live))(jnp.arange(seed, seed + tries)))
  if not ok.any():
    pytest.fail(f"no live ReLU net among params seeds {seed}..{seed + tries - 1}")
  return _params(net, activation, seed + int(np.argmax(ok)))


def _abs_sum(grads):
  """sum |g| over a leading (seed or example) axis: live where any entry is."""
  return jax.tree_util.tree_map(lambda a: jnp.abs(a).sum(0), grads)


def _away_from_kink(net, params, x):
  z = jax.tree_util.tree_leaves(net.trace(params, x).z)
  return min(float(jnp.min(jnp.abs(a))) for a in z)


# The full product activation x loss x depth x bias x stack (360 cases) takes
# ~3 core-minutes, mostly XLA compiles. By default every (activation, loss,
# depth) triple runs once, with (bias, stack) rotating through the four
# combinations along both the (activation, loss) pairs and the depths, so that
# every activation, every loss and every depth meets each combination (a stack
# needs depth >= 3). JAXBP_FULL_GRID=1 runs the full product.
_FULL = os.environ.get("JAXBP_FULL_GRID") == "1"
_BIAS_STACK = ((True, True), (False, False), (True, False), (False, True))


def _cases():
  for i, (a, lc, d) in enumerate(itertools.product(ACTIVATIONS, LOSS_CASES, DEPTHS)):
    pair_index, depth_index = divmod(i, len(DEPTHS))
    # Depth 30 runs eagerly at ~0.9 s a case: by default a third of the (activation,
    # loss) pairs go that deep, rotated so that every activation and every loss does.
    pair = divmod(pair_index, len(LOSS_CASES))
    if not _FULL and d == 30 and sum(pair) % 3:
      continue
    combos = _BIAS_STACK if _FULL else (_BIAS_STACK[(pair_index + depth_index) % 4],)
    for bias, stack in combos:
      stack = stack and d >= 3   # a stack needs at least one width -> width layer
      yield pytest.param(a, lc, d, bias, stack, id=(
          f"{a}-{lc[0]}+{lc[1]}-depth{d}-{'bias' if bias else 'nobias'}-"
          f"{'stacked' if stack else 'unrolled'}"))


CASES = list(dict.fromkeys(_cases(), None))


@pytest.mark.device
@pytest.mark.parametrize("activation,loss_case,depth,bias,stack", CASES)
def test_hand_recursion_matches_autodiff(activation, loss_case, depth, bias, stack):
  loss, out_act = loss_case
  net = _net(activation, out_act, depth, bias, stack)
  batches = {batch: _data(loss, batch, jax.random.PRNGKey(100 + batch)) for batch in (1, 16)}
  params = _live_params(net, activation, depth, [x for x, _ in batches.values()])
  # Eager: op-by-op dispatch is faster here than compiling 30 unrolled layers
  # twice per case (the finite-difference test below runs it under jit).
  hand = backprop.value_and_grad
  auto = jax.value_and_grad(jaxbp.objective(net, loss))
  for batch, (x, y) in batches.items():
    v_hand, g_hand = hand(net, loss, params, x, y)
    v_auto, g_auto = auto(params, x, y)
    gradcheck.check_same_structure(g_hand, g_auto)
    _assert_live(net, g_auto, f"batch {batch}: jax.grad")
    np.testing.assert_allclose(v_hand, v_auto, rtol=1e-13)
    err = gradcheck.max_relative_error(g_hand, g_auto)
    assert err <= RTOL_AUTODIFF, f"batch {batch}: hand vs jax.grad rel err {err:.2e}\n" + gradcheck.report(g_hand, g_auto)


# Finite differences (~1 s a case): every loss at depth 5 with tanh and relu, every
# activation at depth 5 with MSE and softmax cross-entropy, and every depth with
# softmax cross-entropy (the full product with JAXBP_FULL_GRID=1). The hand recursion
# meets jax.grad on the whole product above; this is the independent third reference.
_FD_LOSSES = (("mse", "identity"), ("softmax_cross_entropy", "identity"))
FD_CASES = [
    pytest.param(a, lc, d, id=f"{a}-{lc[0]}+{lc[1]}-depth{d}")
    for a, lc, d in itertools.product(ACTIVATIONS, LOSS_CASES, DEPTHS)
    if _FULL or (d == 5 and (a in ("tanh", "relu") or lc in _FD_LOSSES))
    or lc == ("softmax_cross_entropy", "identity")
]


@pytest.mark.device
@pytest.mark.parametrize("activation,loss_case,depth", FD_CASES)
def test_hand_recursion_matches_finite_differences(activation, loss_case, depth):
  loss, out_act = loss_case
  net = _net(activation, out_act, depth, bias=True, stack=depth >= 3)
  params = _live_params(net, activation, depth, [_data(loss, 16, jax.random.PRNGKey(0))[0]])
  # A central difference with eps = 1e-6 must not step across a ReLU kink: take
  # the first data key whose pre-activations all keep |z| > 1e-4.
  for seed in range(50):
    x, y = _data(loss, 16, jax.random.PRNGKey(seed))
    if activation not in ("relu", "leaky_relu") or _away_from_kink(net, params, x) > 1e-4:
      break
  else:
    pytest.fail("no test point away from the ReLU kink")
  value, g_hand = jax.jit(backprop.value_and_grad, static_argnums=(0, 1))(net, loss, params, x, y)
  g_fd = gradcheck.numerical_grad(jaxbp.objective(net, loss), params, x, y)
  # On the hand gradient: finite differences round a deep sigmoid net's first-layer
  # gradient (~1e-21) to exactly 0, which the round-off bound below allows for.
  _assert_live(net, g_hand, "hand")
  # Per leaf: |hand - fd| <= RTOL_FD * max|g| + the difference quotient's
  # round-off, ~ ulp(F) / eps. Deep sigmoid nets have first-layer gradients
  # near 1e-5, where that round-off (~1e-10) and not the recursion decides.
  roundoff = 10 * np.finfo(np.float64).eps * max(abs(float(value)), 1.0) / 1e-6
  for e in gradcheck.relative_errors(g_hand, g_fd):
    scale = e.max_abs_error / max(e.relative_error, 1e-300)
    assert e.max_abs_error <= RTOL_FD * scale + roundoff, gradcheck.report(g_hand, g_fd)


@pytest.mark.device
def test_deltas_are_dloss_dz():
  # Independent definition of delta_k: add a zero probe to z_k and differentiate
  # with respect to the probe.
  net = jaxbp.MLP((3, 5, 5, 5, 3), "tanh", stack=True)
  params = net.init(jax.random.PRNGKey(0), "glorot")
  x, y = _data("mse", 8, jax.random.PRNGKey(1))

  def loss_with_probes(probes):
    h = x
    layers = jaxbp.unstack(params, net)
    for k, (p, e) in enumerate(zip(layers, probes)):
      z = h @ p.W + p.b[None, :] + e
      h = net.phi_out.fn(z) if k == len(layers) - 1 else net.phi.fn(z)
    return jaxbp.losses.mse.fn(h, y)

  probes = [jnp.zeros((8, n)) for n in net.sizes[1:]]
  expected = jax.grad(loss_with_probes)(probes)
  assert all(bool(jnp.any(e != 0)) for e in expected), "a zero delta would compare 0 with 0"
  got = backprop.deltas(net, "mse", params, x, y)
  flat = [got[0]] + list(got[1]) + [got[2]]
  for k, (a, b) in enumerate(zip(flat, expected)):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15, err_msg=f"layer {k + 1}")


def test_sum_reduction_and_remat():
  net = jaxbp.MLP((3, 6, 6, 6, 6, 3), "tanh", stack=True, remat=True)
  params = net.init(jax.random.PRNGKey(0), "glorot")
  x, y = _data("mse", 5, jax.random.PRNGKey(2))
  _, g_hand = backprop.value_and_grad(net, "mse", params, x, y, reduction="sum")
  g_auto = jax.grad(jaxbp.objective(net, "mse", reduction="sum"))(params, x, y)
  _assert_live(net, g_auto)
  assert gradcheck.max_relative_error(g_hand, g_auto) <= RTOL_AUTODIFF


def test_vmap_over_seeds_and_per_example():
  net = jaxbp.MLP((3, 4, 4, 4, 3), "tanh", stack=True)
  x, y = _data("mse", 6, jax.random.PRNGKey(3))
  keys = jax.random.split(jax.random.PRNGKey(0), 5)
  params = jax.vmap(lambda k: net.init(k, "glorot"))(keys)
  hand = jax.vmap(lambda p: backprop.grad(net, "mse", p, x, y))(params)
  auto = jax.vmap(lambda p: jax.grad(jaxbp.objective(net, "mse"))(p, x, y))(params)
  _assert_live(net, _abs_sum(auto), "jax.grad, summed over seeds")
  assert gradcheck.max_relative_error(hand, auto) <= RTOL_AUTODIFF
  # Per-example gradients: vmap over the batch, one example at a time.
  p0 = jax.tree_util.tree_map(lambda a: a[0], params)
  per_ex = jax.vmap(lambda xi, yi: backprop.grad(net, "mse", p0, xi[None], yi[None], "sum"))(x, y)
  total = backprop.grad(net, "mse", p0, x, y, "sum")
  summed = jax.tree_util.tree_map(lambda a: a.sum(0), per_ex)
  assert gradcheck.max_relative_error(summed, total) <= 1e-12


# -- the seeds' other forms ----------------------------------------------------


@pytest.mark.parametrize("activation", ("sigmoid", "tanh", "relu"))
def test_seed002_bias_augmented_form(activation):
  net = jaxbp.MLP((3, 5, 4, 3), activation, output_activation="sigmoid")
  params = net.init(jax.random.PRNGKey(0), "glorot_uniform")
  params = tuple(jaxbp.Dense(p.W, 0.1 * jnp.arange(p.W.shape[1], dtype=jnp.float64)) for p in params)
  x, y = _data("mse", 7, jax.random.PRNGKey(4))
  aug = [jnp.concatenate([p.W, p.b[None, :]], axis=0) for p in params]
  v_aug, g_aug = backprop.augmented_grads(aug, x, y, activation, "mse", "sigmoid")
  v, g = backprop.value_and_grad(net, "mse", params, x, y)
  _assert_live(net, g)
  np.testing.assert_allclose(v_aug, v, rtol=1e-14)
  for ga, gp in zip(g_aug, g):
    np.testing.assert_allclose(ga, jnp.concatenate([gp.W, gp.b[None, :]], axis=0), rtol=1e-12, atol=1e-15)


def test_seed003_scalar_chain_product_form():
  w = jnp.array([1.5, -2.0, 0.7, 3.0, -1.1])
  b = jnp.array([0.1, -0.2, 0.3, 0.0, 0.5])
  x0 = jnp.array(0.4)

  def chain(w, b, x):
    h = x
    for k in range(w.shape[0]):
      h = jax.nn.sigmoid(w[k] * h + b[k])
    return h

  h, dx, dw, db = backprop.scalar_chain(w, b, x0, "sigmoid")
  np.testing.assert_allclose(h, chain(w, b, x0), rtol=1e-14)
  np.testing.assert_allclose(dx, jax.grad(chain, 2)(w, b, x0), rtol=1e-12)
  np.testing.assert_allclose(dw, jax.grad(chain, 0)(w, b, x0), rtol=1e-12)
  np.testing.assert_allclose(db, jax.grad(chain, 1)(w, b, x0), rtol=1e-12)
  # sigmoid' <= 1/4, so |dh_K/dh_0| <= prod |w_t| / 4^K (seed 003 §4.4).
  assert abs(float(dx)) <= float(jnp.prod(jnp.abs(w))) / 4 ** 5


# -- the seeds' closed forms ----------------------------------------------------


def test_seed000_perceptron_closed_form():
  # Seed 000 §7.4-7.5: one sigmoid layer, L = 1/2 sum_k (o_k - t_k)^2
  # (= mse "sum" / 2) gives dL/dw_jk = (o_k - t_k) o_k (1 - o_k) x_j.
  x = jnp.array([[0.5, -1.2, 2.0]])
  t = jnp.array([[1.0, 0.0]])
  net = jaxbp.MLP((3, 2), output_activation="sigmoid", bias=False)
  params = net.init(jax.random.PRNGKey(0), "glorot")
  g = backprop.grad(net, "mse", params, x, t, reduction="sum")[0].W / 2
  o = jax.nn.sigmoid(x @ params[0].W)
  closed = x[0][:, None] * ((o - t) * o * (1 - o))[0][None, :]
  np.testing.assert_allclose(g, closed, rtol=1e-13)


def test_seed004_network_h1_gradient_matches_autodiff_and_torch():
  x = jnp.array([[1.0, 2.0, 1.5], [3.0, 4.0, 2.3], [5.0, 6.0, 1.2]])
  z = jnp.array([0, 2, 1])
  net = jaxbp.MLP((3, 3, 2, 3), "relu")
  # PyTorch's nn.Linear default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  def torch_init(seed):
    params = []
    for k, (fi, fo) in enumerate(zip(net.sizes[:-1], net.sizes[1:])):
      kw, kb = jax.random.split(jax.random.PRNGKey(seed + k))
      lim = 1 / np.sqrt(fi)
      params.append(jaxbp.Dense(jax.random.uniform(kw, (fi, fo), jnp.float64, -lim, lim),
                                jax.random.uniform(kb, (fo,), jnp.float64, -lim, lim)))
    return tuple(params)

  # This narrow ReLU net is dead on these inputs for many keys (the README says
  # so): take the first key whose gradient reaches every layer, so that the
  # comparisons below are not of zeros.
  auto = jax.grad(jaxbp.objective(net, "softmax_cross_entropy"))
  for seed in range(10, 60):
    params = torch_init(seed)
    g_auto = auto(params, x, z)
    if not _dead_layers(net, g_auto):
      break
  _assert_live(net, g_auto)
  g_hand = backprop.grad(net, "softmax_cross_entropy", params, x, z)
  assert gradcheck.max_relative_error(g_hand, g_auto) <= RTOL_AUTODIFF
  torch = pytest.importorskip("torch")
  layers = [torch.nn.Linear(p.W.shape[0], p.W.shape[1]).double() for p in params]
  with torch.no_grad():
    for lin, p in zip(layers, params):
      lin.weight.copy_(torch.tensor(np.asarray(p.W).T))   # torch stores (out, in)
      lin.bias.copy_(torch.tensor(np.asarray(p.b)))
  h = torch.tensor(np.asarray(x))
  h = torch.relu(layers[0](h))
  h = torch.relu(layers[1](h))
  loss = torch.nn.CrossEntropyLoss()(layers[2](h), torch.tensor(np.asarray(z)))
  loss.backward()
  for lin, g in zip(layers, g_hand):
    np.testing.assert_allclose(lin.weight.grad.numpy().T, g.W, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(lin.bias.grad.numpy(), g.b, rtol=1e-12, atol=1e-15)


# -- residual and batch-normalised nets ------------------------------------------

VARIANTS = {"residual": dict(residual=True), "batchnorm": dict(batchnorm=True),
            "residual+batchnorm": dict(residual=True, batchnorm=True)}


def _perturbed(params, scale=0.1):
  # Move gamma off 1 and beta/b off 0, so their gradients are generic.
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(99), len(leaves))
  return jax.tree_util.tree_unflatten(
      tree, [a + scale * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)])


@pytest.mark.parametrize("stack", (False, True), ids=("unrolled", "stacked"))
@pytest.mark.parametrize("variant", tuple(VARIANTS))
@pytest.mark.parametrize("activation", ("sigmoid", "tanh", "relu"))
def test_residual_and_batchnorm_match_autodiff_and_fd(activation, variant, stack):
  net = jaxbp.MLP.uniform(IN, WIDTH, 6, OUT, activation=activation, stack=stack,
                          **VARIANTS[variant])
  params = _perturbed(net.init(jax.random.PRNGKey(0), _init_for(activation)))
  x, y = _data("softmax_cross_entropy", 16, jax.random.PRNGKey(5))
  value, g_hand = backprop.value_and_grad(net, "softmax_cross_entropy", params, x, y)
  g_auto = jax.grad(jaxbp.objective(net, "softmax_cross_entropy"))(params, x, y)
  gradcheck.check_same_structure(g_hand, g_auto)
  _assert_live(net, g_auto)
  err = gradcheck.max_relative_error(g_hand, g_auto)
  assert err <= RTOL_AUTODIFF, gradcheck.report(g_hand, g_auto)
  if activation != "relu" and not stack:
    g_fd = gradcheck.numerical_grad(jaxbp.objective(net, "softmax_cross_entropy"), params, x, y)
    assert gradcheck.max_relative_error(g_hand, g_fd) <= RTOL_FD, gradcheck.report(g_hand, g_fd)


def test_batchnorm_normalises_and_residual_keeps_identity_path():
  net = jaxbp.MLP.uniform(IN, 8, 4, OUT, activation="tanh", batchnorm=True)
  params = net.init(jax.random.PRNGKey(0))
  x, _ = _data("mse", 32, jax.random.PRNGKey(1))
  z = net.trace(params, x).z
  for zk in z[:-1]:   # gamma = 1, beta = 0: zero mean, unit variance per feature
    np.testing.assert_allclose(zk.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(zk.var(0), 1.0, rtol=1e-3)
  # A residual net with zero hidden weights is the identity through its hidden stack.
  res = jaxbp.MLP.uniform(IN, 5, 4, OUT, activation="tanh", residual=True, bias=False)
  p = list(res.init(jax.random.PRNGKey(0)))
  for k in range(1, len(p) - 1):
    p[k] = jaxbp.Dense(jnp.zeros_like(p[k].W), None)
  h = res.trace(tuple(p), x).h
  np.testing.assert_array_equal(h[-2], h[0])


# -- per-example gradients -------------------------------------------------------

PER_EXAMPLE_CASES = [
    # (activation, (loss, output activation), depth, bias, stack, residual)
    ("tanh", ("mse", "identity"), 1, True, False, False),
    ("sigmoid", ("binary_cross_entropy", "sigmoid"), 2, True, False, False),
    ("relu", ("softmax_cross_entropy", "identity"), 5, False, False, False),
    ("leaky_relu", ("cross_entropy", "softmax"), 5, True, True, False),
    ("tanh", ("mse", "softmax"), 6, False, True, False),
    ("sigmoid", ("binary_cross_entropy_with_logits", "identity"), 12, True, True, False),
    ("tanh", ("softmax_cross_entropy", "identity"), 6, True, False, True),
    ("relu", ("mse", "identity"), 6, True, True, True),
    ("identity", ("mse", "identity"), 3, False, True, True),
]


def _single_example_grads(net, loss, params, x, y, reduction="mean"):
  """The reference: jax.grad of the objective on every batch of one, vmapped."""
  obj = jaxbp.objective(net, loss, reduction)
  return jax.vmap(lambda xi, yi: jax.grad(obj)(params, xi[None], yi[None]))(x, y)


@pytest.mark.parametrize("reduction", ("mean", "sum"))
@pytest.mark.parametrize(
    "activation,loss_case,depth,bias,stack,residual", [
        pytest.param(*c, id=f"{c[0]}-{c[1][0]}+{c[1][1]}-depth{c[2]}-{'bias' if c[3] else 'nobias'}-"
                           f"{'stacked' if c[4] else 'unrolled'}{'-residual' if c[5] else ''}")
        for c in PER_EXAMPLE_CASES])
def test_per_example_grads_match_vmap_grad(activation, loss_case, depth, bias, stack, residual,
                                           reduction):
  loss, out_act = loss_case
  net = jaxbp.MLP((IN,) + (WIDTH,) * (depth - 1) + (OUT,), activation, output_activation=out_act,
                  bias=bias, stack=stack and depth >= 3, residual=residual)
  params = _params(net, activation, depth)
  x, y = _data(loss, 7, jax.random.PRNGKey(40 + depth))
  got = backprop.per_example_grads(net, loss, params, x, y, reduction)
  ref = _single_example_grads(net, loss, params, x, y, reduction)
  gradcheck.check_same_structure(got, ref)
  _assert_live(net, _abs_sum(ref), "jax.grad, summed over the examples")
  for g, r, p in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref),
                     jax.tree_util.tree_leaves(params)):
    assert g.shape == (7,) + p.shape          # a leading batch axis on every leaf
  err = gradcheck.max_relative_error(got, ref)
  assert err <= RTOL_AUTODIFF, gradcheck.report(got, ref)
  # Summed over the batch: the batch's "sum" gradient (of the per-example loss terms).
  if reduction == "sum":
    total = backprop.grad(net, loss, params, x, y, "sum")
    summed = jax.tree_util.tree_map(lambda a: a.sum(0), got)
    assert gradcheck.max_relative_error(summed, total) <= 1e-12


def test_per_example_grads_jit_and_vmap():
  net = jaxbp.MLP((3, 5, 5, 5, 3), "tanh", stack=True)
  x, y = _data("softmax_cross_entropy", 6, jax.random.PRNGKey(8))
  params = net.init(jax.random.PRNGKey(0), "glorot")
  jitted = jax.jit(backprop.per_example_grads, static_argnums=(0, 1))
  got = jitted(net, "softmax_cross_entropy", params, x, y)
  ref = _single_example_grads(net, "softmax_cross_entropy", params, x, y)
  _assert_live(net, _abs_sum(ref), "jax.grad, summed over the examples")
  assert gradcheck.max_relative_error(got, ref) <= RTOL_AUTODIFF
  # vmap over parameter seeds: one batch of per-example gradients per seed.
  keys = jax.random.split(jax.random.PRNGKey(1), 3)
  many = jax.vmap(lambda k: net.init(k, "glorot"))(keys)
  per_seed = jax.jit(jax.vmap(
      lambda p: backprop.per_example_grads(net, "softmax_cross_entropy", p, x, y)))(many)
  for i in range(3):
    p_i = jax.tree_util.tree_map(lambda a: a[i], many)
    g_i = jax.tree_util.tree_map(lambda a: a[i], per_seed)
    ref_i = _single_example_grads(net, "softmax_cross_entropy", p_i, x, y)
    assert gradcheck.max_relative_error(g_i, ref_i) <= RTOL_AUTODIFF


_PE_NET = jaxbp.MLP((3, 4, 2))
_PE_P = _PE_NET.init(jax.random.PRNGKey(0))
_PE_X, _PE_Y = jnp.ones((5, 3)), jnp.zeros((5, 2))

# (id, thunk, exception type, words that must appear in the message), as in test_validation.py
PER_EXAMPLE_BAD_INPUT = [
    ("batchnorm", lambda: backprop.per_example_grads(
        jaxbp.MLP((3, 4, 2), batchnorm=True), "mse",
        jaxbp.MLP((3, 4, 2), batchnorm=True).init(jax.random.PRNGKey(0)), _PE_X, _PE_Y),
     ValueError, ["batchnorm", "couple the examples", "no per-example gradient"]),
    ("x-wrong-width", lambda: backprop.per_example_grads(
        _PE_NET, "mse", _PE_P, jnp.ones((5, 2)), _PE_Y), ValueError, ["(5, 2)", "(batch, 3)"]),
    ("x-1d", lambda: backprop.per_example_grads(_PE_NET, "mse", _PE_P, jnp.ones(3), _PE_Y[0]),
     ValueError, ["(3,)", "x[None]"]),
    ("y-wrong-shape", lambda: backprop.per_example_grads(
        _PE_NET, "mse", _PE_P, _PE_X, jnp.zeros((5,))), ValueError, ["(5,)", "(5, 2)"]),
    ("bad-reduction", lambda: backprop.per_example_grads(
        _PE_NET, "mse", _PE_P, _PE_X, _PE_Y, reduction="none"), ValueError, ["'none'", "'mean' or 'sum'"]),
    ("unknown-loss", lambda: backprop.per_example_grads(_PE_NET, "hinge", _PE_P, _PE_X, _PE_Y),
     ValueError, ["hinge", "mse"]),
    ("params-other-net", lambda: backprop.per_example_grads(
        _PE_NET, "mse", jaxbp.MLP((3, 5, 2)).init(jax.random.PRNGKey(0)), _PE_X, _PE_Y),
     ValueError, ["(3, 5)", "(3, 4)", "another net"]),
]


@pytest.mark.parametrize("thunk,exc,words", [c[1:] for c in PER_EXAMPLE_BAD_INPUT],
                         ids=[c[0] for c in PER_EXAMPLE_BAD_INPUT])
def test_per_example_grads_bad_input(thunk, exc, words):
  with pytest.raises(exc) as info:
    thunk()
  missing = [w for w in words if w not in str(info.value)]
  assert not missing, f"message lacks {missing}: {info.value}"
