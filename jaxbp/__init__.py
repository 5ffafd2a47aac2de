"""jaxbp: backpropagation, measured.

Pure-function MLPs and losses, hand-derived delta recursions checked against
``jax.grad``, and the tools to study vanishing and exploding gradients.
"""
from jaxbp import activations
from jaxbp import backprop
from jaxbp import gradcheck
from jaxbp import graph
from jaxbp import initializers
from jaxbp import losses
from jaxbp import meanfield
from jaxbp.nets import MLP
from jaxbp.nets import Dense
from jaxbp.nets import Trace
from jaxbp.nets import objective
from jaxbp.nets import unstack

__version__ = "0.1.0"

__all__ = (
    "MLP",
    "Dense",
    "Trace",
    "activations",
    "backprop",
    "gradcheck",
    "graph",
    "initializers",
    "losses",
    "meanfield",
    "objective",
    "unstack",
)
