"""Singular values of the input-output Jacobian of deep random networks.

For the hidden stack ``h_l = phi(h_{l-1} W_l + b_l)``, l = 1 .. L, all of width
N, the Jacobian of ``h_L`` with respect to ``h_0`` is, in the row convention of
:mod:`jaxbp.nets` (``dh_l = dh_{l-1} W_l D_l``, ``D_l = diag phi'(z_l)``)::

    J_L = W_1 D_1 W_2 D_2 ... W_L D_L          (N x N)

the transpose of the column form ``D_L W_L^T ... D_1 W_1^T`` of Pennington et al.
(2017): the same singular values ``s_i``. Backprop multiplies the output
gradient by ``J_L^T``, so the spread of the ``s_i`` is how unevenly the
directions of ``dL/dh_L`` survive the trip to the input.

Free probability gives the first two moments of ``lambda = s^2`` (the spectrum
of ``J J^T``) for wide nets whose pre-activations sit at the fixed point q*
(Pennington, Schoenholz & Ganguli 2017, eqs. 15-16)::

    m_1 = E[lambda]   = chi_1^L,          chi_1 = sigma_w^2 mu_1,
    sigma^2 = Var[lambda] = chi_1^{2L} L (mu_2 / mu_1^2 - 1 - s_1),
    mu_k = E_z[phi'(sqrt(q*) z)^{2k}],

where ``s_1`` is the first coefficient of the S-transform of ``W W^T``: -1 for
Gaussian weights, 0 for orthogonal ones. At criticality (chi_1 = 1):

  * linear, orthogonal:   sigma^2 = 0        (exact isometry; Saxe et al. 2014)
  * linear, Gaussian:     sigma^2 = L
  * ReLU (He), Gaussian:  sigma^2 = 2 L      (mu_1 = mu_2 = 1/2)
  * ReLU, orthogonal:     sigma^2 = L        (no isometry even with orthogonal W)
  * tanh, orthogonal:     sigma^2 = L (mu_2/mu_1^2 - 1), which -> 0 as q* -> 0
  * tanh, Gaussian:       sigma^2 = L mu_2/mu_1^2 >= L

so only orthogonal weights with a nonlinearity that is nearly linear around q*
(tanh with small sigma_b^2) keep the whole spectrum near 1: dynamical isometry.

A ReLU Jacobian also has exact zeros: ``D_l`` zeroes about half the units, so
``rank J_L <= min_l rank D_l``, about N/2. Gaussian products spread the
remaining singular values over many decades; below ``FLOOR`` times the largest,
float64 round-off in the explicit product hides them, so the log-spread
statistics count them as "below floor" instead of trusting their values.

References:
  Saxe, McClelland & Ganguli, "Exact solutions to the nonlinear dynamics of
    learning in deep linear neural networks", ICLR 2014.
  Pennington, Schoenholz & Ganguli, "Resurrecting the sigmoid in deep learning
    through dynamical isometry: theory and practice", NeurIPS 2017.
  Pennington, Schoenholz & Ganguli, "The emergence of spectral universality in
    deep networks", AISTATS 2018.

>>> import jax; jax.config.update("jax_enable_x64", True)
>>> s = singular_values(jax.random.PRNGKey(0), "tanh", "orthogonal", 64, (4, 16), sigma_b2=1e-3)
>>> s.shape
(2, 64)
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.core import activations as _act
from jaxbp.core import initializers as _init
from jaxbp.theory import meanfield as _mf
from jaxbp.core.nets import MLP

@contextlib.contextmanager
def single_thread_blas():
  """Runs the body with OpenBLAS (the LAPACK behind ``jnp.linalg.qr`` on CPU) on
  one thread, if threadpoolctl is installed; restores the thread count after.

  Why: on a loaded 2-core machine, OpenBLAS's own threads fight XLA's, and the
  QR of orthogonal init took 5-20 s for 28 matrices of 256 x 256 instead of
  0.1 s (measured; ``OPENBLAS_NUM_THREADS=1`` gives the same 0.1 s).
  """
  try:
    from threadpoolctl import threadpool_limits
  except ImportError:
    yield
    return
  jnp.linalg.qr(jnp.eye(2))   # load the LAPACK that jaxlib calls, so the limit reaches it
  with threadpool_limits(1, user_api="blas"):
    yield


WEIGHTS = ("gaussian", "orthogonal")
S1 = {"gaussian": -1.0, "orthogonal": 0.0}   # S-transform coefficient of W W^T
FLOOR = 1e-12   # s below FLOOR * max(s) is round-off of the explicit float64 product


class Setting(NamedTuple):
  """A critical random network: ``W ~ sigma_w2 / N`` scale, biases ``N(0, sigma_b2)``.

  Attributes:
    activation: the hidden activation's name.
    weights: ``"gaussian"`` or ``"orthogonal"`` (gain ``sqrt(sigma_w2)``).
    sigma_w2, sigma_b2: the weight and bias variances.
    q_star: the pre-activation variance's fixed point (1 where every q is fixed,
      as for ReLU with sigma_w2 = 2, sigma_b2 = 0).
  """
  activation: str
  weights: str
  sigma_w2: float
  sigma_b2: float
  q_star: float

  @property
  def name(self) -> str:
    return f"{self.activation}-{self.weights}"

  @property
  def initializer(self) -> _init.Initializer:
    if self.weights == "orthogonal":
      return _init.orthogonal(math.sqrt(self.sigma_w2), self.sigma_b2)
    return _init.gaussian(self.sigma_w2, self.sigma_b2)


def critical(activation: str, weights: str, sigma_b2: float = 0.0) -> Setting:
  """The critical point ``chi_1 = 1`` of ``activation`` at bias variance ``sigma_b2``.

  tanh: sigma_w2 from :func:`jaxbp.meanfield.critical_sigma_w2` (1.189 at
  sigma_b2 = 1e-3, q* = 0.107). ReLU: sigma_w2 = 2 (He et al. 2015) for any
  sigma_b2, but only sigma_b2 = 0 has a finite q*.

  >>> round(critical("relu", "gaussian").sigma_w2, 6)
  2.0
  """
  act = _check_activation(activation)
  if weights not in WEIGHTS:
    raise ValueError(f"Unknown weights {weights!r}; valid names are {', '.join(WEIGHTS)}.")
  if not (isinstance(sigma_b2, (int, float)) and 0 <= sigma_b2 < math.inf):
    raise ValueError(f"sigma_b2 must be a number >= 0, got {sigma_b2!r}.")
  sigma_w2 = float(_mf.critical_sigma_w2(act, sigma_b2))
  if not math.isfinite(sigma_w2):
    raise ValueError(f"{act.name} has no critical sigma_w2 in [0, 20] at sigma_b2={sigma_b2}; "
                     "try a smaller sigma_b2, or another activation (tanh, relu).")
  q = float(_mf.fixed_point(act, sigma_w2, sigma_b2))
  if not math.isfinite(q):
    raise ValueError(f"{act.name} at sigma_w2={sigma_w2:.4g}, sigma_b2={sigma_b2} has no "
                     "finite fixed point q*: use sigma_b2=0 for relu.")
  return Setting(act.name, weights, sigma_w2, float(sigma_b2), q)


def _check_activation(activation):
  act = _act.get(activation)
  if not act.elementwise:
    raise ValueError(f"spectrum needs an elementwise hidden activation, got {act.name!r}.")
  return act


def _check_depths(depths) -> tuple:
  if isinstance(depths, (int, np.integer)):
    depths = (depths,)
  depths = tuple(depths)
  if not depths:
    raise ValueError("depths is empty: give at least one depth >= 1, e.g. (1, 4, 16).")
  for d in depths:
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
      raise ValueError(f"every depth must be an int >= 1, got depths={depths!r}.")
  if list(depths) != sorted(set(depths)):
    raise ValueError(f"depths must be strictly increasing, got {depths!r}.")
  return tuple(int(d) for d in depths)


def _stack(tree, net):
  """Every layer's leaf with a leading layer axis: ``(L, ...)`` from the params groups."""
  return jnp.concatenate([a if net.is_stacked(g) else a[None] for g, a in enumerate(tree)])


