"""Hand-derived loss gradients against jax.grad, numpy closed forms and torch."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.core import losses

BATCH, OUT = 5, 4
LOSSES = ("mse", "binary_cross_entropy", "binary_cross_entropy_with_logits",
          "softmax_cross_entropy", "cross_entropy")
CATEGORICAL = ("softmax_cross_entropy", "cross_entropy")
RTOL = 1e-13
ATOL = 1e-15


def _data(name, shape=(BATCH, OUT), seed=0):
  """(h, y) in each loss's domain: probabilities for bce / cross_entropy, logits else."""
  kh, ky = jax.random.split(jax.random.PRNGKey(seed))
  if name == "binary_cross_entropy":
    h = jax.random.uniform(kh, shape, jnp.float64, 0.05, 0.95)
  elif name == "cross_entropy":
    h = jax.nn.softmax(jax.random.normal(kh, shape, jnp.float64), axis=-1)
  else:
    h = 2.0 * jax.random.normal(kh, shape, jnp.float64)
  if name in CATEGORICAL:
    y = jax.nn.one_hot(jax.random.randint(ky, shape[:-1], 0, shape[-1]), shape[-1], dtype=jnp.float64)
  elif name.startswith("binary"):
    y = jax.random.uniform(ky, shape, jnp.float64)        # soft targets in (0, 1)
  else:
    y = jax.random.normal(ky, shape, jnp.float64)
  return h, y


def _autodiff_grad(loss, h, y, reduction):
  if reduction == "none":   # "none" grad is documented as the gradient of the sum
    return jax.grad(lambda h: jnp.sum(loss.fn(h, y, "none")))(h)
  return jax.grad(lambda h: loss.fn(h, y, reduction))(h)


# -- hand gradients -----------------------------------------------------------


@pytest.mark.parametrize("reduction", ("mean", "sum", "none"))
@pytest.mark.parametrize("name", LOSSES)
def test_hand_grad_matches_autodiff(name, reduction):
  loss = losses.get(name)
  h, y = _data(name)
  g = loss.grad(h, y, reduction)
  assert g.shape == h.shape
  np.testing.assert_allclose(g, _autodiff_grad(loss, h, y, reduction), rtol=RTOL, atol=ATOL)


def test_softmax_cross_entropy_grad_with_unnormalised_targets():
  # The hand form softmax(h) * sum(y) - y is exact for any target, not only one-hot.
  loss = losses.softmax_cross_entropy
  h, _ = _data("softmax_cross_entropy")
  y = jax.random.uniform(jax.random.PRNGKey(7), (BATCH, OUT), jnp.float64, 0.0, 2.0)
  np.testing.assert_allclose(loss.grad(h, y), _autodiff_grad(loss, h, y, "mean"), rtol=RTOL, atol=ATOL)


# mse is the control (elementwise losses count h.size either way); the two
# categorical losses share _make's count, one case each suffices for rank 1.
RANK_CASES = [
    pytest.param("mse", (OUT,), id="mse-rank1"),
    pytest.param("mse", (3, BATCH, OUT), id="mse-rank3"),
    pytest.param("softmax_cross_entropy", (OUT,), id="softmax_cross_entropy-rank1"),
    pytest.param("softmax_cross_entropy", (3, BATCH, OUT), id="softmax_cross_entropy-rank3"),
    pytest.param("cross_entropy", (3, BATCH, OUT), id="cross_entropy-rank3"),
]


@pytest.mark.parametrize("name,shape", RANK_CASES)
def test_mean_grad_matches_autodiff_for_other_ranks(name, shape):
  loss = losses.get(name)
  h, y = _data(name, shape, seed=3)
  np.testing.assert_allclose(loss.grad(h, y, "mean"), _autodiff_grad(loss, h, y, "mean"),
                             rtol=RTOL, atol=ATOL)


# -- reductions ----------------------------------------------------------------


