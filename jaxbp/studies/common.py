"""Small pieces several studies share."""
from __future__ import annotations

import math

from jaxbp.core import initializers as _init

CONV_INITS = ("delta_orthogonal", "gaussian")


def conv_initializer(init: str, sigma_w2: float, sigma_b2: float) -> _init.Initializer:
  """Gaussian kernels of variance ``sigma_w2 / fan_in`` (``fan_in = k^d c``), or
  delta-orthogonal ones with ``gain^2 = sigma_w2``: the same chi_1 either way.

  Raises:
    ValueError: if ``init`` is not one of ``CONV_INITS``.
  """
  if init == "gaussian":
    return _init.gaussian(sigma_w2, sigma_b2)
  if init == "delta_orthogonal":
    return _init.delta_orthogonal(math.sqrt(sigma_w2), sigma_b2)
  raise ValueError(f"conv_initializer: init must be one of {CONV_INITS}, got {init!r}.")
