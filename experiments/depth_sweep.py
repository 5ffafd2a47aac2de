"""The main job: per-layer gradient-norm profiles across depth x activation x init, theory overlaid.

    python experiments/depth_sweep.py --quick --out out/depth_sweep     # ~50 s on 2 CPU cores
    python experiments/depth_sweep.py --out out/depth_sweep_full        # width 500, depths to 200: ~2 min

writes ``results.csv``, ``results.json`` (rows, profiles, config, seeds,
versions, device), ``profiles.png``, ``slopes.png``, ``phase.png`` and
``report.md`` (measured vs predicted slope per layer, ln chi_1) to ``--out``.
Finished configurations are kept in ``--out/store``: a killed run, restarted
with the same flags, picks up where it stopped. Flags override the preset;
``--config file.json`` (or ``.toml``) gives any of the preset's fields.

``--arch conv`` runs the same study on vanilla CNNs (``jaxbp.ConvNet``, circular
padding): per activation and depth, delta-orthogonal and Gaussian kernels at
the critical sigma_w^2 and at the ``--sigma-w2`` given; ``--width`` is the
channels, ``--size``/``--ndim`` the signal (16 samples, 1-D by default)::

    python experiments/depth_sweep.py --arch conv --out out/conv --activations tanh relu \
        --depths 128 --width 256 --seeds 0 1 2 3 --sigma-w2 1.2 2.5

Across processes or hosts, the same command once per process (README "Many
devices and hosts")::

    python experiments/depth_sweep.py --quick --out out/ds --coordinator host0:8476 \
        --num-processes 2 --process-id 0        # and --process-id 1 on the other
"""
import argparse
import json
import sys

import jax

from jaxbp import io
from jaxbp.studies import cli
from jaxbp.studies import conv_sweep
from jaxbp.studies import depth_sweep
from jaxbp.studies import driver

FIELDS = ("activations", "inits", "sigma_w2", "sigma_b2", "depths", "width", "batch", "seeds",
          "skip", "memory_gb")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="output directory (reruns resume in it)")
  parser.add_argument("--quick", action="store_true", help="the small preset (README command)")
  parser.add_argument("--config", help="a .json/.toml file of SweepConfig fields")
  parser.add_argument("--activations", nargs="+")
  parser.add_argument("--inits", nargs="+", help=f"any of {', '.join(depth_sweep.INITS)}")
  parser.add_argument("--sigma-w2", type=float, nargs="+", help="gaussian grid, all activations")
  parser.add_argument("--sigma-b2", type=float, nargs="+")
  parser.add_argument("--depths", type=int, nargs="+")
  parser.add_argument("--width", type=int)
  parser.add_argument("--batch", type=int)
  parser.add_argument("--seeds", type=int, nargs="+")
  parser.add_argument("--skip", type=int, help="transient layers left out of the fit at each end")
  parser.add_argument("--memory-gb", type=float)
  parser.add_argument("--float32", action="store_true", help="run in float32, not float64")
  parser.add_argument("--arch", choices=("mlp", "conv"), default="mlp",
                      help="fully connected nets (default) or vanilla CNNs")
  parser.add_argument("--size", type=int, help="--arch conv: positions per spatial axis (16)")
  parser.add_argument("--ndim", type=int, help="--arch conv: spatial axes (1)")
  parser.add_argument("--no-figures", action="store_true",
                      help="skip the PNGs (the tables and report.md are written)")
  parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one line")
  cli.add_multihost(parser)
  args = parser.parse_args(argv)
  cli.start_multihost(parser, args)
  if args.arch == "conv":
    return conv(parser, args)
  config = (depth_sweep.QUICK if args.quick else depth_sweep.FULL).to_dict()
  try:
    if args.config:
      config.update(io.read_config(args.config))
    config.update({k: getattr(args, k) for k in FIELDS if getattr(args, k) is not None})
    if args.float32:
      config["dtype"] = "float32"
    config = depth_sweep.Config.from_dict(config)
    driver.check_out_dir(args.out)   # before any compute
  except (OSError, ValueError) as e:
    if args.debug:
      raise
    parser.error(str(e))
  jax.config.update("jax_enable_x64", config.dtype == "float64")
  try:
    summary = depth_sweep.run(config, args.out, figures=not args.no_figures)
  except (ValueError, driver.LockHeld) as e:   # another config in --out, or another run
    if args.debug:
      raise
    parser.error(str(e))
  except (OSError, KeyboardInterrupt) as e:    # disk full, SIGTERM, Ctrl-C: what is kept
    if args.debug:
      raise
    notes = " ".join(getattr(e, "__notes__", ()))
    print(f"{parser.prog}: {type(e).__name__}: {e}. {notes}".strip(), file=sys.stderr)
    sys.exit(128 + e.signum if isinstance(e, driver.Interrupted) else
             130 if isinstance(e, KeyboardInterrupt) else 1)
  print(json.dumps(summary, indent=1))


def conv(parser, args):
  """``--arch conv``: conv_sweep.run_grid over the activations and depths."""
  c = conv_sweep.Config()
  if args.sigma_b2 is not None and len(args.sigma_b2) != 1:
    parser.error("--arch conv takes one --sigma-b2 value per run")
  fields = {"sigma_b2": args.sigma_b2[0] if args.sigma_b2 else None,
            "sigma_w2": tuple(args.sigma_w2) if args.sigma_w2 else None,
            "inits": tuple(args.inits) if args.inits else None, "channels": args.width,
            "size": args.size, "ndim": args.ndim, "batch": args.batch,
            "seeds": tuple(args.seeds) if args.seeds else None, "skip": args.skip}
  jax.config.update("jax_enable_x64", not args.float32)
  config = cli.config_or_exit(parser, lambda: conv_sweep.Config(**{
      **driver.config_dict(c), **{k: v for k, v in fields.items() if v is not None}}), args.out)
  activations = args.activations or ["tanh", "relu"]
  depths = args.depths or [c.depth]
  try:
    rows = conv_sweep.run_grid(config, args.out, activations, depths)
  except (ValueError, driver.LockHeld) as e:
    if args.debug:
      raise
    parser.error(str(e))
  print(open(f"{args.out}/report.md").read())
  return rows


if __name__ == "__main__":
  main()