@pytest.mark.parametrize("name", LOSSES)
def test_reduction_semantics(name):
  loss = losses.get(name)
  h, y = _data(name)
  terms = loss.fn(h, y, "none")
  # Elementwise losses keep one term per output, categorical ones one per example.
  assert terms.shape == ((BATCH,) if name in CATEGORICAL else (BATCH, OUT))
  count = BATCH if name in CATEGORICAL else BATCH * OUT
  np.testing.assert_allclose(loss.fn(h, y, "sum"), np.sum(terms), rtol=RTOL)
  np.testing.assert_allclose(loss.fn(h, y, "mean"), np.sum(terms) / count, rtol=RTOL)
  np.testing.assert_allclose(loss.fn(h, y), loss.fn(h, y, "mean"), rtol=0)
  np.testing.assert_allclose(loss.grad(h, y, "mean"), loss.grad(h, y, "sum") / count, rtol=RTOL)
  np.testing.assert_allclose(loss.grad(h, y, "none"), loss.grad(h, y, "sum"), rtol=0)


TERMS = {
    # Closed forms in numpy, one term per element (elementwise) or example (categorical).
    "mse": lambda h, y: (h - y) ** 2,
    "binary_cross_entropy": lambda p, y: -(y * np.log(p) + (1 - y) * np.log(1 - p)),
    "binary_cross_entropy_with_logits": lambda h, y: np.logaddexp(0.0, h) - h * y,
    "softmax_cross_entropy": lambda h, y: -np.sum(
        y * (h - np.log(np.sum(np.exp(h), axis=-1, keepdims=True))), axis=-1),
    "cross_entropy": lambda p, y: -np.sum(y * np.log(p), axis=-1),
}


@pytest.mark.parametrize("name", LOSSES)
def test_terms_match_numpy_closed_form(name):
  h, y = _data(name)
  np.testing.assert_allclose(losses.get(name).fn(h, y, "none"), TERMS[name](np.asarray(h), np.asarray(y)),
                             rtol=1e-13, atol=ATOL)


def test_mse_mean_is_a_scalar_over_all_elements():
  # Seed 002's mse(method='mean') returns one number per output; ours is a scalar.
  h, y = _data("mse")
  value = losses.mse.fn(h, y, "mean")
  assert value.shape == ()
  np.testing.assert_allclose(value, np.mean((np.asarray(h) - np.asarray(y)) ** 2), rtol=RTOL)


@pytest.mark.parametrize("bad", ("avg", "Mean", None), ids=("avg", "Mean", "None"))
@pytest.mark.parametrize("method", ("fn", "grad"))
def test_bad_reduction_raises(method, bad):
  h, y = _data("mse")
  with pytest.raises(ValueError, match=r"reduction must be one of \('mean', 'sum', 'none'\)"):
    getattr(losses.mse, method)(h, y, bad)


# -- integer labels and one_hot ---------------------------------------------------


@pytest.mark.parametrize("reduction", ("mean", "sum", "none"))
@pytest.mark.parametrize("name", CATEGORICAL)
def test_integer_labels_equal_one_hot_targets(name, reduction):
  loss = losses.get(name)
  h, _ = _data(name)
  labels = jnp.array([0, 3, 1, 2, 3])
  onehot = jnp.asarray(np.eye(OUT)[np.asarray(labels)])
  np.testing.assert_allclose(loss.fn(h, labels, reduction), loss.fn(h, onehot, reduction), rtol=0, atol=0)
  np.testing.assert_allclose(loss.grad(h, labels, reduction), loss.grad(h, onehot, reduction),
                             rtol=0, atol=0)
  # The loss of a labelled example is -log p[label], by hand.
  logp = (np.asarray(h) - np.log(np.sum(np.exp(np.asarray(h)), axis=-1, keepdims=True))
          if name == "softmax_cross_entropy" else np.log(np.asarray(h)))
  np.testing.assert_allclose(loss.fn(h, labels, "none"), -logp[np.arange(BATCH), np.asarray(labels)],
                             rtol=1e-13)


def test_one_hot_values_and_dtype():
  labels = jnp.array([0, 2, 1, 2])
  got = losses.one_hot(labels, 3)
  np.testing.assert_array_equal(got, np.eye(3)[[0, 2, 1, 2]])
  assert got.dtype == jnp.float64          # x64 is on in the tests
  assert losses.one_hot(labels, 3, dtype=jnp.float32).dtype == jnp.float32
  np.testing.assert_array_equal(losses.one_hot(jnp.array(1), 2), [0.0, 1.0])
  # Label k means class k: no shift by the smallest label (unlike seed 002).
  np.testing.assert_array_equal(losses.one_hot(jnp.array([2, 1]), 3), [[0, 0, 1], [0, 1, 0]])


