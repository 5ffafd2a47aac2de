"""Seed 003 §4.4's remedies, trained: which depths each setting trains at.

    python experiments/remedies.py --out out/remedies [--quick]

Trains MLPs of several depths on the 8x8 digits and on two spirals with
sigmoid/Xavier (the baseline that fails), tanh at criticality (Gaussian and
orthogonal weights), ReLU/He, residual connections, batch norm, and an
exploding ReLU net with and without gradient clipping and weight decay.
Writes ``report.md``, ``summary.json``/``.csv``, loss curves, accuracy vs
depth and per-layer gradient-norm profiles, and ``config.json``; a rerun
resumes from ``out/remedies/store``. ``--quick``: digits only, depths 5 and 20,
width 32, 300 steps, 2 seeds (about 2 minutes on 2 cores).
"""
import jax

from jaxbp.studies import cli
from jaxbp.studies import remedies

FLAGS = ("datasets", "settings", "depths", "width", "steps", "seeds", "seed", "learning_rate")


def main(argv=None):
  parser = cli.parser(__doc__)
  parser.add_argument("--quick", action="store_true", help="the small grid (see above)")
  parser.add_argument("--config", help="a .json or .toml file of config overrides")
  parser.add_argument("--datasets", nargs="+", choices=remedies.DATASETS)
  parser.add_argument("--settings", nargs="+", metavar="NAME",
                      help=f"any of: {', '.join(remedies.REMEDIES)}")
  parser.add_argument("--depths", type=int, nargs="+")
  parser.add_argument("--width", type=int)
  parser.add_argument("--steps", type=int)
  parser.add_argument("--seeds", type=int, help="networks per configuration (vmapped)")
  parser.add_argument("--seed", type=int, help="the first seed")
  parser.add_argument("--learning-rate", type=float)
  parser.add_argument("--float32", action="store_true", help="run in float32, not float64")
  args = parser.parse_args(argv)
  jax.config.update("jax_enable_x64", not args.float32)
  config = cli.config_or_exit(
      parser, lambda: remedies.Config.from_dict(cli.preset(remedies.Config, args, FLAGS)),
      args.out)
  print(remedies.run(config, args.out)["report"])


if __name__ == "__main__":
  main()
