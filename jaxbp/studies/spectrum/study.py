"""The Jacobian-spectrum study: its :class:`Config` and :func:`run`.

Per activation x weights, ``seeds`` critical networks of width N are sampled
(:func:`jaxbp.studies.spectrum.sampling.sample_singular_values`); the spread of
their singular values at every depth is set beside
:func:`jaxbp.theory.spectra.theory`.
"""
from __future__ import annotations

import dataclasses
import io
import time
from typing import Any, List, Mapping, Sequence, Tuple

import jax
import numpy as np

from jaxbp import io as _io
from jaxbp.core import checks
from jaxbp.studies import cli
from jaxbp.studies import driver
import jaxbp.studies.spectrum.report as _report
import jaxbp.studies.spectrum.sampling as sampling
from jaxbp.theory import spectra as _spectra


def _default_sigma_b2():
  # tanh at criticality with a small bias variance (q* = 0.107, sigma_w2 = 1.189);
  # relu at He (sigma_w2 = 2, sigma_b2 = 0), the only finite-q* critical point.
  return {"tanh": 1e-3, "relu": 0.0}


@dataclasses.dataclass(frozen=True)
class Config:
  """The spectrum study's grid. Checked on construction: a bad value raises a
  ValueError naming the field, before anything is computed or written.

  Attributes:
    width: N, the width of every layer.
    depths: strictly increasing depths >= 1; one network of the deepest is
      sampled, the shallower Jacobians are its prefixes.
    activations: elementwise hidden activations (names of :mod:`jaxbp.activations`).
    weights: any of ``"gaussian"``, ``"orthogonal"``.
    sigma_b2: the bias variance per activation (``{activation: value}``; an
      activation left out gets 0), or one value for all. Stored as the mapping.
    seeds: networks per activation x weights.
    seed: the PRNG seed of the whole study.
  """
  width: int = 256
  depths: Tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
  activations: Tuple[str, ...] = ("tanh", "relu")
  weights: Tuple[str, ...] = _spectra.WEIGHTS
  sigma_b2: Any = dataclasses.field(default_factory=_default_sigma_b2)
  seeds: int = 8
  seed: int = 0

  def __post_init__(self):
    set_ = lambda name, value: object.__setattr__(self, name, value)
    set_("depths", _field("depths", sampling.check_depths, self.depths))
    for name, low in (("width", 1), ("seeds", 1), ("seed", 0)):
      set_(name, checks.int_at_least(getattr(self, name), low, name, "spectrum Config"))
    for name, check in (("activations", _spectra.check_activation),
                        ("weights", _spectra.check_weights)):
      values = getattr(self, name)
      if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"spectrum Config: {name} must be a non-empty list, got {values!r}.")
      for v in values:
        _field(name, check, v)
      set_(name, tuple(values))
    b = self.sigma_b2
    b = dict(b) if isinstance(b, Mapping) else {a: b for a in self.activations}
    set_("sigma_b2", {a: b.get(a, 0.0) for a in self.activations})
    self.nets()   # every critical point exists, or a ValueError now

  def nets(self) -> List[_spectra.CriticalNet]:
    """The critical networks, activation-major: one per activation x weights."""
    return [_field("sigma_b2", _spectra.critical, a, w, self.sigma_b2[a])
            for a in self.activations for w in self.weights]

  @classmethod
  def quick(cls, **overrides) -> "Config":
    """The small preset (width 128, depths 1, 4, 16, 32, 3 networks per family),
    with ``overrides``. A classmethod, not a constant: checking a Config solves
    for critical points, which importing the module should not do."""
    return cls(**{"width": 128, "depths": (1, 4, 16, 32), "seeds": 3, **overrides})

  @classmethod
  def from_dict(cls, config: Mapping) -> "Config":
    """From a mapping of field names (a JSON/TOML file's keys); missing ones take
    the defaults, unknown ones are a ValueError. A Config passes through."""
    return cli.from_dict(cls, config, "spectrum Config")

  def to_dict(self) -> dict:
    """The fields as a dict (mutable copies), e.g. to merge overrides into."""
    return driver.config_dict(self)


