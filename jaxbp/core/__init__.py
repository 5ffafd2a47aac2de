"""The core: networks, losses and their gradients, three ways.

Pure and jittable; no files, no plots, no global state. Nothing here imports
from any other part of jaxbp.

* :mod:`~jaxbp.core.activations`, :mod:`~jaxbp.core.losses`,
  :mod:`~jaxbp.core.initializers`: the pieces, each with a hand-derived derivative.
* :mod:`~jaxbp.core.nets`: the MLP spec and the one layer function every forward
  pass uses.
* :mod:`~jaxbp.core.backprop`: the one delta recursion.
* :mod:`~jaxbp.core.convnets`, :mod:`~jaxbp.core.conv_backprop`: the vanilla CNN
  spec and its hand-derived backward pass (``backprop`` dispatches to it).
* :mod:`~jaxbp.core.graph`: seed 003's computational graph over a jaxpr.
* :mod:`~jaxbp.core.gradcheck`: finite differences and error measures.
"""
