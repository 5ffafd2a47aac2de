"""The benchmark harness is the top-level ``benchmarks`` package of the checkout, not part
of the installed jaxbp: put the checkout's root first on ``sys.path`` so that these tests
import it however pytest is started (``python -m pytest`` adds the working directory,
a bare ``pytest`` does not)."""
import pathlib
import sys

ROOT = str(pathlib.Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