def prefix_singular_values(net: MLP, params, x, depths: Sequence[int]) -> jax.Array:
  """Singular values of ``J_l = dh_l/dh_0`` at one input, for every l in ``depths``.

  ``net`` must be a square stack whose every layer is hidden, ``sizes = (N,) *
  (L + 1)`` with ``output_activation == activation`` (no residual, no batch
  norm), so that ``J_l`` for l < L is the Jacobian of its first l layers. One
  forward pass (``net.trace``) gives every ``D_l = diag phi'(z_l)``; the product
  ``J_l = J_{l-1} W_l D_l`` is built by ``lax.scan`` and its singular values
  taken at each recorded depth.

  Args:
    net, params: the network and ``net.init(...)`` parameters.
    x: one input, ``(1, N)``.
    depths: increasing depths in 1 .. L.

  Returns:
    ``(len(depths), N)``, each row descending.

  >>> import jaxbp
  >>> net = MLP((8,) * 4, "tanh", output_activation="tanh")
  >>> p = net.init(jax.random.PRNGKey(0), "orthogonal")
  >>> prefix_singular_values(net, p, jnp.zeros((1, 8)), (1, 3)).shape  # at 0: tanh' = 1
  (2, 8)
  """
  depths = _check_depths(depths)
  sizes = set(net.sizes)
  if (len(sizes) != 1 or net.phi_out.name != net.phi.name or net.residual or net.batchnorm
      or depths[-1] > net.num_layers):
    raise ValueError(
        f"prefix_singular_values needs a square net of hidden layers only, e.g. MLP((N,) * "
        f"(L + 1), act, output_activation=act), without residual or batchnorm, and depths <= L; "
        f"got {net} with output_activation={net.phi_out.name!r} and depths={depths}.")
  z = _stack(net.trace(params, x).z, net)[:, 0, :]          # (L, N)
  W = _stack(tuple(p.W for p in params), net)               # (L, N, N)
  d = net.phi.grad(z)

  def layer(M, wd):
    w, dl = wd
    return (M @ w) * dl[None, :], None                      # J_l = J_{l-1} W_l D_l

  M, out, start = jnp.eye(net.sizes[0], dtype=W.dtype), [], 0
  for depth in depths:   # one scan per segment between recorded depths
    M, _ = jax.lax.scan(layer, M, (W[start:depth], d[start:depth]))
    out.append(M)
    start = depth
  return jnp.linalg.svd(jnp.stack(out), compute_uv=False)


