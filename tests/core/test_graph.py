"""jaxbp.graph: seed 003's computational graph over a jaxpr, checked against jax.grad."""
import doctest
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxbp.core import graph

TOL = dict(rtol=1e-12, atol=1e-12)
_rng = np.random.default_rng(0)


def _randn(*shape):
  return jnp.asarray(_rng.standard_normal(shape))


def seed_f(w, x, b, y):
  """Seed 003 §4.6.1: f(w, b) = 1/2 (s(wx + b) - y)^2 + 1/2 w^2, args in the seed's order."""
  return 0.5 * (jax.nn.sigmoid(w * x + b) - y) ** 2 + 0.5 * w ** 2


# Points keep away from kinks (relu, abs, max) and from ties, so that the
# derivative is unique; pow's base is positive.
X3, Y3, POS3 = _randn(3), _randn(3), jnp.asarray([0.7, 1.3, 2.1])
A23, B34, M33 = _randn(2, 3), _randn(3, 4), _randn(3, 3)
BATCH = _randn(4, 2, 3)
PARAMS = {"W1": _randn(3, 4), "b1": _randn(4), "W2": _randn(4, 2)}
CONST = jnp.asarray([1.0, -2.0, 0.5])

CASES = {
    # name: (f, args); every primitive the issue lists appears at least once.
    "seed003": (seed_f, (0.8, 1.5, -0.3, 0.2)),
    "add_sub_mul_div_neg": (lambda x, y: -((x + y) * (x - y) / y) + x / 3.0, (1.3, -0.7)),
    "integer_pow_pow": (lambda x, y: x ** 3 + x ** -2 + x ** 2.5 + y ** x + x ** y, (1.7, 0.6)),
    "exp_log_tanh_logistic": (
        lambda x: (jnp.exp(x) * jnp.log(x) + jnp.tanh(x) + jax.nn.sigmoid(x)).sum(), (POS3,)),
    "sin_cos": (lambda x: (jnp.sin(x) * jnp.cos(2.0 * x)).sum(), (X3,)),
    "max_min": (lambda x, y: (jnp.maximum(x, y) * jnp.minimum(x, 0.1)).sum(), (X3, Y3)),
    "abs_clip": (lambda x: (jnp.abs(x) + jnp.clip(x, -0.5, 0.5)).sum(), (X3,)),
    "where_relu": (lambda x: (jnp.where(x > 0, x, 0.0) ** 2).sum(), (X3,)),
    "leaky_relu_where": (lambda x: jnp.where(x > 0, x, 0.1 * x).sum(), (X3,)),
    "nn_relu_custom_jvp": (lambda x: (jax.nn.relu(x) * x).sum(), (X3,)),
    "matmul_matrix_matrix": (lambda a, b: jnp.tanh(a @ b).sum(), (A23, B34)),
    "matmul_matrix_vector": (lambda m, v: (m @ v) @ v, (M33, X3)),
    "dot_vector_vector": (lambda u, v: jnp.dot(u, v) * jnp.vdot(u, u), (X3, Y3)),
    "dot_general_batched": (lambda b: jnp.matmul(b, b.transpose(0, 2, 1)).sum(), (BATCH,)),
    "einsum_contract_two_axes": (lambda b, m: jnp.einsum("kij,ij->k", b, m[:2]) @ jnp.ones(4),
                                 (BATCH, M33)),
    "reshape_transpose_squeeze": (
        lambda m: (jnp.expand_dims(m, 0).squeeze(0).reshape(9, 1).T @ jnp.arange(9.0)).sum(),
        (M33,)),
    "broadcast_reduce_max_mean": (
        lambda m: (m - m.max(axis=1, keepdims=True)).mean() + m.min() * m.sum(0).max(), (M33,)),
    "sqrt_rsqrt_log1p_exp2_expm1": (
        lambda x: (jnp.sqrt(x) + lax.rsqrt(x) + jnp.log1p(x) + jnp.exp2(x) + jnp.expm1(x)).sum(),
        (POS3,)),
    "square_norm": (lambda x: jnp.square(x).sum() + jnp.linalg.norm(x), (X3,)),
    "stop_gradient": (lambda x: (lax.stop_gradient(x) * x).sum(), (X3,)),
    "logsumexp": (lambda x: jax.nn.logsumexp(x), (X3,)),
    "softmax_cross_entropy": (lambda z, y: -(jax.nn.log_softmax(z) * jax.nn.softmax(y)).sum(),
                              (X3, Y3)),
    "convert_element_type": (
        lambda x: (x.astype(jnp.float32) ** 2).sum().astype(jnp.float64) + (x > 0).sum() * x[0],
        (X3,)),
    "slice_concatenate": (lambda x: x[0] * jnp.concatenate([x[1:], x ** 2]).sum(), (X3,)),
    "closed_over_constant": (lambda x: (CONST * x).sum() + CONST @ jnp.exp(x), (X3,)),
    "mlp_pytree": (lambda p, x: jnp.tanh(jnp.tanh(x @ p["W1"] + p["b1"]) @ p["W2"]).sum(),
                   (PARAMS, X3)),
    "identity_output": (lambda x: x, (0.3,)),
}


