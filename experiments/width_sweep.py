"""The width study: mean and variance of ln ||delta_1||^2 - ln ||delta_depth||^2 against 1/width.

    python experiments/width_sweep.py --quick --out out/width_sweep_quick   # < 2 min on 2 CPU cores
    python experiments/width_sweep.py --out out/width_sweep                 # widths 16 .. 1024

Per point (relu, tanh, sigmoid at criticality; with the full preset also an ordered
and a chaotic point each) and width, hundreds of random nets through vmap; the
measured mean and variance of R beside jaxbp.theory.finite_width's prediction and
its leading order. Writes ``results.csv``/``.json``, ``width.png`` and
``report.md`` to ``--out``; a rerun with the same flags resumes from ``--out/store``.
"""
import argparse
import sys

from jaxbp.studies import cli
from jaxbp.studies import driver
from jaxbp.studies import width_sweep


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="output directory (reruns resume in it)")
  parser.add_argument("--quick", action="store_true", help="three critical points, widths to 256")
  parser.add_argument("--widths", type=int, nargs="+")
  parser.add_argument("--depth", type=int, help="layers per net (default 8)")
  parser.add_argument("--seeds", type=int, help="nets per point and width")
  parser.add_argument("--seed", type=int, help="the study's PRNG seed")
  cli.add_multihost(parser)
  args = parser.parse_args(argv)
  cli.start_multihost(parser, args)
  try:
    preset = width_sweep.Config.quick() if args.quick else width_sweep.Config()
    overrides = {k: getattr(args, k) for k in ("widths", "depth", "seeds", "seed")
                 if getattr(args, k) is not None}
    config = width_sweep.Config.from_dict({**preset.to_dict(), **overrides})
    driver.check_out_dir(args.out)   # before any compute
  except ValueError as e:
    parser.error(str(e))
  try:
    result = width_sweep.run(config, args.out)
  except (ValueError, driver.LockHeld) as e:   # another config in --out, or another run
    parser.error(str(e))
  print(result.get("report", f"process {result.get('process')}: computed "
                             f"{result.get('computed')} configurations for process 0"))


if __name__ == "__main__":
  sys.exit(main())
