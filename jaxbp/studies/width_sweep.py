"""The width study: the spread of backpropagated gradient norms against 1/width.

For each point (activation, sigma_w2, sigma_b2) and width n, ``seeds`` random
nets of ``depth`` dense layers (W ~ N(0, sigma_w2 / n), b ~ N(0, sigma_b2), the
input's pre-activation N(0, q*) per unit, delta_depth standard normal and
independent of the weights: the statistic of :mod:`jaxbp.theory.finite_width`)
give R = ln ||delta_1||^2 - ln ||delta_depth||^2 each, one example per net, all
seeds of a width through ``vmap``. Their mean and variance are set against
:func:`jaxbp.theory.finite_width.log_gradient_stats` (full, and leading order), as
functions of 1/width: the leading order is a line through the infinite-width
(layerwise) mean at 1/n = 0, slope -(1/2) sum (3 kappa_l - 1) for the mean and
sum (3 kappa_l - 1) for the variance.

Writes ``results.csv``/``.json`` (one row per point and width), ``width.png``
and ``report.md``; the samples of R are kept per point and width in ``store/``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import io as _io
from jaxbp.core import activations as _activations
from jaxbp.core import checks
import jaxbp.studies.cli as cli
import jaxbp.studies.driver as driver
import jaxbp.studies.multihost as multihost
from jaxbp.theory import finite_width as _fw
from jaxbp.theory import meanfield as _mf

VERSION = 1
# (activation, sigma_w2 or "critical", sigma_b2): critical points, one ordered and one
# chaotic point each (relu's chaotic point has no biases, so q stays finite per layer).
POINTS = (("relu", "critical", 0.0), ("tanh", "critical", 0.05), ("sigmoid", "critical", 0.05),
          ("relu", 1.0, 0.1), ("tanh", 0.8, 0.05), ("sigmoid", 16.0, 0.05),
          ("relu", 3.0, 0.0), ("tanh", 3.0, 0.05), ("sigmoid", 200.0, 0.05))
MEAN_TOLERANCE, VAR_TOLERANCE = 0.02, 0.10   # nats (or 3 s.e.); relative


@dataclasses.dataclass(frozen=True)
class Config:
  """The width study's grid; checked on construction (a ValueError names the field).

  Attributes:
    points: ``(activation, sigma_w2, sigma_b2)`` triples; sigma_w2 may be
      ``"critical"`` (chi_1 = 1: meanfield.critical_sigma_w2).
    widths: layer widths n, each >= 2.
    depth: layers per net (>= 2); R spans depth - 1 backward steps.
    seeds: nets per point and width (one example each).
    seed: the PRNG seed of the study.
  """
  points: Tuple[Tuple[str, Any, float], ...] = POINTS
  widths: Tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)
  depth: int = 8
  seeds: int = 512
  seed: int = 0

  def __post_init__(self):
    set_ = lambda name, value: object.__setattr__(self, name, value)
    for name in ("points", "widths"):
      v = getattr(self, name)
      if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or not v:
        raise ValueError(f"width_sweep Config: {name} must be a non-empty list, got {v!r}.")
    set_("points", tuple(_check_point(p) for p in self.points))
    for w in self.widths:
      if not checks.is_int(w) or w < 2:
        raise ValueError(f"width_sweep Config: widths must be ints >= 2, got {self.widths!r}.")
    set_("widths", tuple(sorted(set(int(w) for w in self.widths))))
    for name, low in (("depth", 2), ("seeds", 2), ("seed", 0)):
      set_(name, checks.int_at_least(getattr(self, name), low, name, "width_sweep Config"))

  @classmethod
  def quick(cls, **overrides) -> "Config":
    """The small preset: the three critical points, widths 16 .. 256, 256 nets each."""
    return cls(**{"points": POINTS[:3], "widths": (16, 32, 64, 128, 256), "seeds": 256,
                  **overrides})

  @classmethod
  def from_dict(cls, config: Mapping) -> "Config":
    """From a mapping of field names (a config file's keys); unknown keys are an error."""
    return cli.from_dict(cls, config, "width_sweep Config")

  def to_dict(self) -> dict:
    return driver.config_dict(self)


def _check_point(p):
  if isinstance(p, (str, bytes)) or not isinstance(p, Sequence) or len(p) != 3:
    raise ValueError(f"width_sweep Config: each point is (activation, sigma_w2, sigma_b2), "
                     f"got {p!r}.")
  a, w, b = p
  names = [n for n in _activations.names() if n != "softmax"]
  if not isinstance(a, str) or a not in names:
    raise ValueError(f"width_sweep Config: unknown activation {a!r}; valid: {', '.join(names)}.")
  if not (w == "critical" or (checks.is_real(w) and math.isfinite(w) and w > 0)):
    raise ValueError(f"width_sweep Config: sigma_w2 must be > 0 or 'critical', got {w!r}.")
  b = checks.finite(b, "sigma_b2", "width_sweep Config", low=0.0)
  return (a, w if w == "critical" else float(w), b)


def resolve(point) -> Tuple[str, str, float, float, float]:
  """``(activation, label, sigma_w2, sigma_b2, q0)``: the critical sigma_w2 solved, and the
  input variance q0 = q* (1 where q* is not finite: relu's numbers do not depend on q)."""
  a, w, b = point
  label = "critical" if w == "critical" else f"σ_w²={w:g}"
  if w == "critical":
    w = float(_mf.critical_sigma_w2(a, b, lo=0.0, hi=256.0))
    if not math.isfinite(w):
      raise ValueError(f"width_sweep: {a} has no critical sigma_w2 in [0, 256] at sigma_b2={b}.")
  q = float(_mf.fixed_point(a, w, b))
  return a, label, w, b, q if math.isfinite(q) and q > 0 else 1.0


@functools.partial(jax.jit, static_argnames=("activation", "width", "depth", "seeds"))
def sample_log_ratio(activation, sigma_w2, sigma_b2, q0, key, width, depth, seeds):
  """R = ln ||delta_1||^2 - ln ||delta_depth||^2 for ``seeds`` nets, ``(seeds,)`` float32.

  z_1 = x W_1 + b_1 with ||x||^2 = n (q0 - sigma_b2) / sigma_w2, so z_1 ~ N(0, q0) per
  unit; delta is renormalised after every step (the recursion is linear in it), so
  R is the sum of the per-step log ratios and never overflows."""
  act = _activations.get(activation)
  dtype, n = jnp.float32, width
  scale = lambda v: jnp.sqrt(v).astype(dtype)

  def one(key):
    kx, kd, kw, kb = jax.random.split(key, 4)
    W = jax.random.normal(kw, (depth, n, n), dtype) * scale(sigma_w2 / n)
    b = jax.random.normal(kb, (depth, n), dtype) * scale(sigma_b2)
    g = jax.random.normal(kx, (n,), dtype)
    x = g * (scale(n * jnp.maximum(q0 - sigma_b2, 0.0) / sigma_w2) / jnp.linalg.norm(g))

    def forward(h, wb):
      z = h @ wb[0] + wb[1]
      return act.fn(z), z
    _, zs = jax.lax.scan(forward, x, (W, b))                 # zs[l - 1] = z_l

    def backward(d, wz):                                      # (delta_l W_l^T) * phi'(z_{l-1})
      d = (d @ wz[0].T) * act.grad(wz[1])
      sq = jnp.sum(d * d)
      return d * jax.lax.rsqrt(sq), jnp.log(sq)
    d = jax.random.normal(kd, (n,), dtype)
    _, logs = jax.lax.scan(backward, d / jnp.linalg.norm(d), (W[1:][::-1], zs[:-1][::-1]))
    return jnp.sum(logs)
  # Memory holds a chunk of weight stacks at once: depth n^2 floats per net.
  chunk = int(max(1, min(seeds, 2 ** 26 // (depth * n * n))))
  return jax.lax.map(one, jax.random.split(key, seeds), batch_size=chunk)


def store_key(config: Config, point, index: int, width: int) -> dict:
  a, label, w, b, q0 = point
  return {"experiment": "width_sweep", "version": VERSION, "activation": a, "sigma_w2": w,
          "sigma_b2": b, "q0": q0, "width": width, "depth": config.depth,
          "seeds": config.seeds, "seed": config.seed, "point_index": index}


def _row(config, point, width, R) -> dict:
  a, label, w, b, q0 = point
  R = np.asarray(R, float)
  S = len(R)
  c = R - R.mean()
  var = float(np.var(R, ddof=1))
  # The standard error of a sample variance, from the sample's fourth moment.
  var_se = math.sqrt(max(float(np.mean(c ** 4)) - np.var(R) ** 2 * (S - 3) / (S - 1), 0.0) / S)
  full = [float(v[-1]) for v in _fw.log_gradient_stats(a, w, b, width, config.depth, q0=q0)]
  lead = [float(v[-1]) for v in _fw.log_gradient_stats(a, w, b, width, config.depth, q0=q0,
                                                        leading_order=True)]
  sem = float(np.std(R, ddof=1) / math.sqrt(S))
  return {"activation": a, "point": label, "sigma_w2": w, "sigma_b2": b, "q0": q0,
          "width": width, "depth": config.depth, "seeds": S,
          "mean_measured": float(R.mean()), "mean_sem": sem, "mean_predicted": full[0],
          "mean_leading_order": lead[0], "var_measured": var, "var_se": var_se,
          "var_predicted": full[1], "var_leading_order": lead[1],
          "mean_ok": bool(abs(R.mean() - full[0]) <= max(3 * sem, MEAN_TOLERANCE)),
          "var_ok": bool(abs(full[1] / var - 1) <= VAR_TOLERANCE) if var > 0 else False}


def run(config, out_dir) -> dict:
  """Runs (or resumes) the width study into ``out_dir``; returns ``{"rows", "report"}``."""
  config = Config.from_dict(config)
  points = [resolve(p) for p in config.points]
  root = jax.random.PRNGKey(config.seed)
  keys = [store_key(config, p, i, n) for i, p in enumerate(points) for n in config.widths]

  def compute(pending):
    for k in pending:
      key = jax.random.fold_in(jax.random.fold_in(root, k["point_index"]), k["width"])
      R = sample_log_ratio(k["activation"], k["sigma_w2"], k["sigma_b2"], k["q0"], key,
                           k["width"], config.depth, config.seeds)
      yield k, {"log_ratio": np.asarray(R, float).tolist()}

  session, records = multihost.resume(config, out_dir, keys, compute,
                                      unit=lambda k: (k["point_index"], k["width"]),
                                      cost=lambda k: k["width"] ** 2, desc="width sweep")
  if records is None:   # not process 0 (see jaxbp.studies.multihost)
    return {"process": jax.process_index(), "computed": session.computed}
  rows = [_row(config, points[k["point_index"]], k["width"], rec["log_ratio"])
          for k, rec in zip(keys, records)]
  driver.write_table(session, "results", rows)
  _plot(config, points, rows, session.path("width.png"))
  text = _report(config, rows)
  driver.finish(session, text)
  return {"rows": rows, "report": text}


def _plot(config, points, rows, path):
  plt = _io.pyplot()
  fig, axes = plt.subplots(2, len(points), figsize=(3.4 * len(points), 6), squeeze=False)
  # 1/width from 0 (infinite width) to the narrowest: the leading order is a line.
  widths = np.concatenate([[np.inf], 1.0 / np.linspace(1e-6, 1.0 / min(config.widths), 60)[1:]])
  for j, p in enumerate(points):
    a, label, w, b, q0 = p
    rr = [r for r in rows if (r["activation"], r["sigma_w2"], r["sigma_b2"]) == (a, w, b)]
    x = [1 / r["width"] for r in rr]
    full = _fw.log_gradient_stats(a, w, b, jnp.asarray(widths), config.depth, q0=q0)
    lead = _fw.log_gradient_stats(a, w, b, jnp.asarray(widths), config.depth, q0=q0,
                                  leading_order=True)
    for i, (name, err) in enumerate((("mean", "mean_sem"), ("var", "var_se"))):
      ax = axes[i, j]
      ax.errorbar(x, [r[f"{name}_measured"] for r in rr], yerr=[r[err] for r in rr], fmt="o",
                  ms=4, color="k", label=f"measured ({config.seeds} nets)")
      ax.plot(1 / widths, np.asarray(full[i])[:, -1], "C0-", label="finite_width")
      ax.plot(1 / widths, np.asarray(lead[i])[:, -1], "C1--", label="leading order")
      ax.set(xlabel="1 / width", ylabel=f"{name} of R",
             title=f"{a} {label}, σ_b²={b:g}" if i == 0 else None)
      if i == 0 and j == 0:
        ax.legend(fontsize=7)
  fig.suptitle(f"R = ln||δ_1||² - ln||δ_{config.depth}||² across {config.seeds} nets per point",
               fontsize=9)
  fig.tight_layout()
  _io.save_figure(fig, path)


def _report(config, rows) -> str:
  n_mean = sum(r["mean_ok"] for r in rows)
  n_var = sum(r["var_ok"] for r in rows)
  lines = ["# Width study: spread of ln ||delta||^2 against 1/width", "",
           f"Depth {config.depth}, widths {list(config.widths)}, {config.seeds} nets per point "
           f"and width, one example each (jaxbp.theory.finite_width.log_gradient_stats beside "
           "the measurement).", "",
           f"- mean of R within max(3 s.e., {MEAN_TOLERANCE}): {n_mean} of {len(rows)}",
           f"- variance of R within {VAR_TOLERANCE:.0%} of the prediction: {n_var} of {len(rows)} "
           f"(the measured variance is itself uncertain by ~{math.sqrt(2 / config.seeds):.0%})",
           "", "| activation | point | σ_b² | width | mean R | predicted | leading order | "
           "Var R | predicted | leading order |", "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| {r['activation']} | {r['point']} | {r['sigma_b2']:g} | {r['width']} | "
        f"{r['mean_measured']:.4f} ± {r['mean_sem']:.4f} | {r['mean_predicted']:.4f} | "
        f"{r['mean_leading_order']:.4f} | {r['var_measured']:.4f} ± {r['var_se']:.4f} | "
        f"{r['var_predicted']:.4f} | {r['var_leading_order']:.4f} |")
  lines += ["", "Figure: `width.png`. Data: `results.csv`, `results.json`, `store/`.", ""]
  return "\n".join(lines)
