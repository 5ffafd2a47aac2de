"""Backprop through deep vanilla CNNs against mean-field theory (Xiao et al. 2018).

The mean-field theory of MLPs carries over to CNNs with circular padding: going
down one layer, ``E||delta_{l-1}||^2 = chi_1 E||delta_l||^2`` with the MLP's
``chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2]``, whatever the kernel size, once the
weights have variance ``sigma_w^2 / (k^d c)``. So ``ln||delta_l||^2`` is a line
in l of slope ``-ln chi_1``. This study measures that slope by the hand
backward pass (:mod:`jaxbp.core.conv_backprop`) and sets it against
:func:`jaxbp.theory.meanfield.chi1`, for Gaussian kernels and for
delta-orthogonal ones (``gain^2 = sigma_w^2``), at the critical ``sigma_w^2``
(``chi_1 = 1``) and at the off-critical values asked for.

The measured per-layer rate is ``-`` the least-squares slope of ``ln||delta_l||^2``
over layers ``skip .. depth - skip``, by :func:`jaxbp.measure.diagnostics.fit_log_slope`
(the ends are where the input has not yet reached q* and where the output
layer's delta enters). The input is drawn at
the fixed point's variance q* (1 where there is none).

>>> import jax; jax.config.update("jax_enable_x64", True)
>>> rows = run(Config(depth=64), "/tmp/jaxbp_conv_sweep")    # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import io as _io
from jaxbp.core import activations as _act
from jaxbp.core import backprop
from jaxbp.core import checks
from jaxbp.core.convnets import ConvNet
from jaxbp.measure import diagnostics
from jaxbp.studies.common import CONV_INITS, conv_initializer
import jaxbp.studies.driver as driver
from jaxbp.theory import meanfield

INITS = CONV_INITS
_W = "conv_sweep Config"   # what every Config error begins with


@dataclasses.dataclass(frozen=True)
class Config:
  """The sweep. Checked on construction: a bad value is a ValueError naming the field.

  Attributes:
    activation: an elementwise activation name.
    sigma_b2: the bias variance.
    sigma_w2: off-critical weight variances to run besides the critical one.
    inits: any of ``"delta_orthogonal"`` and ``"gaussian"``.
    channels, size, ndim, kernel_size: every layer is a ``channels -> channels``
      convolution with circular padding on ``size^ndim`` positions.
    depth: convolutions per net.
    batch: examples per measurement.
    seeds: one net and one batch per seed.
    skip: layers left out of the slope fit at each end.
  """
  activation: str = "tanh"
  sigma_b2: float = 0.05
  sigma_w2: Tuple[float, ...] = ()
  inits: Tuple[str, ...] = INITS
  channels: int = 64
  size: int = 16
  ndim: int = 1
  kernel_size: int = 3
  depth: int = 64
  batch: int = 4
  seeds: Tuple[int, ...] = (0, 1)
  skip: int = 4

  def __post_init__(self):
    set_ = lambda name, value: object.__setattr__(self, name, value)
    act = _act.get(self.activation)
    if not act.elementwise:
      raise ValueError(f"conv_sweep Config: activation must be elementwise, got {act.name!r}.")
    set_("activation", act.name)
    if not isinstance(self.sigma_w2, (list, tuple)):
      raise ValueError(f"{_W}: sigma_w2 must be a list of numbers > 0, got {self.sigma_w2!r}.")
    set_("sigma_w2", tuple(checks.positive(v, "every sigma_w2", _W) for v in self.sigma_w2))
    set_("sigma_b2", checks.finite(self.sigma_b2, "sigma_b2", _W, low=0.0))
    inits = tuple(self.inits) if isinstance(self.inits, (list, tuple)) else ()
    if not inits or not set(inits) <= set(INITS):
      raise ValueError(f"conv_sweep Config: inits must be a non-empty list from {INITS}, got "
                       f"{self.inits!r}.")
    set_("inits", inits)
    for name in ("channels", "size", "ndim", "batch", "kernel_size"):
      set_(name, checks.positive_int(getattr(self, name), name, _W))
    set_("seeds", checks.int_tuple(self.seeds, "seeds", _W, low=0))
    set_("skip", checks.int_at_least(self.skip, 0, "skip", _W))
    # Two layers left between the skipped ends, and one more for the fit to mean something.
    set_("depth", checks.int_at_least(self.depth, 2 * self.skip + 3, "depth", _W))
    if self.kernel_size % 2 == 0:
      raise ValueError(f"conv_sweep Config: kernel_size must be odd (circular padding "
                       f"centres the kernel), got {self.kernel_size}.")

  def net(self) -> ConvNet:
    """The net every configuration runs, stacked: the compiled program holds one layer."""
    return ConvNet(channels=(self.channels,) * (self.depth + 1), kernel_size=self.kernel_size,
                   activation=self.activation, padding="circular", ndim=self.ndim,
                   stack=True)


def critical_sigma_w2(config: Config) -> float:
  """The sigma_w^2 with chi_1 = 1 at the config's sigma_b^2."""
  return float(meanfield.critical_sigma_w2(config.activation, config.sigma_b2))