@pytest.mark.parametrize("name", CASES)
def test_grad_matches_jax_grad(name):
  f, args = CASES[name]
  argnums = tuple(range(len(args)))
  ours = graph.grad(f, argnums)(*args)
  want = jax.jit(jax.grad(f, argnums))(*args)  # jit: one compile, not one per op
  assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(want)
  for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(want)):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, **TOL)


@functools.lru_cache(maxsize=None)
def _traced(name):
  f, args = CASES[name]
  return graph.trace(f, *args)


@pytest.mark.parametrize("name", CASES)
def test_graph_is_topological_and_children_match_inputs(name):
  f, args = CASES[name]
  g = _traced(name)
  for n in g.nodes:
    assert all(i < n.id for i in n.inputs), n  # parents are created first
    assert n.op in ("input", "const") or n.op in graph.supported_primitives()
  for u in g.nodes:
    assert g.child_ids[u.id] == tuple(sorted({v.id for v in g.nodes if u.id in v.inputs}))
  np.testing.assert_allclose(g.nodes[g.output].value, jax.jit(f)(*args), **TOL)


def test_cases_cover_every_listed_primitive():
  listed = {"add", "sub", "mul", "div", "neg", "integer_pow", "pow", "exp", "log", "tanh",
            "logistic", "max", "min", "abs", "sin", "cos", "dot_general", "reduce_sum",
            "broadcast_in_dim", "reshape", "transpose", "convert_element_type", "select_n",
            "squeeze", "reduce_max", "sqrt", "rsqrt", "log1p", "exp2", "stop_gradient", "gt"}
  seen = {n.op for name in CASES for n in _traced(name).nodes}
  assert listed <= seen, listed - seen


def test_argnums_int_and_tuple():
  f = lambda a, b: jnp.tanh(a @ b).sum()
  np.testing.assert_allclose(graph.grad(f)(A23, B34), jax.grad(f)(A23, B34), **TOL)
  da, db = graph.grad(f, argnums=(1, 0))(A23, B34)
  np.testing.assert_allclose(da, jax.grad(f, 1)(A23, B34), **TOL)
  np.testing.assert_allclose(db, jax.grad(f, 0)(A23, B34), **TOL)


@pytest.mark.parametrize("c,x", [(2.0, X3), (-3.0, X3), (0.5, _randn(5)), (1.5, 0.7)],
                         ids=["c2_n3", "c-3_n3", "c0.5_n5", "scalar"])
