"""The depth sweep: per-layer gradient profiles across activation x init x depth, against theory.

Seed 003 §4.4 explains vanishing and exploding gradients by the product
``dL/dh_{k-1} = dL/dh_L prod_{t=k..L} phi'(z_t) w_t``. For a wide random net
with ``W ~ N(0, sigma_w2 / n)``, ``b ~ N(0, sigma_b2)`` whose pre-activations
sit at the variance fixed point q*, mean-field theory turns the product into a
rate (Schoenholz et al. 2017)::

    E ||delta_{l-1}||^2 = chi_1 E ||delta_l||^2,   chi_1 = sigma_w2 E_z[phi'(sqrt(q*) z)^2],

so ``log ||delta_l||^2`` should fall (chi_1 < 1) or rise (chi_1 > 1) by
``ln chi_1`` per layer going backwards. This module measures that slope on real
networks and sets it beside the prediction of :mod:`jaxbp.meanfield`.

The experiment, per configuration (activation, weights, sigma_w2, sigma_b2, depth):

* the net is ``MLP.uniform(width, width, depth, width, stack=True)``: ``depth``
  hidden layers under ``lax.scan``, a linear output layer;
* inputs are rows of squared norm ``width * v0`` with ``sigma_w2 v0 + sigma_b2 = q*``,
  so that z_1 already has variance q* and no layer is a transient of the
  variance map (the prediction holds at q*); where q* is 0 or infinite, v0 = 1;
* the loss is a random linear readout ``L = sum_b <r_b, h_K[b]>``, r standard
  normal: ``delta_K = r`` is independent of the forward pass, as the theory's
  gradient-independence assumption wants (MSE to random targets is not: its
  ``h_K`` part adds a transient of tenths of a nat at the top layers);
* the deltas come from the hand recursion :func:`jaxbp.backprop.backward`, their
  norms from :func:`jaxbp.diagnostics.norms_from_deltas`, and the slope from a
  least squares fit of ``ln mean_batch ||delta_l||^2`` over the hidden layers,
  leaving ``skip`` layers out at either end
  (:func:`jaxbp.diagnostics.fit_log_slope`), one fit per seed, then averaged.

Compute is organised for the compiler. Per depth, one program draws every
seed's standard-normal sample (and its orthonormalised twin); per (activation,
depth, weight family), one program measures any number of configurations:
sigma_w2, sigma_b2, the input scale and the sample index are array inputs, so
configurations and seeds share the samples (common random numbers). Since a
configuration only rescales its seed's sample (``W = sqrt(sigma_w2) W_unit``,
``b = sqrt(sigma_b2) b_unit``, ``x = sqrt(v0) x_unit``) and a scalar commutes
with a matmul, the configurations of one seed run as one row-stacked net
(:func:`measure_rows`): their batches stacked into ``C * batch`` rows, the
scales applied per row, every matmul ``(C * batch, n) @ (n, n)`` on the
seed's unscaled weights, which are never copied. Exact, not an approximation:
rows never mix, so each row follows its own configuration's net, equal to
:func:`measure` (the per-configuration reference) to round-off. Seeds (groups)
run under ``lax.map``, as many vmapped at once as ``memory_gb`` allows. With
several local devices the group axis is split over a ``Mesh`` with
``shard_map`` (``NamedSharding`` inputs, samples replicated); every group is
independent, so no device talks to another.

Results are resumable: each finished configuration is one atomic JSON file in
``out_dir/store`` (:class:`jaxbp.results.ResultStore`); a rerun skips them.

References:
  Poole et al., "Exponential expressivity in deep neural networks through
    transient chaos", NeurIPS 2016.
  Schoenholz et al., "Deep information propagation", ICLR 2017.
  He et al., "Delving deep into rectifiers", ICCV 2015.
  Glorot & Bengio, "Understanding the difficulty of training deep feedforward
    neural networks", AISTATS 2010.
  Saxe, McClelland & Ganguli, "Exact solutions to the nonlinear dynamics of
    learning in deep linear neural networks", ICLR 2014.

>>> import jax; jax.config.update("jax_enable_x64", True)
>>> cfg = SweepConfig(activations=("tanh",), inits=("xavier",), sigma_b2=(0.0,),
...                   depths=(8,), width=32, batch=2, seeds=(0,), skip=1)
>>> summary = run(cfg, "/tmp/jaxbp_doc_sweep")   # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, Dict, List, Mapping, NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxbp.core import activations as _act
from jaxbp.core import backprop as _backprop
from jaxbp.measure import diagnostics as _diag
from jaxbp.core import losses as _losses
from jaxbp.theory import meanfield as _mf
from jaxbp import io as _results
from jaxbp.studies.depth_sweep import report as _report
from jaxbp.core.nets import MLP, Dense

VERSION = 1   # bump when a change alters the numbers, so stored records are not reused
ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu")
# Named schemes as (weights, sigma_w2, sigma_b2) for the sweep's square layers:
# Glorot's 2 / (fan_in + fan_out) is 1 / n, He's is 2 / n, Saxe's orthogonal has gain 1.
NAMED_INITS = {"xavier": ("gaussian", 1.0, 0.0), "he": ("gaussian", 2.0, 0.0),
               "orthogonal": ("orthogonal", 1.0, 0.0)}
# Grid inits: "gaussian" spans sigma_w2 x sigma_b2; "critical" puts sigma_w2 on
# chi_1 = 1 for every sigma_b2 (meanfield.critical_sigma_w2); "orthogonal_critical"
# uses orthogonal weights at that sigma_w2 (gain^2 = sigma_w2).
INITS = ("gaussian", "critical", "orthogonal_critical") + tuple(NAMED_INITS)
DTYPES = ("float32", "float64")
_Q_FLOOR = 1e-8   # q* below this is q* = 0 (the solver stops at ~1e-16, not at 0)
_CRITICAL_MAX = 256.0   # bisection bracket [0, 256]: sigmoid's chi_1 = 1 needs sigma_w2 ~ 103


def _default_sigma_w2():
  # sigmoid' <= 1/4, so its interesting range sits ~16x higher than tanh's.
  return {"sigmoid": (1.0, 4.0, 16.0, 32.0, 64.0), "tanh": (0.5, 1.0, 1.5, 2.0, 3.0, 4.0),
          "relu": (1.0, 1.5, 2.0, 2.5, 3.0), "leaky_relu": (1.0, 1.5, 2.0, 2.5, 3.0)}


@dataclasses.dataclass(frozen=True)
class SweepConfig:
  """A depth sweep's grid. Validated on construction: a bad one fails before any compute.

  Attributes:
    activations: hidden activations, names from :mod:`jaxbp.activations`.
    inits: any of ``INITS``: ``"gaussian"`` (the sigma_w2 x sigma_b2 grid),
      ``"critical"`` and ``"orthogonal_critical"`` (chi_1 = 1 at every sigma_b2),
      ``"xavier"``, ``"he"``, ``"orthogonal"`` (gain 1).
    sigma_w2: the gaussian grid's weight variances: one list for every
      activation, or ``{activation: list}``.
    sigma_b2: bias variances of the gaussian and critical grids.
    depths: numbers of hidden layers, each >= 1.
    width: the width of every layer (>= 500 for 0.01-nat agreement).
    batch: examples per net; ``||delta_l||^2`` is averaged over them.
    seeds: one random net (weights, inputs, targets) per seed and configuration;
      seed s draws the same standard-normal sample for every configuration.
    skip: transient layers left out of the slope fit at each end.
    dtype: ``"float64"`` (needs ``jax_enable_x64``) or ``"float32"``.
    memory_gb: how much memory the row-stacked groups computed at once may take:
      their forward caches, ``2 (depth + 1) width`` values per row of
      ``configurations x batch`` rows (besides the shared samples: one
      ``(depth + 1, width, width)`` stack per seed and family, never copied).
  """
  activations: Tuple[str, ...] = ACTIVATIONS
  inits: Tuple[str, ...] = ("gaussian", "xavier", "he", "orthogonal", "critical")
  sigma_w2: Any = dataclasses.field(default_factory=_default_sigma_w2)
  sigma_b2: Tuple[float, ...] = (0.0, 0.05, 0.3)
  depths: Tuple[int, ...] = (2, 10, 50, 100, 200)
  width: int = 500
  batch: int = 8
  seeds: Tuple[int, ...] = (0, 1, 2, 3)
  skip: int = 5
  dtype: str = "float64"
  memory_gb: float = 2.0

  def __post_init__(self):
    set_ = lambda name, value: object.__setattr__(self, name, value)
    for name in ("activations", "inits", "sigma_b2", "depths", "seeds"):
      value = getattr(self, name)
      if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"SweepConfig: {name} must be a list, got {value!r}.")
      if not value:
        raise ValueError(f"SweepConfig: {name} is empty, so the grid is empty; give at "
                         f"least one value (defaults: {getattr(SweepConfig, name, None)!r}).")
      set_(name, tuple(value))
    for a in self.activations:
      if not isinstance(a, str) or a.lower() not in _act.names() or not _act.get(a).elementwise:
        raise ValueError(f"SweepConfig: unknown activation {a!r}; valid names are "
                         f"{', '.join(n for n in _act.names() if n != 'softmax')}.")
    for i in self.inits:
      if i not in INITS:
        raise ValueError(f"SweepConfig: unknown init {i!r}; valid inits are {', '.join(INITS)}.")
    for d in self.depths:
      if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise ValueError(f"SweepConfig: every depth must be an int >= 1 (hidden layers), "
                         f"got depths={self.depths!r}.")
    set_("depths", tuple(sorted(set(int(d) for d in self.depths))))
    for s in self.seeds:
      if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < 2 ** 31:
        raise ValueError(f"SweepConfig: seeds must be ints in [0, 2^31), got {self.seeds!r}.")
    if len(set(self.seeds)) != len(self.seeds):
      raise ValueError(f"SweepConfig: seeds repeat: {self.seeds!r}.")
    set_("seeds", tuple(int(s) for s in self.seeds))
    set_("sigma_b2", tuple(_variance("sigma_b2", v) for v in self.sigma_b2))
    sw = self.sigma_w2
    if not isinstance(sw, Mapping):
      if isinstance(sw, (str, bytes)) or not isinstance(sw, Sequence):
        raise ValueError(f"SweepConfig: sigma_w2 must be a list or {{activation: list}}, got {sw!r}.")
      sw = {a: sw for a in self.activations}
    grid = {a: tuple(_variance(f"sigma_w2[{a!r}]", v) for v in sw.get(a, ()))
            for a in self.activations}
    set_("sigma_w2", grid)
    for a in self.activations:
      if set(self.inits) == {"gaussian"} and not grid[a]:
        raise ValueError(f"SweepConfig: the grid has no configurations for {a!r}: inits is "
                         f"only 'gaussian' and sigma_w2 has no values for it.")
    for name, lo in (("width", 1), ("batch", 1), ("skip", 0)):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"SweepConfig: {name} must be an int >= {lo}, got {v!r}.")
    if self.dtype not in DTYPES:
      raise ValueError(f"SweepConfig: dtype must be one of {DTYPES}, got {self.dtype!r}.")
    if not (isinstance(self.memory_gb, (int, float)) and self.memory_gb > 0):
      raise ValueError(f"SweepConfig: memory_gb must be a number > 0, got {self.memory_gb!r}.")

  @classmethod
  def from_dict(cls, config: Mapping) -> "SweepConfig":
    """From a mapping (e.g. a JSON file); unknown keys are an error, missing ones default."""
    if isinstance(config, cls):
      return config
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(config) - set(names))
    if unknown:
      raise ValueError(f"SweepConfig: unknown keys {unknown}; valid keys are {', '.join(names)}.")
    return cls(**config)

  def to_dict(self) -> dict:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _variance(name, v):
  if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
      or not math.isfinite(v) or v < 0:
    raise ValueError(f"SweepConfig: {name} values must be finite numbers >= 0, got {v!r}.")
  return float(v)


# The README's main command: every axis of the study, small enough for two CPU cores.
QUICK = SweepConfig(
    sigma_w2={"sigmoid": (4.0, 16.0, 64.0), "tanh": (0.5, 1.5, 3.0),
              "relu": (1.0, 2.0, 3.0), "leaky_relu": (1.0, 2.0, 3.0)},
    sigma_b2=(0.0, 0.1), depths=(2, 16, 48), width=256, batch=8, seeds=(0, 1, 2), skip=4)
FULL = SweepConfig()


# -- the grid ----------------------------------------------------------------------


class Point(NamedTuple):
  """One configuration of the grid (``init`` is the label it was asked for)."""
  activation: str
  init: str
  weights: str          # "gaussian" | "orthogonal"
  sigma_w2: float
  sigma_b2: float
  depth: int


class Theory(NamedTuple):
  """Mean-field numbers of a point: q*, chi_1, ln chi_1, the input second moment v0,
  and whether the inputs put z_1 at q* (False where q* is 0 or infinite)."""
  q_star: float
  chi1: float
  slope: float
  v0: float
  at_fixed_point: bool


def critical_sigma_w2(activation, sigma_b2) -> np.ndarray:
  """:func:`jaxbp.meanfield.critical_sigma_w2` on the bracket ``[0, 256]``, as numpy;
  nan where chi_1 - 1 does not change sign there."""
  sigma_b2 = np.atleast_1d(np.asarray(sigma_b2, float))
  return np.asarray(_mf.critical_sigma_w2(activation, sigma_b2, lo=0.0, hi=_CRITICAL_MAX))


def _critical(activation, sigma_b2) -> List[float]:
  crit = critical_sigma_w2(activation, sigma_b2)
  for b, c in zip(sigma_b2, crit):
    if not np.isfinite(c):
      raise ValueError(
          f"init 'critical': meanfield.critical_sigma_w2({activation!r}, sigma_b2={b}) has no "
          f"root in sigma_w2 in [0, {_CRITICAL_MAX}] (chi_1 never reaches 1 there); "
          f"drop 'critical' for {activation!r} or that sigma_b2.")
  return [float(c) for c in crit]


def grid(config: SweepConfig) -> List[Point]:
  """Every point of the sweep, in a stable order (activation, init, sigma_b2, sigma_w2, depth)."""
  points = []
  for a in config.activations:
    crit = _critical(a, config.sigma_b2) if {"critical", "orthogonal_critical"} & set(config.inits) else []
    for init in config.inits:
      if init == "gaussian":
        pairs = [("gaussian", w, b) for b in config.sigma_b2 for w in config.sigma_w2[a]]
      elif init in ("critical", "orthogonal_critical"):
        weights = "gaussian" if init == "critical" else "orthogonal"
        pairs = [(weights, c, b) for b, c in zip(config.sigma_b2, crit)]
      else:
        pairs = [NAMED_INITS[init]]
      points += [Point(a, init, wt, w, b, d) for wt, w, b in pairs for d in config.depths]
  return points


def theory(points: Sequence[Point]) -> List[Theory]:
  """Mean-field q*, chi_1, ln chi_1 and input scale v0 for every point (vectorised per activation)."""
  out = [None] * len(points)
  by_act: Dict[str, List[int]] = {}
  for i, p in enumerate(points):
    by_act.setdefault(p.activation, []).append(i)
  for a, idx in by_act.items():
    sw = np.array([points[i].sigma_w2 for i in idx])
    sb = np.array([points[i].sigma_b2 for i in idx])
    q = np.asarray(_mf.fixed_point(a, sw, sb), float)
    chi = np.asarray(_mf.chi1(a, sw, sb), float)
    # sigma_w2 v0 + sigma_b2 = q*: z_1 starts at the fixed point. Without a
    # finite q* (relu with chi_1 >= 1 and biases: q grows forever) or with
    # q* = 0 (no biases, ordered phase: q_l decays to 0, and zero inputs would
    # leave relu nets dead) use v0 = 1 and let the variance map run.
    ok = np.isfinite(q) & (sw > 0) & (q > _Q_FLOOR)
    v0 = np.where(ok, np.maximum(q - sb, 0.0) / np.where(sw > 0, sw, 1.0), 1.0)
    for j, i in enumerate(idx):
      with np.errstate(divide="ignore", invalid="ignore"):
        out[i] = Theory(float(q[j]), float(chi[j]), float(np.log(chi[j])),
                        float(f"{v0[j]:.12g}"), bool(ok[j]))
  return out


def store_key(config: SweepConfig, point: Point, th: Theory) -> dict:
  """What determines a point's numbers: the store's key (the init label is not in it,
  so e.g. "he" and gaussian(2, 0) are computed once)."""
  return {"experiment": "depth_sweep", "version": VERSION, "activation": point.activation,
          "weights": point.weights, "sigma_w2": point.sigma_w2, "sigma_b2": point.sigma_b2,
          "depth": point.depth, "width": config.width, "batch": config.batch,
          "seeds": list(config.seeds), "dtype": config.dtype, "input_v0": th.v0,
          "loss": RANDOM_READOUT.name}


# -- one measurement, jitted -------------------------------------------------------


class Sample(NamedTuple):
  """The randomness of one seed, at unit scale; every configuration rescales it.

  Attributes:
    params: ``W ~ N(0, 1 / fan_in)`` (or Haar-orthogonal, columns of norm 1) and
      ``b ~ N(0, 1)``: sigma_w2 = sigma_b2 = 1.
    x: input directions ``(batch, n)``, every row of squared norm exactly n
      (no chi^2 scatter: z_1 starts at q* for every example).
    y: the standard-normal readout ``(batch, out)`` of :data:`RANDOM_READOUT`.
  """
  params: Tuple[Dense, ...]
  x: jax.Array
  y: jax.Array


class Measurement(NamedTuple):
  """One net's per-layer profiles, each ``(K,)`` for the K = depth + 1 layers.

  Attributes:
    log_delta_sq: ``ln mean_batch ||delta_l||^2``.
    log_weight_sq: ``ln ||dL/dW_l||_F^2``.
    log_bias_sq: ``ln ||dL/db_l||^2``.
    forward_finite: whether every ``h_l`` of the forward pass is finite.
  """
  log_delta_sq: jax.Array
  log_weight_sq: jax.Array
  log_bias_sq: jax.Array
  forward_finite: jax.Array


def _haar(a):
  # QR of a Gaussian matrix with the signs of R's diagonal folded into Q: Q is
  # Haar-distributed (Mezzadri 2007), as in jaxbp.initializers.orthogonal.
  q, r = jnp.linalg.qr(a)
  return q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[..., None, :]


def draw_samples(net: MLP, families: Sequence[str], batch: int, seed, dtype) -> Tuple[Sample, ...]:
  """The unit-scale :class:`Sample` of ``seed`` for each weight family, for a net of
  equal widths; jittable, vmaps over seeds.

  The families share their random numbers: the orthogonal weights are the
  Gaussian ones orthonormalised (QR with R's signs folded in), and biases,
  inputs and readout are the same. Two ``jax.random.normal`` calls fill
  everything: a ``(K, n, n)`` block of weights and a flat vector cut into
  biases, inputs and readout. Each call site is a threefry kernel that XLA
  takes ~0.5 s to compile on a CPU, so one per layer group would cost seconds.
  (The QR reads a block of its own: QR of slices of one flat draw hung XLA's
  CPU runtime in jax 0.10.2.)

  >>> import jax, jax.numpy as jnp
  >>> net = MLP.uniform(16, 16, 3, 16, stack=True)
  >>> gauss, orth = draw_samples(net, ("gaussian", "orthogonal"), 2, 0, jnp.float32)
  >>> W = orth.params[1].W[0]              # a hidden layer: W^T W = I
  >>> bool(jnp.allclose(W.T @ W, jnp.eye(16), atol=1e-5))
  True
  """
  n = net.sizes[0]
  if set(net.sizes) != {n}:
    raise ValueError(f"draw_samples: the sweep's nets have equal widths, got sizes={net.sizes}.")
  K, B = net.num_layers, batch
  k_w, k_rest = jax.random.split(jax.random.PRNGKey(seed))
  normal = jax.random.normal(k_w, (K, n, n), dtype)
  rest = jax.random.normal(k_rest, ((K + 2 * B) * n,), dtype)
  b, g, y = rest[:K * n].reshape(K, n), rest[K * n:(K + B) * n].reshape(B, n), rest[(K + B) * n:]
  x = g * (math.sqrt(n) / jnp.linalg.norm(g, axis=1, keepdims=True))
  samples = []
  for weights in families:
    # Unit sigma_w2: Var W_ij = 1 / fan_in, or orthonormal columns (gain 1).
    W = _haar(normal) if weights == "orthogonal" else normal / math.sqrt(n)
    params, k = [], 0
    for grp, (count, _, _) in enumerate(net.groups):
      params.append(Dense(W[k:k + count], b[k:k + count]) if net.is_stacked(grp)
                    else Dense(W[k], b[k]))
      k += count
    samples.append(Sample(tuple(params), x, y.reshape(B, n)))
  return tuple(samples)


def measure(net: MLP, sample: Sample, sigma_w2, sigma_b2, v0) -> Measurement:
  """Scales ``sample`` to (sigma_w2, sigma_b2, v0), runs backprop, returns the profiles.

  ``W = sqrt(sigma_w2) W_unit``, ``b = sqrt(sigma_b2) b_unit``, ``x = sqrt(v0) x_unit``:
  configurations share their seed's sample (common random numbers, so the
  phase diagram is smooth in sigma_w2), and the variances are arrays, so one
  compiled program serves every configuration of a shape. The loss is the
  random readout ``sum <y, h_K>`` (:data:`RANDOM_READOUT`, so ``delta_K = y``);
  the deltas come from the hand recursion.
  """
  sw, sb = jnp.sqrt(sigma_w2), jnp.sqrt(sigma_b2)
  params = tuple(Dense(sw * p.W, sb * p.b) for p in sample.params)
  x = jnp.sqrt(v0) * sample.x
  out = _backprop.backward(net, RANDOM_READOUT, params, x, sample.y, reduction="sum")
  # Norms from deltas and activations: dW is never formed (nor computed: XLA
  # drops the unread gradients), which saves a third of the flops and the
  # (L, n, n) memory of dW.
  norms = _diag.norms_from_deltas(net, x, out.trace, out.deltas)
  finite = _diag.per_layer(net, out.trace.h, lambda h: jnp.all(jnp.isfinite(h)))
  # 2 ln ||v||: the norms are computed scaled, so this is right even where
  # ||v||^2 itself would overflow or underflow.
  return Measurement(2 * jnp.log(norms.delta), 2 * jnp.log(norms.weight),
                     2 * jnp.log(norms.bias), finite)


def _row_scale(s, B):
  """Per-configuration scalars ``(C,)`` as per-row factors ``(C * B, 1)``."""
  return jnp.repeat(s, B)[:, None]


def _block_norms(h_in, delta, C, B):
  """Per configuration: 2 ln of ``rms_batch ||delta||``, ``||h_in^T delta||_F`` and
  ``||sum_batch delta||``, each ``(C,)``, from row-stacked ``(C * B, n)`` arrays.

  :func:`jaxbp.diagnostics.norms_from_deltas`'s scaled norms, vmapped over the
  blocks: every configuration's rows are divided by their own max, so ``2 ln ||v||``
  stays finite where ``||v||^2`` would overflow or underflow, and ``||dW||`` comes
  from two ``(B, B)`` Gram matrices per configuration, dW never formed.
  """
  n = delta.shape[-1]
  d, h = delta.reshape(C, B, n), h_in.reshape(C, B, n)
  delta_norm = jax.vmap(lambda v: _diag._norm(v, (0, 1)))(d) / math.sqrt(B)
  weight_norm = jax.vmap(_diag._gram_norm)(h, d)
  bias_norm = jax.vmap(lambda v: _diag._norm(v, (0,)))(jnp.sum(d, axis=1))
  return 2 * jnp.log(delta_norm), 2 * jnp.log(weight_norm), 2 * jnp.log(bias_norm)


def _measure_rows_at(net: MLP, samples: Sample, index, sigma_w2, sigma_b2, v0) -> Measurement:
  """:func:`measure_rows` on sample ``index`` of ``samples`` (a leading sample axis on
  every array): the layers' weights are sliced one layer at a time inside the scans,
  so the seed's ``(depth + 1, n, n)`` stack is never copied out of ``samples``."""
  C = sigma_w2.shape[0]
  B, n = samples.x.shape[-2:]
  dtype = samples.x.dtype
  sw = _row_scale(jnp.sqrt(sigma_w2).astype(dtype), B)
  sb = _row_scale(jnp.sqrt(sigma_b2).astype(dtype), B)
  # x = sqrt(v0) x_unit, configuration-major rows: row c * B + b is example b of c.
  h = (jnp.sqrt(v0).astype(dtype)[:, None, None] * samples.x[index][None]).reshape(C * B, n)
  phi = net.phi

  def forward(h, W, b, hidden):
    z = sw * (h @ W) + sb * b[None, :]
    h_out = phi.fn(z) if hidden else z
    return h_out, z, jnp.all(jnp.isfinite(h_out.reshape(C, B * n)), axis=1)

  caches, finite = [], []
  for g, p in enumerate(samples.params):
    hidden = net.is_hidden(g)
    if net.is_stacked(g):
      def step(h, l, g=g, hidden=hidden):
        h_out, z, ok = forward(h, samples.params[g].W[index, l], samples.params[g].b[index, l],
                               hidden)
        return h_out, (h, z, ok)
      h, (h_ins, zs, ok) = jax.lax.scan(step, h, jnp.arange(p.W.shape[1]))
      caches.append((h_ins, zs))
      finite.append(ok)
    else:
      h_out, z, ok = forward(h, p.W[index], p.b[index], hidden)
      caches.append((h, z))
      finite.append(ok[None])
      h = h_out

  def backward(g_h, W, h_in, z, hidden):
    delta = g_h * phi.grad(z) if hidden else g_h
    # dL/dh_{k-1} = delta_k (sw W_unit)^T, the scale applied to the rows.
    return sw * (delta @ W.T), _block_norms(h_in, delta, C, B)

  # The random readout: delta_K = dL/dh_K = y, every configuration alike.
  g_h = jnp.broadcast_to(samples.y[index][None], (C, B, n)).reshape(C * B, n)
  norms = [None] * len(samples.params)
  for g in reversed(range(len(samples.params))):
    p, (h_in, z), hidden = samples.params[g], caches[g], net.is_hidden(g)
    if net.is_stacked(g):
      def step(g_h, xs, g=g, hidden=hidden):
        l, h_in, z = xs
        return backward(g_h, samples.params[g].W[index, l], h_in, z, hidden)
      g_h, norms[g] = jax.lax.scan(step, g_h, (jnp.arange(p.W.shape[1]), h_in, z), reverse=True)
    else:
      g_h, nm = backward(g_h, p.W[index], h_in, z, hidden)
      norms[g] = tuple(a[None] for a in nm)
  # (K, C) per quantity, layers in order; transposed to (C, K) like measure's (K,).
  stack = lambda parts: jnp.concatenate(parts, axis=0).T
  return Measurement(*(stack([nm[q] for nm in norms]) for q in range(3)), stack(finite))


