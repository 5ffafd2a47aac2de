"""The spectrum study's figures and ``report.md``.

matplotlib is imported (through :func:`jaxbp.io.pyplot`) only when a figure is drawn.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from jaxbp import io as _io
from jaxbp.studies.spectrum.sampling import FLOOR
from jaxbp.studies.spectrum.sampling import growth_rate
from jaxbp.theory import spectra as _spectra


def plot_histograms(svals: Mapping[str, np.ndarray], depths: Sequence[int], path) -> None:
  """One histogram of ``log10 s`` per network family (rows) and depth (columns);
  ``svals[name]`` is ``(seeds, len(depths), N)``."""
  plt = _io.pyplot()
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
  _io.save_figure(fig, path)


def plot_spread(rows: Sequence[Mapping], path) -> None:
  """Var[s^2]/E[s^2]^2 (theory dashed) and the log10 range of s against depth."""
  plt = _io.pyplot()
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
  _io.save_figure(fig, path)


def markdown(config, nets: Sequence[_spectra.CriticalNet], rows: Sequence[Mapping]) -> str:
  """``report.md``: the networks, the measured spread against theory at every
  depth, and the growth per layer."""
  lines = [
      "# Jacobian spectra across depth",
      "",
      f"Width N = {config.width}, {config.seeds} networks per setting, depths "
      f"{list(config.depths)}. Each network sits at its critical point (chi_1 = 1); inputs "
      "start at q*.",
      "",
      "| setting | sigma_w^2 | sigma_b^2 | q* | Var[s^2] per layer (theory) |",
      "|---|---|---|---|---|",
  ]
  for net in nets:
    lines.append(f"| {net.name} | {net.sigma_w2:.4f} | {net.sigma_b2:g} | {net.q_star:.4f} | "
                 f"{_spectra.theory(net, 1)['var_per_layer']:.4f} |")
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
  last = max(config.depths)
  final = {r["setting"]: r for r in rows if r["depth"] == last}
  lines += ["", "## Growth per layer", "",
            "Measured growth per layer, the median over depths of Var[s^2] / E[s^2]^2 / L, "
            "against the theory's mu_2/mu_1^2 - 1 - s_1:", "",
            "| setting | measured per layer | theory | Var/E^2 at L = %d | log10 range at L = %d |" % (last, last),
            "|---|---|---|---|---|"]
  for net in nets:
    slope = growth_rate([r for r in rows if r["setting"] == net.name])
    r = final[net.name]
    lines.append(f"| {net.name} | {slope:.3f} | {_spectra.theory(net, 1)['var_per_layer']:.3f} | "
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
