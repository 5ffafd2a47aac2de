"""The core: networks, losses and their gradients, three ways.

Pure and jittable; no files, no plots, no global state. Nothing here imports
from any other part of jaxbp.

* :mod:`~jaxbp.core.activations`, :mod:`~jaxbp.core.losses`,
  :mod:`~jaxbp.core.initializers`: the pieces, each with a hand-derived derivative.
* :mod:`~jaxbp.core.base`: the one base of every network family (a plan of
  layer groups); :mod:`~jaxbp.core.kinds`: dense and batch-norm layer kinds,
  each with its init, forward and hand-derived backward.
* :mod:`~jaxbp.core.nets` (MLP), :mod:`~jaxbp.core.convnets` with
  :mod:`~jaxbp.core.conv_backprop` (ConvNet and its conv kinds),
  :mod:`~jaxbp.core.rnn` (RNN): the families, each a plan on the base.
* :mod:`~jaxbp.core.backprop`: the one backward walk, for every family.
* :mod:`~jaxbp.core.checks`: the argument checks every spec and Config shares.
* :mod:`~jaxbp.core.graph`: seed 003's computational graph over a jaxpr.
* :mod:`~jaxbp.core.gradcheck`: finite differences and error measures.
"""
