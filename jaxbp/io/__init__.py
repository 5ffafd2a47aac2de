"""Atomic result files, the resumable store, provenance, figures and TensorBoard.

Imports nothing else from jaxbp, so every layer above may save what it
measures. ``jaxbp.io.files`` holds the files and the store, ``jaxbp.io.figures``
plots, progress bars and TensorBoard (matplotlib, tqdm and tensorboardX are
imported only when used).
"""
from jaxbp.io.figures import named_leaves
from jaxbp.io.figures import plot_history
from jaxbp.io.figures import progress
from jaxbp.io.figures import pyplot
from jaxbp.io.figures import save_figure
from jaxbp.io.figures import save_run
from jaxbp.io.figures import write_tensorboard
from jaxbp.io.files import ResultStore
from jaxbp.io.files import asdict
from jaxbp.io.files import atomic_write
from jaxbp.io.files import config_key
from jaxbp.io.files import jsonable
from jaxbp.io.files import provenance
from jaxbp.io.files import read_config
from jaxbp.io.files import read_csv
from jaxbp.io.files import read_json
from jaxbp.io.files import write_csv
from jaxbp.io.files import write_json
from jaxbp.io.files import write_text

__all__ = (
    "ResultStore", "asdict", "atomic_write", "config_key", "jsonable", "named_leaves",
    "plot_history", "progress", "provenance", "pyplot", "read_config", "read_csv",
    "read_json", "save_figure", "save_run", "write_csv", "write_json", "write_tensorboard",
    "write_text",
)