def test_compiled_passes_are_reused_safely(c, x):
  # Same structure, other constants and shapes: the cached passes must not go stale.
  f = lambda x: (c * jnp.sin(x) * x).sum()
  np.testing.assert_allclose(graph.grad(f)(x), jax.grad(f)(x), **TOL)
  g = graph.trace(f, x)
  np.testing.assert_allclose(g.node("c_1").value, c, **TOL)
  np.testing.assert_allclose(g.nodes[g.output].value, f(x), **TOL)


def test_backward_with_cotangent_matches_vjp():
  f = lambda m, v: jnp.tanh(m @ v)
  g = graph.trace(f, M33, X3)
  table = graph.backward(g, cotangent=Y3)
  _, vjp = jax.vjp(f, M33, X3)
  dm, dv = vjp(Y3)
  np.testing.assert_allclose(table[g.node("m").id], dm, **TOL)
  np.testing.assert_allclose(table[g.node("v").id], dv, **TOL)


# --- Seed 003 §4.6: the worked example, node by node.

W, XS, B, YS = 0.8, 1.5, -0.3, 0.2


@pytest.fixture(scope="module")
def seed_graph():
  return graph.trace(seed_f, W, XS, B, YS).backward()


def test_seed_node_order(seed_graph):
  # The seed's order, w, x, b, y, u_1..u_9; jaxpr adds the two 1/2s as leaves.
  assert seed_graph.order(constants=False) == (
      "w", "x", "b", "y", "u_1", "u_2", "u_3", "u_4", "u_5", "u_6", "u_7", "u_8", "u_9")
  assert seed_graph.order() == ("w", "x", "b", "y", "c_1", "c_2") + tuple(
      f"u_{k}" for k in range(1, 10))
  assert seed_graph.nodes[seed_graph.output].name == "u_9"


def test_seed_operations(seed_graph):
  # u_1 = wx, u_2 = u_1 + b, u_3 = s(u_2), u_4 = u_3 - y, u_5 = u_4^2,
  # u_6 = 1/2 u_5, u_7 = w^2, u_8 = 1/2 u_7, u_9 = u_6 + u_8.
  want = {"u_1": ("mul", ("w", "x")), "u_2": ("add", ("u_1", "b")),
          "u_3": ("logistic", ("u_2",)), "u_4": ("sub", ("u_3", "y")),
          "u_5": ("integer_pow", ("u_4",)), "u_6": ("mul", ("c_1", "u_5")),
          "u_7": ("integer_pow", ("w",)), "u_8": ("mul", ("c_2", "u_7")),
          "u_9": ("add", ("u_6", "u_8"))}
  for name, (op, ins) in want.items():
    n = seed_graph.node(name)
    assert (n.op, tuple(seed_graph.nodes[i].name for i in n.inputs)) == (op, ins), name
  assert seed_graph.node("u_5").params["y"] == 2
  assert float(seed_graph.node("c_1").value) == 0.5


def test_seed_children_sets(seed_graph):
  S = {"w": {"u_1", "u_7"}, "x": {"u_1"}, "u_1": {"u_2"}, "b": {"u_2"}, "u_2": {"u_3"},
       "u_3": {"u_4"}, "y": {"u_4"}, "u_4": {"u_5"}, "u_5": {"u_6"}, "u_6": {"u_9"},
       "u_7": {"u_8"}, "u_8": {"u_9"}, "u_9": set(),
       "c_1": {"u_6"}, "c_2": {"u_8"}}  # the constants are jaxpr's addition
  assert {u: set(seed_graph.children(u)) for u in seed_graph.order()} == S
  w = seed_graph.node("w").id
  assert seed_graph.children(w) == (seed_graph.node("u_1").id, seed_graph.node("u_7").id)


