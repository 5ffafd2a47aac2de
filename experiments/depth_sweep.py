r"""The main job: per-layer gradient-norm profiles across depth x activation x init, theory overlaid.

    python experiments/depth_sweep.py --quick --out out/depth_sweep     # ~50 s on 2 CPU cores
    python experiments/depth_sweep.py --out out/depth_sweep_full        # width 500, depths to 200

writes ``results.csv``, ``results.json`` (rows, profiles, config, seeds,
versions, device), ``profiles.png``, ``slopes.png``, ``phase.png`` and
``report.md`` (measured vs predicted slope per layer) to ``--out``. Finished
configurations are kept in ``--out/store``: a killed run, restarted with the
same flags, picks up where it stopped. Flags override the preset; ``--config
file.json`` (or ``.toml``) gives any of the Config's fields. The same study on
CNNs is ``experiments/conv_sweep.py``.

Across processes or hosts, the same command once per process (README "Many
devices and hosts")::

    python experiments/depth_sweep.py --quick --out out/ds --coordinator host0:8476 \
        --num-processes 2 --process-id 0        # and --process-id 1 on the other
"""
import json

import jax

from jaxbp.studies import cli
from jaxbp.studies import depth_sweep

FIELDS = ("activations", "inits", "sigma_w2", "sigma_b2", "depths", "width", "batch", "seeds",
          "skip", "max_skip", "memory_gb")


def main(argv=None):
  full, quick = depth_sweep.Config(), depth_sweep.Config.quick()
  parser = cli.parser(__doc__)
  cli.add_preset(parser, depth_sweep.Config, "the README's main command")
  helps = {"sigma_w2": dict(type=float, nargs="+", help="the gaussian grid's weight "
                           "variances, one list for every activation"),
           "inits": dict(help=f"any of {', '.join(depth_sweep.INITS)}"),
           "skip": dict(type=int, default=None, help="transient layers left out of the fit at "
                        "each end at every depth, with a warning where a depth is too shallow "
                        "(default: --max-skip, fewer where a depth is too shallow)"),
           "max_skip": dict(help="without --skip, the most layers left out at each end"),
           "memory_gb": dict(help="GB the configurations computed at once may take")}
  for name in FIELDS:
    cli.flag(parser, full, name, preset=None if name == "skip" else quick,
             **helps.get(name, {}))
  parser.add_argument("--float32", action="store_true", help="run in float32, not float64")
  parser.add_argument("--no-figures", action="store_true",
                      help="skip the PNGs (the tables and report.md are written)")
  cli.add_multihost(parser)
  args = parser.parse_args(argv)
  cli.start_multihost(parser, args)

  def make():
    config = cli.preset(depth_sweep.Config, args, FIELDS)
    return depth_sweep.Config.from_dict(dict(config, dtype="float32") if args.float32 else config)

  config = cli.config_or_exit(parser, make, args.out)
  jax.config.update("jax_enable_x64", config.dtype == "float64")
  summary = cli.run_or_exit(parser, lambda: depth_sweep.run(config, args.out,
                                                             figures=not args.no_figures))
  print(json.dumps(summary, indent=1))


if __name__ == "__main__":
  main()
