"""jaxbp.studies.seed_examples (and its script): every number of the seeds, asserted.

The seeds' printed numbers are asserted at their printed precision (abs 5e-3
for two decimals, 5e-5 for four), hard-coded here from the lecture notes rather
than read back from the package; exact formulas against jax.grad at 1e-12.
"""
import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxbp
from jaxbp.core import backprop
from jaxbp.core import graph
from jaxbp.studies import seed_examples as se
from jaxbp.studies.seed_examples import seed001
from jaxbp.studies.seed_examples import seed003
from jaxbp.studies.seed_examples import seed004

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "seed_examples.py"

PRINTED_2, PRINTED_4, EXACT = 5e-3, 5e-5, 1e-12
KINDS = ("yes", "NO", "seed wrong", "seed inconsistent", "note")


@pytest.fixture(scope="module")
def rows():
  return se.run(se.Config(torch=False))


def _row(rows, example, quantity):
  """The row of ``example`` whose quantity is, or else uniquely starts with, ``quantity``."""
  found = [r for r in rows if r.example == example and r.quantity == quantity]
  found = found or [r for r in rows if r.example == example and r.quantity.startswith(quantity)]
  assert len(found) == 1, (example, quantity, [r.quantity for r in rows if r.example == example])
  return found[0]


def _close(a, b, atol):
  np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=0,
                             atol=atol)


# -- the whole table ------------------------------------------------------------


def test_every_row_agrees_or_names_a_seed_mistake(rows):
  assert {name for name, _ in se.EXAMPLES} == {r.example for r in rows}
  for r in rows:
    assert r.agreement.startswith(KINDS), r
    assert not r.agreement.startswith("NO"), r


SEED_MISTAKES = {
    ("000 activations", "ReLU' at 0: seed formula"),
    ("000 activations", "the Tanh heading"),
    ("000 MSE gradient", "dL/dθ"),
    ("000 perceptron", "§7.7 the hidden-layer result's left side"),
    ("001 unary gates", "why f_c, f_a are unary gates"),
    ("001 convexity", "f = -x^2"),
    ("001 convexity", "f = x^2"),
    ("002 one_hot", "one_hot([2, 1, 2]), 3 classes: shape"),
    ("002 one_hot", "one_hot([2, 1, 2]): the class"),
    ("002 softmax grad", "softmax + MSE: dL/dz, diagonal only"),
    ("002 softmax grad", "softmax + CE: dL/dz, diagonal only"),
    ("002 losses", "grad_mse vs d/dp"),
    ("002 losses", "'multi-class cross-entropy' (26)"),
    ("002 augmented net", "eq. (4)"),
    ("003 computational graph", "walk step"),
    ("004 gradient direction", "slope of L along g/|g|"),
}


def _one_hot_seed(X):
  """Seed 002's one_hot, verbatim (it shifts the labels by the batch minimum)."""
  X = X - X.min()
  return np.eye(X.max() + 1)[X]


