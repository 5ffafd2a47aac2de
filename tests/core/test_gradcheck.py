"""Finite differences against closed forms; tree comparison and its report."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.core import gradcheck

A = np.array([[2.0, -1.0, 0.5], [0.3, 1.5, -0.7], [1.0, 0.0, 3.0]])
C = np.array([0.5, -2.0, 1.25])


def _params():
  return {"u": jnp.array([0.7, -1.3, 2.1]), "v": jnp.array([[0.4, -0.9], [1.6, 0.2]])}


def _cubic(params, a, A, c):
  """f = sum a u^3 + u^T A u + c . u + sum v^3: gradient 3 a u^2 + (A + A^T) u + c, 3 v^2."""
  u, v = params["u"], params["v"]
  return jnp.sum(a * u ** 3) + u @ (A @ u) + c @ u + jnp.sum(v ** 3)


def _cubic_grad(params, a):
  u, v = np.asarray(params["u"]), np.asarray(params["v"])
  return {"u": 3 * a * u ** 2 + (A + A.T) @ u + C, "v": 3 * v ** 2}


# -- numerical_grad -------------------------------------------------------------


def test_numerical_grad_matches_closed_form():
  a = jnp.array([1.0, -2.0, 0.5])
  fd = gradcheck.numerical_grad(_cubic, _params(), a, A, C)
  assert jax.tree_util.tree_structure(fd) == jax.tree_util.tree_structure(_params())
  expected = _cubic_grad(_params(), np.asarray(a))
  # Truncation eps^2 |f'''| / 6 ~ 1e-12, round-off ulp(f) / eps ~ 1e-10.
  for k in ("u", "v"):
    np.testing.assert_allclose(fd[k], expected[k], rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("eps", (1e-1, 1e-2))
def test_numerical_grad_is_a_central_difference(eps):
  # For x^3 the central quotient is exactly 3 x^2 + eps^2 (a one-sided one
  # would add 3 x eps): this pins both the scheme and the step.
  x = jnp.array([0.5, -1.5, 3.0])
  fd = gradcheck.numerical_grad(lambda p: jnp.sum(p ** 3), x, eps=eps)
  np.testing.assert_allclose(fd, 3 * np.asarray(x) ** 2 + eps ** 2, rtol=1e-12)


def test_numerical_grad_is_exact_for_quadratics():
  # Central differences have no truncation error on a quadratic, whatever the step.
  x = jnp.array([0.3, -0.8, 1.1])
  f = lambda p, A, c: p @ (A @ p) + c @ p
  fd = gradcheck.numerical_grad(f, x, A, C, eps=0.5)
  np.testing.assert_allclose(fd, (A + A.T) @ np.asarray(x) + C, rtol=1e-13)


def test_numerical_grad_keeps_the_params_pytree():
  # Dense(W, None) of a bias-free net comes back as Dense(dW, None).
  params = (jaxbp.Dense(jnp.array([[1.0, -2.0], [0.5, 3.0]]), None), jaxbp.Dense(jnp.array([0.25]), None))
  f = lambda p: jnp.sum(p[0].W ** 3) + jnp.sum(p[1].W ** 2)
  fd = gradcheck.numerical_grad(f, params)
  gradcheck.check_same_structure(fd, params)
  assert all(p.b is None for p in fd)
  # f ~ 37: round-off ulp(f) / eps ~ 1e-8 dominates the eps^2 = 1e-12 truncation.
  np.testing.assert_allclose(fd[0].W, 3 * np.asarray(params[0].W) ** 2, rtol=0, atol=2e-8)
  np.testing.assert_allclose(fd[1].W, [0.5], rtol=0, atol=2e-8)


@pytest.mark.parametrize("leaf", (
    jnp.ones(3, jnp.float32), jnp.ones(3, jnp.int32), jnp.ones(3, jnp.float16)),
    ids=("float32", "int32", "float16"))
def test_numerical_grad_rejects_non_float64_leaves(leaf):
  params = {"ok": jnp.ones(2), "bad": leaf}
  with pytest.raises(TypeError, match=r"numerical_grad needs float64 leaves.*got " + str(leaf.dtype)):
    gradcheck.numerical_grad(lambda p: jnp.sum(p["ok"]) + jnp.sum(p["bad"]), params)


# -- structure ------------------------------------------------------------------


@pytest.mark.parametrize("a,b", (
    ((jnp.ones(2), jnp.ones(3)), [jnp.ones(2), jnp.ones(3)]),
    ((jnp.ones(2),), (jnp.ones(2), jnp.ones(2))),
    ({"W": jnp.ones(2)}, {"w": jnp.ones(2)}),
    (jaxbp.Dense(jnp.ones(2), None), jaxbp.Dense(jnp.ones(2), jnp.ones(2))),
), ids=("tuple-vs-list", "extra-leaf", "other-key", "None-vs-leaf"))
def test_check_same_structure_catches_tree_mismatch(a, b):
  with pytest.raises(ValueError, match=r"tree structures differ"):
    gradcheck.check_same_structure(a, b)
  with pytest.raises(ValueError, match=r"tree structures differ"):
    gradcheck.relative_errors(a, b)


def test_check_same_structure_catches_shape_mismatch():
  a = (jaxbp.Dense(jnp.ones((3, 4)), jnp.ones(4)), jaxbp.Dense(jnp.ones((4, 2)), jnp.ones(2)))
  b = (jaxbp.Dense(jnp.ones((3, 4)), jnp.ones(4)), jaxbp.Dense(jnp.ones((2, 4)), jnp.ones(2)))
  with pytest.raises(ValueError, match=re.escape(
      "leaf [1].W has shape (4, 2) in the first tree and (2, 4) in the second")):
    gradcheck.check_same_structure(a, b)
  # Same layout, other values: no error (the check reads shapes and structure only).
  gradcheck.check_same_structure(a, jax.tree_util.tree_map(lambda v: 2.0 * v, a))


# -- errors and the report ------------------------------------------------------


def _pair():
  ref = (jaxbp.Dense(jnp.array([[1.0, -4.0], [2.0, 0.5]]), jnp.array([10.0, 0.0])),)
  got = (jaxbp.Dense(jnp.array([[1.0, -4.02], [2.0, 0.5]]), jnp.array([10.0, 1e-3])),)
  return got, ref


def test_relative_errors_by_hand():
  got, ref = _pair()
  errs = gradcheck.relative_errors(got, ref)
  assert [e.path for e in errs] == ["[0].W", "[0].b"]
  assert [e.shape for e in errs] == [(2, 2), (2,)]
  # Normalised by the reference leaf's largest entry: 0.02 / 4 and 1e-3 / 10.
  np.testing.assert_allclose([e.max_abs_error for e in errs], [0.02, 1e-3], rtol=1e-12)
  np.testing.assert_allclose([e.relative_error for e in errs], [0.005, 1e-4], rtol=1e-12)
  np.testing.assert_allclose(gradcheck.max_relative_error(got, ref), 0.005, rtol=1e-12)
  assert gradcheck.max_relative_error(ref, ref) == 0.0
  assert gradcheck.max_relative_error((), ()) == 0.0


def test_relative_error_of_zero_reference_is_absolute():
  # An all-zero reference leaf (a dead ReLU layer) is compared in absolute terms.
  assert gradcheck.max_relative_error((jnp.zeros(3),), (jnp.zeros(3),)) == 0.0
  errs = gradcheck.relative_errors((jnp.array([0.0, -2.5e-7, 0.0]),), (jnp.zeros(3),))
  assert errs[0].relative_error == errs[0].max_abs_error == 2.5e-7


def test_max_relative_error_propagates_nan():
  ref = (jnp.ones(2), jnp.ones(2))
  got = (jnp.ones(2), jnp.array([1.0, jnp.nan]))
  err = gradcheck.max_relative_error(got, ref)
  assert not err <= 1e-10, err


def test_report_lists_every_leaf():
  got, ref = _pair()
  text = gradcheck.report(got, ref)
  lines = text.splitlines()
  assert len(lines) == 3
  assert lines[0].split() == ["leaf", "shape", "max|a-b|", "rel", "err"]
  assert lines[1].split() == ["[0].W", "(2,", "2)", "2.00e-02", "5.00e-03"]
  assert lines[2].split() == ["[0].b", "(2,)", "1.00e-03", "1.00e-04"]
