"""The transformer sweep: its config, its measurements against independent references,
and a quick run that writes the report and resumes from its store."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.core.attention import attention
from jaxbp.studies import transformer_grads, transformer_sweep


def test_config_names_the_bad_field():
  for bad, field in (({"d_model": 30, "heads": 4}, "d_model"), ({"rho0": 1.5}, "rho0"),
                     ({"norms": ("pre", "mid")}, "norms"), ({"samples": 3}, "samples"),
                     ({"parts": ()}, "parts"), ({"grad_depths": (1,)}, "grad_depths"),
                     ({"tokens": 1}, "tokens")):
    with pytest.raises(ValueError, match=field):
      transformer_sweep.Config(**bad)


def test_tokens_have_the_asked_second_moment_and_cosine():
  x = np.asarray(transformer_grads.tokens(jax.random.PRNGKey(0), 4, 6, 4096, 2.0, 0.6))
  assert np.mean(x * x) == pytest.approx(2.0, rel=0.05)
  u = x / np.linalg.norm(x, axis=-1, keepdims=True)
  cos = np.einsum("bid,bjd->bij", u, u)
  off = cos[:, ~np.eye(6, dtype=bool)]
  assert np.mean(off) == pytest.approx(0.6, abs=0.05)


@pytest.mark.slow
def test_the_pure_attention_residual_is_the_distance_from_rank_one():
  config = transformer_sweep.Config.quick()
  params = transformer_sweep._stack_params(jax.random.PRNGKey(1), 3, config.d_model)
  x = transformer_grads.tokens(jax.random.PRNGKey(2), 2, config.tokens, config.d_model, 1.0, 0.3)
  got = np.asarray(transformer_sweep._pure_attention(params, x, config.heads, False))
  h, ref = np.asarray(x), []
  for l in range(3):
    ref.append([np.linalg.norm(s - s.mean(0)) / np.linalg.norm(s) for s in h])
    p = jax.tree_util.tree_map(lambda a: a[l], params)
    h = np.asarray(attention(jnp.asarray(h), p, config.heads)[0])
  ref.append([np.linalg.norm(s - s.mean(0)) / np.linalg.norm(s) for s in h])
  np.testing.assert_allclose(got, np.asarray(ref), rtol=1e-10)
  assert got[-1].max() < got[0].min()                  # it does collapse


@pytest.mark.slow
def test_block_norms_are_the_autodiff_gradients_norms():
  net = jaxbp.Transformer(8, 2, 3, 16, norm="post")
  params = net.init(jax.random.PRNGKey(3), dtype=jnp.float64)
  x = transformer_grads.tokens(jax.random.PRNGKey(4), 2, 5, 8, 1.0, 0.2)
  y = jax.random.normal(jax.random.PRNGKey(5), x.shape, jnp.float64)
  g = jax.grad(jaxbp.objective(net, "mse"))(params, x, y)
  got = transformer_grads.block_sq_norms(g)
  assert got.shape == (3, 6) and np.all(got > 0)
  np.testing.assert_allclose(got[1, 4], float(jnp.sum(g[1].ffn1.W ** 2)), rtol=1e-12)
  np.testing.assert_allclose(got[2, 1], float(jnp.sum(g[2].attn.Wk ** 2)), rtol=1e-12)


@pytest.mark.slow
def test_quick_run_writes_the_report_and_resumes(tmp_path):
  jax.config.update("jax_enable_x64", True)
  config = transformer_sweep.Config.quick(parts=("signal", "rank"), norms=("post",))
  out = transformer_sweep.run(config, tmp_path)
  rows = out["rows"]["signal"]
  assert len(rows) == 4 and {r["qk"] for r in rows} == {"0", "default"}
  assert all(np.isfinite(r["rho_error"]) for r in rows)
  assert (tmp_path / "signal_qk0.png").exists() and (tmp_path / "rank.png").exists()
  rank = json.loads((tmp_path / "rank.json").read_text())
  assert np.mean(rank["pure"], 0)[-1] < np.mean(rank["skip"], 0)[-1]
  again = transformer_sweep.run(config, tmp_path)            # from the store: same numbers
  assert again["report"] == out["report"]