def measure_rows(net: MLP, sample: Sample, sigma_w2, sigma_b2, v0) -> Measurement:
  """:func:`measure` for C configurations of one seed at once, as one row-stacked net.

  ``sigma_w2``, ``sigma_b2``, ``v0`` are ``(C,)``; every field of the result is
  ``(C, K)``, row c equal to ``measure(net, sample, sigma_w2[c], sigma_b2[c], v0[c])``
  to round-off.

  Configurations of one seed differ only by three scalars applied to the seed's
  unit sample: ``W_k = sw W_k^u``, ``b_k = sb b_k^u``, ``x = sqrt(v0) x^u``
  (sw = sqrt(sigma_w2), sb = sqrt(sigma_b2)). A scalar commutes with the matmul,
  ``h (sw W^u) = sw (h W^u)``, so the scale can go on the rows instead of the
  weights. Stack the C configurations' batches along the batch axis (C * B rows,
  configuration-major) with per-row factors ``sw_r``, ``sb_r``, and run one net on
  the *unscaled* shared weights::

      z_k     = sw_r * (h_{k-1} @ W_k^u) + sb_r * b_k^u,   h_k = phi(z_k)
      delta_K = y                                          (the random readout)
      delta_{k-1} = sw_r * (delta_k @ W_k^uT) * phi'(z_{k-1})

  Rows never mix (a matmul acts row by row and phi elementwise), so every row
  follows exactly its own configuration's net: the same z, h and delta as
  :func:`measure`, up to the rounding of ``sw (h W)`` against ``h (sw W)``.
  The gradients are those of the *scaled* parameters, as in :func:`measure`:
  ``dL/dW_k = h_{k-1,c}^T delta_{k,c}`` and ``dL/db_k = sum_b delta_{k,c}`` over
  configuration c's B rows (the scale already sits inside h and delta), and
  their norms come per configuration from ``(C, B, B)`` Gram matrices
  (:func:`_block_norms`). Every matmul is ``(C * B, n) @ (n, n)``: the shared
  weights are read once per layer for all C configurations, instead of one
  scaled copy and one thin ``(B, n) @ (n, n)`` product per configuration.

  >>> import jax, jax.numpy as jnp
  >>> jax.config.update("jax_enable_x64", True)
  >>> net = _net("tanh", 4, 16)
  >>> (s,) = draw_samples(net, ("gaussian",), 2, 0, jnp.float64)
  >>> rows = measure_rows(net, s, jnp.array([1.0, 2.0]), jnp.array([0.0, 0.1]), jnp.ones(2))
  >>> one = measure(net, s, 2.0, 0.1, 1.0)
  >>> bool(jnp.allclose(rows.log_delta_sq[1], one.log_delta_sq, rtol=1e-12))
  True
  """
  one = jax.tree_util.tree_map(lambda a: a[None], sample)
  return _measure_rows_at(net, one, 0, jnp.asarray(sigma_w2), jnp.asarray(sigma_b2),
                          jnp.asarray(v0))