@pytest.mark.parametrize("labels,num_classes,error,match", (
    ([0, 3], 3, ValueError, r"labels must lie in \[0, 3\); got values from 0 to 3"),
    ([-1, 0], 3, ValueError, r"labels must lie in \[0, 3\); got values from -1 to 0"),
    ([[0, 5], [1, 2]], 3, ValueError, r"labels must lie in \[0, 3\); got values from 0 to 5"),
    ([0.0, 1.0], 3, TypeError, r"labels must be integers, got dtype float64"),
    ([True, False], 3, TypeError, r"labels must be integers, got dtype bool"),
    ([0, 1], 2.0, ValueError, r"num_classes must be a positive int"),
), ids=("too-big", "negative", "too-big-2d", "float", "bool", "float-classes"))
def test_one_hot_rejects_bad_labels(labels, num_classes, error, match):
  with pytest.raises(error, match=match):
    losses.one_hot(jnp.array(labels), num_classes)


def test_one_hot_under_jit_gives_zero_row_out_of_range():
  got = jax.jit(lambda l: losses.one_hot(l, 3))(jnp.array([1, 3]))
  np.testing.assert_array_equal(got, [[0, 1, 0], [0, 0, 0]])


@pytest.mark.parametrize("name", CATEGORICAL)
def test_out_of_range_labels_raise_through_the_loss(name):
  h, _ = _data(name)
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
    losses.get(name).fn(h, jnp.array([0, 1, 2, 3, 4]))


# -- shape and type errors ---------------------------------------------------------


@pytest.mark.parametrize("method", ("fn", "grad"))
@pytest.mark.parametrize("name", LOSSES)
def test_target_shape_mismatch_names_both_shapes(name, method):
  h, _ = _data(name)
  y = jnp.zeros((OUT, BATCH))
  pattern = rf"{name}: target y has shape \({OUT}, {BATCH}\) but the output h has shape \({BATCH}, {OUT}\)"
  with pytest.raises(ValueError, match=pattern):
    getattr(losses.get(name), method)(h, y)


@pytest.mark.parametrize("name", CATEGORICAL)
def test_label_shape_mismatch_suggests_label_shape(name):
  h, _ = _data(name)
  with pytest.raises(ValueError, match=re.escape(f"or integer labels of shape ({BATCH},)")):
    losses.get(name).fn(h, jnp.array([0, 1, 2]))


@pytest.mark.parametrize("name", LOSSES)
def test_integer_output_rejected(name):
  with pytest.raises(TypeError, match=r"network output must be floating point"):
    losses.get(name).fn(jnp.ones((BATCH, OUT), jnp.int32), jnp.ones((BATCH, OUT)))


def test_numpy_inputs_accepted():
  h, y = _data("mse")
  np.testing.assert_allclose(losses.mse.grad(np.asarray(h), np.asarray(y)), losses.mse.grad(h, y), rtol=0)
  np.testing.assert_allclose(losses.mse.fn(np.asarray(h), np.asarray(y)), losses.mse.fn(h, y), rtol=0)


# -- numerical stability --------------------------------------------------------


def test_bce_with_logits_is_stable_for_huge_logits_in_float32():
  h64 = np.array([[1e4, -1e4, 1e4, -1e4, 50.0, -50.0]])
  y64 = np.array([[1.0, 0.0, 0.0, 1.0, 0.3, 0.7]])
  h32, y32 = jnp.asarray(h64, jnp.float32), jnp.asarray(y64, jnp.float32)
  loss = losses.binary_cross_entropy_with_logits
  terms, g = loss.fn(h32, y32, "none"), loss.grad(h32, y32, "sum")
  assert terms.dtype == g.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(terms))) and bool(jnp.all(jnp.isfinite(g)))
  # float64 reference: log(1 + e^h) - h y, by logaddexp.
  np.testing.assert_allclose(terms, np.logaddexp(0.0, h64) - h64 * y64, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(g, np.exp(-np.logaddexp(0.0, -h64)) - y64, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(loss.fn(h32, y32, "sum"), np.sum(np.logaddexp(0.0, h64) - h64 * y64),
                             rtol=1e-6)


def test_softmax_cross_entropy_is_stable_for_huge_logits_in_float32():
  h64 = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4 + 1.0, -1e4 + 2.0]])
  labels = jnp.array([1, 0])
  loss = losses.softmax_cross_entropy
  terms = loss.fn(jnp.asarray(h64, jnp.float32), labels, "none")
  g = loss.grad(jnp.asarray(h64, jnp.float32), labels, "sum")
  assert bool(jnp.all(jnp.isfinite(terms))) and bool(jnp.all(jnp.isfinite(g)))
  np.testing.assert_allclose(terms, [1e4, 2.0 + np.log1p(np.exp(-1.0) + np.exp(-2.0))], rtol=1e-6)
  np.testing.assert_allclose(g, loss.grad(jnp.asarray(h64), labels, "sum"), rtol=1e-6, atol=1e-6)


