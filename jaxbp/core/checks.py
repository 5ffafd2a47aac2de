"""Small argument checks shared by the network specs and every study Config.

Each check returns the value in its canonical Python form (``int``, ``float``)
or raises a ``ValueError`` (``TypeError`` where the type itself is wrong and a
conversion would hide it) whose message names the argument, what it got and
what is expected. A bool is never accepted as a number: ``True`` is an ``int``
to Python, but ``depth=True`` is always a mistake.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Sequence

import jax
import numpy as np


def is_int(value) -> bool:
  """Whether ``value`` is an integer (Python or NumPy), and not a bool."""
  return isinstance(value, numbers.Integral) and not isinstance(value, (bool,)) \
      and type(value).__name__ != "bool_"


def is_real(value) -> bool:
  """Whether ``value`` is a real number (int or float, Python or NumPy), not a bool."""
  return isinstance(value, numbers.Real) and not isinstance(value, bool) \
      and type(value).__name__ != "bool_"


def int_at_least(value, low: int, name: str, where: str = "") -> int:
  """``value`` as an int, if it is an int (not a bool) ``>= low``."""
  if not is_int(value) or value < low:
    raise ValueError(f"{_where(where)}{name} must be an int >= {low}, got {value!r}.")
  return int(value)


def positive_int(value, name: str, where: str = "") -> int:
  """``value`` as an int, if it is an int (not a bool) ``>= 1``."""
  return int_at_least(value, 1, name, where)


def finite(value, name: str, where: str = "", low: float | None = None,
           high: float | None = None, open_low: bool = False) -> float:
  """``value`` as a float, if it is a finite real number in ``[low, high]``
  (``(low, high]`` with ``open_low``)."""
  ok = is_real(value) and math.isfinite(float(value))
  if ok and low is not None:
    ok = float(value) > low if open_low else float(value) >= low
  if ok and high is not None:
    ok = float(value) <= high
  if not ok:
    bounds = ""
    if low is not None:
      bounds += f" {'>' if open_low else '>='} {low}"
    if high is not None:
      bounds += f"{' and' if bounds else ''} <= {high}"
    raise ValueError(f"{_where(where)}{name} must be a finite number{bounds}, got {value!r}.")
  return float(value)


def positive(value, name: str, where: str = "") -> float:
  """``value`` as a float, if it is a finite number ``> 0``."""
  return finite(value, name, where, low=0.0, open_low=True)


def one_of(value, options: Sequence[Any], name: str, where: str = ""):
  """``value`` itself, if it is one of ``options``."""
  if not any(value == o and type(value) is type(o) for o in options):
    raise ValueError(f"{_where(where)}{name} must be one of {tuple(options)}, got {value!r}.")
  return value


def boolean(value, name: str, where: str = "") -> bool:
  """``value`` as a bool, if it is one (NumPy's ``bool_`` included)."""
  if not isinstance(value, bool) and type(value).__name__ != "bool_":
    raise ValueError(f"{_where(where)}{name} must be True or False, got {value!r}.")
  return bool(value)


def int_tuple(values: Iterable, name: str, where: str = "", low: int = 1,
              min_len: int = 1) -> tuple:
  """``values`` as a tuple of ints ``>= low``, at least ``min_len`` of them."""
  if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
    raise ValueError(f"{_where(where)}{name} must be a sequence of ints >= {low}, "
                     f"got {values!r}.")
  vals = tuple(values)
  if len(vals) < min_len or not all(is_int(v) and v >= low for v in vals):
    raise ValueError(f"{_where(where)}{name} must list at least {min_len} int(s) >= {low}, "
                     f"got {values!r}.")
  return tuple(int(v) for v in vals)


def _where(where: str) -> str:
  return f"{where}: " if where else ""


def lookup(value, cls: type, registry: dict, what: str, hint: str):
  """A registry entry by (case-insensitive) name, or ``value`` itself if it is a ``cls``.

  ``what`` names the argument ("activation", "loss"), ``hint`` the object to
  pass instead ("a jaxbp.losses.Loss").
  """
  if isinstance(value, cls):
    return value
  if isinstance(value, str):
    try:
      return registry[value.lower()]
    except KeyError:
      raise ValueError(f"Unknown {what} {value!r}; valid names are "
                       f"{', '.join(sorted(registry))}, or pass {hint}.") from None
  raise TypeError(f"{what} must be a name or {hint.split(' (')[0]}, got "
                  f"{type(value).__name__}: {value!r}.")


def real_array(value, name, where, low=None, high=None, open_low=False, allow_inf=False):
  """Raises unless ``value``, a real number or an array of them, has every entry in
  ``[low, high]`` (``(low, high]`` with ``open_low``) and finite (``+inf`` too with
  ``allow_inf``). A TypeError names what is not a real number (a str, a bool, None,
  complex), a ValueError a number out of range. Traced values (under jit or vmap)
  cannot be read, and pass: only concrete numbers are checked."""
  if isinstance(value, jax.core.Tracer):
    return
  if is_real(value) and not allow_inf:
    finite(value, name, where, low=low, high=high, open_low=open_low)
    return
  try:
    v = np.asarray(value)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return                                     # a list holding traced values
  except (TypeError, ValueError):
    v = None
  if v is None or v.dtype.kind not in "iuf":
    what = type(value).__name__ + (f" of {value.dtype}" if hasattr(value, "dtype") else "")
    raise TypeError(f"{where}: {name} must be a real number or an array of them, got "
                    f"{value!r} ({what}).")
  with np.errstate(invalid="ignore"):
    ok = np.isfinite(v) | ((v == np.inf) & allow_inf)
    if low is not None:
      ok &= (v > low) if open_low else (v >= low)
    if high is not None:
      ok &= v <= high
  if not ok.all():
    bounds = " and".join(([f" {'>' if open_low else '>='} {low}"] if low is not None else [])
                         + ([f" <= {high}"] if high is not None else []))
    kind = "a number (inf allowed)" if allow_inf else "a finite number"
    bad = tuple(int(i) for i in np.argwhere(~ok)[0])
    at = f" at index {bad} of {value!r}" if bad else ""
    raise ValueError(f"{where}: {name} must be {kind}{bounds}, got {v[bad].item()!r}{at}.")
