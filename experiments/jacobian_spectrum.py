"""Singular values of the input-output Jacobian across depth (Saxe et al. 2014;
Pennington et al. 2017), against the free-probability prediction.

    python experiments/jacobian_spectrum.py --out out/jacobian_spectrum [--quick]

For tanh at criticality (small sigma_b2) and ReLU with He init, each with
Gaussian and orthogonal weights: histograms of log10 s per depth, the mean and
variance of s^2 against chi_1^L and L (mu_2/mu_1^2 - 1 - s_1), ``report.md``,
``spread.json``/``.csv`` and ``config.json``.
"""
from collections.abc import Mapping

import jax

from jaxbp.studies import cli
from jaxbp.studies import spectrum

FLAGS = ("width", "depths", "activations", "weights", "seeds", "seed")


def flags(args) -> dict:
  """The preset, config file and flags; ``--tanh-sigma-b2`` sets tanh's entry alone."""
  config = cli.preset(spectrum.Config, args, FLAGS)
  if args.tanh_sigma_b2 is not None:
    b = config["sigma_b2"]
    b = b if isinstance(b, Mapping) else {a: b for a in config["activations"]}
    config["sigma_b2"] = {**b, "tanh": args.tanh_sigma_b2}
  return config


def main(argv=None):
  full, quick = spectrum.Config(), spectrum.Config.quick()
  parser = cli.parser(__doc__)
  cli.add_preset(parser, spectrum.Config, "the small grid")
  for name in FLAGS:
    cli.flag(parser, full, name, preset=quick,
             **({"choices": spectrum.WEIGHTS} if name == "weights" else {}))
  parser.add_argument("--tanh-sigma-b2", type=float,
                      help="tanh's bias variance, which sets its q* "
                      f"(default: {full.sigma_b2['tanh']:g})")
  args = parser.parse_args(argv)
  jax.config.update("jax_enable_x64", True)   # the product spans many decades
  config = cli.config_or_exit(parser, lambda: spectrum.Config.from_dict(flags(args)), args.out)
  print(cli.run_or_exit(parser, lambda: spectrum.run(config, args.out))["report"])


if __name__ == "__main__":
  main()