def test_cross_entropy_zero_target_times_log_zero_is_zero():
  # 0 log 0 = 0: a zero probability where the target is zero must not give nan.
  p = jnp.array([[0.0, 0.25, 0.75], [0.5, 0.5, 0.0]])
  y = jnp.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
  loss = losses.cross_entropy
  np.testing.assert_allclose(loss.fn(p, y, "none"), [-np.log(0.75), -np.log(0.5)], rtol=1e-15)
  np.testing.assert_allclose(loss.grad(p, y, "sum"), [[0, 0, -1 / 0.75], [-2.0, 0, 0]], rtol=1e-15)
  np.testing.assert_allclose(_autodiff_grad(loss, p, y, "sum"), loss.grad(p, y, "sum"), rtol=1e-15)
  bce = losses.binary_cross_entropy
  np.testing.assert_allclose(bce.fn(jnp.array([[0.0, 1.0]]), jnp.array([[0.0, 1.0]]), "sum"), 0.0, atol=0)


# -- torch -----------------------------------------------------------------------

TORCH_CASES = (
    # (jaxbp loss, torch.nn.functional name, how torch takes the target)
    ("mse", "mse_loss", "same"),
    ("binary_cross_entropy", "binary_cross_entropy", "same"),
    ("binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits", "same"),
    ("softmax_cross_entropy", "cross_entropy", "labels"),
    ("softmax_cross_entropy", "cross_entropy", "probabilities"),
    ("cross_entropy", "nll_loss", "labels"),
)


@pytest.mark.parametrize("reduction", ("mean", "sum", "none"))
@pytest.mark.parametrize("name,torch_name,target", TORCH_CASES,
                         ids=[f"{c[0]}-vs-{c[1]}-{c[2]}" for c in TORCH_CASES])
def test_value_and_grad_match_torch(name, torch_name, target, reduction):
  torch = pytest.importorskip("torch")
  F = torch.nn.functional
  loss = losses.get(name)
  h, y = _data(name, seed=11)
  if target == "probabilities":
    y = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(12), (BATCH, OUT), jnp.float64))
  labels = jnp.argmax(y, axis=-1)
  ours_y = labels if target == "labels" else y
  ht = torch.tensor(np.asarray(h), requires_grad=True)
  inp = torch.log(ht) if torch_name == "nll_loss" else ht    # nll_loss takes log-probabilities
  yt = torch.tensor(np.asarray(ours_y))
  out = getattr(F, torch_name)(inp, yt, reduction=reduction)
  out.sum().backward()
  np.testing.assert_allclose(loss.fn(h, ours_y, reduction), out.detach().numpy(), rtol=1e-13, atol=ATOL)
  np.testing.assert_allclose(loss.grad(h, ours_y, reduction), ht.grad.numpy(), rtol=1e-12, atol=ATOL)


# -- look-up -------------------------------------------------------------------


@pytest.mark.parametrize("alias,name", (
    ("mse", "mse"), ("MSE", "mse"), ("bce", "binary_cross_entropy"),
    ("bce_with_logits", "binary_cross_entropy_with_logits"),
    ("softmax_cross_entropy", "softmax_cross_entropy"), ("cross_entropy", "cross_entropy")))
def test_get_by_name(alias, name):
  loss = losses.get(alias)
  assert loss.name == name
  assert loss.categorical == (name in CATEGORICAL)
  assert losses.get(loss) is loss


def test_get_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match=r"Unknown loss 'hinge'") as info:
    losses.get("hinge")
  for name in losses.names():
    assert name in str(info.value)
  with pytest.raises(TypeError, match=r"loss must be a name"):
    losses.get(1.0)