def _input(key, net, q0):
  # h_0 = phi(sqrt(q*) g) makes z_1 = h_0 W_1 + b_1 start at the fixed point:
  # Var z_1 = sigma_w2 E[phi(sqrt(q*) g)^2] + sigma_b2 = q* (the variance map).
  return net.phi.fn(jnp.sqrt(q0) * jax.random.normal(key, (1, net.sizes[0]), jnp.float64))


@functools.partial(jax.jit, static_argnames=("net", "init", "depths"))
def _products(key, q0, *, net, init, depths):
  p_key, x_key = jax.random.split(key)
  return prefix_singular_values(net, net.init(p_key, init), _input(x_key, net, q0), depths)


def singular_values(key, activation: str, weights: str, width: int, depths: Sequence[int],
                    sigma_b2: float = 0.0, num_seeds: int | None = None) -> jax.Array:
  """Singular values of ``J_l = dh_l/dh_0`` for each l in ``depths``, of one network.

  One network of depth ``max(depths)`` at the critical point of ``activation``
  (:func:`critical`); ``J_l`` for smaller l is its first l layers (distributed as
  a fresh depth-l net). The input is ``phi(sqrt(q*) g)``, so every layer sees
  pre-activations of variance q*.

  Args:
    key: a PRNG key (network and input).
    activation, weights, sigma_b2: see :func:`critical`.
    width: N.
    depths: increasing depths >= 1.
    num_seeds: if given, ``key`` is split into that many networks, vmapped.

  Returns:
    ``(len(depths), width)`` singular values, descending; with ``num_seeds``,
    ``(num_seeds, len(depths), width)``.
  """
  setting = critical(activation, weights, sigma_b2)
  depths = _check_depths(depths)
  if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
    raise ValueError(f"width must be an int >= 1, got {width!r}.")
  return _singular_values(key, setting, int(width), depths, num_seeds)