initializer = conv_initializer   # also public here: conv_sweep.initializer


def layer_log_norms(net: ConvNet, deltas) -> np.ndarray:
  """``ln||delta_l||^2`` for l = 1 .. depth from ``net``'s deltas (stacked groups
  walked layer by layer, :func:`jaxbp.measure.diagnostics.per_layer`)."""
  norms = diagnostics.per_layer(net, deltas, lambda d: jnp.sum(d ** 2))
  return np.log(np.asarray(norms, np.float64))


def measure(config: Config, key: Mapping) -> dict:
  """One configuration's ``ln||delta_l||^2`` profile, measured rate and prediction."""
  net = config.net()
  start = time.perf_counter()
  sigma_w2, sigma_b2 = key["sigma_w2"], config.sigma_b2
  rng = jax.random.PRNGKey(key["seed"])
  p_key, x_key = jax.random.split(rng)
  params = net.init(p_key, init=initializer(key["init"], sigma_w2, sigma_b2))
  q_star = float(meanfield.fixed_point(config.activation, sigma_w2, sigma_b2))
  scale = math.sqrt(q_star) if math.isfinite(q_star) and q_star > 0 else 1.0
  shape = (config.batch,) + (config.size,) * config.ndim + (config.channels,)
  x = scale * jax.random.normal(x_key, shape, params[0].W.dtype)
  deltas = jax.jit(backprop.deltas, static_argnums=(0, 1))(net, "mse", params, x,
                                                           jnp.zeros(shape, x.dtype))
  log_norms = layer_log_norms(net, deltas)
  return {"log_delta2": log_norms.tolist(),
          "rate": float(diagnostics.fit_log_slope(log_norms, config.skip, config.skip)),
          "ln_chi1": float(jnp.log(meanfield.chi1(config.activation, sigma_w2, sigma_b2))),
          "q_star": q_star, "seconds": time.perf_counter() - start}


def keys(config: Config):
  """One key per (init, sigma_w2, seed): the critical sigma_w2 first."""
  common = {"study": "conv_sweep", "x64": bool(jax.config.jax_enable_x64),
            **{k: v for k, v in driver.config_dict(config).items()
               if k not in ("sigma_w2", "inits", "seeds")}}
  grid = (critical_sigma_w2(config),) + config.sigma_w2
  return [dict(common, init=init, sigma_w2=s, seed=seed)
          for init in config.inits for s in grid for seed in config.seeds]


def summarise(key_list, records) -> list:
  """One row per (init, sigma_w2): the measured rate over seeds against ln chi_1."""
  groups = {}
  for key, rec in zip(key_list, records):
    groups.setdefault((key["init"], key["sigma_w2"]), []).append(rec)
  rows = []
  for (init, sigma_w2), recs in groups.items():
    rates = np.array([r["rate"] for r in recs])
    rows.append({"init": init, "sigma_w2": sigma_w2, "ln_chi1": recs[0]["ln_chi1"],
                 "rate_mean": float(rates.mean()),
                 "rate_sd": float(rates.std(ddof=1)) if len(rates) > 1 else 0.0,
                 "abs_error": float(abs(rates.mean() - recs[0]["ln_chi1"])),
                 "seeds": len(recs), "seconds": float(sum(r["seconds"] for r in recs))})
  return rows


