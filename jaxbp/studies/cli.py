"""What the scripts in ``experiments/`` share: a parser with ``--out`` whose errors are
one line (exit status 2), a flag per Config field with its help and default, a
study's Config from flags (over a preset and a ``--config`` file), and a run whose
expected failures are one line too.

A script is argparse -> Config -> run::

    c = study.Config()
    p = cli.parser(__doc__)
    for name in ("depth", "width"):
      cli.flag(p, c, name)                 # type, help and default from the Config
    args = p.parse_args(argv)
    config = cli.config_or_exit(p, lambda: study.Config(depth=args.depth, ...), args.out)
    cli.run_or_exit(p, lambda: study.run(config, args.out))

Errors are one line on stderr, ``<script>: error: <what was wrong and what is
expected>``; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import re
import sys
import textwrap
from typing import Callable, Mapping, Optional, Sequence, TypeVar

from jaxbp import io as _io
from jaxbp.core import checks
import jaxbp.studies.driver as driver
import jaxbp.studies.multihost as multihost

T = TypeVar("T")


def show(value) -> str:
  """A flag value as it is typed: lists space-separated, mappings as ``key: values``."""
  if isinstance(value, Mapping):
    return "{" + "; ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
  if isinstance(value, (list, tuple)):
    return " ".join(f"({show(v)})" if isinstance(v, (list, tuple)) else show(v) for v in value)
  return f"{value:g}" if isinstance(value, float) else str(value)


class _Formatter(argparse.RawDescriptionHelpFormatter):
  """Keeps the docstring's examples as written, and ends each flag's help with its
  default where it has one (not for None, which means "the preset's", nor for off
  switches)."""

  def _get_help_string(self, action):
    text = action.help or ""
    d = action.default
    if d is None or d is False or d is argparse.SUPPRESS or "(default" in text:
      return text
    return f"{text} (default: {show(d).replace('%', '%%') or 'none'})".lstrip()


class Parser(argparse.ArgumentParser):
  """An ArgumentParser whose errors are one line, ``prog: error: message``, exit status 2
  (argparse prints its usage block first; ``--help`` shows it), and which remembers
  ``--debug`` from the last parse for :func:`config_or_exit` and :func:`run_or_exit`."""
  debug = False

  def parse_args(self, *args, **kwargs):
    ns = super().parse_args(*args, **kwargs)
    self.debug = bool(getattr(ns, "debug", False))
    return ns

  def error(self, message):
    message = " ".join(str(message).split())   # one line, whatever the message held
    self.exit(2, f"{self.prog}: error: {message}\n")


def parser(doc: str, out_help: str = "output directory (a rerun with the same flags resumes "
           "in it)", out_required: bool = True) -> Parser:
  """A :class:`Parser` described by ``doc``'s first paragraph (the rest, its examples,
  after the flags), with ``--out`` (required unless ``out_required`` is False) and
  ``--debug`` (tracebacks instead of one-line errors)."""
  doc = textwrap.dedent(doc).strip()
  first, _, rest = doc.partition("\n\n")
  p = Parser(description=textwrap.fill(" ".join(first.split()), 88),
             epilog=rest.strip("\n") or None, formatter_class=_Formatter)
  p.add_argument("--out", required=out_required, help=out_help)
  p.add_argument("--debug", action="store_true", help="show tracebacks instead of one line")
  return p


@functools.lru_cache(maxsize=None)
def field_help(config_cls) -> dict:
  """``{field: the first sentence of its entry}`` from the ``Attributes:`` section of
  ``config_cls``'s docstring (an entry may name several fields: ``a, b: text``)."""
  out, names, text, inside = {}, [], [], False

  def flush():
    sentence = re.split(r"(?<=[.;])\s+(?=[A-Z(`])", " ".join(text))[0] if text else ""
    sentence = re.sub(r":\w+:`~?([^`]+)`", r"\1", sentence).replace("``", "")
    out.update({n: sentence.rstrip(".;") for n in names})

  for line in (inspect.getdoc(config_cls) or "").splitlines():
    if line.strip() == "Attributes:":
      inside = True
      continue
    if not inside:
      continue
    if line and not line.startswith(" "):
      break
    m = re.match(r"^  (\w+(?:, \w+)*):(?: (.*))?$", line)
    if m:
      flush()
      names, text = m.group(1).split(", "), [m.group(2) or ""]
    elif line.strip():
      text.append(line.strip())
  flush()
  return out