def measure_groups(net: MLP, samples: Sample, index, sigma_w2, sigma_b2, v0,
                   batch_size=None) -> Measurement:
  """:func:`measure_rows` for G groups: ``index`` ``(G,)`` picks each group's sample
  (a leading sample axis on ``samples``), ``sigma_w2``, ``sigma_b2``, ``v0`` are
  ``(G, C)``; fields ``(G, C, K)``. Groups run under ``lax.map``, ``batch_size`` of
  them vmapped at a time (default one), so memory holds ``batch_size`` groups'
  forward caches, ``(depth + 1) C B n`` values each for z and for h; jittable
  with ``net`` static. Each group reads its weights from ``samples`` one layer at
  a time: no per-group copy of a weight stack.
  """
  fn = lambda a: _measure_rows_at(net, samples, *a)
  return jax.lax.map(fn, (index, sigma_w2, sigma_b2, v0),
                     batch_size=None if batch_size in (None, 1) else batch_size)


def _readout_fn(h, r, reduction="sum"):
  terms = h * r
  return terms if reduction == "none" else jnp.sum(terms) / (terms.size if reduction == "mean" else 1)


def _readout_grad(h, r, reduction="sum"):
  return r / r.size if reduction == "mean" else r


# L = sum_b <r_b, h_K[b]>: dL/dh_K = r, whatever the forward pass did. MSE to
# random targets would give 2 (h_K - y), whose h_K part is aligned with the
# forward pass; backprop amplifies that part (h_K = h_{l} J for relu, and
# J J^T is not an isometry), a transient measured at +0.65 nats on the top
# layer, still +0.1 twelve layers down (relu, He, width 512).
RANDOM_READOUT = _losses.Loss("random_readout", _readout_fn, _readout_grad, False)


