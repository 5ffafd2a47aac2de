"""jaxbp: backpropagation, measured.

Pure-function networks and losses, hand-derived delta recursions checked against
``jax.grad``, and the tools to study vanishing and exploding gradients.

The package is layered; each layer imports only those below it (see README,
"Architecture")::

    core     activations, losses, initializers, nets, backprop, graph, gradcheck
    io       atomic files, the resumable store, provenance, figures, TensorBoard
    theory   meanfield, free-probability spectra
    measure  diagnostics (per-layer norms, probes, Jacobians)
    train    optax training, data sets, landscapes
    studies  depth_sweep, remedies, spectrum, ... (imported on first use)

The core modules are attributes here under their old flat names
(``jaxbp.backprop``, ``jaxbp.meanfield``...). ``jaxbp.studies`` and ``jaxbp.io``
are imported on first attribute access, so ``import jaxbp`` loads no
matplotlib and no study.
"""
import importlib
import sys

from jaxbp.core import activations
from jaxbp.core import backprop
from jaxbp.core import gradcheck
from jaxbp.core import graph
from jaxbp.core import initializers
from jaxbp.core import losses
from jaxbp.core.convnets import Conv
from jaxbp.core.convnets import ConvNet
from jaxbp.core.nets import MLP
from jaxbp.core.nets import BatchNormDense
from jaxbp.core.nets import Dense
from jaxbp.core.nets import Trace
from jaxbp.core.nets import objective
from jaxbp.core.nets import unstack
from jaxbp.core.rnn import RNN
from jaxbp.core.rnn import RNNParams
from jaxbp.core.transformer import Attention
from jaxbp.core.transformer import Block
from jaxbp.core.transformer import Embedding
from jaxbp.core.transformer import LayerNorm
from jaxbp.core.transformer import Transformer
from jaxbp.core.transformer import projection_deltas
from jaxbp.measure import diagnostics
from jaxbp.measure.criticalize import criticalize
from jaxbp.measure.inspect import inspect
from jaxbp.measure.inspect import inspect_with_grads
from jaxbp.measure.inspect import tap
from jaxbp.measure.attention_stats import attention_entropy
from jaxbp.measure.attention_stats import attention_grad_norms
from jaxbp.measure.attention_stats import grad_norms
from jaxbp.measure.attention_stats import tapped
from jaxbp.measure.attention_stats import token_cosine
from jaxbp.measure.attention_stats import top_singular_values
from jaxbp.measure.attention_stats import transformer_states
from jaxbp.measure.monitor import monitor
from jaxbp.measure.report import LayerReport
from jaxbp.theory import meanfield
from jaxbp.train import data
from jaxbp.train import landscapes
from jaxbp.train import training
from jaxbp.train.training import fit
from jaxbp.train.training import optimizer

__version__ = "0.1.0"

# The flat spellings of the public modules stay importable as submodules too
# (``import jaxbp.backprop``), each the same module object as its layered home.
for _name, _module in (("activations", activations), ("backprop", backprop),
                       ("gradcheck", gradcheck), ("graph", graph),
                       ("initializers", initializers), ("losses", losses),
                       ("diagnostics", diagnostics), ("meanfield", meanfield),
                       ("data", data), ("landscapes", landscapes), ("training", training)):
  sys.modules.setdefault(f"{__name__}.{_name}", _module)
del _name, _module

# Imported on first access: the studies pull in plotting and the store.
_LAZY = {
    "io": "jaxbp.io",
    "results": "jaxbp.io",
    "studies": "jaxbp.studies",
    "sweep": "jaxbp.studies.depth_sweep",
    "conv_sweep": "jaxbp.studies.conv_sweep",
    "remedies": "jaxbp.studies.remedies",
    "spectrum": "jaxbp.studies.spectrum",
}


def __getattr__(name):
  if name in _LAZY:
    module = importlib.import_module(_LAZY[name])
    globals()[name] = module
    return module
  raise AttributeError(f"module 'jaxbp' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(_LAZY))


def _train_getattr(name):
  # ``jaxbp.train.monitoring`` (the README's write_monitor) writes through io, so,
  # like io, it is imported on first access rather than by ``import jaxbp``.
  if name == "monitoring":
    return importlib.import_module("jaxbp.train.monitoring")
  raise AttributeError(f"module 'jaxbp.train' has no attribute {name!r}")


sys.modules[f"{__name__}.train"].__getattr__ = _train_getattr


__all__ = (
    "MLP",
    "RNN",
    "RNNParams",
    "Transformer",
    "Block",
    "Attention",
    "LayerNorm",
    "Embedding",
    "projection_deltas",
    "BatchNormDense",
    "Conv",
    "ConvNet",
    "LayerReport",
    "Dense",
    "Trace",
    "activations",
    "backprop",
    "data",
    "diagnostics",
    "gradcheck",
    "graph",
    "initializers",
    "inspect",
    "inspect_with_grads",
    "criticalize",
    "io",
    "landscapes",
    "losses",
    "meanfield",
    "monitor",
    "optimizer",
    "studies",
    "tap",
    "tapped",
    "token_cosine",
    "attention_entropy",
    "top_singular_values",
    "attention_grad_norms",
    "grad_norms",
    "transformer_states",
    "training",
    "objective",
    "fit",
    "unstack",
)
