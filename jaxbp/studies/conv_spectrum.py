"""Singular values of deep CNNs' input-output Jacobians, matrix-free (Xiao et al. 2018).

A critical vanilla tanh CNN (circular padding, ``channels -> channels`` at
every layer, tanh after every layer, stacked under ``lax.scan``) maps one
example ``x`` of ``size^ndim x channels`` numbers to ``h_L``. Its Jacobian
``d h_L / d x`` is square with ``n = size^ndim * channels`` rows; it is never
formed: :func:`jaxbp.measure.lanczos.singular_values` runs ``n`` Golub-Kahan
steps on jvp / vjp products (``n`` forward and ``n`` backward passes of one
example), which gives every singular value.

Delta-orthogonal kernels make each layer's channel map orthogonal at every
spatial frequency, so the theory of orthogonal MLPs applies (Xiao et al. 2018);
Gaussian kernels are Gaussian at every frequency. Both are held against
:func:`jaxbp.theory.spectra.theory` (Pennington et al. 2017): ``Var[s^2] /
E[s^2]^2 = L (mu_2 / mu_1^2 - 1 - s_1)``, s_1 = 0 (orthogonal) or -1 (Gaussian),
exact as the channels grow; at ``L`` comparable to the channels, a Gaussian
product's heavy upper tail is undersampled by ``n`` values and the measured
spread falls below the line.

>>> import jax; jax.config.update("jax_enable_x64", True)
>>> out = run(Config(depths=(8,), channels=8, size=4, seeds=(0,)), "/tmp/cs")  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Mapping, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.core import activations as _act
from jaxbp.core import checks
from jaxbp.core import initializers as _init
from jaxbp.core.convnets import ConvNet
from jaxbp.measure import lanczos
from jaxbp.studies.common import CONV_INITS, conv_initializer
import jaxbp.studies.driver as driver
from jaxbp.studies.spectrum import report as _spectrum_report
from jaxbp.studies.spectrum import sampling
from jaxbp.theory import spectra

INITS = CONV_INITS
WEIGHTS = {"delta_orthogonal": "orthogonal", "gaussian": "gaussian"}


def _ints(name, values, minimum=1):
  if not isinstance(values, (list, tuple)):
    raise ValueError(f"conv_spectrum Config: {name} must be a non-empty list of ints >= "
                     f"{minimum}, got {values!r}.")
  return checks.int_tuple(values, name, "conv_spectrum Config", low=minimum)


@dataclasses.dataclass(frozen=True)
class Config:
  """Checked on construction: a bad value is a ValueError naming the field.

  Attributes:
    activation: ``"tanh"`` (or another activation with a critical point).
    sigma_b2: the bias variance; the critical sigma_w^2 follows (tanh at 1e-3:
      sigma_w^2 = 1.189, q* = 0.107, nearly linear around q*).
    inits: any of ``"delta_orthogonal"``, ``"gaussian"``.
    depths: the conv layers L of each net.
    channels, size, ndim, kernel_size: the nets' shape; the Jacobian is
      ``n x n`` with ``n = size^ndim * channels``.
    seeds: one net and one input per seed.
  """
  activation: str = "tanh"
  sigma_b2: float = 1e-3
  inits: Tuple[str, ...] = INITS
  depths: Tuple[int, ...] = (64, 256)
  channels: int = 64
  size: int = 16
  ndim: int = 1
  kernel_size: int = 3
  seeds: Tuple[int, ...] = (0, 1)

  def __post_init__(self):
    set_ = lambda name, value: object.__setattr__(self, name, value)
    spectra.critical(self.activation, "gaussian", self.sigma_b2)   # raises if there is none
    inits = tuple(self.inits) if isinstance(self.inits, (list, tuple)) else ()
    if not inits or not set(inits) <= set(INITS):
      raise ValueError(f"conv_spectrum Config: inits must be a non-empty list from {INITS}, "
                       f"got {self.inits!r}.")
    set_("inits", inits)
    set_("depths", _ints("depths", self.depths))
    set_("seeds", _ints("seeds", self.seeds, 0))
    for name in ("channels", "size", "ndim", "kernel_size"):
      set_(name, checks.positive_int(getattr(self, name), name, "conv_spectrum Config"))
    if self.kernel_size % 2 == 0:
      raise ValueError(f"conv_spectrum Config: kernel_size must be odd (circular padding "
                       f"centres the kernel), got {self.kernel_size}.")

  def critical(self, init: str) -> spectra.CriticalNet:
    """The critical net of ``init``'s weight family."""
    return spectra.critical(self.activation, WEIGHTS[init], self.sigma_b2)

  def net(self, depth: int) -> ConvNet:
    """``depth`` stacked circular convolutions, the activation after every one."""
    return ConvNet(channels=(self.channels,) * (depth + 1), kernel_size=self.kernel_size,
                   activation=self.activation, output_activation=self.activation,
                   padding="circular", ndim=self.ndim, stack=True)


def initializer(init: str, crit: spectra.CriticalNet) -> _init.Initializer:
  """Delta-orthogonal with gain ``sqrt(sigma_w2)``, or Gaussian of variance
  ``sigma_w2 / (k^d c)``: the same chi_1 = 1."""
  return conv_initializer(init, crit.sigma_w2, crit.sigma_b2)


