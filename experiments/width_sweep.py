"""The width study: mean and variance of ln ||delta_1||^2 - ln ||delta_depth||^2 against 1/width.

    python experiments/width_sweep.py --quick --out out/width_sweep_quick   # < 2 min on 2 CPU cores
    python experiments/width_sweep.py --out out/width_sweep                 # widths 16 .. 1024

Per point (relu, tanh, sigmoid at criticality; with the full preset also an ordered
and a chaotic point each) and width, hundreds of random nets through vmap; the
measured mean and variance of R beside jaxbp.theory.finite_width's prediction and
its leading order. Writes ``results.csv``/``.json``, ``width.png`` and
``report.md`` to ``--out``; a rerun with the same flags resumes from ``--out/store``.
"""
from jaxbp.studies import cli
from jaxbp.studies import width_sweep

FLAGS = ("widths", "depth", "seeds", "seed")


def main(argv=None):
  full, quick = width_sweep.Config(), width_sweep.Config.quick()
  parser = cli.parser(__doc__)
  cli.add_preset(parser, width_sweep.Config, "three critical points, fewer nets")
  for name in FLAGS:
    cli.flag(parser, full, name, preset=quick)
  cli.add_multihost(parser)
  args = parser.parse_args(argv)
  cli.start_multihost(parser, args)
  config = cli.config_or_exit(
      parser, lambda: width_sweep.Config.from_dict(cli.preset(width_sweep.Config, args, FLAGS)),
      args.out)
  result = cli.run_or_exit(parser, lambda: width_sweep.run(config, args.out))
  print(result.get("report", f"process {result.get('process')}: computed "
                             f"{result.get('computed')} configurations for process 0"))


if __name__ == "__main__":
  main()
