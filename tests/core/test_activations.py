"""Hand-derived activation derivatives against jax.grad, numpy closed forms and torch."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.core import activations

ELEMENTWISE = ("identity", "sigmoid", "tanh", "relu", "leaky_relu")
# float64 test points on both sides of 0, at least 0.05 away from the kink of
# relu / leaky_relu, out to where sigmoid and tanh saturate.
Z = jnp.concatenate([jnp.linspace(-8.0, -0.05, 41), jnp.linspace(0.05, 8.0, 41)])
RTOL = 1e-14
ATOL = 1e-15

# Independent numpy references for the function values.
NUMPY_FN = {
    "identity": lambda z: z,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
}


def _autodiff(fn, z):
  """phi'(z) elementwise by jax.grad, vmapped over the flattened points."""
  return jax.jit(jax.vmap(jax.grad(fn)))(z.ravel()).reshape(z.shape)


# References by autodiff, jitted: one compile instead of one per eager op.
_jacfwd_softmax = jax.jit(jax.jacfwd(activations.softmax))
_batched_jacfwd_softmax = jax.jit(jax.vmap(jax.jacfwd(activations.softmax)))


# -- elementwise activations ---------------------------------------------------


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_hand_grad_matches_autodiff(name):
  act = activations.get(name)
  np.testing.assert_allclose(act.grad(Z), _autodiff(act.fn, Z), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_fn_matches_numpy(name):
  act = activations.get(name)
  np.testing.assert_allclose(act.fn(Z), NUMPY_FN[name](np.asarray(Z)), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_on_a_batch_keeps_shape_and_values(name):
  act = activations.get(name)
  zb = Z.reshape(2, 41)
  assert act.elementwise
  assert act.fn(zb).shape == act.grad(zb).shape == (2, 41)
  np.testing.assert_allclose(act.grad(zb), act.grad(Z).reshape(2, 41), rtol=0, atol=0)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_float32_in_float32_out(name):
  act = activations.get(name)
  z32 = Z.astype(jnp.float32)
  assert act.fn(z32).dtype == jnp.float32
  assert act.grad(z32).dtype == jnp.float32
  # Absolute agreement to float32 round-off of phi ~ 1 (relative accuracy in
  # saturation is test_saturated_grad_keeps_relative_accuracy's business).
  np.testing.assert_allclose(act.fn(z32), act.fn(Z), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(act.grad(z32), act.grad(Z), rtol=1e-6, atol=1e-6)


def test_relu_grad_at_kink_is_zero_like_jax():
  z = jnp.zeros(3)
  np.testing.assert_array_equal(activations.relu.grad(z), np.zeros(3))
  np.testing.assert_array_equal(_autodiff(activations.relu.fn, z), np.zeros(3))


def test_tanh_is_rescaled_sigmoid():
  # tanh z = 2 s(2z) - 1, so tanh'(z) = 4 s'(2z).
  s = activations.sigmoid
  np.testing.assert_allclose(activations.tanh.fn(Z), 2.0 * s.fn(2.0 * Z) - 1.0, rtol=1e-13, atol=1e-15)
  np.testing.assert_allclose(activations.tanh.grad(Z), 4.0 * s.grad(2.0 * Z), rtol=1e-13, atol=1e-15)


def test_sigmoid_grad_at_most_a_quarter():
  # Seed 000: s'(z) = s(1 - s) <= 1/4 with equality only at z = 0 -- the
  # reason deep sigmoid chains vanish.
  z = jnp.linspace(-50.0, 50.0, 10001)
  g = activations.sigmoid.grad(z)
  assert float(jnp.max(g)) <= 0.25
  assert float(activations.sigmoid.grad(jnp.array(0.0))) == 0.25
  assert float(jnp.min(g)) >= 0.0
  # tanh' <= 1, with equality at 0.
  assert float(jnp.max(activations.tanh.grad(z))) <= 1.0
  assert float(activations.tanh.grad(jnp.array(0.0))) == 1.0


# Closed forms that never subtract nearly equal numbers, in float64:
# s'(z) = e^{-|z|} / (1 + e^{-|z|})^2 and tanh'(z) = sech^2 z.
Z_SAT = np.linspace(-15.0, 15.0, 301)
SATURATED = {
    "sigmoid": np.exp(-np.abs(Z_SAT)) / (1.0 + np.exp(-np.abs(Z_SAT))) ** 2,
    "tanh": 1.0 / np.cosh(Z_SAT) ** 2,
}


@pytest.mark.parametrize("dtype,rtol", ((jnp.float32, 1e-5), (jnp.float64, 1e-12)),
                         ids=("float32", "float64"))
@pytest.mark.parametrize("name", ("sigmoid", "tanh"))
def test_saturated_grad_keeps_relative_accuracy(name, dtype, rtol):
  # Deep saturated nets multiply many of these factors: the toolkit measures how
  # small gradients get, so phi' must be accurate relative to itself.
  g = activations.get(name).grad(jnp.asarray(Z_SAT, dtype))
  np.testing.assert_allclose(g, SATURATED[name], rtol=rtol, atol=0)


def test_sigmoid_saturates_without_overflow_in_float32():
  z = jnp.array([-1e4, -100.0, 100.0, 1e4], jnp.float32)
  s, g = activations.sigmoid.fn(z), activations.sigmoid.grad(z)
  assert bool(jnp.all(jnp.isfinite(s))) and bool(jnp.all(jnp.isfinite(g)))
  np.testing.assert_allclose(s, [0.0, 0.0, 1.0, 1.0], atol=1e-30)
  np.testing.assert_allclose(g, [0.0, 0.0, 0.0, 0.0], atol=1e-30)


# -- leaky_relu ----------------------------------------------------------------

SLOPES = (0.0, 0.01, 0.2, 1.0, 2.5)


@pytest.mark.parametrize("slope", SLOPES, ids=lambda p: f"slope{p:g}")
def test_leaky_relu_values_and_grads(slope):
  act = activations.leaky_relu(slope)
  zn = np.asarray(Z)
  np.testing.assert_allclose(act.fn(Z), np.where(zn > 0, zn, slope * zn), rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(act.grad(Z), np.where(zn > 0, 1.0, slope), rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(act.grad(Z), _autodiff(act.fn, Z), rtol=RTOL, atol=ATOL)


def test_leaky_relu_limits_are_relu_and_identity():
  np.testing.assert_array_equal(activations.leaky_relu(0.0).fn(Z), activations.relu.fn(Z))
  np.testing.assert_array_equal(activations.leaky_relu(0.0).grad(Z), activations.relu.grad(Z))
  np.testing.assert_array_equal(activations.leaky_relu(1.0).fn(Z), Z)
  np.testing.assert_array_equal(activations.leaky_relu(1.0).grad(Z), np.ones(Z.shape))


def test_leaky_relu_is_cached():
  a, b = activations.leaky_relu(0.2), activations.leaky_relu(0.2)
  assert a is b and a == b and hash(a) == hash(b)
  assert activations.leaky_relu(0.2) != activations.leaky_relu(0.3)
  assert activations.leaky_relu(0.2).name == "leaky_relu(0.2)"
  assert activations.get("leaky_relu").name == "leaky_relu"


def test_leaky_relu_cache_ignores_call_spelling():
  assert activations.leaky_relu() is activations.leaky_relu(0.01)
  assert activations.leaky_relu(negative_slope=0.2) is activations.leaky_relu(0.2)
  assert activations.leaky_relu(1) is activations.leaky_relu(1.0)
  assert activations.get("leaky_relu") is activations.leaky_relu()


@pytest.mark.parametrize("slope", (-0.01, -1.0, float("nan")), ids=("minus0.01", "minus1", "nan"))
def test_leaky_relu_rejects_negative_slope(slope):
  with pytest.raises(ValueError, match=r"negative_slope must be >= 0"):
    activations.leaky_relu(slope)


def test_leaky_relu_rejects_infinite_slope():
  with pytest.raises(ValueError, match=r"negative_slope"):
    activations.leaky_relu(math.inf)


# -- softmax ---------------------------------------------------------------------


def _softmax64(z):
  """float64 numpy reference, shifted by the max."""
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def _log_softmax64(z):
  z = np.asarray(z, np.float64)
  s = z - z.max(axis=-1, keepdims=True)
  return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


HUGE = np.array([[1e4, 1e4 - 1.0, 1e4 - 3.0],
                 [-1e4, 0.0, 1e4],
                 [-1e4, -1e4 + 2.0, -1e4 + 0.5],
                 [0.1, -0.2, 0.3]])


@pytest.mark.parametrize("dtype", (jnp.float32, jnp.float64), ids=("float32", "float64"))
def test_softmax_and_log_softmax_stable_for_huge_inputs(dtype):
  z = jnp.asarray(HUGE, dtype)
  p, lp = activations.softmax(z), activations.log_softmax(z)
  assert p.dtype == lp.dtype == dtype
  assert bool(jnp.all(jnp.isfinite(p))) and bool(jnp.all(jnp.isfinite(lp)))
  rtol = 1e-6 if dtype == jnp.float32 else 1e-14
  np.testing.assert_allclose(p, _softmax64(HUGE), rtol=rtol, atol=1e-30)
  np.testing.assert_allclose(lp, _log_softmax64(HUGE), rtol=rtol, atol=rtol)
  np.testing.assert_allclose(jnp.sum(p, axis=-1), np.ones(4), rtol=rtol)


def test_softmax_is_shift_invariant_and_respects_axis():
  z = jax.random.normal(jax.random.PRNGKey(0), (4, 5), jnp.float64)
  np.testing.assert_allclose(activations.softmax(z + 123.0), activations.softmax(z), rtol=1e-13)
  np.testing.assert_allclose(activations.softmax(z, axis=0), _softmax64(np.asarray(z).T).T, rtol=1e-14)
  np.testing.assert_allclose(activations.log_softmax(z, axis=0), _log_softmax64(np.asarray(z).T).T,
                             rtol=1e-14)
  np.testing.assert_allclose(jnp.exp(activations.log_softmax(z)), activations.softmax(z), rtol=1e-14)


@pytest.mark.parametrize("n", (1, 5))
def test_softmax_jacobian_matches_jacfwd(n):
  z = jax.random.normal(jax.random.PRNGKey(n), (n,), jnp.float64)
  J = activations.softmax_jacobian(z)
  assert J.shape == (n, n)
  np.testing.assert_allclose(J, _jacfwd_softmax(z), rtol=1e-13, atol=1e-16)
  p = _softmax64(z)
  # Seed 002's grad_softmax s(1 - s) is the diagonal only; rows sum to zero.
  np.testing.assert_allclose(jnp.diagonal(J), p * (1 - p), rtol=1e-13, atol=1e-16)
  np.testing.assert_allclose(jnp.sum(J, axis=-1), np.zeros(n), atol=1e-15)
  np.testing.assert_allclose(J, J.T, rtol=0, atol=1e-16)


def test_softmax_activation_grad_is_the_jacobian():
  act = activations.get("softmax")
  assert not act.elementwise
  z = jnp.array([0.3, -1.0, 2.0])
  np.testing.assert_allclose(act.grad(z), _jacfwd_softmax(z), rtol=1e-13, atol=1e-16)


def test_softmax_jacobian_batched_matches_jacfwd():
  z = jax.random.normal(jax.random.PRNGKey(0), (3, 4), jnp.float64)
  J = activations.softmax_jacobian(z)
  assert J.shape == (3, 4, 4)
  np.testing.assert_allclose(J, _batched_jacfwd_softmax(z), rtol=1e-13, atol=1e-16)


def test_softmax_vjp_is_row_vector_times_jacobian():
  kz, kg = jax.random.split(jax.random.PRNGKey(1))
  z = jax.random.normal(kz, (6, 5), jnp.float64)
  g = jax.random.normal(kg, (6, 5), jnp.float64)
  J = _batched_jacfwd_softmax(z)           # (6, 5, 5), independent
  expected = jnp.einsum("bi,bij->bj", g, J)
  got = activations.softmax_vjp(z, g)
  np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
  vjp = jax.jit(lambda z, g: jax.vjp(activations.softmax, z)[1](g)[0])
  np.testing.assert_allclose(got, vjp(z, g), rtol=1e-12, atol=1e-15)


# -- look-up -------------------------------------------------------------------


@pytest.mark.parametrize("name,expected", (
    ("identity", "identity"), ("linear", "identity"), ("sigmoid", "sigmoid"),
    ("logistic", "sigmoid"), ("tanh", "tanh"), ("TANH", "tanh"), ("relu", "relu"),
    ("leaky_relu", "leaky_relu"), ("softmax", "softmax")))
def test_get_by_name(name, expected):
  assert activations.get(name).name == expected


def test_get_passes_objects_through():
  act = activations.leaky_relu(0.3)
  assert activations.get(act) is act
  assert activations.get(activations.tanh) is activations.tanh
  assert set(activations.names()) >= set(ELEMENTWISE) | {"softmax"}


def test_get_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match=r"Unknown activation 'swish'") as info:
    activations.get("swish")
  for name in activations.names():
    assert name in str(info.value)


def test_get_rejects_other_types():
  with pytest.raises(TypeError, match=r"activation must be a name"):
    activations.get(3)


# -- torch ---------------------------------------------------------------------

TORCH_CASES = (
    ("sigmoid", "sigmoid", {}),
    ("tanh", "tanh", {}),
    ("relu", "relu", {}),
    ("leaky_relu", "leaky_relu", {"negative_slope": 0.01}),
    ("leaky_relu(0.2)", "leaky_relu", {"negative_slope": 0.2}),
)


@pytest.mark.parametrize("name,torch_name,kwargs", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_elementwise_matches_torch(name, torch_name, kwargs):
  torch = pytest.importorskip("torch")
  act = (activations.leaky_relu(kwargs["negative_slope"]) if name.startswith("leaky")
         else activations.get(name))
  zt = torch.tensor(np.asarray(Z), requires_grad=True)
  out = getattr(torch.nn.functional, torch_name)(zt, **kwargs)
  out.sum().backward()
  np.testing.assert_allclose(act.fn(Z), out.detach().numpy(), rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(act.grad(Z), zt.grad.numpy(), rtol=RTOL, atol=ATOL)


def test_softmax_matches_torch():
  torch = pytest.importorskip("torch")
  z = jax.random.normal(jax.random.PRNGKey(2), (4, 6), jnp.float64) * 5
  g = jax.random.normal(jax.random.PRNGKey(3), (4, 6), jnp.float64)
  zt = torch.tensor(np.asarray(z), requires_grad=True)
  p = torch.nn.functional.softmax(zt, dim=-1)
  p.backward(torch.tensor(np.asarray(g)))
  np.testing.assert_allclose(activations.softmax(z), p.detach().numpy(), rtol=1e-14, atol=1e-17)
  np.testing.assert_allclose(activations.softmax_vjp(z, g), zt.grad.numpy(), rtol=1e-12, atol=1e-15)
  lp = torch.nn.functional.log_softmax(torch.tensor(np.asarray(z)), dim=-1)
  np.testing.assert_allclose(activations.log_softmax(z), lp.numpy(), rtol=1e-14, atol=1e-15)
