"""Theory to hold measurements against: mean-field maps and free-probability spectra.

Imports only :mod:`jaxbp.core`.
"""