def test_the_seed_mistakes_stated_as_text_hold(rows):
  """The "seed wrong" rows that compare no numbers, derived here one by one."""
  # 000: the code under the "Tanh" heading computes tanh, not the relu it names.
  z = np.linspace(-3.0, 3.0, 61)
  under_heading = 2 / (1 + np.exp(-2 * z)) - 1
  _close(under_heading, np.tanh(z), EXACT)
  assert np.max(np.abs(under_heading - np.maximum(z, 0))) > 0.5
  r = _row(rows, "000 activations", "the Tanh heading")
  assert (r.seed, r.jaxbp) == ("tf.nn.relu", "tf.math.tanh")
  # 000 §7.7: delta_j o_i has the shape of the weights into layer J (w_ij, 3 x 4
  # here), not of those out of it (w_jk, 4 x 2), and it is jax.grad for w_ij.
  rng = np.random.default_rng(0)
  x, tK = rng.standard_normal(4), np.array([0.0, 1.0])
  Ws = [rng.standard_normal(s) for s in ((4, 3), (3, 4), (4, 2))]
  oI = jax.nn.sigmoid(x @ Ws[0])
  oJ = jax.nn.sigmoid(oI @ Ws[1])
  oK = jax.nn.sigmoid(oJ @ Ws[2])
  dJ = oJ * (1 - oJ) * (Ws[2] @ (oK * (1 - oK) * (oK - tK)))
  hidden = np.outer(oI, dJ)
  half_sse = lambda Ws: 0.5 * jnp.sum((jax.nn.sigmoid(jax.nn.sigmoid(jax.nn.sigmoid(
      x @ Ws[0]) @ Ws[1]) @ Ws[2]) - tK) ** 2)
  grads = jax.grad(half_sse)(Ws)
  assert hidden.shape == grads[1].shape != grads[2].shape
  _close(hidden, grads[1], EXACT)
  r = _row(rows, "000 perceptron", "§7.7 the hidden-layer result's left side")
  assert (r.seed, r.jaxbp) == ("dL/dw_jk", "dL/dw_ij")
  # 001: as inputs, c (of c + x) and a (of a x) would get gradients 1 and x; the
  # unary gates' derivatives (-1/x^2, 1, e^x, a) hold them constant.
  dc, da = jax.grad(lambda c, a, x: c + a * x, argnums=(0, 1))(3.0, -1.5, 2.0)
  assert (float(dc), float(da)) == (1.0, 2.0)
  r = _row(rows, "001 unary gates", "why f_c, f_a are unary gates")
  assert f"dc={float(dc):g}, da={float(da):g}" in r.jaxbp
  # 002: the seed's one_hot of a batch without class 0 loses a column.
  shape = _one_hot_seed(np.array([2, 1, 2])).shape
  assert shape == (3, 2)
  r = _row(rows, "002 one_hot", "one_hot([2, 1, 2]), 3 classes: shape")
  assert (r.seed, r.jaxbp) == (str(shape), str((3, 3)))
  # 002 eq. (4): with X_0 (n, in+1) and W_0 (in+1, out) only X_0 W_0 is defined.
  X0, W0 = np.ones((5, 3)), np.ones((3, 2))
  assert (X0 @ W0).shape == (5, 2)
  with pytest.raises(ValueError):
    W0 @ X0
  r = _row(rows, "002 augmented net", "eq. (4)")
  assert "X_0 W_0" in r.jaxbp and "W_0 X_0" in r.seed


def test_the_seed_mistakes_are_flagged(rows):
  flagged = {(r.example, r.quantity) for r in rows if r.agreement.startswith("seed wrong")}
  for example, quantity in SEED_MISTAKES:
    assert any(e == example and q.startswith(quantity) for e, q in flagged), (example, quantity)
  assert len(flagged) == len(SEED_MISTAKES)
  inconsistent = [r for r in rows if r.agreement.startswith("seed inconsistent")]
  assert [r.example for r in inconsistent] == ["004 printed numbers"]


def test_script_prints_the_table_and_the_graph_and_writes_files(tmp_path):
  out_dir = tmp_path / "out"
  done = subprocess.run([sys.executable, str(SCRIPT), "--no-torch", "--only", "003 computational",
                         "--out", str(out_dir)], capture_output=True, text=True, cwd=ROOT)
  assert done.returncode == 0, done.stderr
  out = done.stdout
  assert "== 003 computational graph ==" in out
  assert "u_9  | add" in out and "grad_table" in out
  assert "0 NO" in out
  assert out.strip() in (out_dir / "report.md").read_text()
  rows = json.loads((out_dir / "rows.json").read_text())
  assert {r["example"] for r in rows} == {"003 computational graph"}
  assert json.loads((out_dir / "config.json").read_text()) == {
      "seed": 0, "torch": False, "only": "003 computational"}
  assert json.loads((out_dir / "provenance.json").read_text())["x64"] is True