def _singular_values(key, setting, width, depths, num_seeds=None):
  L = depths[-1]
  net = MLP((width,) * (L + 1), setting.activation, output_activation=setting.activation,
            stack=True)
  run = functools.partial(_products, net=net, init=setting.initializer, depths=depths)
  q0 = jnp.asarray(setting.q_star, jnp.float64)
  if num_seeds is None:
    with single_thread_blas():
      return run(key, q0)
  # A loop, not jax.vmap: on jax 0.10.2 CPU the vmapped program with orthogonal
  # (QR) init at N = 256 hung (all threads in futex wait, even with one BLAS
  # thread), while one seed at a time runs in 0.1-0.3 s. Seeds share the program.
  with single_thread_blas():
    return jnp.stack([run(k, q0) for k in jax.random.split(key, num_seeds)])


# -- theory ----------------------------------------------------------------------


def theory(setting: Setting, depth) -> dict:
  """Pennington et al. (2017)'s ``m_1 = E[s^2]`` and ``Var[s^2]`` at ``depth``.

  ``m_1 = chi_1^L``; ``Var = chi_1^{2L} L (mu_2/mu_1^2 - 1 - s_1)`` with
  ``mu_k = E[phi'(sqrt(q*) z)^{2k}]`` and ``s_1`` = -1 (Gaussian), 0 (orthogonal).
  Exact as N -> infinity; finite N adds corrections of relative order L / N.

  >>> t = theory(critical("relu", "gaussian"), 10)
  >>> round(float(t["mean_sq"]), 6), round(float(t["var_sq"]), 6)
  (1.0, 20.0)
  """
  act = _act.get(setting.activation)
  q = jnp.asarray(setting.q_star, jnp.float64)
  mu1 = float(_mf.gaussian_expectation(lambda u: act.grad(u) ** 2, q))
  mu2 = float(_mf.gaussian_expectation(lambda u: act.grad(u) ** 4, q))
  chi = setting.sigma_w2 * mu1
  L = np.asarray(depth, dtype=float)
  per_layer = mu2 / mu1 ** 2 - 1.0 - S1[setting.weights]
  return {"chi1": chi, "mu1": mu1, "mu2": mu2, "var_per_layer": per_layer,
          "mean_sq": chi ** L, "var_sq": chi ** (2 * L) * L * per_layer}


def spread(s, floor: float = FLOOR) -> dict:
  """Statistics of one network's singular values ``s`` (last axis), averaged over
  any leading (seed) axes.

  Returns (all floats):
    mean_sq: mean of ``lambda = s^2`` (theory: chi_1^L).
    var_sq: variance of ``lambda`` over the N values (theory: sigma^2_{JJ^T}).
    var_sq_norm: ``var_sq / mean_sq^2`` per network, then averaged: the same at
      chi_1 = 1, but free of the network-to-network scale fluctuation of
      ``mean_sq`` (the input's q drifts at finite N), so much less noisy.
    log10_range: 5%-95% quantile range of ``log10 s`` over the values above
      ``floor * max(s)``, pooled over the leading axes; the decades the bulk spans.
    frac_below_floor: fraction of s below ``floor * max s`` (ReLU's exact zeros,
      and what round-off hides).
    max_over_median: ``max(s) / median(s)`` (inf when the median is a zero).
    mean_sq_std, var_sq_std: the seed-to-seed standard deviations.
  """
  s = np.asarray(s, dtype=float)
  s = s.reshape(-1, s.shape[-1])
  lam = s ** 2
  m1 = lam.mean(axis=-1)
  var = lam.var(axis=-1)
  keep = s > floor * s.max(axis=-1, keepdims=True)
  logs = np.log10(s[keep])
  med = np.median(s, axis=-1)
  ratio = np.where(med > floor * s.max(axis=-1), s.max(axis=-1) / np.maximum(med, 1e-300), np.inf)
  q05, q95 = np.quantile(logs, [0.05, 0.95]) if logs.size else (np.nan, np.nan)
  return {"mean_sq": float(m1.mean()), "var_sq": float(var.mean()),
          "var_sq_norm": float((var / m1 ** 2).mean()),
          "mean_sq_std": float(m1.std()), "var_sq_std": float(var.std()),
          "log10_range": float(q95 - q05), "frac_below_floor": float(1 - keep.mean()),
          "max_over_median": float(np.mean(ratio))}


