"""Per-layer slope of ln||delta_l||^2 in deep vanilla CNNs against mean-field ln chi_1.

    python experiments/conv_sweep.py --out runs/conv_sweep --channels 256 --depth 128 \
        --sigma-w2 1.2 2.5 --seeds 0 1 2 3

runs delta-orthogonal and Gaussian kernels at the critical sigma_w^2 (and the
off-critical values given), and writes ``results.csv``/``.json`` (the agreement
table), ``profiles.json`` (every ln||delta_l||^2), ``report.md``, ``config.json``
and ``provenance.json``; a rerun resumes from ``store/``.
"""
import jax

from jaxbp.studies import cli
from jaxbp.studies import conv_sweep


def main(argv=None):
  c = conv_sweep.Config()
  parser = cli.parser(__doc__)
  parser.add_argument("--activation", default=c.activation)
  parser.add_argument("--sigma-b2", type=float, default=c.sigma_b2)
  parser.add_argument("--sigma-w2", type=float, nargs="*", default=list(c.sigma_w2),
                      help="off-critical weight variances (the critical one always runs)")
  parser.add_argument("--inits", nargs="+", default=list(c.inits), choices=conv_sweep.INITS)
  for name in ("channels", "size", "ndim", "kernel_size", "depth", "batch", "skip"):
    parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(c, name))
  parser.add_argument("--seeds", type=int, nargs="+", default=list(c.seeds))
  parser.add_argument("--float32", action="store_true", help="run in float32, not float64")
  parser.add_argument("--scaling", type=int, nargs="+", metavar="DEPTH",
                      help="also compile the program at these depths and write scaling.md "
                           "(compile seconds, XLA memory) without running it")
  args = parser.parse_args(argv)
  jax.config.update("jax_enable_x64", not args.float32)
  config = cli.config_or_exit(parser, lambda: conv_sweep.Config(
      activation=args.activation, sigma_b2=args.sigma_b2, sigma_w2=tuple(args.sigma_w2),
      inits=tuple(args.inits), channels=args.channels, size=args.size, ndim=args.ndim,
      kernel_size=args.kernel_size, depth=args.depth, batch=args.batch,
      seeds=tuple(args.seeds), skip=args.skip), args.out)
  conv_sweep.run(config, args.out)
  print(open(f"{args.out}/report.md").read())
  if args.scaling:
    rows = conv_sweep.scaling(config, args.scaling)
    lines = ["# Compile time and memory against depth", "",
             f"The sweep's jitted hand backward pass (`backprop.deltas`, stacked layers under "
             f"`lax.scan`), {config.channels} channels, batch {config.batch}: lowered and "
             "compiled, not run. Temporaries: what XLA allocates beyond arguments and outputs "
             "(the outputs are every layer's delta, linear in depth by design).", "",
             "| depth | compile s | temporaries MiB | arguments MiB | outputs MiB |",
             "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['depth']} | {r['compile_s']:.2f} | {r['temp_bytes'] / 2**20:.1f} | "
              f"{r['argument_bytes'] / 2**20:.1f} | {r['output_bytes'] / 2**20:.1f} |"
              for r in rows]
    with open(f"{args.out}/scaling.md", "w") as f:
      f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
  main()