# -- the package: no import side effect, x64 only inside run, checked config ------


def test_import_leaves_jax_config_alone():
  code = """
import jax
calls = []
update = jax.config.update
jax.config.update = lambda *a, **k: (calls.append(a), update(*a, **k))
before = jax.config.jax_enable_x64
import jaxbp.studies.seed_examples
assert jax.config.jax_enable_x64 == before, (before, jax.config.jax_enable_x64)
assert not calls, calls
print("ok", before)
"""
  env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                        cwd=ROOT)
  assert done.returncode == 0, done.stderr
  assert done.stdout.split() == ["ok", "False"]


def test_run_computes_in_float64_and_restores_the_flag():
  with jax.enable_x64(False):
    rows = se.run(se.Config(torch=False, only="001 sigmoid neuron"))
    assert not jax.config.jax_enable_x64
  assert jax.config.jax_enable_x64                                    # tests run with x64 on
  r = _row(rows, "001 sigmoid neuron", "dx: seed's code")
  assert r.agreement.startswith("yes") and np.asarray(r.jaxbp).dtype == np.float64
  _close(r.seed, r.jaxbp, EXACT)                                      # float32 misses 1e-12


@pytest.mark.parametrize("field, kwargs", [
    ("seed", dict(seed=-1)), ("seed", dict(seed=1.5)), ("seed", dict(seed=True)),
    ("torch", dict(torch="no")), ("only", dict(only=4)), ("only", dict(only="no such example")),
])
def test_bad_config_raises(field, kwargs):
  with pytest.raises(ValueError, match=f"Config: {field}"):
    se.Config(**kwargs)


def test_config_and_examples_agree():
  assert tuple(name for name, _ in se.EXAMPLES) == se.EXAMPLE_NAMES
  assert se.Config(only="graph").selects("003 computational graph")
  assert not se.Config(only="004").selects("003 computational graph")
  with pytest.raises(TypeError, match="Config"):
    se.run({"seed": 0})


# -- seed 000 -------------------------------------------------------------------


def test_gradient_tape_examples(rows):
  ex = "000 GradientTape"
  _close(_row(rows, ex, "d(x*w)/dw").jaxbp, 2.0, EXACT)                 # In[22]: 2.0
  assert float(_row(rows, ex, "dy/dw, y = x*w computed outside").jaxbp) == 0.0  # TF: None
  _close(_row(rows, ex, "the same gradient, called 3 times").jaxbp, [2.0] * 3, EXACT)
  f = jax.grad(lambda w, x: x * w)
  assert [float(f(1.0, 2.0)) for _ in range(2)] == [2.0, 2.0]


def test_activation_identities():
  z = jnp.linspace(-6.0, 6.0, 241)
  s = jax.nn.sigmoid
  tanh, dtanh, d = jax.jit(lambda z: (
      2 * s(2 * z) - 1, jax.vmap(jax.grad(jnp.tanh))(z), jaxbp.activations.sigmoid.grad(z)))(z)
  _close(tanh, jnp.tanh(z), EXACT)                                     # tanh = 2 s(2x) - 1
  _close(dtanh, 1 - jnp.tanh(z) ** 2, EXACT)
  assert float(jnp.max(d)) <= 0.25 and float(d[120]) == 0.25           # z[120] = 0


def test_softmax_jacobian():
  a = np.array([0.3, -1.0, 2.0])
  p = np.exp(a) / np.sum(np.exp(a))
  seed = p[:, None] * (np.eye(3) - p[None, :])                         # p_i (delta_ij - p_j)
  auto, hand = jax.jit(lambda a: (jax.jacobian(jax.nn.softmax)(a),
                                  jaxbp.activations.softmax_jacobian(a)))(a)
  _close(auto, seed, EXACT)
  _close(hand, seed, EXACT)


