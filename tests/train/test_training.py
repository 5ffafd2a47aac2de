"""Training: optax optimizers against the seeds' hand updates, torch.optim.SGD and lstsq."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxbp
from jaxbp.train import training

# Seed 004's example: a (3, 3, 2, 3) ReLU net, three samples, labels z = [0, 2, 1].
SEED_X = jnp.array([[1.0, 2.0, 1.5], [3.0, 4.0, 2.3], [5.0, 6.0, 1.2]])
SEED_Z = jnp.array([0, 2, 1])
SEED_NET = jaxbp.MLP((3, 3, 2, 3), "relu")
LOSS = "softmax_cross_entropy"
ATOL = 1e-12


def _torch_like_init(net, key):
  """nn.Linear's default: W and b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as the seed's net had.

  (He init with zero biases leaves this tiny net's 2-unit ReLU layer dead for
  about half of all keys: the loss then stays at log 3.)
  """
  params = []
  for fan_in, fan_out in zip(net.sizes[:-1], net.sizes[1:]):
    key, kw, kb = jax.random.split(key, 3)
    bound = 1.0 / math.sqrt(fan_in)
    params.append(jaxbp.Dense(
        jax.random.uniform(kw, (fan_in, fan_out), jnp.float64, -bound, bound),
        jax.random.uniform(kb, (fan_out,), jnp.float64, -bound, bound)))
  return tuple(params)


def _max_diff(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  return max(float(jnp.max(jnp.abs(u - v))) for u, v in
             zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.fixture(scope="module")
def seed_params():
  return _torch_like_init(SEED_NET, jax.random.PRNGKey(0))


# -- the optimizer ---------------------------------------------------------------


def test_seed004_momentum_by_hand_is_optax_sgd_momentum(seed_params):
  # Seed 004: v = gamma v + eta grad; w = w - v, written out by hand.
  eta, gamma, steps = 0.01, 0.9, 100
  grad = jax.grad(jaxbp.objective(SEED_NET, LOSS))

  @jax.jit
  def seed_step(w, v):
    v = jax.tree_util.tree_map(lambda v, g: gamma * v + eta * g, v, grad(w, SEED_X, SEED_Z))
    return jax.tree_util.tree_map(lambda w, v: w - v, w, v), v

  w, v, hand = seed_params, jax.tree_util.tree_map(jnp.zeros_like, seed_params), []
  for _ in range(steps):
    w, v = seed_step(w, v)
    hand.append(w)
  tx = optax.sgd(eta, momentum=gamma)
  p, state = seed_params, tx.init(seed_params)
  for t in range(steps):
    p, state, _ = training.train_step(SEED_NET, LOSS, tx, p, state, SEED_X, SEED_Z)
    assert _max_diff(p, hand[t]) <= ATOL, f"step {t}"
  out = training.fit(SEED_NET, LOSS, seed_params, SEED_X, SEED_Z,
                     training.optimizer("sgd", eta, momentum=gamma), steps=steps)
  assert _max_diff(out.params, hand[-1]) <= ATOL


def test_seed004_example_trains_with_falling_loss(seed_params):
  out = training.fit(SEED_NET, LOSS, seed_params, SEED_X, SEED_Z,
                     training.optimizer("sgd", 0.01, momentum=0.9), steps=100)
  loss = np.asarray(out.history.loss)
  assert loss.shape == (100,) and np.isfinite(loss).all()
  assert (np.diff(loss) < 0).all()        # falls at every step, as in the seed's printout
  assert loss[-1] < 0.5 * loss[0]         # 1.135 -> 0.447 with this init


def test_optimizer_chain_order_clip_then_decay_then_sgd():
  w = {"w": jnp.array([1.0, -2.0])}
  g = {"w": jnp.array([30.0, 40.0])}            # norm 50
  tx = training.optimizer("sgd", 0.1, clip_norm=5.0, weight_decay=0.01)
  updates, _ = tx.update(g, tx.init(w), w)
  # Pascanu et al. clip of the raw gradient, then coupled L2 (+ lambda w), then -eta.
  expected = -0.1 * (g["w"] * 5.0 / 50.0 + 0.01 * w["w"])
  np.testing.assert_allclose(updates["w"], expected, rtol=1e-14)


def test_optimizer_nesterov_and_cache():
  assert training.optimizer("momentum", 0.1) is training.optimizer("momentum", 0.1)
  w, g = jnp.array([1.0]), jnp.array([2.0])
  tx = training.optimizer("nesterov", 0.1, momentum=0.5)
  updates, _ = tx.update(g, tx.init(w), w)
  np.testing.assert_allclose(updates, -0.1 * (g + 0.5 * g))   # g + gamma v, v = g


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "adam"}, "valid names are sgd, momentum, nesterov"),
    ({"learning_rate": 0.0}, "learning_rate must be > 0"),
    ({"learning_rate": -1.0}, "learning_rate must be > 0"),
    ({"momentum": 1.0}, r"momentum must lie in \[0, 1\)"),
    ({"clip_norm": 0.0}, "clip_norm must be > 0"),
    ({"learning_rate": float("inf")}, "learning_rate must be > 0 and finite"),
    ({"weight_decay": float("inf")}, "weight_decay must be > 0 and finite"),
], ids=["name", "zero_lr", "negative_lr", "momentum", "clip", "inf_lr", "inf_decay"])
def test_optimizer_errors(kwargs, match):
  args = {"name": "sgd", "learning_rate": 0.1, **kwargs}
  with pytest.raises(ValueError, match=match):
    training.optimizer(**args)


# -- the loop --------------------------------------------------------------------


@pytest.fixture(scope="module")
def blobs():
  kx, kp = jax.random.split(jax.random.PRNGKey(0))
  x = jax.random.normal(kx, (24, 4), jnp.float64)
  y = jnp.argmax(x[:, :3], axis=1)
  net = jaxbp.MLP((4, 5, 3), "tanh")
  return net, net.init(kp, "glorot"), x, y


@pytest.mark.parametrize("batch_size, tol", [(8, None), (None, 0.05)],
                         ids=["minibatch", "batch_tol"])
def test_backprop_and_autodiff_give_identical_training(blobs, batch_size, tol):
  net, params, x, y = blobs
  tx = training.optimizer("momentum", 0.1, weight_decay=1e-3)
  runs = [training.fit(net, LOSS, params, x, y, tx, steps=60, batch_size=batch_size,
                       key=jax.random.PRNGKey(7), tol=tol, grad_method=m)
          for m in training.GRAD_METHODS]
  assert _max_diff(runs[0].params, runs[1].params) <= ATOL
  np.testing.assert_allclose(runs[0].history.loss, runs[1].history.loss, atol=ATOL)
  np.testing.assert_allclose(runs[0].history.grad_norm, runs[1].history.grad_norm, atol=ATOL)
  assert int(runs[0].num_steps) == int(runs[1].num_steps)


def test_minibatches_visit_every_sample_once_per_epoch():
  n, b = 12, 4
  batch = training._batch_fn(jnp.arange(n), jnp.arange(n), jax.random.PRNGKey(0), b)
  epochs = [np.concatenate([np.asarray(batch(t)[0]) for t in range(e * 3, e * 3 + 3)])
            for e in range(3)]
  for order in epochs:
    np.testing.assert_array_equal(np.sort(order), np.arange(n))
  assert not np.array_equal(epochs[0], epochs[1])   # reshuffled every epoch


def _regression(n=40, d=3, seed=0):
  kx, kn = jax.random.split(jax.random.PRNGKey(seed))
  x = jax.random.normal(kx, (n, d), jnp.float64)
  y = x @ jnp.array([[1.5], [-2.0], [0.5]]) + 0.3 + 0.1 * jax.random.normal(kn, (n, 1))
  return x, y


def test_linear_regression_gradient_descent_reaches_lstsq():
  # Seed 001's convex case: batch gradient descent, stopped when ||grad|| <= tol.
  x, y = _regression()
  net = jaxbp.MLP((3, 1), output_activation="identity")
  params = net.init(jax.random.PRNGKey(1), "glorot")
  tol, budget = 1e-10, 5000
  out = training.fit(net, "mse", params, x, y, training.optimizer("sgd", 0.1),
                     steps=budget, tol=tol)
  k = int(out.num_steps)
  assert bool(out.converged) and 0 < k < budget
  g = np.asarray(out.history.grad_norm)
  assert g[k] <= tol < g[k - 1]                  # stopped at the first small gradient
  assert np.isnan(g[k + 1:]).all() and np.isfinite(g[:k + 1]).all()
  assert np.isnan(np.asarray(out.history.accuracy)).all()   # regression: no accuracy
  coef, *_ = np.linalg.lstsq(np.hstack([np.asarray(x), np.ones((40, 1))]), np.asarray(y),
                             rcond=None)
  np.testing.assert_allclose(out.params[0].W, coef[:3], atol=1e-9)
  np.testing.assert_allclose(out.params[0].b, coef[3], atol=1e-9)


def test_minibatch_sgd_gets_near_lstsq():
  x, y = _regression(n=64)
  net = jaxbp.MLP((3, 1), output_activation="identity")
  out = training.fit(net, "mse", net.init(jax.random.PRNGKey(1), "glorot"), x, y,
                     training.optimizer("sgd", 0.05), steps=800, batch_size=8,
                     key=jax.random.PRNGKey(2))
  coef, *_ = np.linalg.lstsq(np.hstack([np.asarray(x), np.ones((64, 1))]), np.asarray(y),
                             rcond=None)
  np.testing.assert_allclose(out.params[0].W, coef[:3], atol=0.05)


def test_train_step_is_one_step_of_fit(blobs):
  net, params, x, y = blobs
  tx = training.optimizer("sgd", 0.1)
  p, _, info = training.train_step(net, LOSS, tx, params, tx.init(params), x, y,
                                   grad_method="backprop")
  out = training.fit(net, LOSS, params, x, y, tx, steps=1)
  assert _max_diff(p, out.params) <= ATOL
  np.testing.assert_allclose(info.loss, out.history.loss[0], atol=ATOL)
  loss, acc = training.evaluate(net, LOSS, params, x, y)
  np.testing.assert_allclose([loss, acc], [info.loss, info.accuracy], atol=ATOL)


@pytest.mark.parametrize("change, match", [
    ({"y": jnp.zeros(23, int)}, "x has 24 rows .* y has 23"),
    ({"batch_size": 25}, r"batch_size must be an int in \[1, 24\]"),
    ({"batch_size": 8, "key": None}, "PRNG key"),
    ({"steps": 0}, "steps must be an int >= 1"),
    ({"grad_method": "numeric"}, "grad_method must be one of"),
    ({"tol": -1.0}, "tol must be > 0"),
], ids=["lengths", "batch_size", "key", "steps", "grad_method", "tol"])
def test_fit_errors(blobs, change, match):
  net, params, x, y = blobs
  args = {"y": y, "batch_size": None, "key": jax.random.PRNGKey(0), "steps": 5, **change}
  y = args.pop("y")
  with pytest.raises(ValueError, match=match):
    training.fit(net, LOSS, params, x, y, training.optimizer("sgd", 0.1), **args)


# -- PyTorch as the oracle ---------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}],
    ids=["momentum", "nesterov_weight_decay"])
def test_torch_sgd_oracle(seed_params, kwargs):
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  layers = []
  for p in seed_params:
    lin = torch.nn.Linear(*p.W.shape, dtype=torch.float64)
    with torch.no_grad():   # torch stores W as (out, in): ours transposed
      lin.weight.copy_(torch.from_numpy(np.asarray(p.W).T.copy()))
      lin.bias.copy_(torch.from_numpy(np.asarray(p.b).copy()))
    layers += [lin, torch.nn.ReLU()]
  model = torch.nn.Sequential(*layers[:-1])
  opt = torch.optim.SGD(model.parameters(), lr=0.01, **kwargs)
  criterion = torch.nn.CrossEntropyLoss()
  x, z = torch.tensor(np.asarray(SEED_X)), torch.tensor(np.asarray(SEED_Z))
  for _ in range(100):
    opt.zero_grad()
    criterion(model(x), z).backward()
    opt.step()
  out = training.fit(SEED_NET, LOSS, seed_params, SEED_X, SEED_Z,
                     training.optimizer("sgd", 0.01, **kwargs), steps=100)
  for p, lin in zip(out.params, model[::2]):
    np.testing.assert_allclose(np.asarray(p.W), lin.weight.detach().numpy().T, atol=1e-10)
    np.testing.assert_allclose(np.asarray(p.b), lin.bias.detach().numpy(), atol=1e-10)
