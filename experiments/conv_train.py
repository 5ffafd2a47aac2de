"""Trains a vanilla tanh CNN 100 layers deep on the 8x8 digits, with a critical
delta-orthogonal init against off-critical Gaussian inits, over seeds.

    python experiments/conv_train.py --out runs/conv_train --float32   # the README's table
    python experiments/conv_train.py --out /tmp/ct --depth 10 --epochs 2 --seeds 0

writes ``results.csv``/``.json`` (one row per setting), ``runs.json`` (every
run) and ``report.md``; a rerun resumes from ``store/``. ``--settings`` takes
``init:sigma_w2`` pairs, e.g. ``delta_orthogonal:critical gaussian:0.5``.
"""
import jax

from jaxbp.studies import cli
from jaxbp.studies import conv_train

FIELDS = ("sigma_b2", "depth", "channels", "kernel_size", "padding", "readout", "epochs",
          "batch_size", "learning_rate", "momentum", "clip_norm", "seeds")


def setting(text: str):
  init, _, value = text.partition(":")
  return (init, value if value == "critical" else float(value)) if value else (init, None)


def main(argv=None):
  c = conv_train.Config()
  parser = cli.parser(__doc__)
  parser.add_argument("--settings", nargs="+", metavar="INIT:SIGMA_W2",
                      help="init:sigma_w2 pairs, sigma_w2 a number or 'critical' (default: "
                      + " ".join(f"{i}:{s}" for i, s in c.settings) + ")")
  extra = {"depth": dict(help="tanh convolutions per net"),
           "channels": dict(help="channels of every convolution"),
           "kernel_size": dict(help="the kernels' side, odd"),
           "epochs": dict(help="passes over the 1,438 training images"),
           "batch_size": dict(help="images per SGD step"),
           "learning_rate": dict(help="SGD's step size"), "momentum": dict(help="SGD's momentum"),
           "padding": dict(choices=("same", "circular")),
           "readout": dict(choices=conv_train.READOUTS),
           "clip_norm": dict(type=lambda v: None if v.lower() == "none" else float(v),
                             help="the gradient's global norm is clipped to this, or 'none'")}
  for name in FIELDS:
    cli.flag(parser, c, name, **extra.get(name, {}))
  parser.add_argument("--float32", action="store_true", help="train in float32, not float64")
  args = parser.parse_args(argv)
  jax.config.update("jax_enable_x64", not args.float32)

  def make():
    try:
      settings = tuple(setting(s) for s in args.settings) if args.settings else c.settings
    except ValueError:
      raise ValueError(f"--settings must be init:sigma_w2 pairs, got {args.settings}") from None
    return conv_train.Config(settings=settings, **{
        k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in FIELDS})

  config = cli.config_or_exit(parser, make, args.out)
  cli.run_or_exit(parser, lambda: conv_train.run(config, args.out))
  print(open(f"{args.out}/report.md").read())


if __name__ == "__main__":
  main()
