"""Backpropagation through time in Elman RNNs: the per-step slope of ln ||delta_t||^2 against theory.

    python experiments/rnn_sweep.py --quick --out out/rnn_sweep_quick     # seconds
    python experiments/rnn_sweep.py --out experiments/results/rnn_sweep    # ~5 min on 2 CPU cores

Per point (tanh and relu: ordered, critical, chaotic; tanh also driven hard by its
input) and seed, an RNN of width 256 over T = 500 steps; ln ||delta_t||^2 from the
hand BPTT, its slope going back in time fitted after the burn-in of q_t, beside
ln chi_1(q*), the layerwise and the finite-width predictions
(jaxbp.theory.recurrent), and beside an untied control (a fresh W every step).
Writes ``results.csv``/``.json``, ``profiles.json``, ``profiles.png``,
``slopes.png`` and ``report.md`` to ``--out``; a rerun resumes from ``--out/store``.
Runs in float64.
"""
import jax

from jaxbp.studies import cli
from jaxbp.studies import rnn_sweep

FLAGS = ("sigma_b2", "q_x", "width", "input_size", "steps", "batch", "seeds", "skip", "seed")


def main(argv=None):
  full, quick = rnn_sweep.Config(), rnn_sweep.Config.quick()
  parser = cli.parser(__doc__)
  cli.add_preset(parser, rnn_sweep.Config, "two points, short and narrow")
  for name in FLAGS:
    cli.flag(parser, full, name, preset=quick)
  args = parser.parse_args(argv)
  jax.config.update("jax_enable_x64", True)
  config = cli.config_or_exit(
      parser, lambda: rnn_sweep.Config.from_dict(cli.preset(rnn_sweep.Config, args, FLAGS)),
      args.out)
  result = cli.run_or_exit(parser, lambda: rnn_sweep.run(config, args.out))
  print(result["report"])


if __name__ == "__main__":
  main()