def growth_rate(rows) -> float:
  """The median over depths of ``var_sq_norm / L``: the measured
  ``mu_2/mu_1^2 - 1 - s_1`` of :func:`theory`. A median, because at L ~ N/4 the
  heavy upper tail of a Gaussian product is undersampled by N singular values
  and its variance falls below the infinite-width line."""
  return float(np.median([r["var_sq_norm"] / r["depth"] for r in rows]))


# -- the experiment -------------------------------------------------------------


DEFAULT_CONFIG = {
    "width": 256,
    "depths": [1, 2, 4, 8, 16, 32, 64],
    "activations": ["tanh", "relu"],
    "weights": ["gaussian", "orthogonal"],
    # tanh at criticality with a small bias variance (q* = 0.107, sigma_w2 = 1.189);
    # relu at He (sigma_w2 = 2, sigma_b2 = 0), the only finite-q* critical point.
    "sigma_b2": {"tanh": 1e-3, "relu": 0.0},
    "seeds": 8,
    "seed": 0,
}
QUICK_CONFIG = {**DEFAULT_CONFIG, "width": 128, "depths": [1, 4, 16, 32], "seeds": 3}


def check_config(config: dict) -> dict:
  """Fills ``config`` from :data:`DEFAULT_CONFIG` and validates it (before any compute)."""
  unknown = set(config) - set(DEFAULT_CONFIG)
  if unknown:
    raise ValueError(f"jacobian spectrum: unknown config keys {sorted(unknown)}; valid keys "
                     f"are {sorted(DEFAULT_CONFIG)}.")
  c = {**DEFAULT_CONFIG, **config}
  c["depths"] = list(_check_depths(c["depths"]))
  for name in ("width", "seeds"):
    v = c[name]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f"jacobian spectrum: {name} must be an int >= 1, got {v!r}.")
  for key in ("activations", "weights"):
    if isinstance(c[key], str) or not c[key]:
      raise ValueError(f"jacobian spectrum: {key} must be a non-empty list, got {c[key]!r}.")
  for w in c["weights"]:
    if w not in WEIGHTS:
      raise ValueError(f"Unknown weights {w!r}; valid names are {', '.join(WEIGHTS)}.")
  b = c["sigma_b2"]
  sigma_b2 = dict(b) if isinstance(b, dict) else {a: b for a in c["activations"]}
  for a in c["activations"]:
    _check_activation(a)
    sigma_b2.setdefault(a, 0.0)
  c["sigma_b2"] = {a: sigma_b2[a] for a in c["activations"]}
  # Resolve every critical point now, so a bad one fails before any compute.
  c["_settings"] = [critical(a, w, c["sigma_b2"][a]) for a in c["activations"]
                    for w in c["weights"]]
  return c


