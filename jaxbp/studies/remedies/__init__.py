"""Seed 003 §4.4's remedies for vanishing and exploding gradients, trained.

Each remedy (:class:`Remedy`, named in :data:`REMEDIES`: sigmoid/Xavier, the
baseline that fails; tanh at criticality with Gaussian or orthogonal weights;
ReLU/He; residual connections; batch norm; an exploding ReLU with and without
gradient clipping and weight decay) is trained at several depths on the digits
and on two spirals, several seeds at once, and the study reports which depths
each trains at and why (per-layer gradient norms at init and after training).

Modules:
  training   :class:`Remedy`, :data:`REMEDIES` and :func:`train` (one remedy,
             one depth, all seeds in one compiled program)
  study      :class:`Config` (checked on construction) and :func:`run`
  report     figures and ``report.md``

>>> import jax; jax.config.update("jax_enable_x64", True)
>>> out = run(Config.quick(), "/tmp/jaxbp_remedies")   # doctest: +SKIP
"""
from jaxbp.studies.remedies.study import Config
from jaxbp.studies.remedies.study import run
from jaxbp.studies.remedies.study import store_key
from jaxbp.studies.remedies.study import summarise
from jaxbp.studies.remedies.training import DATASETS
from jaxbp.studies.remedies.training import LOSS
from jaxbp.studies.remedies.training import REMEDIES
from jaxbp.studies.remedies.training import Remedy
from jaxbp.studies.remedies.training import curve
from jaxbp.studies.remedies.training import get
from jaxbp.studies.remedies.training import initializer
from jaxbp.studies.remedies.training import train

__all__ = (
    "DATASETS", "LOSS", "REMEDIES", "Config", "Remedy", "curve", "get", "initializer", "run",
    "store_key", "summarise", "train",
)
