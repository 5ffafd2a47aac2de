"""Speed, compile time and memory of jaxbp's gradients, beside PyTorch and NumPy.

    python experiments/benchmark.py --out runs/benchmark          # the full run
    python experiments/benchmark.py --out /tmp/bench --quick      # tiny sizes, every section
    python experiments/benchmark.py --out runs/bench --sections processes profile
                                                   # the throughput table alone (README's)
    python experiments/benchmark.py --out /tmp/rnn --sections rnn \\
        --merge-into experiments/results/benchmark  # one section, into the committed run

writes ``results.json``, ``results.md`` and ``config.json`` into ``--out``;
what is measured is described in the top-level ``benchmarks`` package (beside
``jaxbp``, not installed with it). The committed run is in
``experiments/results/benchmark/``.
"""
from __future__ import annotations

import dataclasses
import pathlib
import sys

# benchmarks/ sits beside jaxbp/ in the checkout and is not installed: import it from there.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import benchmarks  # noqa: E402  (after the path above)
from jaxbp.studies import cli  # noqa: E402


def parse(argv=None):
  parser = cli.parser(__doc__, "output directory (results.json, results.md, config.json)")
  full, quick = benchmarks.Config(), benchmarks.quick()
  default = lambda f: f"(default {getattr(full, f)}; --quick {getattr(quick, f)})"
  parser.add_argument("--quick", action="store_true",
                      help="tiny sizes, few repeats, every section (< 60 s)")
  parser.add_argument("--sections", nargs="+", choices=benchmarks.SECTIONS,
                      help=f"default: {' '.join(benchmarks.DEFAULT_SECTIONS)} (--quick: all)")
  parser.add_argument("--repeats", type=int,
                      help="timed repeats per in-process measurement " + default("repeats"))
  parser.add_argument("--rounds", type=int, help="rounds of the processes and rnn sections "
                      + default("process_rounds") + ", rnn " + default("rnn_rounds"))
  parser.add_argument("--window", type=float,
                      help="seconds of timed steps per process, processes section "
                           + default("process_window_s"))
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baselines")
  parser.add_argument("--merge-into", metavar="DIR",
                      help="also add this run's sections to an earlier run's results in DIR "
                           "(its other sections and targets kept as they are)")
  return parser, parser.parse_args(argv)


def config_from(args) -> benchmarks.Config:
  config = benchmarks.quick() if args.quick else benchmarks.Config()
  overrides = {"torch": not args.no_torch}
  for arg, field in (("sections", "sections"), ("repeats", "repeats"), ("rounds", "process_rounds"),
                     ("rounds", "rnn_rounds"), ("window", "process_window_s")):
    value = getattr(args, arg)
    if value is not None:
      overrides[field] = tuple(value) if arg == "sections" else value
  if args.merge_into:
    benchmarks.merge.check_into(args.merge_into, args.out)
  return dataclasses.replace(config, **overrides)


def main(argv=None) -> None:
  parser, args = parse(argv)
  config = cli.config_or_exit(parser, lambda: config_from(args), args.out)
  res = benchmarks.run(config, args.out)
  if args.merge_into:
    benchmarks.merge_into(res, args.merge_into)
    print(f"Merged {', '.join(config.sections)} into {args.merge_into}/results.md, results.json")
  print((pathlib.Path(args.out) / "results.md").read_text())
  missed = [t["target"] for t in res["targets"] if not t["met"]]
  print(f"{len(res['targets']) - len(missed)} of {len(res['targets'])} targets met.")
  print(f"Results: {pathlib.Path(args.out).resolve()}/results.md, results.json")


if __name__ == "__main__":
  main()
