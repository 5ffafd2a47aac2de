"""Seed 003 §4.4's remedies, trained: which depths each setting trains at.

    python experiments/remedies.py --out out/remedies [--quick]

Trains MLPs of several depths on the 8x8 digits and on two spirals with
sigmoid/Xavier (the baseline that fails), tanh at criticality (Gaussian and
orthogonal weights), ReLU/He, residual connections, batch norm, and an
exploding ReLU net with and without gradient clipping and weight decay.
Writes ``report.md``, ``summary.json``/``.csv``, loss curves, accuracy vs
depth and per-layer gradient-norm profiles, and ``config.json``; a rerun
resumes from ``out/remedies/store``. ``--quick`` takes about 2 minutes on 2 cores.
"""
import jax

from jaxbp.studies import cli
from jaxbp.studies import remedies

FLAGS = ("datasets", "settings", "depths", "width", "steps", "seeds", "seed", "learning_rate")
HELP = {"settings": f"any of: {', '.join(remedies.REMEDIES)}", "steps": "SGD steps per net",
        "seeds": "networks per configuration (vmapped)", "seed": "the first seed",
        "learning_rate": "SGD's step size (momentum 0.9)"}


def main(argv=None):
  full, quick = remedies.Config(), remedies.Config.quick()
  parser = cli.parser(__doc__)
  cli.add_preset(parser, remedies.Config, "the small grid")
  for name in FLAGS:
    cli.flag(parser, full, name, preset=quick, help=HELP.get(name),
             **({"choices": remedies.DATASETS} if name == "datasets" else
                {"metavar": "NAME"} if name == "settings" else {}))
  parser.add_argument("--float32", action="store_true", help="run in float32, not float64")
  args = parser.parse_args(argv)
  jax.config.update("jax_enable_x64", not args.float32)
  config = cli.config_or_exit(
      parser, lambda: remedies.Config.from_dict(cli.preset(remedies.Config, args, FLAGS)),
      args.out)
  print(cli.run_or_exit(parser, lambda: remedies.run(config, args.out))["report"])


if __name__ == "__main__":
  main()
