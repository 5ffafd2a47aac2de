"""benchmarks' transformer section: the hand backward row against jax.value_and_grad.

No timing is asserted (a shared machine makes it noise). Asserted: a quick run
writes the row from two fresh processes with agreeing gradients and XLA's
memory figures; the gradient check fails on a wrong gradient, also on a
small leaf; the target fails when gradients differ or the hand step needs more
temporaries; the config refuses a width its heads do not divide.
"""
import json
import math
import os

import jax
import numpy as np
import pytest

import jaxbp
import benchmarks as benchmark
from benchmarks import transformer


@pytest.mark.slow
def test_quick_run_writes_the_row_from_two_processes_with_agreeing_gradients(tmp_path):
  res = benchmark.run(benchmark.quick(sections=("transformer",)), tmp_path)
  sec = json.loads((tmp_path / "results.json").read_text())["transformer"]
  assert sec == json.loads(json.dumps(res["transformer"]))
  assert transformer.Size(**sec["size"]) == transformer.Size(8, 2, 5, 2, 3, 16)
  pids = {r["pid"] for r in sec["records"]}
  assert len(pids) == 2 and os.getpid() not in pids
  for m in transformer.METHODS:
    v = sec["methods"][m]
    assert math.isfinite(v["step_s"]["median"]) and v["step_s"]["median"] > 0
    assert sec["memory"][m]["argument"] > 0 and sec["memory"][m]["output"] > 0
  check = sec["grad_check"]
  assert check["passed"] and check["children"] == 2
  net, params, _, _ = transformer.problem(transformer.Size(**sec["size"]))
  assert len(check["per_param"]) == len(jax.tree_util.tree_leaves(params))
  (t,) = res["targets"]
  assert t["measured"] == sec["ratio"]["of_medians"] and t["threshold"] == transformer.TARGET
  md = (tmp_path / "results.md").read_text()
  assert "## 7. Transformer: hand backward against autodiff" in md and "**passed**" in md


def _grads():
  # A gradient-shaped tree (the benchmark net's params, by shape only: nothing
  # compiles) with live values everywhere but bk, zero as dL/dbk is.
  net = jaxbp.Transformer(8, 2, 2, 16)
  shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  leaves = jax.tree_util.tree_flatten_with_path(shapes)[0]
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shapes), [
      np.zeros(a.shape) if jax.tree_util.keystr(p).endswith("attn.bk")
      else rng.normal(size=a.shape) for p, a in leaves])


def test_the_gradient_check_flags_a_wrong_leaf_even_a_small_one():
  ref = _grads()
  same = transformer.grad_difference(ref, ref)
  assert same["max_rel_err"] == 0.0
  assert "[0].attn.bk" in same["per_param"]
  bad = jax.tree_util.tree_map(lambda a: a, ref)
  blocks = list(bad)
  bq = blocks[1].attn.bq
  assert np.max(np.abs(bq)) > 0                         # a live gradient, not 0 against 0
  blocks[1] = blocks[1]._replace(attn=blocks[1].attn._replace(bq=bq * 1.01))
  out = transformer.grad_difference(tuple(blocks), ref)
  assert out["per_param"]["[1].attn.bq"] == pytest.approx(0.01, rel=1e-6)
  assert out["max_rel_err"] > transformer.GRAD_RTOL
  with pytest.raises(ValueError, match="tree differs"):
    transformer.grad_difference(tuple(blocks[:1]), ref)


def _sec(ratio, passed=True, hand_temp=1, auto_temp=2):
  return {"size": transformer.Size(8, 2, 5, 2, 3, 16)._asdict(), "skipped": {},
          "ratio": {"of_medians": ratio, "round_min": ratio, "round_max": ratio,
                    "of_cpu_medians": ratio, "rounds_compared": 1},
          "grad_check": {"passed": passed, "max_rel_err": 1e-6 if passed else 1.0},
          "memory": {transformer.HAND: {"temp": hand_temp},
                     transformer.AUTODIFF: {"temp": auto_temp}}}


def test_the_target_needs_speed_agreeing_gradients_and_no_more_memory():
  assert transformer.target(_sec(1.1))["met"]
  assert not transformer.target(_sec(1.3))["met"]
  assert not transformer.target(_sec(1.1, passed=False))["met"]
  assert not transformer.target(_sec(1.1, hand_temp=3))["met"]
  assert "missed by 8%" in transformer.target(_sec(1.3))["note"]


def test_config_refuses_heads_that_do_not_divide_the_width():
  with pytest.raises(ValueError, match="transformer_d_model"):
    benchmark.Config(transformer_d_model=10, transformer_heads=4)