def flag(p: argparse.ArgumentParser, config, name: str, preset=None, help: Optional[str] = None,
         **kwargs) -> None:
  """Adds ``--name`` (dashes for underscores) for the field ``name`` of ``config``.

  The type and nargs follow the field's value in ``config`` (an int, a float, a
  string, a list of them; a bool is an on switch), the help its docstring entry
  (:func:`field_help`) unless ``help`` is given. Without ``preset`` the default is
  ``config``'s value; with ``preset`` (the ``--quick`` config, for scripts where
  the flags override a preset) the default is None and the help gives both presets'
  values. ``kwargs`` go to ``add_argument`` and win over what is inferred.
  """
  value = getattr(config, name)
  items = list(value) if isinstance(value, (list, tuple)) else None
  opts = {}
  if isinstance(value, bool):
    opts["action"] = "store_true"
  else:
    sample = items if items is not None else [value]
    if sample and all(checks.is_real(v) for v in sample):
      opts["type"] = int if all(checks.is_int(v) for v in sample) else float
    if items is not None:
      opts["nargs"] = "+"
  text = help if help is not None else field_help(type(config)).get(name, "")
  if preset is None:
    opts["default"] = items if items is not None else value
  else:
    full, quick = show(value), show(getattr(preset, name))
    text += f" (default: {full}" + (f"; --quick: {quick})" if quick != full else ")")
    opts["default"] = None
  opts.update(kwargs)
  p.add_argument("--" + name.replace("_", "-"), help=text.replace("%", "%%"), **opts)


def add_preset(p: argparse.ArgumentParser, config_cls, what: str = "the small preset") -> None:
  """``--quick`` (saying which fields ``config_cls.quick()`` changes, and to what) and
  ``--config FILE``, for :func:`preset`."""
  full, quick = config_cls().to_dict(), config_cls.quick().to_dict()
  diff = ", ".join(f"{k} {show(v)}" for k, v in quick.items() if v != full.get(k))
  p.add_argument("--quick", action="store_true", help=f"{what}: {diff}".replace("%", "%%"))
  p.add_argument("--config", metavar="FILE",
                 help="a .json or .toml file of Config fields, over the preset; flags win")


def add_multihost(p: argparse.ArgumentParser) -> None:
  """The flags of a run across processes and hosts (:mod:`jaxbp.studies.multihost`)."""
  g = p.add_argument_group("many processes or hosts (JAX's multi-process runtime)")
  g.add_argument("--coordinator", metavar="HOST:PORT",
                 help="process 0's address, the same for every process")
  g.add_argument("--num-processes", type=int, help="how many processes in all")
  g.add_argument("--process-id", type=int, help="this process's index, 0 .. N-1")
  g.add_argument("--distributed", action="store_true",
                 help="detect the three from SLURM, Open MPI or a TPU pod")


def start_multihost(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
  """Starts the runtime from :func:`add_multihost`'s flags (nothing for one process);
  a bad combination is ``p.error``."""
  try:
    multihost.initialize(args.coordinator, args.num_processes, args.process_id,
                         auto=args.distributed)
  except ValueError as e:
    p.error(str(e))


def given(args: argparse.Namespace, names: Sequence[str]) -> dict:
  """The flags among ``names`` that were given (not None), by field name."""
  return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def preset(config_cls, args: argparse.Namespace, names: Sequence[str]) -> dict:
  """``config_cls.quick()`` under ``--quick`` (else the defaults) as a dict, updated
  by the ``--config`` file's keys and then by the flags among ``names`` given."""
  config = (config_cls.quick() if args.quick else config_cls()).to_dict()
  if args.config:
    config.update(_io.read_config(args.config))
  config.update(given(args, names))
  return config


def config_or_exit(p: argparse.ArgumentParser, make: Callable[[], T], out) -> T:
  """``make()``, and ``out`` created and writable (unless None); a ValueError or
  OSError from either is ``p.error``: one line, exit status 2."""
  try:
    config = make()
    if out is not None:
      driver.check_out_dir(out)
  except (OSError, ValueError) as e:
    if getattr(p, "debug", False):
      raise
    p.error(str(e))
  return config


def run_or_exit(p: argparse.ArgumentParser, work: Callable[[], T]) -> T:
  """``work()`` (the study's run), its expected failures as one line on stderr:

  * a ValueError (``--out`` holds another config's results: a rerun with a changed
    flag) or :class:`jaxbp.io.lock.LockHeld` (another live run in ``--out``) is
    ``p.error``, exit status 2;
  * an OSError (disk full) or an interruption (SIGTERM, Ctrl-C) is one line with
    what was kept, exit status 1, 128 + the signal, or 130.

  Under ``--debug`` each is raised instead, traceback and all.
  """
  try:
    return work()
  except (ValueError, driver.LockHeld) as e:
    if getattr(p, "debug", False):
      raise
    p.error(str(e))
  except (OSError, KeyboardInterrupt) as e:
    if getattr(p, "debug", False):
      raise
    notes = " ".join(getattr(e, "__notes__", ()))
    what = " ".join(f"{type(e).__name__}: {e}. {notes}".split())
    print(f"{p.prog}: {what}", file=sys.stderr)
    sys.exit(128 + e.signum if isinstance(e, driver.Interrupted) else
             130 if isinstance(e, KeyboardInterrupt) else 1)


def from_dict(config_cls, config: Mapping, label: str):
  """``config_cls(**config)`` from a mapping of field names (a JSON/TOML file's keys):
  missing ones take the defaults, unknown ones are a ValueError beginning with
  ``label``. An instance of ``config_cls`` passes through."""
  if isinstance(config, config_cls):
    return config
  names = [f.name for f in dataclasses.fields(config_cls)]
  unknown = sorted(set(config) - set(names))
  if unknown:
    raise ValueError(f"{label}: unknown config keys {unknown}; valid keys are "
                     f"{', '.join(names)}.")
  return config_cls(**config)