def test_mse_sign_and_perceptrons(rows):
  r = _row(rows, "000 MSE gradient", "dL/dθ")
  _close(r.seed, -r.jaxbp, EXACT)                                      # only the sign differs
  for quantity in ("§7.4 dL/dw_j1", "§7.4 the same", "§7.5", "§7.7 dL/dw_ni", "§7.7 dL/dw_ij",
                   "§7.7 dL/dw_jk", "§7.7 deltas"):
    r = _row(rows, "000 perceptron", quantity)
    _close(r.seed, r.jaxbp, EXACT)


def test_single_output_perceptron_formula():
  x, w, t = jnp.array([0.5, -1.0, 2.0]), jnp.array([0.3, 0.2, -0.4]), 1.0
  o = jax.nn.sigmoid(x @ w)
  auto = jax.grad(lambda w: 0.5 * (jax.nn.sigmoid(x @ w) - t) ** 2)(w)
  _close(auto, (o - t) * o * (1 - o) * x, EXACT)                       # (o - t) o (1 - o) x_j


def test_tf_softmax_mse_and_himmelblau(rows):
  for r in (r for r in rows if r.example in ("000 TF softmax + MSE", "000 Himmelblau")):
    assert r.agreement.startswith("yes"), r


# -- seed 001 -------------------------------------------------------------------


def test_gates(rows):
  ex = "001 gates"
  _close(_row(rows, ex, "add gate: q").jaxbp, 3.0, EXACT)
  _close(_row(rows, ex, "f = q z").jaxbp, -12.0, EXACT)
  _close(_row(rows, ex, "df/dq").jaxbp, -4.0, EXACT)
  _close(_row(rows, ex, "df/dx, df/dy").jaxbp, [-4.0, -4.0], EXACT)
  _close(_row(rows, ex, "figure: the add gate").jaxbp, [2.00, 2.00], PRINTED_2)
  _close(_row(rows, ex, "figure: max routes").jaxbp, [2.00, 0.00], PRINTED_2)
  _close(_row(rows, ex, "figure: mul").jaxbp, -8.00, PRINTED_2)


def test_sigmoid_neuron(rows):
  ex = "001 sigmoid neuron"
  _close(_row(rows, ex, "f = s(1.0)").jaxbp, 0.73, PRINTED_2)
  _close(_row(rows, ex, "local gradient").jaxbp, 0.2, 5e-2)            # "(1-0.73)*0.73 ~ 0.2"
  _close(_row(rows, ex, "dx").jaxbp, [0.39, -0.59], PRINTED_2)
  _close(_row(rows, ex, "dw").jaxbp, [-0.20, -0.39, 0.20], PRINTED_2)
  w, x = jnp.array([2.0, -3.0, -3.0]), jnp.array([-1.0, -2.0])
  f = lambda w, x: jax.nn.sigmoid(w[0] * x[0] + w[1] * x[1] + w[2])
  gw, gx = jax.grad(f, argnums=(0, 1))(w, x)
  _close(_row(rows, ex, "dx: seed's code").seed, gx, EXACT)
  _close(_row(rows, ex, "dw: seed's code").seed, gw, EXACT)


