"""Seed 000 §7.8: gradient descent on Himmelblau's function from the seed's starts and a grid.

    python experiments/himmelblau.py --out runs/himmelblau

writes ``contour.png`` (the paths on a contour plot), ``minima.json`` (where
each start ended, the distinct minima found), ``report.md``, ``config.json``
and ``provenance.json``.
"""
import json

import jax

from jaxbp.studies import cli
from jaxbp.studies import himmelblau
from jaxbp.train import landscapes


def main(argv=None):
  c = himmelblau.Config()
  parser = cli.parser(__doc__)
  cli.flag(parser, c, "function", choices=sorted(landscapes.FUNCTIONS),
           help="the function descended")
  cli.flag(parser, c, "learning_rate", help="gradient descent's step: p <- p - lr grad f(p)")
  cli.flag(parser, c, "steps", help="gradient descent steps from every start")
  cli.flag(parser, c, "grid", type=float, nargs=3, metavar=("LOW", "HIGH", "N"),
           help="an N x N grid of extra starts on [LOW, HIGH]^2")
  parser.add_argument("--float32", action="store_true", help="run in float32, not float64")
  args = parser.parse_args(argv)
  jax.config.update("jax_enable_x64", not args.float32)
  config = cli.config_or_exit(parser, lambda: himmelblau.Config(
      function=args.function, learning_rate=args.learning_rate, steps=args.steps,
      grid=tuple(args.grid)), args.out)
  summary = cli.run_or_exit(parser, lambda: himmelblau.run(config, args.out))
  print(json.dumps({k: summary[k] for k in ("seed_starts", "found", "all_known_found")}, indent=1))


if __name__ == "__main__":
  main()
