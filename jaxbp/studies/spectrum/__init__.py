"""Singular values of the input-output Jacobian of deep random networks, against
free probability (Saxe et al. 2014; Pennington, Schoenholz & Ganguli 2017).

Critical networks (chi_1 = 1) of each activation x weights are sampled, the
product ``J_L = W_1 D_1 ... W_L D_L`` is built explicitly, and the spread of its
singular values is held against the prediction of :mod:`jaxbp.theory.spectra`:
only orthogonal weights with a nonlinearity that is nearly linear around q*
(tanh with small sigma_b^2) keep the spectrum near 1 (dynamical isometry).

Modules:
  sampling   the sampled Jacobians and the statistics of their singular values
  study      :class:`Config` (checked on construction) and :func:`run`
  report     figures and ``report.md``

The theory (:class:`CriticalNet`, :func:`critical`, :func:`theory`) lives in
:mod:`jaxbp.theory.spectra` and is re-exported here.

>>> import jax; jax.config.update("jax_enable_x64", True)
>>> out = run(Config.quick(), "/tmp/jaxbp_spectrum")   # doctest: +SKIP
"""
from jaxbp.studies.spectrum.sampling import FLOOR
from jaxbp.studies.spectrum.sampling import check_depths
from jaxbp.studies.spectrum.sampling import growth_rate
from jaxbp.studies.spectrum.sampling import prefix_singular_values
from jaxbp.studies.spectrum.sampling import sample_singular_values
from jaxbp.studies.spectrum.sampling import single_thread_blas
from jaxbp.studies.spectrum.sampling import singular_values
from jaxbp.studies.spectrum.sampling import spread
from jaxbp.studies.spectrum.study import Config
from jaxbp.studies.spectrum.study import run
from jaxbp.theory.spectra import WEIGHTS
from jaxbp.theory.spectra import CriticalNet
from jaxbp.theory.spectra import critical
from jaxbp.theory.spectra import theory

__all__ = (
    "FLOOR", "WEIGHTS", "Config", "CriticalNet", "check_depths", "critical",
    "growth_rate", "prefix_singular_values", "run", "sample_singular_values",
    "single_thread_blas", "singular_values", "spread", "theory",
)