def _net(activation, depth, width):
  return MLP.uniform(width, width, depth, width, activation=activation, stack=True)


def _bytes_per_row(depth, width, itemsize):
  # One row (an example of one configuration) of a group's forward cache: the
  # layer inputs h and the pre-activations z, (depth + 1, n) each, plus a few
  # (n,) temporaries of the backward step. The weights are the shared samples,
  # never copied, and dW is never formed.
  return itemsize * width * (2 * (depth + 1) + 4)


@functools.lru_cache(maxsize=None)
def _sampler(depth, width, batch, families, dtype):
  """Samples of many seeds and families at once, concatenated family by family:
  one program per depth, shared by every activation."""
  net = _net("identity", depth, width)

  def draw(seeds):
    per_family = jax.vmap(lambda s: draw_samples(net, families, batch, s, dtype))(seeds)
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *per_family)

  return jax.jit(draw)


@functools.lru_cache(maxsize=None)
def _measurer(activation, depth, width, per_batch, devices):
  """The compiled measurement of G row-stacked groups: ``(samples, index (G,),
  sigma_w2, sigma_b2, v0 (G, C)) -> Measurement`` of ``(G, C, K)`` arrays
  (:func:`measure_groups`, ``per_batch`` groups vmapped at a time on each
  device), and the input shardings (None for one device)."""
  net = _net(activation, depth, width)
  local = functools.partial(measure_groups, net, batch_size=per_batch)
  if len(devices) == 1:
    return jax.jit(local), None, None
  mesh = Mesh(np.array(devices), ("items",))
  spec = PartitionSpec("items")
  # Groups are independent: each device maps over its own shard, the samples
  # replicated, so no device talks to another.
  sharded = jax.shard_map(local, mesh=mesh, in_specs=(PartitionSpec(),) + (spec,) * 4,
                          out_specs=spec)
  return jax.jit(sharded), NamedSharding(mesh, spec), NamedSharding(mesh, PartitionSpec())


