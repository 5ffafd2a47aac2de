"""Measurements of gradient flow on jaxbp networks: per-layer norms, deltas by
zero probes, Jacobian spectra, slope fits; and on any JAX model: ``inspect``
(layers found in the jaxpr by ``probing``, its sites and flags in ``sites``, the
probed run in ``probe_run``), its ``report`` with mean-field theory beside it
(``theory_profile``), ``monitor`` during training, and matrix-free Jacobian
spectra (``lanczos``); attention statistics (``attention_stats``: token cosine,
attention entropy, the spectral gap, query/key against value/output gradient
norms, a transformer's per-block states, tapped values of any model). Imports
core and theory.
"""
