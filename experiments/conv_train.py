"""Trains a vanilla tanh CNN 100 layers deep on the 8x8 digits: critical delta-orthogonal
init against off-critical Gaussian init, over seeds.

    python experiments/conv_train.py --out runs/conv_train --float32   # the README's table
    python experiments/conv_train.py --out /tmp/ct --depth 10 --epochs 2 --seeds 0

writes ``results.csv``/``.json`` (one row per setting), ``runs.json`` (every
run) and ``report.md``; a rerun resumes from ``store/``. ``--settings`` takes
``init:sigma_w2`` pairs, e.g. ``delta_orthogonal:critical gaussian:0.5``.
"""
import jax

from jaxbp.studies import cli
from jaxbp.studies import conv_train


def setting(text: str):
  init, _, value = text.partition(":")
  return (init, value if value == "critical" else float(value)) if value else (init, None)


def main(argv=None):
  c = conv_train.Config()
  parser = cli.parser(__doc__)
  parser.add_argument("--settings", nargs="+", help="init:sigma_w2 pairs (sigma_w2 a number "
                      "or 'critical'); default " + " ".join(f"{i}:{s}" for i, s in c.settings))
  for name in ("depth", "channels", "kernel_size", "epochs", "batch_size"):
    parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(c, name))
  for name in ("sigma_b2", "learning_rate", "momentum"):
    parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(c, name))
  parser.add_argument("--readout", choices=conv_train.READOUTS, default=c.readout)
  parser.add_argument("--clip-norm", type=lambda v: None if v.lower() == "none" else float(v),
                      default=c.clip_norm, help="global-norm clip, or 'none'")
  parser.add_argument("--seeds", type=int, nargs="+", default=list(c.seeds))
  parser.add_argument("--float32", action="store_true", help="train in float32, not float64")
  args = parser.parse_args(argv)
  jax.config.update("jax_enable_x64", not args.float32)

  def make():
    try:
      settings = tuple(setting(s) for s in args.settings) if args.settings else c.settings
    except ValueError:
      raise ValueError(f"--settings must be init:sigma_w2 pairs, got {args.settings}") from None
    return conv_train.Config(
        settings=settings, sigma_b2=args.sigma_b2, depth=args.depth, channels=args.channels,
        kernel_size=args.kernel_size, readout=args.readout, clip_norm=args.clip_norm,
        epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, momentum=args.momentum, seeds=tuple(args.seeds))

  config = cli.config_or_exit(parser, make, args.out)
  conv_train.run(config, args.out)
  print(open(f"{args.out}/report.md").read())


if __name__ == "__main__":
  main()
