"""What the scripts in ``experiments/`` share: a parser with ``--out``, a study's
Config from flags (over a preset and a ``--config`` file), and a bad value as
argparse's one-line usage error (exit status 2) before any compute."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Callable, Mapping, Sequence, TypeVar

from jaxbp import io as _io
import jaxbp.studies.driver as driver
import jaxbp.studies.multihost as multihost

T = TypeVar("T")


class _Parser(argparse.ArgumentParser):
  """Remembers ``--debug`` from the last parse, for :func:`config_or_exit`."""
  debug = False

  def parse_args(self, *args, **kwargs):
    ns = super().parse_args(*args, **kwargs)
    self.debug = bool(getattr(ns, "debug", False))
    return ns


def parser(doc: str, out_help: str = "output directory") -> argparse.ArgumentParser:
  """An ArgumentParser described by ``doc``'s first line, with a required ``--out`` and
  ``--debug`` (tracebacks instead of one-line errors)."""
  p = _Parser(description=doc.splitlines()[0])
  p.add_argument("--out", required=True, help=out_help)
  p.add_argument("--debug", action="store_true", help="show tracebacks instead of one line")
  return p


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
