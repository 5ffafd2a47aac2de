"""jaxbp: backpropagation, measured.

Pure-function MLPs and losses, hand-derived delta recursions checked against
``jax.grad``, and the tools to study vanishing and exploding gradients.
"""
from jaxbp import activations
from jaxbp import backprop
from jaxbp import data
from jaxbp import diagnostics
from jaxbp import gradcheck
from jaxbp import graph
from jaxbp import initializers
from jaxbp import landscapes
from jaxbp import losses
from jaxbp import meanfield
from jaxbp import remedies
from jaxbp import results
from jaxbp import spectrum
from jaxbp import sweep
from jaxbp import sweep_report
from jaxbp import training
from jaxbp.nets import MLP
from jaxbp.nets import BatchNormDense
from jaxbp.nets import Dense
from jaxbp.nets import Trace
from jaxbp.nets import objective
from jaxbp.nets import unstack
from jaxbp.training import fit
from jaxbp.training import optimizer

__version__ = "0.1.0"

__all__ = (
    "MLP",
    "BatchNormDense",
    "Dense",
    "Trace",
    "activations",
    "backprop",
    "data",
    "diagnostics",
    "gradcheck",
    "graph",
    "initializers",
    "landscapes",
    "losses",
    "meanfield",
    "remedies",
    "optimizer",
    "results",
    "spectrum",
    "sweep",
    "sweep_report",
    "training",
    "objective",
    "fit",
    "unstack",
)