def test_staged_backprop_every_d_variable():
  """Each d-variable of the seed's code is df/d(that stage), the rest held fixed."""
  x, y = 3.0, -4.0
  d = seed001.staged_seed(x, y)
  s = jax.nn.sigmoid
  sigy, sigx, xpy = s(y), s(x), x + y
  num, den = x + sigy, sigx + xpy ** 2
  g = jax.grad
  expected = {
      "dnum": g(lambda num: num / den)(num),
      "dinvden": g(lambda invden: num * invden)(1 / den),
      "dden": g(lambda den: num / den)(den),
      "dsigx": g(lambda sigx: num / (sigx + xpy ** 2))(sigx),
      "dxpysqr": g(lambda sq: num / (sigx + sq))(xpy ** 2),
      "dxpy": g(lambda xpy: num / (sigx + xpy ** 2))(xpy),
      "dsigy": g(lambda sigy: (x + sigy) / den)(sigy),
      "dx (4)": g(lambda x: num / (sigx + (x + y) ** 2))(x),               # via x + y only
      "dy (4)": g(lambda y: num / (sigx + (x + y) ** 2))(y),
      "dx (3)": g(lambda x: num / (s(x) + (x + y) ** 2))(x),               # += via s(x)
      "dx (2)": g(lambda x: (x + sigy) / (s(x) + (x + y) ** 2))(x),        # += via num: df/dx
      "dy (1)": g(lambda y: (x + s(y)) / (sigx + (x + y) ** 2))(y),        # += via s(y): df/dy
  }
  for k, v in expected.items():
    _close(d[k], v, EXACT)
  f = lambda x, y: (x + s(y)) / (s(x) + (x + y) ** 2)
  _close([d["dx (2)"], d["dy (1)"]], jax.grad(f, argnums=(0, 1))(x, y), EXACT)
  # With = instead of +=, the earlier branches are lost.
  wrong = seed001.staged_seed(x, y, accumulate=False)
  assert abs(wrong["dx (2)"] - d["dx (2)"]) > 1.0


def test_staged_backprop_rows(rows):
  table = [r for r in rows if r.example == "001 staged backprop"]
  assert sum(r.agreement.startswith("yes") for r in table) == 13       # 12 d-variables + (dx, dy)


def test_matrix_product_and_input_scaling(rows):
  r = _row(rows, "001 matrix product", "shapes")
  assert r.jaxbp == str(((5, 10), (10, 3), (5, 3)))
  for q in ("dW = dD X^T", "dX = W^T dD", "row form"):
    assert _row(rows, "001 matrix product", q).agreement.startswith("yes")
  _close(_row(rows, "001 input scaling", "multiply gate").jaxbp, 1000.0, EXACT)
  _close(_row(rows, "001 input scaling", "  |dW(1000 x)| / |dW(x)| at W=0").jaxbp, 1000.0, 1e-9)


# -- seed 002 -------------------------------------------------------------------


def test_one_hot_and_stable_softmax(rows):
  _close(_row(rows, "002 one_hot", "one_hot([0, 2, 1])").jaxbp, np.eye(3)[[0, 2, 1]], EXACT)
  r = _row(rows, "002 one_hot", "one_hot([2, 1, 2]): the class")
  assert list(r.seed) == [1, 0, 1] and list(r.jaxbp) == [2, 1, 2]
  r = _row(rows, "002 softmax", "naive softmax")
  assert np.isnan(r.seed).all() and np.isfinite(r.jaxbp).all()
  _close(r.jaxbp, [0.0900, 0.2447, 0.6652], PRINTED_4)


def test_softmax_diagonal_only_is_wrong(rows):
  for loss in ("MSE", "CE"):
    r = _row(rows, "002 softmax grad", f"softmax + {loss}: dL/dz, diagonal only")
    assert np.max(np.abs(np.asarray(r.seed) - np.asarray(r.jaxbp))) > 0.05
  # Softmax + MSE by a net: the hand recursion (full Jacobian) equals jax.grad.
  net = jaxbp.MLP((2, 3), output_activation="softmax")
  W = jnp.array([[0.4, -0.7, 0.2], [1.1, 0.3, -0.5]])
  params = (jaxbp.Dense(W, jnp.array([0.1, 0.0, -0.2])),)
  x = jnp.array([[0.5, -1.0], [1.5, 0.2]])
  y = jnp.eye(3)[jnp.array([0, 2])]
  auto, hand = jax.jit(lambda p: (jax.grad(jaxbp.objective(net, "mse"))(p, x, y),
                                  backprop.grad(net, "mse", p, x, y)))(params)
  _close(se.flat(hand), se.flat(auto), EXACT)


