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


def main(argv=None):
  c = conv_spectrum.Config()
  parser = cli.parser(__doc__)
  parser.add_argument("--activation", default=c.activation)
  parser.add_argument("--sigma-b2", type=float, default=c.sigma_b2)
  parser.add_argument("--inits", nargs="+", default=list(c.inits), choices=conv_spectrum.INITS)
  parser.add_argument("--depths", type=int, nargs="+", default=list(c.depths))
  for name in ("channels", "size", "ndim", "kernel_size"):
    parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(c, name))
  parser.add_argument("--seeds", type=int, nargs="+", default=list(c.seeds))
  args = parser.parse_args(argv)
  jax.config.update("jax_enable_x64", True)   # the spectra span many decades
  config = cli.config_or_exit(parser, lambda: conv_spectrum.Config(
      activation=args.activation, sigma_b2=args.sigma_b2, inits=tuple(args.inits),
      depths=tuple(args.depths), channels=args.channels, size=args.size, ndim=args.ndim,
      kernel_size=args.kernel_size, seeds=tuple(args.seeds)), args.out)
  print(conv_spectrum.run(config, args.out)["report"])


if __name__ == "__main__":
  main()
