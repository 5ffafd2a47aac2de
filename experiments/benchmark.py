"""Speed, compile time and memory of jaxbp's gradients, beside PyTorch and NumPy.

    python experiments/benchmark.py --out runs/benchmark          # the full run
    python experiments/benchmark.py --out /tmp/bench --quick      # tiny sizes, every section
    python experiments/benchmark.py --out runs/bench --sections processes profile
                                                   # the throughput table alone (README's)

writes ``results.json``, ``results.md`` and ``config.json`` into ``--out``;
what is measured is described in :mod:`jaxbp.studies.benchmark`.
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib

from jaxbp.studies import benchmark


def parse(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True,
                      help="output directory (results.json, results.md, config.json)")
  parser.add_argument("--quick", action="store_true", help="tiny sizes, few repeats (< 60 s)")
  parser.add_argument("--sections", nargs="+", choices=benchmark.SECTIONS,
                      help=f"default: {' '.join(benchmark.DEFAULT_SECTIONS)} (--quick: all)")
  parser.add_argument("--repeats", type=int, help="timed repeats per in-process measurement")
  parser.add_argument("--rounds", type=int, help="rounds of the processes section")
  parser.add_argument("--window", type=float,
                      help="seconds of timed steps per process (processes section)")
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baselines")
  return parser.parse_args(argv)


def config_from(args: argparse.Namespace) -> benchmark.Config:
  config = benchmark.quick() if args.quick else benchmark.Config()
  overrides = {"torch": not args.no_torch}
  for arg, field in (("sections", "sections"), ("repeats", "repeats"),
                     ("rounds", "process_rounds"), ("window", "process_window_s")):
    value = getattr(args, arg)
    if value is not None:
      overrides[field] = tuple(value) if arg == "sections" else value
  return dataclasses.replace(config, **overrides)


def main(argv=None) -> None:
  args = parse(argv)
  try:
    config = config_from(args)
  except ValueError as e:
    raise SystemExit(f"benchmark.py: {e}") from None
  res = benchmark.run(config, args.out)
  print((pathlib.Path(args.out) / "results.md").read_text())
  missed = [t["target"] for t in res["targets"] if not t["met"]]
  print(f"{len(res['targets']) - len(missed)} of {len(res['targets'])} targets met.")


if __name__ == "__main__":
  main()