def test_seed_grad_table(seed_graph):
  # Seed 003 §4.6.2, in its order. (Its second and third terms read
  # "df/du_5 = df/du_9 du_9/du_5 = 1, df/du_7 = df/du_5 du_5/du_7 = 1/2": a
  # typo for u_8, since u_9 = u_6 + u_8 and u_8 = 1/2 u_7.)
  s = jax.nn.sigmoid(W * XS + B)
  ds = s * (1 - s)  # s'(wx + b)
  want = {"u_9": 1.0, "u_8": 1.0, "u_7": 0.5, "u_6": 1.0, "u_5": 0.5,
          "u_4": s - YS, "u_3": s - YS, "u_2": ds * (s - YS), "u_1": ds * (s - YS),
          "b": ds * (s - YS), "w": XS * ds * (s - YS) + W,
          "x": W * ds * (s - YS), "y": -(s - YS)}
  for name, value in want.items():
    np.testing.assert_allclose(seed_graph.gradient(name), value, **TOL, err_msg=name)
  assert set(seed_graph.grad_table) == {seed_graph.node(u).id
                                        for u in seed_graph.order(constants=False)}
  # df/dw = x s'(wx + b)(s(wx + b) - y) + w, through both children u_1 and u_7.
  np.testing.assert_allclose(graph.grad(seed_f)(W, XS, B, YS), XS * ds * (s - YS) + W, **TOL)


# --- Errors.

@pytest.mark.parametrize("f,prim", [(lambda x: jnp.cumsum(x).sum(), "cumsum"),
                                    (lambda x: lax.erf_inv(x).sum(), "erf_inv")],
                         ids=["cumsum", "erf_inv"])
def test_unsupported_primitive_is_named(f, prim):
  with pytest.raises(NotImplementedError, match=rf"'{prim}'.*supported primitives: .*dot_general"):
    graph.grad(f)(jnp.asarray([0.1, 0.2, 0.3]))


def test_non_scalar_output_is_a_clear_error():
  with pytest.raises(ValueError, match=r"shape \(3,\).*scalar.*\.sum\(\)"):
    graph.grad(jnp.tanh)(X3)
  with pytest.raises(ValueError, match=r"shape \(2, 4\)"):
    graph.trace(jnp.matmul, A23, B34).backward()


def test_integer_argument_is_rejected():
  with pytest.raises(TypeError, match="floating point"):
    graph.grad(lambda x, n: x * n, argnums=1)(1.0, 3)


def test_unknown_node_name():
  with pytest.raises(KeyError, match="No node named 'u_99'"):
    graph.trace(seed_f, W, XS, B, YS).node("u_99")


# --- Printing.

def test_table_has_headers_values_and_gradients(seed_graph):
  text = seed_graph.table()
  header = text.splitlines()[0].split(" | ")
  assert [h.strip() for h in header] == ["node", "operation", "inputs", "value", "gradient"]
  assert str(seed_graph) == text
  assert len(text.splitlines()) == 2 + len(seed_graph.nodes)
  row = next(line for line in text.splitlines() if line.startswith("u_3 "))
  s = float(jax.nn.sigmoid(W * XS + B))
  assert "logistic" in row and "u_2" in row and f"{s:.6f}"[:7] in row
  assert "integer_pow[y=2]" in text
  # An untouched graph prints its gradients too (backward runs for the table).
  assert graph.trace(seed_f, W, XS, B, YS).table() == text


def test_to_dot_has_a_node_and_an_edge_per_operand(seed_graph):
  g = graph.trace(lambda x: (x * x).sum(), X3)  # x feeds mul twice: two edges
  for gr in (seed_graph, g):
    dot = gr.to_dot()
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    edges = [line.strip() for line in dot.splitlines() if "->" in line]
    assert len(edges) == sum(len(n.inputs) for n in gr.nodes)
    for n in gr.nodes:
      assert f"n{n.id} [label=" in dot
      for i in n.inputs:
        assert f"n{i} -> n{n.id};" in edges
  assert 'label="u_1\\nmul"' in seed_graph.to_dot()


def test_docstring_examples_run():
  result = doctest.testmod(graph, optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0 and result.failed == 0