def group_items(items, per_group: int, multiple: int = 1):
  """Items ``[(sample index, sigma_w2, sigma_b2, v0)]`` as row-stacked groups.

  Each group holds ``per_group`` configurations of one sample (its last one
  repeated where a sample has fewer left); the groups are padded to a multiple
  of ``multiple`` (the devices) with repeats of the last one.

  Returns:
    ``(index (G,), sigma_w2 (G, C), sigma_b2 (G, C), v0 (G, C))`` as numpy
    arrays, and ``first``: for every item, its position in the flattened
    ``(G * C)`` results.
  """
  by_sample: Dict[int, List[int]] = {}
  for pos, item in enumerate(items):
    by_sample.setdefault(int(item[0]), []).append(pos)
  groups = []
  for positions in by_sample.values():
    for r in range(0, len(positions), per_group):
      run = positions[r:r + per_group]
      groups.append(run + [run[-1]] * (per_group - len(run)))
  groups += [groups[-1]] * (-len(groups) % multiple)
  pos = np.asarray(groups, np.int64)
  index = np.asarray([items[g[0]][0] for g in groups], np.int32)
  cols = [np.asarray([[items[p][q] for p in g] for g in groups], float) for q in (1, 2, 3)]
  _, first = np.unique(pos.ravel(), return_index=True)   # sorted by item position
  return (index, *cols), first


