"""One command for an accelerator: device tests, matmul peak, jit(grad) as % of peak, deep nets.

    python experiments/accelerator_check.py --out experiments/results/accelerator  # GPU, < 8 min
    python experiments/accelerator_check.py --out /tmp/acc --smoke                 # CPU, tiny sizes

Every step runs in a process of its own, time-boxed; ``results.json`` and
``results.md`` in ``--out`` are rewritten after each step, and the script
prints where they are. What each step measures: ``benchmarks/accelerator.py``.
Exit status 0 when every step is ok, 1 otherwise (the results are written either way).
"""
from __future__ import annotations

import pathlib
import sys

# benchmarks/ sits beside jaxbp/ in the checkout and is not installed: import it from there.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import accelerator  # noqa: E402  (after the path above)
from jaxbp.studies import cli  # noqa: E402


def main(argv=None) -> dict:
  parser = cli.parser(__doc__, "output directory (results.json, results.md, steps/)")
  parser.add_argument("--smoke", action="store_true",
                      help="tiny sizes and two device tests, every step (about a minute on a CPU)")
  parser.add_argument("--budget", type=float, default=accelerator.Config.budget_s,
                      help="seconds for the whole run")
  parser.add_argument("--steps", nargs="+", choices=accelerator.STEPS,
                      default=list(accelerator.STEPS), help="which steps, run in this order")
  args = parser.parse_args(argv)
  config = cli.config_or_exit(parser, lambda: accelerator.Config(
      smoke=args.smoke, budget_s=args.budget, steps=tuple(args.steps)), args.out)
  return accelerator.run(config, args.out)


if __name__ == "__main__":
  res = main()
  sys.exit(0 if all(r["status"] == "ok" for r in res["steps"].values()) else 1)
