"""Singular values of deep CNNs' input-output Jacobians by matrix-free Lanczos, against theory.

    python experiments/conv_spectrum.py --out runs/conv_spectrum        # depths 64, 256
    python experiments/conv_spectrum.py --out /tmp/cs --depths 8 --channels 8 --size 4

For critical tanh CNNs with delta-orthogonal and Gaussian kernels: every
singular value of ``d h_L / d x`` (never formed: jvp/vjp only), histograms of
log10 s, the spread Var[s^2]/E[s^2]^2 against Pennington et al. 2017, and
``report.md``; a rerun resumes from ``store/``.
"""
import jax

from jaxbp.studies import cli
from jaxbp.studies import conv_spectrum

FIELDS = ("activation", "sigma_b2", "inits", "depths", "channels", "size", "ndim",
          "kernel_size", "seeds")
HELP = {"sigma_b2": "the bias variance; the critical sigma_w^2 follows from it",
        "depths": "conv layers per net, one net per depth",
        "channels": "channels of every layer", "size": "positions per spatial axis",
        "ndim": "spatial axes", "kernel_size": "the kernels' side, odd"}


def main(argv=None):
  c = conv_spectrum.Config()
  parser = cli.parser(__doc__)
  for name in FIELDS:
    cli.flag(parser, c, name, help=HELP.get(name),
             **({"choices": conv_spectrum.INITS} if name == "inits" else {}))
  args = parser.parse_args(argv)
  jax.config.update("jax_enable_x64", True)   # the spectra span many decades
  config = cli.config_or_exit(parser, lambda: conv_spectrum.Config(**{
      k: tuple(v) if isinstance(v, list) else v for k, v in cli.given(args, FIELDS).items()}),
      args.out)
  print(cli.run_or_exit(parser, lambda: conv_spectrum.run(config, args.out))["report"])


if __name__ == "__main__":
  main()