def _compute(config: SweepConfig, activation, depth, samples, items, devices, per_group):
  """Measures ``items`` = [(sample index, sigma_w2, sigma_b2, v0)] in row-stacked
  groups of ``per_group`` configurations (:func:`group_items`); returns a
  :class:`Measurement` with one ``(K,)`` row per item, in order."""
  dtype = jnp.dtype(config.dtype)
  (index, *cols), first = group_items(items, per_group, len(devices))
  # As many groups at once (vmapped) as memory_gb holds: one batched dot over
  # the groups' weights ran 15% faster than one group after another (2 CPU cores).
  rows = config.memory_gb * 1e9 // _bytes_per_row(depth, config.width, dtype.itemsize)
  per_batch = int(max(1, min(len(index) // len(devices), rows // (per_group * config.batch))))
  fn, sharded, replicated = _measurer(activation, depth, config.width, per_batch, tuple(devices))
  args = [index] + [c.astype(dtype) for c in cols]
  if sharded is not None:
    samples = jax.device_put(samples, replicated)
    args = [jax.device_put(a, sharded) for a in args]
  out = fn(samples, *args)
  return Measurement(*(np.asarray(a).reshape((-1,) + a.shape[2:])[first] for a in out))


# -- from profiles to records ------------------------------------------------------


def _seed_status(m_delta, m_weight, m_bias, forward_finite):
  """(status, first non-finite layer, pass) of one seed's profiles (layers 1-based).

  Overflow: a forward h_l or a gradient is inf/nan. The first layer is counted
  in the order the pass computes: the lowest l for the forward pass, the
  highest l (nearest the output) for the backward pass. Underflow: a delta
  norm is exactly 0 (ln = -inf), first reached going backwards.
  """
  if not forward_finite.all():
    return "overflow", int(np.argmin(forward_finite)) + 1, "forward"
  # +inf or nan is an overflow; -inf is ln 0, a norm that vanished exactly.
  blown = lambda v: np.isnan(v) | (v == np.inf)
  bad = blown(m_delta) | blown(m_weight) | blown(m_bias)
  if bad.any():
    return "overflow", int(np.nonzero(bad)[0].max()) + 1, "backward"
  if (m_delta == -np.inf).any():
    return "underflow", int(np.nonzero(m_delta == -np.inf)[0].max()) + 1, "backward"
  return "ok", None, None


def _record(m: Measurement, seconds: float) -> dict:
  per_seed = [_seed_status(*(np.asarray(f)[s] for f in m)) for s in range(m.log_delta_sq.shape[0])]
  return {"log_delta_sq": m.log_delta_sq, "log_weight_sq": m.log_weight_sq,
          "log_bias_sq": m.log_bias_sq,
          "status": [s[0] for s in per_seed], "first_nonfinite_layer": [s[1] for s in per_seed],
          "nonfinite_pass": [s[2] for s in per_seed], "seconds": seconds}


def _as_float(rows) -> np.ndarray:
  # JSON has no inf or nan; write_json stored them as null, read back as nan.
  return np.array([[np.nan if v is None else v for v in r] for r in rows], float)


def _finite_mean(a):
  """Mean over seeds (axis 0) of the finite entries; nan where there are none."""
  ok = np.isfinite(a)
  with np.errstate(invalid="ignore"):
    return np.where(ok.any(0), np.where(ok, a, 0.0).sum(0) / ok.sum(0), np.nan)


def fit_window(depth: int, skip: int) -> Tuple[int, int]:
  """The hidden layers ``[first, last]`` the slope is fitted over: ``skip`` left out at
  each end, fewer when the net is too shallow to keep two layers."""
  s = min(skip, max(0, (depth - 2) // 2))
  return 1 + s, depth - s


# One compile per (shape, window), instead of op-by-op dispatch for every row.
_fit_log_slope = jax.jit(_diag.fit_log_slope, static_argnums=(1, 2))


def _summarise(point, th, rec, config) -> dict:
  d = point.depth
  first, last = fit_window(d, config.skip)
  delta = _as_float(rec["log_delta_sq"])[:, :d]      # hidden layers only
  weight = _as_float(rec["log_weight_sq"])[:, :d]
  fit = lambda y: np.asarray(_fit_log_slope(jnp.asarray(y), first - 1, d - last))
  slopes, wslopes = fit(delta), fit(weight)
  S = len(slopes)
  statuses = rec["status"]
  status = "overflow" if "overflow" in statuses else "underflow" if "underflow" in statuses else "ok"
  layers = [(l, p) for l, p, s in zip(rec["first_nonfinite_layer"], rec["nonfinite_pass"], statuses)
            if s == status and l is not None]
  fwd = [l for l, p in layers if p == "forward"]
  first_bad = min(fwd) if fwd else (max(l for l, _ in layers) if layers else None)
  mean = float(np.nanmean(slopes)) if np.isfinite(slopes).any() else float("nan")
  sem = float(np.nanstd(slopes, ddof=1) / np.sqrt(np.isfinite(slopes).sum())) \
      if np.isfinite(slopes).sum() > 1 else float("nan")
  return {
      "activation": point.activation, "init": point.init, "weights": point.weights,
      "sigma_w2": point.sigma_w2, "sigma_b2": point.sigma_b2, "depth": d,
      "width": config.width, "batch": config.batch, "seeds": S,
      "status": status, "first_nonfinite_layer": first_bad,
      "nonfinite_pass": ("forward" if fwd else "backward") if layers else None,
      "q_star": th.q_star, "chi1": th.chi1, "slope_theory": th.slope,
      "slope_measured": mean, "slope_sem": sem, "slope_error": mean - th.slope,
      "slope_weight_measured": float(np.nanmean(wslopes)) if np.isfinite(wslopes).any() else float("nan"),
      "fit_first": first, "fit_last": last, "input_v0": th.v0,
      "at_fixed_point": th.at_fixed_point,
  }


# -- the driver --------------------------------------------------------------------


def run(config, out_dir: str, devices=None, figures: bool = True) -> dict:
  """Runs (or resumes) the sweep and writes its results to ``out_dir``.

  Writes ``results.csv`` (one row per configuration), ``results.json`` (the
  rows, the mean profiles, the config, seeds and provenance), ``config.json``,
  ``profiles.png``, ``slopes.png``, ``phase.png``, ``report.md``, and one file per
  finished configuration under ``store/``.

  Args:
    config: a :class:`SweepConfig` or a mapping of its fields.
    out_dir: the output directory; a rerun into it skips finished configurations.
    devices: the devices to shard over; default every local device.
    figures: whether to draw the PNGs (the numbers and report are always written).

  Returns:
    A summary: counts, runtime, and the agreement with theory per activation.
  """
  config = SweepConfig.from_dict(config)
  if config.dtype == "float64" and not jax.config.jax_enable_x64:
    raise ValueError("SweepConfig: dtype='float64' needs jax.config.update('jax_enable_x64', "
                     "True) before any computation, or use dtype='float32'.")
  devices = list(devices or jax.local_devices())
  start = time.time()
  points = grid(config)
  theories = theory(points)
  keys = [store_key(config, p, t) for p, t in zip(points, theories)]
  store = _results.ResultStore(os.path.join(out_dir, "store"))
  _results.write_json(os.path.join(out_dir, "config.json"), config.to_dict())

  # Unique pending keys, grouped by shape: one compiled program per group.
  pending: Dict[tuple, Dict[str, Tuple[dict, Theory]]] = {}
  for p, t, k in zip(points, theories, keys):
    name = _results.config_key(k)
    if not store.done(k):
      pending.setdefault((p.activation, p.weights, p.depth), {})[name] = (k, t)
  todo = sum(len(v) for v in pending.values())
  computed = 0
  for _ in _results.progress(_work(config, pending, store, devices), total=todo,
                             desc="depth sweep"):
    computed += 1
  compute_seconds = time.time() - start

  rows = [_summarise(p, t, store.load(k), config) for p, t, k in zip(points, theories, keys)]
  profiles = {}
  for p, k, row in zip(points, keys, rows):
    rec = store.load(k)
    profiles[_results.config_key(k)] = {
        "log_delta_sq_mean": _finite_mean(_as_float(rec["log_delta_sq"])),
        "log_weight_sq_mean": _finite_mean(_as_float(rec["log_weight_sq"]))}
    row["key"] = _results.config_key(k)
  summary = _report.agreement(rows, config)
  summary.update(configurations=len(rows), distinct=len({r["key"] for r in rows}),
                 computed=computed, compute_seconds=round(compute_seconds, 2),
                 devices=len(devices))
  _report.write_outputs(out_dir, config, rows, profiles, summary, figures, start)
  summary["seconds"] = round(time.time() - start, 2)
  return summary


def _work(config, pending, store, devices):
  """Computes the pending configurations, saving each as it finishes; yields once per
  saved configuration (the progress bar's tick).

  Loops over depths: the seeds' samples (of every weight family needed) are
  drawn once per depth and shared by every activation and configuration.
  """
  S, ndev = len(config.seeds), len(devices)
  dtype = jnp.dtype(config.dtype)
  seeds = np.asarray(config.seeds, np.int32)
  blocks: Dict[int, Dict[str, Dict[str, list]]] = {}
  for (activation, weights, depth), entries in pending.items():
    blocks.setdefault(depth, {}).setdefault(activation, {})[weights] = list(entries.values())
  for depth, by_act in blocks.items():
    families = sorted({w for per_w in by_act.values() for w in per_w})
    families = tuple(families)
    samples = _sampler(depth, config.width, config.batch, families, dtype.name)(seeds)
    offset = {w: i * S for i, w in enumerate(families)}   # family w, seed j: sample offset + j
    # Configurations of one sample share its weights: C of them run as one
    # row-stacked net of C * batch rows (measure_rows), C as large as memory allows.
    rows = int(config.memory_gb * 1e9 // _bytes_per_row(depth, config.width, dtype.itemsize))
    c_max = max(1, rows // config.batch)
    for activation, per_w in by_act.items():
      for w in families:
        entries = per_w.get(w, [])
        if not entries:
          continue
        n = len(entries)
        # q groups per seed and call, so that every device has a group to run;
        # calls of equal size (the last padded), so one program serves them all.
        q = max(1, min(n, -(-ndev // S)))
        calls = -(-n // (q * c_max))
        per_call = -(-n // calls)
        per_group = -(-per_call // q)
        for i in range(0, n, per_call):
          chunk = entries[i:i + per_call]
          padded = chunk + [chunk[-1]] * (per_call - len(chunk))
          items = [(offset[w] + j, k["sigma_w2"], k["sigma_b2"], t.v0)
                   for k, t in padded for j in range(S)]
          tic = time.time()
          m = _compute(config, activation, depth, samples, items, devices, per_group)
          seconds = (time.time() - tic) / len(chunk)
          for c, (k, _) in enumerate(chunk):
            part = Measurement(*(a[c * S:(c + 1) * S] for a in m))
            store.save(k, _record(part, seconds))
            yield k
    del samples
