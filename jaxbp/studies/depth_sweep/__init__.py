"""The depth sweep: per-layer gradient profiles across activation x init x depth, against theory."""
from jaxbp.studies.depth_sweep.sweep import *  # noqa: F401,F403