def report(config: Config, rows) -> str:
  """``report.md``: the agreement table."""
  lines = [f"# ln||delta_l||^2 per layer in vanilla CNNs: {config.activation}, "
           f"sigma_b^2 = {config.sigma_b2:g}", "",
           f"{config.depth} circular {config.kernel_size}^{config.ndim} convolutions of "
           f"{config.channels} channels on {config.size}^{config.ndim} positions, batch "
           f"{config.batch}, seeds {list(config.seeds)}; slope fitted over layers "
           f"{config.skip} .. {config.depth - config.skip}.", "",
           "| init | sigma_w^2 | ln chi_1 | measured rate (mean +- sd) | abs error |",
           "|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['init']} | {r['sigma_w2']:.4f} | {r['ln_chi1']:+.4f} | "
                 f"{r['rate_mean']:+.4f} +- {r['rate_sd']:.4f} | {r['abs_error']:.4f} |")
  return "\n".join(lines + ["", "Figure: `profiles.png`; every profile: `profiles.json`.", ""])


def plot_profiles(config: Config, key_list, records, path) -> None:
  """``ln||delta_l||^2 - ln||delta_depth||^2`` against l, one line per seed, coloured by
  (init, sigma_w2), with the theory's lines ``(depth - l) ln chi_1`` dashed."""
  plt = _io.pyplot()
  fig, ax = plt.subplots(figsize=(7.0, 4.8))
  colours, layers = {}, np.arange(1, config.depth + 1)
  for key, rec in zip(key_list, records):
    group = (key["init"], key["sigma_w2"])
    y = np.asarray(rec["log_delta2"])
    label = None
    if group not in colours:
      colours[group] = f"C{len(colours)}"
      label = f"{group[0]}, sigma_w^2 = {group[1]:.3g}"
      ax.plot(layers, (config.depth - layers) * rec["ln_chi1"], "--", lw=0.8,
              color=colours[group])
    ax.plot(layers, y - y[-1], lw=1.0, alpha=0.7, color=colours[group], label=label)
  ax.set(xlabel="layer l", ylabel="ln||delta_l||^2 - ln||delta_L||^2",
         title=f"{config.activation} CNN, {config.channels} channels; dashed: (L - l) ln chi_1")
  ax.legend(fontsize=7)
  _io.save_figure(fig, path)


def run(config, out_dir) -> list:
  """Measures every (init, sigma_w2, seed), resumably; writes ``results.csv``/``.json``
  (one row per init and sigma_w2), ``profiles.json`` (every ``ln||delta_l||^2``),
  ``profiles.png`` (:func:`plot_profiles`) and ``report.md``. Returns the rows."""
  config = config if isinstance(config, Config) else Config(**config)
  session = driver.start(config, out_dir)
  key_list = keys(config)

  def compute(pending):
    for key in pending:
      yield key, measure(config, key)

  records = driver.resume(session, key_list, compute, desc="conv sweep")
  rows = summarise(key_list, records)
  driver.write_table(session, "results", rows)
  driver.write_table(session, "profiles", [
      {"init": k["init"], "sigma_w2": k["sigma_w2"], "seed": k["seed"],
       "log_delta2": r["log_delta2"]} for k, r in zip(key_list, records)],
      columns=("init", "sigma_w2", "seed"))
  plot_profiles(config, key_list, records, session.path("profiles.png"))
  driver.finish(session, report(config, rows))
  return rows


