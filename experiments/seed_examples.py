"""Every worked example of the seeds, with jaxbp's numbers beside the seed's.

    python experiments/seed_examples.py            # all examples, with PyTorch if importable
    python experiments/seed_examples.py --only 004 --no-torch
    python experiments/seed_examples.py --out out/seed_examples   # also report.md, rows.json

Prints the side-by-side table; exits 1 if any row disagrees (reads ``NO``).
The examples, the table's columns and the mistakes found in the seeds are
described in :mod:`jaxbp.studies.seed_examples`.
"""
import argparse
import sys

from jaxbp.studies import cli
from jaxbp.studies import seed_examples


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seed", type=int, default=0,
                      help="seed for the data the lecture notes leave random (default 0)")
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparisons")
  parser.add_argument("--only", default="",
                      help="run only the examples whose name contains this, e.g. 004 or graph")
  parser.add_argument("--out", help="also write config.json, rows.json, report.md and "
                      "provenance.json to this directory")
  args = parser.parse_args(argv)
  config = cli.config_or_exit(parser, lambda: seed_examples.Config(
      seed=args.seed, torch=not args.no_torch, only=args.only), args.out)
  rows = seed_examples.run(config, args.out)
  print(seed_examples.report_text(rows, config))
  return 1 if seed_examples.disagreements(rows) else 0


if __name__ == "__main__":
  sys.exit(main())