def run(config: dict, out_dir: str) -> dict:
  """Jacobian spectra across depth for each activation x weights; theory beside them.

  Writes to ``out_dir``: ``config.json``, ``provenance.json``, ``spread.json``
  and ``spread.csv`` (one row per setting and depth: measured and predicted
  mean and variance of s^2, log10 spread, fraction below floor),
  ``singular_values.npz``, ``histograms.png`` (the log10 s distribution per depth),
  ``spread.png`` (Var[s^2]/E[s^2]^2 and the log10 range vs depth, theory
  dashed) and ``report.md``.
  Resumable: each setting is kept in ``out_dir/store``.

  >>> summary = run({"width": 64, "depths": [2, 8]}, "/tmp/jaxbp_spectrum")  # doctest: +SKIP
  """
  from jaxbp import io as _results
  c = check_config(config)
  settings = c.pop("_settings")
  os.makedirs(out_dir, exist_ok=True)
  _results.write_json(os.path.join(out_dir, "config.json"), c)
  started = time.time()
  _results.write_json(os.path.join(out_dir, "provenance.json"), _results.provenance(started))
  store = _results.ResultStore(os.path.join(out_dir, "store"))
  rows, svals = [], {}
  key = jax.random.PRNGKey(c["seed"])
  for i, st in enumerate(_results.progress(settings, desc="spectra")):
    job = {"setting": st.name, "sigma_w2": st.sigma_w2, "sigma_b2": st.sigma_b2,
           "width": c["width"], "depths": c["depths"], "seeds": c["seeds"], "seed": c["seed"]}
    if not store.done(job):
      start = time.perf_counter()
      s = np.asarray(_singular_values(jax.random.fold_in(key, i), st, c["width"],
                                      tuple(c["depths"]), c["seeds"]))
      store.save(job, {"singular_values": s, "seconds": time.perf_counter() - start})
    s = np.asarray(store.load(job)["singular_values"], dtype=float)   # (seeds, depths, N)
    svals[st.name] = s
    th = theory(st, np.asarray(c["depths"]))
    for j, depth in enumerate(c["depths"]):
      row = {"setting": st.name, "activation": st.activation, "weights": st.weights,
             "sigma_w2": st.sigma_w2, "sigma_b2": st.sigma_b2, "q_star": st.q_star,
             "depth": depth, **spread(s[:, j]),
             "theory_mean_sq": float(th["mean_sq"][j]), "theory_var_sq": float(th["var_sq"][j])}
      rows.append(row)
  _results.write_json(os.path.join(out_dir, "spread.json"), rows)
  _results.write_csv(os.path.join(out_dir, "spread.csv"),
                     {k: [r[k] for r in rows] for k in rows[0] if k not in
                      ("setting", "activation", "weights")})
  np.savez_compressed(os.path.join(out_dir, "singular_values.npz"), **svals)
  _plot_histograms(svals, c["depths"], os.path.join(out_dir, "histograms.png"))
  _plot_spread(rows, os.path.join(out_dir, "spread.png"))
  report = _report(c, settings, rows)
  _results.write_text(os.path.join(out_dir, "report.md"), report)
  _results.write_json(os.path.join(out_dir, "provenance.json"), _results.provenance(started))
  return {"rows": rows, "report": report}


def _plot_histograms(svals, depths, path):
  from jaxbp import io as _results
  plt = _results.pyplot()
  names = list(svals)
  fig, axes = plt.subplots(len(names), len(depths), figsize=(2.3 * len(depths), 1.9 * len(names)),
                           squeeze=False, sharex=True, layout="constrained")
  for i, name in enumerate(names):
    for j, depth in enumerate(depths):
      s = svals[name][:, j].reshape(-1)
      s = s[s > FLOOR * s.max()]
      ax = axes[i, j]
      ax.hist(np.log10(s), bins=56, range=(math.log10(FLOOR), 2), color="C%d" % i)
      ax.axvline(0.0, color="k", lw=0.6, ls=":")
      if i == 0:
        ax.set_title(f"L = {depth}")
      if j == 0:
        ax.set_ylabel(name, fontsize=8)
      if i == len(names) - 1:
        ax.set_xlabel("log10 s")
  fig.suptitle(f"singular values s of the input-output Jacobian; s < {FLOOR:g} max(s) not "
               "shown (ReLU: about half are exactly 0)")
  _results.save_figure(fig, path)


