"""Measurements of gradient flow on jaxbp networks: per-layer norms, deltas by
zero probes, Jacobian spectra, slope fits. Imports core and theory.
"""
