"""Signal propagation through transformers at init, measured against theory.

Four parts, each a list of points the driver stores as they finish:

* ``signal`` (a): for every norm (pre/post/none), residual scale alpha in
  {1, 1/sqrt(L)}, skip scale beta and qk_scale in {0, the default}, ``seeds``
  :class:`jaxbp.Transformer` s of depth L read ``batch`` sequences of
  equicorrelated tokens (second moment ``q0``, cosine ``rho0``); every block's
  token kernel gives q_l and rho_l (:mod:`jaxbp.theory.attention`'s
  definitions), set beside :func:`jaxbp.theory.attention.signal_profile` started
  from each sequence's own input kernel. At ``qk_scale = 0`` the theory is exact
  at infinite width; at the default it takes the expectation over Gaussian
  logits and neglects what its docstring lists, and the table shows its errors
  as they are.
* ``rank`` (b): Dong et al. 2021: pure attention (no skip, no FFN, no norm)
  built from :func:`jaxbp.core.attention.attention`, the distance of the tokens
  from rank one per layer, beside :func:`jaxbp.theory.attention.rank_collapse`;
  and the same stack with a skip, which keeps it off rank one.
* ``gradient`` (c): per-block gradient norms for pre- and post-LN at several
  depths (:mod:`jaxbp.studies.transformer_grads`), last/first against the prediction.
* ``noci`` (d): Noci et al. 2022: ``|dL/dWq|``, ``|dL/dWk|`` against ``|dL/dWv|``
  per block as the input tokens' cosine rho0 -> 1 (hand backward).

Writes ``signal.csv/json``, ``rank.json``, ``gradient.json``, ``noci.json``,
figures and ``report.md`` (:mod:`jaxbp.studies.transformer_sweep_report`).
Runs in float64: with norm "none" q grows like 2^(2L).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Mapping, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.core import backprop
from jaxbp.core import checks
from jaxbp.core.attention import Attention, attention
from jaxbp.core.transformer import Transformer
from jaxbp.measure import attention_stats
import jaxbp.studies.cli as cli
import jaxbp.studies.driver as driver
import jaxbp.studies.transformer_sweep_report as report
import jaxbp.studies.transformer_grads as grads_part
from jaxbp.studies.transformer_grads import tokens
from jaxbp.theory import attention as theory

VERSION = 1
ALPHAS = ("1", "1/sqrt(L)")
QK = ("0", "default")
PARTS = ("signal", "rank", "gradient", "noci")
GRID_FIELDS = ("parts", "norms", "skip_scales", "grad_depths", "noci_rhos")
_W = "transformer_sweep Config"


@dataclasses.dataclass(frozen=True)
class Config:
  """The sweep; checked on construction (a ValueError names the field).

  Attributes:
    d_model, heads, d_ff: the transformers' widths (relu FFN).
    tokens: T, the sequence length.
    depth: L of the signal part (a).
    seeds: networks per point; batch: sequences per network.
    q0, rho0: the input tokens' second moment and pairwise cosine.
    norms, skip_scales: the grid of (a) (with alpha in ALPHAS, qk_scale in QK).
    rank_depth: layers of the pure attention stack (b).
    grad_depths: depths of (c), pre- and post-LN.
    noci_rhos, noci_depth: the input cosines and the depth of (d).
    samples: the theory's Monte Carlo draws of the logits per sublayer.
    parts: which of PARTS to run.
    seed: the PRNG seed of the study.
  """
  d_model: int = 256
  heads: int = 4
  d_ff: int = 1024
  tokens: int = 32
  depth: int = 64
  seeds: int = 4
  batch: int = 2
  q0: float = 1.0
  rho0: float = 0.2
  norms: Tuple[str, ...] = ("pre", "post", "none")
  skip_scales: Tuple[float, ...] = (1.0,)
  rank_depth: int = 8
  grad_depths: Tuple[int, ...] = (6, 12, 24)
  noci_rhos: Tuple[float, ...] = (0.0, 0.5, 0.9, 0.99, 0.999, 0.9999)
  noci_depth: int = 4
  samples: int = 512
  parts: Tuple[str, ...] = PARTS
  seed: int = 0

  def __post_init__(self):
    set_ = lambda name, value: object.__setattr__(self, name, value)
    for name in ("d_model", "heads", "d_ff", "depth", "seeds", "batch", "rank_depth",
                 "noci_depth"):
      set_(name, checks.positive_int(getattr(self, name), name, _W))
    if self.d_model % self.heads:
      raise ValueError(f"{_W}: d_model must be a multiple of heads, got d_model="
                       f"{self.d_model}, heads={self.heads}.")
    set_("tokens", checks.int_at_least(self.tokens, 2, "tokens", _W))
    set_("q0", checks.positive(self.q0, "q0", _W))
    set_("rho0", checks.finite(self.rho0, "rho0", _W, low=0.0, high=1.0))
    set_("samples", checks.int_at_least(self.samples, 2, "samples", _W))
    if self.samples % 2:
      raise ValueError(f"{_W}: samples must be even (antithetic pairs), got {self.samples}.")
    set_("seed", checks.int_at_least(self.seed, 0, "seed", _W))
    for name, allowed in (("norms", ("pre", "post", "none")), ("parts", PARTS)):
      v = getattr(self, name)
      if isinstance(v, (str, bytes)) or not v or any(a not in allowed for a in v):
        raise ValueError(f"{_W}: {name} must be a non-empty list from {', '.join(allowed)}, "
                         f"got {v!r}.")
      set_(name, tuple(v))
    set_("skip_scales", tuple(checks.finite(b, "skip_scales", _W, low=0.0)
                              for b in self.skip_scales))
    set_("grad_depths", tuple(checks.int_at_least(d, 2, "grad_depths", _W)
                              for d in self.grad_depths))
    set_("noci_rhos", tuple(checks.finite(r, "noci_rhos", _W, low=0.0, high=1.0)
                            for r in self.noci_rhos))

  @classmethod
  def quick(cls, **overrides) -> "Config":
    """The small preset (about a minute): narrow, short and shallow."""
    return cls(**{"d_model": 32, "heads": 2, "d_ff": 64, "tokens": 6, "depth": 4, "seeds": 2,
                  "batch": 2, "norms": ("pre", "post"), "skip_scales": (1.0,),
                  "rank_depth": 3, "grad_depths": (2, 4), "noci_rhos": (0.0, 0.9),
                  "noci_depth": 2, "samples": 64, **overrides})

  @classmethod
  def from_dict(cls, config: Mapping) -> "Config":
    """From a mapping of field names; unknown keys are an error."""
    return cli.from_dict(cls, config, _W)

  def to_dict(self) -> dict:
    return driver.config_dict(self)

  @property
  def head_dim(self) -> int:
    return self.d_model // self.heads


def _alpha(name: str, depth: int) -> float:
  return 1.0 if name == "1" else 1.0 / math.sqrt(depth)


def _logits(config: Config, qk: str) -> dict:
  # The theory's logit scale sigma = qk_scale sqrt(dh): 0, or 1 at the default qk_scale.
  return {"logit_std": 0.0} if qk == "0" else {"logit_std": 1.0, "head_dim": config.head_dim}


def signal_net(config: Config, point: Mapping) -> Transformer:
  return Transformer(config.d_model, config.heads, config.depth, config.d_ff,
                     norm=point["norm"], residual_scale=_alpha(point["alpha"], config.depth),
                     skip_scale=point["beta"], qk_scale=0.0 if point["qk"] == "0" else None,
                     stack=True)


@functools.partial(jax.jit, static_argnames=("net",))
def _kernels(net, params, x):
  return theory.token_kernel(attention_stats.transformer_states(net, params, x).h)


def measure_signal(config: Config, point: Mapping) -> dict:
  """Per sequence, measured and predicted (q_l, rho_l), l = 0..L."""
  net = signal_net(config, point)
  # The same networks and inputs for every setting: the settings differ in spec only.
  key = jax.random.PRNGKey(config.seed)
  measured, predicted = [], []
  for s in range(config.seeds):
    kp, kx = jax.random.split(jax.random.fold_in(key, s))
    x = tokens(kx, config.batch, config.tokens, config.d_model, config.q0, config.rho0)
    K = _kernels(net, net.init(kp, dtype=jnp.float64), x)          # (L+1, batch, T, T)
    measured.append(theory.kernel_stats(K))
    for b in range(config.batch):
      predicted.append(theory.signal_profile(
          config.depth, K[0, b], norm=point["norm"], residual_scale=net.residual_scale,
          skip_scale=point["beta"], samples=config.samples, key=config.seed,
          **_logits(config, point["qk"])))
  m_q = np.concatenate([np.asarray(m.q).T for m in measured])        # (seqs, L+1)
  m_rho = np.concatenate([np.asarray(m.rho).T for m in measured])
  return {"measured_q": m_q.tolist(), "measured_rho": m_rho.tolist(),
          "predicted_q": [np.asarray(p.q).tolist() for p in predicted],
          "predicted_rho": [np.asarray(p.rho).tolist() for p in predicted]}


def _stack_params(key, depth, d):
  ws = jax.random.normal(key, (4, depth, d, d), jnp.float64) / math.sqrt(d)
  zero = jnp.zeros((depth, d), jnp.float64)
  return Attention(*ws, zero, zero, zero, zero)


@functools.partial(jax.jit, static_argnames=("heads", "skip"))
def _pure_attention(params, x, heads, skip):
  def layer(h, p):
    z = attention(h, p, heads)[0]
    h = h + z if skip else z
    return h, h
  _, hs = jax.lax.scan(layer, x, params)
  hs = jnp.concatenate([x[None], hs])
  r = hs - jnp.mean(hs, axis=-2, keepdims=True)
  return jnp.sqrt(jnp.sum(r * r, axis=(-2, -1)) / jnp.sum(hs * hs, axis=(-2, -1)))


def measure_rank(config: Config) -> dict:
  """(b): ``||h - 1 h_bar^T|| / ||h||`` per layer and sequence, without and with a skip."""
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 10_000)
  out = {"pure": [], "skip": []}
  for s in range(config.seeds):
    kp, kx = jax.random.split(jax.random.fold_in(key, s))
    params = _stack_params(kp, config.rank_depth, config.d_model)
    x = tokens(kx, config.batch, config.tokens, config.d_model, config.q0, config.rho0)
    for name, skip in (("pure", False), ("skip", True)):
      out[name] += np.asarray(_pure_attention(params, x, config.heads, skip)).T.tolist()
  pred = theory.rank_collapse(config.rank_depth, config.q0, config.rho0, config.tokens,
                              logit_std=1.0, head_dim=config.head_dim, samples=config.samples,
                              key=config.seed)
  out["predicted"] = np.asarray(pred.residual).tolist()
  out["cubic"] = np.asarray(pred.cubic).tolist()
  return out


def measure_noci(config: Config) -> dict:
  """(d): per input cosine, the mean over seeds of each block's |dL/dW{q,k,v,o}| (MSE
  to a random target, pre-LN, hand backward)."""
  net = Transformer(config.d_model, config.heads, config.noci_depth, config.d_ff, norm="pre")
  step = jax.jit(functools.partial(backprop.grad, net, "mse"))
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 20_000)
  rows = []
  for rho in config.noci_rhos:
    norms = []
    for s in range(config.seeds):
      kp, kx, ky = jax.random.split(jax.random.fold_in(key, s), 3)
      x = tokens(kx, config.batch, config.tokens, config.d_model, config.q0, rho)
      y = jax.random.normal(ky, x.shape, jnp.float64)
      g = step(net.init(kp, dtype=jnp.float64), x, y)
      norms.append([np.asarray(v) for v in attention_stats.attention_grad_norms(g)])
    mean = np.mean(np.asarray(norms), axis=0)                     # (4, depth)
    rows.append({"rho0": rho, **{n: mean[i].tolist() for i, n in
                                 enumerate(attention_stats.AttentionGradNorms._fields)}})
  return {"rows": rows}


def points(config: Config) -> list:
  """Every stored point: (a)'s grid, then (b), (c) per depth, (d)."""
  out = []
  if "signal" in config.parts:
    for norm in config.norms:
      for alpha in ALPHAS:
        for beta in config.skip_scales:
          for qk in QK:
            out.append({"part": "signal", "norm": norm, "alpha": alpha, "beta": beta,
                        "qk": qk})
  if "rank" in config.parts:
    out.append({"part": "rank"})
  if "gradient" in config.parts:
    out += [{"part": "gradient", "grad_depth": d, "loss": "readout"} for d in config.grad_depths]
  if "noci" in config.parts:
    out.append({"part": "noci", "rhos": list(config.noci_rhos)})
  return out


def measure(config: Config, point: Mapping) -> dict:
  part = point["part"]
  if part == "signal":
    return measure_signal(config, point)
  if part == "rank":
    return measure_rank(config)
  if part == "gradient":
    return grads_part.measure(config, point["grad_depth"])
  return measure_noci(config)


def run(config, out_dir) -> dict:
  """Runs (or resumes) the sweep into ``out_dir``; returns ``{"rows", "report"}``."""
  config = Config.from_dict(config)
  if not jax.config.jax_enable_x64:
    raise ValueError("transformer_sweep needs float64 (jax.config.update('jax_enable_x64', "
                     "True)): with norm 'none', q grows like 2^(2 depth).")
  session = driver.start(config, out_dir)
  pts = points(config)
  # A point's numbers depend on the widths, inputs and seeds, not on which other points
  # the grid holds: a grown grid reuses every finished point.
  shared = {k: v for k, v in config.to_dict().items() if k not in GRID_FIELDS}
  keys = [{"study": "transformer_sweep", "version": VERSION, **p, **shared} for p in pts]
  records = driver.resume(session, keys, lambda pending: (
      (k, measure(config, k)) for k in pending), desc="transformer sweep")
  return report.write(session, config, pts, records)
