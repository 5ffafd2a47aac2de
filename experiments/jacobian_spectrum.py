"""Singular values of the input-output Jacobian across depth (Saxe et al. 2014;
Pennington et al. 2017), against the free-probability prediction.

    python experiments/jacobian_spectrum.py --out out/jacobian_spectrum [--quick]

For tanh at criticality (small sigma_b2) and ReLU with He init, each with
Gaussian and orthogonal weights: histograms of log10 s per depth, the mean and
variance of s^2 against chi_1^L and L (mu_2/mu_1^2 - 1 - s_1), ``report.md``,
``spread.json``/``.csv`` and ``config.json``. ``--quick``: width 128, depths
1, 4, 16, 32, 3 networks per setting.
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
  parser = cli.parser(__doc__)
  parser.add_argument("--quick", action="store_true", help="the small grid (see above)")
  parser.add_argument("--config", help="a .json or .toml file of config overrides")
  parser.add_argument("--width", type=int)
  parser.add_argument("--depths", type=int, nargs="+")
  parser.add_argument("--activations", nargs="+")
  parser.add_argument("--weights", nargs="+", choices=spectrum.WEIGHTS)
  parser.add_argument("--tanh-sigma-b2", type=float, help="tanh's bias variance (its q*)")
  parser.add_argument("--seeds", type=int, help="networks per setting")
  parser.add_argument("--seed", type=int)
  args = parser.parse_args(argv)
  jax.config.update("jax_enable_x64", True)   # the product spans many decades
  config = cli.config_or_exit(parser, lambda: spectrum.Config.from_dict(flags(args)), args.out)
  print(spectrum.run(config, args.out)["report"])


if __name__ == "__main__":
  main()