def _field(name, check, *args):
  """``check(*args)``, with a ValueError's message prefixed by the field it concerns."""
  try:
    return check(*args)
  except (TypeError, ValueError) as e:
    raise ValueError(f"spectrum Config: {name}: {e}") from None


def store_key(config: Config, net: _spectra.CriticalNet, index: int) -> dict:
  """What one network family's samples depend on: the store's key. ``index``
  is its place in :meth:`Config.nets`, folded into the study's PRNG key."""
  return {"setting": net.name, "sigma_w2": net.sigma_w2, "sigma_b2": net.sigma_b2,
          "width": config.width, "depths": list(config.depths), "seeds": config.seeds,
          "seed": config.seed, "key_index": index, "x64": bool(jax.config.jax_enable_x64)}


def rows_of(net: _spectra.CriticalNet, depths: Sequence[int], s) -> List[dict]:
  """One row per depth: the measured :func:`~sampling.spread` of ``s``
  (``(seeds, depths, N)``) beside :func:`jaxbp.theory.spectra.theory`."""
  th = _spectra.theory(net, np.asarray(depths))
  return [{"setting": net.name, "activation": net.activation, "weights": net.weights,
           "sigma_w2": net.sigma_w2, "sigma_b2": net.sigma_b2, "q_star": net.q_star,
           "depth": depth, **sampling.spread(s[:, j]),
           "theory_mean_sq": float(th["mean_sq"][j]), "theory_var_sq": float(th["var_sq"][j])}
          for j, depth in enumerate(depths)]


def run(config, out_dir) -> dict:
  """Jacobian spectra across depth for each activation x weights; theory beside them.

  Args:
    config: a :class:`Config` (or a mapping for :meth:`Config.from_dict`).
    out_dir: the output directory; a rerun into it resumes.

  Writes to ``out_dir``: ``config.json``, ``provenance.json``, ``spread.json``
  and ``spread.csv`` (one row per network family and depth: measured and
  predicted mean and variance of s^2, log10 spread, fraction below floor),
  ``singular_values.npz``, ``histograms.png`` (the log10 s distribution per
  depth), ``spread.png`` (Var[s^2]/E[s^2]^2 and the log10 range vs depth,
  theory dashed) and ``report.md``. Each family's samples are kept in
  ``out_dir/store``. Returns ``{"rows": [...], "report": str}``.

  >>> out = run(Config(width=64, depths=(2, 8)), "/tmp/jaxbp_spectrum")  # doctest: +SKIP
  """
  config = Config.from_dict(config)
  nets = config.nets()
  session = driver.start(config, out_dir)
  root = jax.random.PRNGKey(config.seed)

  def compute(pending):
    for key in pending:
      start = time.perf_counter()
      s = sampling.sample_singular_values(jax.random.fold_in(root, key["key_index"]),
                                          nets[key["key_index"]], config.width,
                                          config.depths, config.seeds)
      yield key, {"singular_values": np.asarray(s), "seconds": time.perf_counter() - start}

  keys = [store_key(config, net, i) for i, net in enumerate(nets)]
  records = driver.resume(session, keys, compute, desc="spectra")
  svals, rows = {}, []
  for net, record in zip(nets, records):
    s = np.asarray(record["singular_values"], dtype=float)   # (seeds, depths, N)
    svals[net.name] = s
    rows += rows_of(net, config.depths, s)
  driver.write_table(session, "spread", rows,
                     [k for k in rows[0] if k not in ("setting", "activation", "weights")])
  buf = io.BytesIO()
  np.savez_compressed(buf, **svals)
  _io.atomic_write(session.path("singular_values.npz"), buf.getvalue())
  _report.plot_histograms(svals, config.depths, session.path("histograms.png"))
  _report.plot_spread(rows, session.path("spread.png"))
  text = _report.markdown(config, nets, rows)
  driver.finish(session, text)
  return {"rows": rows, "report": text}