def test_seed002_losses(rows):
  r = _row(rows, "002 losses", "grad_mse vs d/dp")
  _close(2 * np.asarray(r.seed), r.jaxbp, EXACT)                       # off by exactly 2
  r = _row(rows, "002 losses", "'multi-class cross-entropy' (26)")
  p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])                      # the seed's example
  y = np.eye(3)[[0, 2]]
  _close(r.jaxbp, -np.sum(y * np.log(p), axis=1), EXACT)                # -sum y log p
  _close(r.jaxbp, [-math.log(0.7), -math.log(0.6)], EXACT)
  # (26) averages binary cross-entropies over the outputs: its first row by hand.
  _close(r.seed[0], -(math.log(0.7) + math.log(0.8) + math.log(0.9)) / 3, EXACT)
  assert abs(r.seed[0] - r.jaxbp[0]) > 0.1                              # "seed wrong" shows
  for q in ("(26) vs jaxbp binary", "binary CE gradient (25)", "jaxbp mse.grad"):
    assert _row(rows, "002 losses", q).agreement.startswith("yes")


def test_seed002_code_matches_jax_grad(rows):
  for r in (r for r in rows if r.example == "002 augmented net" and "eq. (4)" not in r.quantity):
    assert r.agreement.startswith("yes"), r


# -- seed 003 -------------------------------------------------------------------


def test_graph_nodes_children_and_grad_table(rows):
  ex = "003 computational graph"
  assert _row(rows, ex, "node order").jaxbp == "w, x, b, y, " + ", ".join(
      f"u_{i}" for i in range(1, 10))
  assert _row(rows, ex, "S(w)").jaxbp == "{u_1, u_7}"
  for u, kids in seed003.SEED003_CHILDREN.items():
    r = _row(rows, ex, f"S({u})")
    assert r.jaxbp == r.seed == "{" + ", ".join(kids) + "}"
  for u in ("u_9", "u_8", "u_7", "u_6", "u_5", "u_4", "u_3", "u_2", "u_1", "b", "w"):
    r = _row(rows, ex, f"grad_table df/d{u}:")
    _close(r.seed, r.jaxbp, EXACT)
  _close(_row(rows, ex, "grad_table df/du_7").jaxbp, 0.5, EXACT)


@pytest.mark.parametrize("point", [(0.8, 1.5, -0.4, 1.0), (-1.3, 0.7, 2.0, 0.0)])
def test_graph_df_dw_formula(point):
  w, x, b, y = point
  s = 1 / (1 + math.exp(-(w * x + b)))
  formula = x * s * (1 - s) * (s - y) + w                              # x s'(wx+b)(s - y) + w
  _close(graph.grad(seed003.seed003_f)(*point), formula, EXACT)
  _close(jax.grad(seed003.seed003_f)(*point), formula, EXACT)


def test_scalar_chain_and_output_gradients(rows):
  for ex in ("003 scalar chain", "003 output gradients", "003 PyTorch MSE example"):
    for r in (r for r in rows if r.example == ex):
      assert r.agreement.startswith("yes"), r


# -- seed 004 -------------------------------------------------------------------


def test_seed004_printed_numbers_are_inconsistent():
  w0, w1, g = seed004.SEED004_W0, seed004.SEED004_W1, seed004.SEED004_GRAD_IN6
  from_in6 = w0 - 0.1 * g
  assert np.max(np.abs(w1 - from_in6)) > 0.04                          # >> rounding 1e-4
  # Not a step along the In[6] gradient for any learning rate either: the best one
  # (least squares) leaves a residual far above the printed rounding.
  lr = float(np.sum(g * (w0 - w1)) / np.sum(g * g))
  assert np.max(np.abs(w0 - w1 - lr * g)) > 0.01, lr


