"""Every worked example of the seeds, with jaxbp's numbers beside the seed's.

    python experiments/seed_examples.py            # all examples, with PyTorch if importable
    python experiments/seed_examples.py --only 004 --no-torch
    python experiments/seed_examples.py --out out/seed_examples   # also report.md, rows.json

Prints the side-by-side table; exits 1 if any row disagrees (reads ``NO``).
The examples, the table's columns and the mistakes found in the seeds are
described in :mod:`jaxbp.studies.seed_examples`.
"""
import sys

from jaxbp.studies import cli
from jaxbp.studies import seed_examples


def main(argv=None) -> int:
  c = seed_examples.Config()
  parser = cli.parser(__doc__, out_required=False, out_help="also write config.json, "
                      "rows.json, report.md and provenance.json to this directory")
  cli.flag(parser, c, "seed", help="seed (an int >= 0) for the data the lecture notes "
           "leave random")
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparisons")
  cli.flag(parser, c, "only", help="run only the examples whose name contains this, e.g. "
           "004 or graph (default: all)")
  args = parser.parse_args(argv)
  config = cli.config_or_exit(parser, lambda: seed_examples.Config(
      seed=args.seed, torch=not args.no_torch, only=args.only), args.out)
  rows = cli.run_or_exit(parser, lambda: seed_examples.run(config, args.out))
  print(seed_examples.report_text(rows, config))
  return 1 if seed_examples.disagreements(rows) else 0


if __name__ == "__main__":
  sys.exit(main())