def jacobian_singular_values(config: Config, init: str, depth: int, seed: int) -> np.ndarray:
  """Every singular value of ``d h_L / d x`` of one net at one input, descending."""
  crit, net = config.critical(init), config.net(depth)
  p_key, x_key, l_key = jax.random.split(jax.random.PRNGKey(seed), 3)
  params = net.init(p_key, init=initializer(init, crit))
  shape = (config.size,) * config.ndim + (config.channels,)
  # h_0 = phi(sqrt(q*) g) puts z_1 at the fixed point (the variance map).
  phi = _act.get(config.activation)
  x = phi.fn(math.sqrt(crit.q_star) * jax.random.normal(x_key, shape, jnp.float64))
  return np.asarray(_lanczos_all(net)(params, x, l_key), np.float64)


@functools.lru_cache(maxsize=None)
def _lanczos_all(net: ConvNet):
  # One compiled program per net shape, shared by its seeds and inits.
  def run(params, x, key):
    return lanczos.singular_values(lambda h: net.apply(params, h[None])[0], x, key=key)
  return jax.jit(run)


def keys(config: Config):
  """One key per (init, depth, seed)."""
  common = {"study": "conv_spectrum", "x64": bool(jax.config.jax_enable_x64),
            **{k: v for k, v in driver.config_dict(config).items()
               if k not in ("inits", "depths", "seeds")}}
  return [dict(common, init=i, depth=d, seed=s)
          for i in config.inits for d in config.depths for s in config.seeds]


def rows_of(config: Config, key_list, records) -> list:
  """One row per (init, depth): the spread over seeds against the theory."""
  groups = {}
  for k, r in zip(key_list, records):
    groups.setdefault((k["init"], k["depth"]), []).append(r["s"])
  rows = []
  for (init, depth), svals in groups.items():
    t = spectra.theory(config.critical(init), depth)
    st = sampling.spread(np.asarray(svals))
    rows.append({"setting": f"{config.activation} {init}", "init": init, "depth": depth,
                 "seeds": len(svals), "n": len(svals[0]), **st,
                 "theory_mean_sq": float(t["mean_sq"]), "theory_var_sq": float(t["var_sq"]),
                 "s_max": float(np.max(svals)), "s_min": float(np.min(svals))})
  return rows


def report(config: Config, rows, seconds: Mapping[str, float]) -> str:
  """``report.md``: the spread table and what it took."""
  n = config.size ** config.ndim * config.channels
  lines = [f"# Jacobian spectra of critical {config.activation} CNNs", "",
           f"{config.channels} channels, {config.size}^{config.ndim} positions, kernel "
           f"{config.kernel_size}, circular padding, sigma_b^2 = {config.sigma_b2:g}, seeds "
           f"{list(config.seeds)}. All n = {n} singular values of each {n} x {n} Jacobian "
           f"d h_L / d x by {n} matrix-free Golub-Kahan-Lanczos steps (jvp and vjp of one "
           "example; the Jacobian is never formed). Theory: Pennington et al. 2017 with "
           "delta-orthogonal = orthogonal, Gaussian = Gaussian (Xiao et al. 2018).", "",
           "| init | L | E[s^2] (theory) | Var[s^2]/E[s^2]^2 | theory | 5-95% decades of s "
           "| max s / median s | seconds per net |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['init']} | {r['depth']} | {r['mean_sq']:.3g} ({r['theory_mean_sq']:.3g})"
                 f" | {r['var_sq_norm']:.3g} | {r['theory_var_sq']:.3g} | "
                 f"{r['log10_range']:.2f} | {r['max_over_median']:.3g} | "
                 f"{seconds[(r['init'], r['depth'])]:.1f} |")
  return "\n".join(lines + ["", "Figures: `histograms.png`, `spread.png`.", ""])


def run(config, out_dir) -> dict:
  """Measures every (init, depth, seed), resumably; writes ``results.csv``/``.json``,
  ``singular_values.json``, ``histograms.png``, ``spread.png`` and ``report.md``."""
  config = config if isinstance(config, Config) else Config(**config)
  if not jax.config.jax_enable_x64:
    raise ValueError("conv_spectrum: the spectra span many decades; enable float64 first "
                     "(jax.config.update('jax_enable_x64', True)).")
  session = driver.start(config, out_dir)
  key_list = keys(config)

  def compute(pending):
    for k in pending:
      t0 = time.perf_counter()
      s = jacobian_singular_values(config, k["init"], k["depth"], k["seed"])
      yield k, {"s": s.tolist(), "seconds": time.perf_counter() - t0}

  records = driver.resume(session, key_list, compute, desc="conv spectrum")
  rows = rows_of(config, key_list, records)
  seconds = {}
  for k, r in zip(key_list, records):
    seconds.setdefault((k["init"], k["depth"]), []).append(r["seconds"])
  seconds = {g: float(np.mean(v)) for g, v in seconds.items()}
  driver.write_table(session, "results", rows)
  driver.write_table(session, "singular_values", [
      {"init": k["init"], "depth": k["depth"], "seed": k["seed"], "s": r["s"]}
      for k, r in zip(key_list, records)], columns=("init", "depth", "seed"))
  svals = {f"{config.activation} {i}": np.asarray(
      [[r["s"] for k, r in zip(key_list, records) if k["init"] == i and k["depth"] == d]
       for d in config.depths]).transpose(1, 0, 2) for i in config.inits}
  _spectrum_report.plot_histograms(svals, config.depths, session.path("histograms.png"))
  _spectrum_report.plot_spread(rows, session.path("spread.png"))
  text = report(config, rows, seconds)
  driver.finish(session, text)
  return {"rows": rows, "report": text}