def test_seed004_momentum_from_rest_is_one_sgd_step():
  """In[29]'s claim, on a gradient computed here: from v = 0, the seed's momentum step
  (v = 0.9 v + 0.1 dw, w -= v) and optax's are the SGD step w - 0.1 dw. The gradient
  of the seed's net is checked against central finite differences first."""
  net, params = seed004.seed004_params(0)
  x, z = seed004.SEED004_X, seed004.SEED004_Z
  loss = jaxbp.objective(net, "softmax_cross_entropy")
  dw = np.asarray(jax.grad(loss)(params, x, z)[0].W)
  eps, fd = 1e-6, np.zeros_like(dw)
  for i, j in np.ndindex(*dw.shape):
    step = np.zeros_like(dw)
    step[i, j] = eps
    shifted = lambda s: (jaxbp.Dense(params[0].W + s, params[0].b),) + tuple(params[1:])
    fd[i, j] = (loss(shifted(step), x, z) - loss(shifted(-step), x, z)) / (2 * eps)
  _close(dw, fd, 1e-8)
  assert np.max(np.abs(dw)) > 1e-3                                     # not 0 against 0
  w0 = np.asarray(params[0].W)
  v = 0.9 * np.zeros_like(w0) + 0.1 * dw
  opt = optax.sgd(0.1, momentum=0.9)
  by_optax = optax.apply_updates(w0, opt.update(dw, opt.init(w0))[0])
  _close(w0 - v, w0 - 0.1 * dw, EXACT)
  _close(by_optax, w0 - 0.1 * dw, EXACT)


def test_seed004_printed_rows(rows):
  ex = "004 printed numbers"
  for q in ("In[27]", "In[29]", "  optax.sgd", "momentum step from v=0"):
    r = _row(rows, ex, q)
    assert r.agreement.startswith("yes"), r
    _close(r.jaxbp, seed004.SEED004_W1, PRINTED_4)


def test_seed004_network_recursion_matches_jax_grad(rows):
  net, params = seed004.seed004_params(0)
  _close(params[0].W.T, seed004.SEED004_W0, 0.0)                       # torch (out, in) -> ours
  assert [p.W.shape for p in params] == [(3, 3), (3, 2), (2, 3)]
  x, z = seed004.SEED004_X, seed004.SEED004_Z
  hand, auto = jax.jit(lambda p: (
      backprop.grad(net, "softmax_cross_entropy", p, x, z),
      jax.grad(jaxbp.objective(net, "softmax_cross_entropy"))(p, x, z)))(params)
  _close(se.flat(hand), se.flat(auto), EXACT)
  r = _row(rows, "004 network", "dL/dW_h1")
  _close(r.jaxbp, auto[0].W, EXACT)
  for q in ("SGD lr 0.1", "momentum step from v=0", "5 momentum steps"):
    assert _row(rows, "004 network", q).agreement.startswith("yes")
  _close(_row(rows, "004 x**3", "d(x^3)/dx").jaxbp, 3.0, EXACT)


def test_seed004_gradient_points_uphill(rows):
  r = _row(rows, "004 gradient direction", "slope along g/|g| = |g|")
  assert float(r.jaxbp) > 0
  _close(r.seed, r.jaxbp, EXACT)


def test_pytorch_agrees():
  pytest.importorskip("torch")
  config = se.Config(torch=True)
  with se.float64():            # the example functions assume float64; run() provides it
    rows = (seed004.cube(config) + seed003.torch_mse_example(config)
            + seed004.seed004_network(config))
  for r in rows:
    assert r.agreement.startswith(("yes", "note")), r
  _close(_row(rows, "004 x**3", "d(x^3)/dx at 1: torch").jaxbp, 3.0, EXACT)
  r = _row(rows, "004 network", "net.h1.weight.grad (3,3)")
  assert np.shape(r.seed) == (3, 3)
  _close(r.seed, r.jaxbp, EXACT)                                        # torch grad = ours.T
  assert any(r.quantity.startswith("In[17] loop: the 100 losses") for r in rows)
  assert any(r.quantity.startswith("(w.grad, b.grad): PyTorch") for r in rows)