def _plot_spread(rows, path):
  from jaxbp import io as _results
  plt = _results.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
  for i, name in enumerate(dict.fromkeys(r["setting"] for r in rows)):
    rs = [r for r in rows if r["setting"] == name]
    L = [r["depth"] for r in rs]
    axes[0].plot(L, [max(r["var_sq_norm"], 1e-8) for r in rs], "o-", color=f"C{i}", label=name)
    axes[0].plot(L, [max(r["theory_var_sq"], 1e-8) for r in rs], "--", color=f"C{i}")
    axes[1].plot(L, [r["log10_range"] for r in rs], "o-", color=f"C{i}", label=name)
  axes[0].set(xscale="log", yscale="log", xlabel="depth L", ylabel="Var[s^2] / E[s^2]^2",
              title="spread of s^2 (dashed: Pennington et al. 2017)")
  axes[1].set(xscale="log", xlabel="depth L", ylabel="decades",
              title="5-95% range of log10 s (above floor)")
  axes[0].legend(fontsize=8)
  _results.save_figure(fig, path)


def _report(c, settings, rows) -> str:
  lines = [
      "# Jacobian spectra across depth",
      "",
      f"Width N = {c['width']}, {c['seeds']} networks per setting, depths {c['depths']}. "
      "Each network sits at its critical point (chi_1 = 1); inputs start at q*.",
      "",
      "| setting | sigma_w^2 | sigma_b^2 | q* | Var[s^2] per layer (theory) |",
      "|---|---|---|---|---|",
  ]
  for st in settings:
    lines.append(f"| {st.name} | {st.sigma_w2:.4f} | {st.sigma_b2:g} | {st.q_star:.4f} | "
                 f"{theory(st, 1)['var_per_layer']:.4f} |")
  lines += [
      "",
      "Measured against Pennington et al. (2017): m_1 = E[s^2] (theory chi_1^L = 1) and "
      "Var[s^2] (theory L (mu_2/mu_1^2 - 1 - s_1)); log10 range = 5-95% quantile range "
      f"of log10 s over values above {FLOOR:g} x max; below = fraction under that floor.",
      "",
      "| setting | L | E[s^2] | theory | Var[s^2] | Var/E^2 | theory | log10 range | below floor | max/median |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    lines.append(
        f"| {r['setting']} | {r['depth']} | {r['mean_sq']:.3f} ± {r['mean_sq_std']:.3f} | "
        f"{r['theory_mean_sq']:.3f} | {r['var_sq']:.3g} ± {r['var_sq_std']:.2g} | "
        f"{r['var_sq_norm']:.3g} | {r['theory_var_sq']:.3g} | {r['log10_range']:.2f} | "
        f"{r['frac_below_floor']:.2f} | {r['max_over_median']:.3g} |")
  last = max(c["depths"])
  final = {r["setting"]: r for r in rows if r["depth"] == last}
  lines += ["", "## Growth per layer", "",
            "Measured growth per layer, the median over depths of Var[s^2] / E[s^2]^2 / L, "
            "against the theory's mu_2/mu_1^2 - 1 - s_1:", "",
            "| setting | measured per layer | theory | Var/E^2 at L = %d | log10 range at L = %d |" % (last, last),
            "|---|---|---|---|---|"]
  for st in settings:
    slope = growth_rate([r for r in rows if r["setting"] == st.name])
    r = final[st.name]
    lines.append(f"| {st.name} | {slope:.3f} | {theory(st, 1)['var_per_layer']:.3f} | "
                 f"{r['var_sq_norm']:.3g} | {r['log10_range']:.2f} |")
  lines += [
      "",
      "E[s^2] is 1 up to network-to-network scatter at every depth (chi_1 = 1), so the "
      "mean alone cannot tell these settings apart; the spread can. Orthogonal tanh near "
      "q* = 0 stays concentrated (its Var grows by mu_2/mu_1^2 - 1 per layer, small when q* "
      "is small); Gaussian weights add 1 more per layer (s_1 = -1) whatever the activation; "
      "ReLU adds mu_2/mu_1^2 - 1 = 1 per layer even with orthogonal weights, and about half of its singular values "
      "are exactly zero (rank J <= the number of active units), so no ReLU net is "
      "isometric (Pennington et al. 2017). Where more than 5% of s fall below the floor, "
      "the log10 range is a lower bound.",
      "",
  ]
  return "\n".join(lines)
