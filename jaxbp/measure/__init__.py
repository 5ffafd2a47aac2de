"""Measurements of gradient flow on jaxbp networks: per-layer norms, deltas by
zero probes, Jacobian spectra, slope fits; and on any JAX model: ``inspect``
(layers found in the jaxpr by ``probing``, its sites and flags in ``sites``, the
probed run in ``probe_run``), its ``report`` with mean-field theory beside it
(``theory_profile``), ``monitor`` during training, and matrix-free Jacobian
spectra (``lanczos``). Imports core and theory.
"""