def run_grid(config: Config, out_dir, activations: Sequence[str], depths: Sequence[int]) -> list:
  """:func:`run` for every activation x depth, each resumable in its own
  ``out_dir/<activation>_depth<d>``, then one ``results.csv``/``.json`` and
  ``report.md`` over all of them in ``out_dir`` (``depth_sweep.py --arch conv``).

  Every other field (channels, size, inits, off-critical sigma_w2, seeds...) comes
  from ``config``. Returns the rows, each with its activation and depth.
  """
  if not activations or not depths:
    raise ValueError(f"conv_sweep.run_grid: needs at least one activation and one depth, got "
                     f"activations={list(activations)}, depths={list(depths)}.")
  out_dir = driver.check_out_dir(out_dir)
  configs = [dataclasses.replace(config, activation=a, depth=int(d))
             for a in activations for d in depths]   # all checked before any compute
  rows, parts = [], []
  for c in configs:
    name = f"{c.activation}_depth{c.depth}"
    for r in run(c, os.path.join(out_dir, name)):
      rows.append({"activation": c.activation, "depth": c.depth, **r})
    with open(os.path.join(out_dir, name, "report.md")) as f:
      parts += [f"## {c.activation}, depth {c.depth} ([figure]({name}/profiles.png))", ""]
      parts += [line for line in f.read().splitlines()[2:] if not line.startswith("Figure:")]
  _io.write_json(os.path.join(out_dir, "results.json"), rows)
  _io.write_csv(os.path.join(out_dir, "results.csv"), {k: [r[k] for r in rows] for k in rows[0]})
  within = sum(r["abs_error"] <= 0.01 for r in rows)
  head = [f"# The depth study for CNNs: {len(rows)} settings, {within} within 0.01 "
          "nats/layer of ln chi_1", ""]
  _io.write_text(os.path.join(out_dir, "report.md"), "\n".join(head + parts) + "\n")
  return rows


def scaling_report(config: Config, rows) -> str:
  """``scaling.md``: :func:`scaling`'s rows as a table."""
  lines = ["# Compile time and memory against depth", "",
           f"The sweep's jitted hand backward pass (`backprop.deltas`, stacked layers under "
           f"`lax.scan`), {config.channels} channels, batch {config.batch}: lowered and "
           "compiled, not run. Temporaries: what XLA allocates beyond arguments and outputs "
           "(the outputs are every layer's delta, linear in depth by design).", "",
           "| depth | compile s | temporaries MiB | arguments MiB | outputs MiB |",
           "|---:|---:|---:|---:|---:|"]
  lines += [f"| {r['depth']} | {r['compile_s']:.2f} | {r['temp_bytes'] / 2**20:.1f} | "
            f"{r['argument_bytes'] / 2**20:.1f} | {r['output_bytes'] / 2**20:.1f} |"
            for r in rows]
  return "\n".join(lines) + "\n"


def scaling(config: Config, depths: Sequence[int]) -> list:
  """Compile time and XLA's memory accounting of the sweep's program against depth.

  For each depth: the seconds to lower and compile the jitted hand backward pass
  (``backprop.deltas``) of ``config``'s stacked net, and the compiled program's
  temporaries (what it allocates beyond its arguments and outputs; the stored
  layer inputs are its outputs' and arguments' business). Nothing is run.
  """
  rows = []
  for d in depths:
    c = dataclasses.replace(config, depth=int(d))
    net = c.net()
    shape = (c.batch,) + (c.size,) * c.ndim + (c.channels,)
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    params = jax.eval_shape(lambda k: net.init(k, init=initializer("gaussian", 1.0, 0.0)),
                            jax.random.PRNGKey(0))
    x = jax.ShapeDtypeStruct(shape, dtype)
    fn = jax.jit(backprop.deltas, static_argnums=(0, 1))
    t0 = time.perf_counter()
    compiled = fn.lower(net, "mse", params, x, x).compile()
    seconds = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    rows.append({"depth": c.depth, "compile_s": seconds,
                 "temp_bytes": int(mem.temp_size_in_bytes),
                 "argument_bytes": int(mem.argument_size_in_bytes),
                 "output_bytes": int(mem.output_size_in_bytes)})
  return rows
