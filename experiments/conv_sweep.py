r"""Per-layer slope of ln||delta_l||^2 in deep vanilla CNNs against mean-field ln chi_1.

    python experiments/conv_sweep.py --out runs/conv_sweep --channels 256 --depth 128 \
        --sigma-w2 1.2 2.5 --seeds 0 1 2 3
    python experiments/conv_sweep.py --out runs/conv_grid --activation tanh relu --depth 32 128

runs delta-orthogonal and Gaussian kernels at the critical sigma_w^2 (and the
off-critical values given), and writes ``results.csv``/``.json`` (the agreement
table), ``profiles.json`` (every ln||delta_l||^2), ``report.md``, ``config.json``
and ``provenance.json``; a rerun resumes from ``store/``. Several activations or
depths run every pair (``conv_sweep.run_grid``), each in ``<activation>_depth<d>/``,
with one table and report over all of them in ``--out``.
"""
import jax

from jaxbp import io
from jaxbp.studies import cli
from jaxbp.studies import conv_sweep

FIELDS = ("sigma_b2", "inits", "channels", "size", "ndim", "kernel_size", "batch", "skip",
          "seeds")


def main(argv=None):
  c = conv_sweep.Config()
  parser = cli.parser(__doc__)
  cli.flag(parser, c, "activation", nargs="+", default=[c.activation],
           help="elementwise activations; several run every activation x depth")
  cli.flag(parser, c, "depth", nargs="+", default=[c.depth],
           help="convolutions per net; several run every activation x depth")
  cli.flag(parser, c, "sigma_w2", type=float, nargs="*",
           help="off-critical weight variances (the critical one always runs)")
  cli.flag(parser, c, "inits", choices=conv_sweep.INITS)
  helps = {"channels": "channels of every layer", "size": "positions per spatial axis",
           "ndim": "spatial axes", "kernel_size": "the kernels' side, odd"}
  for name in FIELDS[:1] + FIELDS[2:]:
    cli.flag(parser, c, name, help=helps.get(name))
  parser.add_argument("--float32", action="store_true", help="run in float32, not float64")
  parser.add_argument("--scaling", type=int, nargs="+", metavar="DEPTH",
                      help="also compile the program at these depths and write scaling.md "
                           "(compile seconds, XLA memory) without running it")
  args = parser.parse_args(argv)
  jax.config.update("jax_enable_x64", not args.float32)
  config = cli.config_or_exit(parser, lambda: conv_sweep.Config(
      activation=args.activation[0], depth=args.depth[0], sigma_w2=tuple(args.sigma_w2),
      **{k: tuple(v) if isinstance(v, list) else v for k, v in cli.given(args, FIELDS).items()}),
      args.out)
  if len(args.activation) > 1 or len(args.depth) > 1:
    cli.run_or_exit(parser, lambda: conv_sweep.run_grid(config, args.out, args.activation,
                                                        args.depth))
  else:
    cli.run_or_exit(parser, lambda: conv_sweep.run(config, args.out))
  print(open(f"{args.out}/report.md").read())
  if args.scaling:
    text = conv_sweep.scaling_report(config, conv_sweep.scaling(config, args.scaling))
    io.write_text(f"{args.out}/scaling.md", text)
    print(text)


if __name__ == "__main__":
  main()
