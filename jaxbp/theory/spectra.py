"""Free-probability predictions for the singular values of deep Jacobians.

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

Imports only :mod:`jaxbp.core` and :mod:`jaxbp.theory.meanfield`; the sampled
spectra to hold these against are :mod:`jaxbp.studies.spectrum`.

References:
  Saxe, McClelland & Ganguli, "Exact solutions to the nonlinear dynamics of
    learning in deep linear neural networks", ICLR 2014.
  Pennington, Schoenholz & Ganguli, "Resurrecting the sigmoid in deep learning
    through dynamical isometry: theory and practice", NeurIPS 2017.
  Pennington, Schoenholz & Ganguli, "The emergence of spectral universality in
    deep networks", AISTATS 2018.

>>> net = critical("relu", "gaussian")
>>> round(net.sigma_w2, 6), net.name
(2.0, 'relu-gaussian')
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxbp.core import activations as _act
from jaxbp.core import initializers as _init
import jaxbp.theory.meanfield as _mf

WEIGHTS = ("gaussian", "orthogonal")
S1 = {"gaussian": -1.0, "orthogonal": 0.0}   # S-transform coefficient of W W^T


class CriticalNet(NamedTuple):
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
    """``"<activation>-<weights>"``: the label of tables and figures."""
    return f"{self.activation}-{self.weights}"

  @property
  def initializer(self) -> _init.Initializer:
    """Gaussian ``N(0, sigma_w2 / N)`` or orthogonal (gain ``sqrt(sigma_w2)``)
    weights, biases ``N(0, sigma_b2)``."""
    if self.weights == "orthogonal":
      return _init.orthogonal(math.sqrt(self.sigma_w2), self.sigma_b2)
    return _init.gaussian(self.sigma_w2, self.sigma_b2)


def check_activation(activation) -> _act.Activation:
  """The :class:`jaxbp.activations.Activation` named ``activation``; a ValueError
  for an unknown name or one that is not elementwise (softmax)."""
  act = _act.get(activation)
  if not act.elementwise:
    raise ValueError(f"spectra need an elementwise hidden activation, got {act.name!r}.")
  return act


def check_weights(weights) -> str:
  """``weights`` if it is one of :data:`WEIGHTS`, else a ValueError naming them."""
  if weights not in WEIGHTS:
    raise ValueError(f"Unknown weights {weights!r}; valid names are {', '.join(WEIGHTS)}.")
  return weights


def critical(activation: str, weights: str, sigma_b2: float = 0.0) -> CriticalNet:
  """The critical point ``chi_1 = 1`` of ``activation`` at bias variance ``sigma_b2``.

  tanh: sigma_w2 from :func:`jaxbp.meanfield.critical_sigma_w2` (1.189 at
  sigma_b2 = 1e-3, q* = 0.107). ReLU: sigma_w2 = 2 (He et al. 2015) for any
  sigma_b2, but only sigma_b2 = 0 has a finite q*.

  >>> round(critical("relu", "gaussian").sigma_w2, 6)
  2.0
  """
  act = check_activation(activation)
  check_weights(weights)
  if isinstance(sigma_b2, bool) or not (isinstance(sigma_b2, (int, float))
                                        and 0 <= sigma_b2 < math.inf):
    raise ValueError(f"sigma_b2 must be a number >= 0, got {sigma_b2!r}.")
  sigma_w2 = float(_mf.critical_sigma_w2(act, sigma_b2))
  if not math.isfinite(sigma_w2):
    raise ValueError(f"{act.name} has no critical sigma_w2 in [0, 20] at sigma_b2={sigma_b2}; "
                     "try a smaller sigma_b2, or another activation (tanh, relu).")
  q = float(_mf.fixed_point(act, sigma_w2, sigma_b2))
  if not math.isfinite(q):
    raise ValueError(f"{act.name} at sigma_w2={sigma_w2:.4g}, sigma_b2={sigma_b2} has no "
                     "finite fixed point q*: use sigma_b2=0 for relu.")
  return CriticalNet(act.name, weights, sigma_w2, float(sigma_b2), q)


def theory(net: CriticalNet, depth) -> dict:
  """Pennington et al. (2017)'s ``m_1 = E[s^2]`` and ``Var[s^2]`` at ``depth``.

  ``m_1 = chi_1^L``; ``Var = chi_1^{2L} L (mu_2/mu_1^2 - 1 - s_1)`` with
  ``mu_k = E[phi'(sqrt(q*) z)^{2k}]`` and ``s_1`` = -1 (Gaussian), 0 (orthogonal).
  Exact as N -> infinity; finite N adds corrections of relative order L / N.

  Args:
    net: a :class:`CriticalNet` (any sigma_w2, not only the critical one).
    depth: L, a number or an array of them.

  Returns:
    ``chi1``, ``mu1``, ``mu2`` and ``var_per_layer`` (``mu_2/mu_1^2 - 1 - s_1``)
    as floats; ``mean_sq`` and ``var_sq`` shaped like ``depth``.

  >>> t = theory(critical("relu", "gaussian"), 10)
  >>> round(float(t["mean_sq"]), 6), round(float(t["var_sq"]), 6)
  (1.0, 20.0)
  """
  act = _act.get(net.activation)
  q = jnp.asarray(net.q_star, jnp.float64)
  mu1 = float(_mf.gaussian_expectation(lambda u: act.grad(u) ** 2, q))
  mu2 = float(_mf.gaussian_expectation(lambda u: act.grad(u) ** 4, q))
  chi = net.sigma_w2 * mu1
  L = np.asarray(depth, dtype=float)
  per_layer = mu2 / mu1 ** 2 - 1.0 - S1[net.weights]
  return {"chi1": chi, "mu1": mu1, "mu2": mu2, "var_per_layer": per_layer,
          "mean_sq": chi ** L, "var_sq": chi ** (2 * L) * L * per_layer}
