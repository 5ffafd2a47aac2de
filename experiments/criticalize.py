"""jaxbp.criticalize beside LSUV, DKS/TAT and theory-critical init on seven deep models:
gradient flow at init, and test accuracy after training.

    python experiments/criticalize.py --quick --out out/criticalize_quick     # ~1 min
    nohup nice -n 5 python experiments/criticalize.py \\
        --out experiments/results/criticalize > criticalize.log 2>&1 &       # ~40 CPU-min

Models (no skips, no normalisation): jaxbp tanh MLPs of depth 100 from sigma_w^2
0.5 and 4, a relu MLP of depth 100, a tanh ConvNet of depth 50 (Gaussian), a flax
CNN of depth 20, an equinox MLP of depth 50, and jaxbp's RNN over T = 200 steps
(the digit's 8 rows, then blank steps). Per model and method: jaxbp.inspect's
log_slope, the spread of ln delta_sq and q's range before and after, the time to
criticalize, and the test accuracy on the 8x8 digits after a fixed training
budget, over 3 seeds. Writes ``results.csv``/``.json``, ``runs.json``,
``report.md``, ``profiles.png`` and ``accuracy.png`` to ``--out``; a rerun resumes
from ``--out/store``. Runs in float64. DKS/TAT need the ``dks`` package.
"""
import jax

from jaxbp.studies import cli
from jaxbp.studies import criticalize_study as study

FLAGS = ("models", "methods", "width", "channels", "mlp_depth", "conv_depth", "cnn_depth",
         "eqx_depth", "rnn_steps", "sigma_b2", "crit_batch", "max_iters", "tol", "steps",
         "cnn_steps", "batch_size", "learning_rate", "momentum", "clip_norm", "seeds")


def main(argv=None):
  full, quick = study.Config(), study.Config.quick()
  parser = cli.parser(__doc__)
  cli.add_preset(parser, study.Config, "three shallow, narrow models, one seed, 30 steps")
  for name in FLAGS:
    cli.flag(parser, full, name, preset=quick)
  args = parser.parse_args(argv)
  jax.config.update("jax_enable_x64", True)
  config = cli.config_or_exit(
      parser, lambda: study.Config.from_dict(cli.preset(study.Config, args, FLAGS)), args.out)
  result = cli.run_or_exit(parser, lambda: study.run(config, args.out))
  print(result["report"])


if __name__ == "__main__":
  main()
