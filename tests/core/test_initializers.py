"""Initialisers: empirical moments against their variance formulas, orthogonality, validation."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.core import initializers

FAN_IN, FAN_OUT = 1000, 500      # unequal, so that 1/fan_in, 2/fan_in and 2/(in+out) differ
N = FAN_IN * FAN_OUT
# The sample variance of N draws has relative standard deviation sqrt((kurtosis - 1) / N),
# about 2e-3 here: 2% is a ten-sigma band, while the formulas differ by >= 30%.
VAR_RTOL = 0.02

# (name, Var[W_ij](fan_in, fan_out), kurtosis): 3 for a Gaussian, 9/5 for a uniform.
CASES = (
    ("lecun", lambda fi, fo: 1.0 / fi, 3.0),
    ("he", lambda fi, fo: 2.0 / fi, 3.0),
    ("kaiming", lambda fi, fo: 2.0 / fi, 3.0),
    ("glorot", lambda fi, fo: 2.0 / (fi + fo), 3.0),
    ("glorot_normal", lambda fi, fo: 2.0 / (fi + fo), 3.0),
    ("xavier_normal", lambda fi, fo: 2.0 / (fi + fo), 3.0),
    ("glorot_uniform", lambda fi, fo: 2.0 / (fi + fo), 1.8),
    ("xavier_uniform", lambda fi, fo: 2.0 / (fi + fo), 1.8),
    ("gaussian(1.76)", lambda fi, fo: 1.76 / fi, 3.0),
    ("gaussian(0.5)", lambda fi, fo: 0.5 / fi, 3.0),
)


def _get(name):
  if name.startswith("gaussian("):
    return initializers.gaussian(float(name[len("gaussian("):-1]), 0.05)
  return initializers.get(name)


def _moments(w):
  w = np.asarray(w, np.float64).ravel()
  var = w.var()
  return w.mean(), var, np.mean((w - w.mean()) ** 4) / var ** 2


@pytest.mark.parametrize("name,variance,kurtosis", CASES, ids=[c[0] for c in CASES])
def test_weight_variance_matches_formula(name, variance, kurtosis):
  w = _get(name).weight(jax.random.PRNGKey(0), (FAN_IN, FAN_OUT), jnp.float64)
  assert w.shape == (FAN_IN, FAN_OUT) and w.dtype == jnp.float64
  mean, var, kurt = _moments(w)
  expected = variance(FAN_IN, FAN_OUT)
  np.testing.assert_allclose(var, expected, rtol=VAR_RTOL)
  assert abs(mean) < 6 * math.sqrt(expected / N)
  # The family: Gaussian (kurtosis 3) or uniform (9/5); sd of the estimate ~ 0.01.
  np.testing.assert_allclose(kurt, kurtosis, atol=0.1)


def test_glorot_uniform_support():
  limit = math.sqrt(6.0 / (FAN_IN + FAN_OUT))
  w = initializers.glorot_uniform.weight(jax.random.PRNGKey(1), (FAN_IN, FAN_OUT), jnp.float64)
  assert float(jnp.max(jnp.abs(w))) <= limit
  assert float(jnp.max(w)) > 0.999 * limit and float(jnp.min(w)) < -0.999 * limit


@pytest.mark.parametrize("name", ("he", "glorot_normal", "glorot_uniform", "gaussian(1.76)", "orthogonal"))
def test_weight_dtype_follows_request(name):
  init = _get(name)
  w = init.weight(jax.random.PRNGKey(0), (6, 4), jnp.float32)   # float32 QR: its own compile
  b = init.bias(jax.random.PRNGKey(1), (4,), jnp.float32)
  assert w.dtype == b.dtype == jnp.float32
  assert w.shape == (6, 4) and b.shape == (4,)


@pytest.mark.parametrize("name", ("he", "glorot_uniform", "orthogonal"))
def test_same_key_same_weights_other_key_other_weights(name):
  init = _get(name)
  a = init.weight(jax.random.PRNGKey(3), (120, 40), jnp.float64)
  np.testing.assert_array_equal(a, init.weight(jax.random.PRNGKey(3), (120, 40), jnp.float64))
  assert not np.allclose(a, init.weight(jax.random.PRNGKey(4), (120, 40), jnp.float64))


# -- biases ------------------------------------------------------------------------


@pytest.mark.parametrize("make", (
    lambda s: initializers.gaussian(1.0, s), lambda s: initializers.orthogonal(1.0, s)),
    ids=("gaussian", "orthogonal"))
@pytest.mark.parametrize("sigma_b2", (0.05, 0.3))
def test_bias_variance_is_sigma_b2(make, sigma_b2):
  b = make(sigma_b2).bias(jax.random.PRNGKey(5), (1000, 500), jnp.float64)
  mean, var, kurt = _moments(b)
  np.testing.assert_allclose(var, sigma_b2, rtol=VAR_RTOL)
  assert abs(mean) < 6 * math.sqrt(sigma_b2 / 500_000)
  np.testing.assert_allclose(kurt, 3.0, atol=0.1)


@pytest.mark.parametrize("init", (
    "lecun", "he", "glorot_normal", "glorot_uniform", "orthogonal",
    initializers.gaussian(2.0), initializers.gaussian(2.0, 0.0)),
    ids=("lecun", "he", "glorot_normal", "glorot_uniform", "orthogonal", "gaussian", "gaussian-b0"))
def test_named_schemes_start_biases_at_zero(init):
  b = initializers.get(init).bias(jax.random.PRNGKey(0), (3, 7), jnp.float64)
  np.testing.assert_array_equal(b, np.zeros((3, 7)))


# -- orthogonal ------------------------------------------------------------------


@pytest.mark.parametrize("gain", (1.0, 1.5))
@pytest.mark.parametrize("shape", ((128, 128), (120, 40), (40, 120), (4, 64, 64)),
                         ids=("square", "tall", "wide", "stacked"))
def test_orthogonal_gram_is_gain_squared_identity(shape, gain):
  w = np.asarray(initializers.orthogonal(gain).weight(jax.random.PRNGKey(0), shape, jnp.float64))
  assert w.shape == shape
  fi, fo = shape[-2:]
  # Orthonormal columns when tall or square (W^T W = g^2 I), rows when wide (W W^T = g^2 I).
  gram = np.swapaxes(w, -1, -2) @ w if fi >= fo else w @ np.swapaxes(w, -1, -2)
  eye = np.broadcast_to(np.eye(min(fi, fo)), gram.shape)
  np.testing.assert_allclose(gram, gain ** 2 * eye, rtol=0, atol=1e-10)
  # Hence every singular value is the gain, and Var[W_ij] = gain^2 / max(fan_in, fan_out).
  np.testing.assert_allclose(np.linalg.svd(w, compute_uv=False), gain, rtol=1e-10)
  np.testing.assert_allclose(np.mean(w ** 2), gain ** 2 / max(fi, fo), rtol=1e-10)


def test_orthogonal_stack_is_haar_and_independent():
  # For Haar-distributed Q, trace(Q) has mean 0 and variance 1. Plain QR (R with
  # a sign-fixed diagonal) biases it to about -0.8 sqrt(n) ~ -6 for n = 64.
  L, n = 4, 64
  w = np.asarray(initializers.orthogonal().weight(jax.random.PRNGKey(1), (L, n, n), jnp.float64))
  traces = np.trace(w, axis1=-2, axis2=-1)
  assert abs(traces.mean()) < 5 / math.sqrt(L), traces
  # Independent layers: entry correlations between layers ~ N(0, 1 / n^2).
  corr = np.corrcoef(w.reshape(L, -1))
  assert np.max(np.abs(corr[~np.eye(L, dtype=bool)])) < 6 / n, corr


# -- stacked layers ------------------------------------------------------------------


@pytest.mark.parametrize("name", ("he", "glorot_uniform", "gaussian(1.76)"))
def test_stacked_layers_are_independent_draws(name):
  L, fi, fo = 4, 300, 150
  init = _get(name)
  w = np.asarray(init.weight(jax.random.PRNGKey(0), (L, fi, fo), jnp.float64))
  assert w.shape == (L, fi, fo)
  # Fans are the last two axes, not the layer axis.
  expected = {"he": 2.0 / fi, "glorot_uniform": 2.0 / (fi + fo), "gaussian(1.76)": 1.76 / fi}[name]
  for layer in w:
    np.testing.assert_allclose(layer.var(), expected, rtol=0.03)
  # Independent layers: sample correlations ~ N(0, 1 / (fi fo)); 6 sigma band.
  flat = w.reshape(L, -1)
  corr = np.corrcoef(flat)
  off = corr[~np.eye(L, dtype=bool)]
  assert np.max(np.abs(off)) < 6 / math.sqrt(fi * fo), corr


def test_stacked_biases_are_independent_draws():
  b = np.asarray(initializers.gaussian(1.0, 0.5).bias(jax.random.PRNGKey(0), (3, 20000), jnp.float64))
  corr = np.corrcoef(b)
  assert np.max(np.abs(corr[~np.eye(3, dtype=bool)])) < 6 / math.sqrt(20000)
  np.testing.assert_allclose(b.var(axis=1), 0.5, rtol=0.05)


# -- validation and look-up ---------------------------------------------------------


# Negative and nan values are rows of tests/test_validation.py.
@pytest.mark.parametrize("call,match", (
    (lambda: initializers.gaussian(float("inf")), r"gaussian: sigma_w2 must be a finite number >= 0, got inf"),
    (lambda: initializers.gaussian(1.0, float("-inf")), r"gaussian: sigma_b2 must be a finite number"),
    (lambda: initializers.gaussian("2.0"), r"gaussian: sigma_w2 must be a finite number >= 0, got '2.0'"),
    (lambda: initializers.orthogonal(float("nan")), r"orthogonal: gain must be a finite number >= 0"),
    (lambda: initializers.orthogonal(1.0, -2.0), r"orthogonal: sigma_b2 must be a finite number >= 0"),
), ids=("inf", "bias-minus-inf", "string", "orthogonal-nan-gain", "orthogonal-negative-sigma_b2"))
def test_bad_variances_rejected(call, match):
  with pytest.raises(ValueError, match=match):
    call()


@pytest.mark.parametrize("value", (np.float32(2.25), np.int64(3)), ids=("float32", "int64"))
def test_numpy_scalars_accepted(value):
  # Values no other test uses: gaussian's lru_cache would otherwise hand back the
  # entry of an equal Python float and skip the validation altogether.
  w = initializers.gaussian(value).weight(jax.random.PRNGKey(0), (400, 300), jnp.float64)
  np.testing.assert_allclose(np.var(np.asarray(w)) * 400, float(value), rtol=0.05)


def test_gaussian_and_orthogonal_are_cached():
  assert initializers.gaussian(1.76, 0.05) is initializers.gaussian(1.76, 0.05)
  assert initializers.orthogonal(1.5) is initializers.orthogonal(1.5)


@pytest.mark.parametrize("alias,name", (
    ("lecun", "lecun"), ("he", "he"), ("kaiming", "he"), ("HE", "he"), ("glorot", "glorot_normal"),
    ("xavier", "glorot_normal"), ("xavier_normal", "glorot_normal"),
    ("xavier_uniform", "glorot_uniform"), ("orthogonal", "orthogonal(gain=1, sigma_b2=0)")))
def test_get_by_name(alias, name):
  init = initializers.get(alias)
  assert init.name == name
  assert initializers.get(init) is init


def test_get_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match=r"Unknown init 'uniform'") as info:
    initializers.get("uniform")
  for name in initializers.names():
    assert name in str(info.value)
  with pytest.raises(TypeError, match=r"init must be a name"):
    initializers.get(2.0)
