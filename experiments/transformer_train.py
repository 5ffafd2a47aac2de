"""Trains deep transformers on token reversal: post-LN with and without warm-up,
pre-LN and DeepNet's post-LN, at depth 24 and 48, over seeds.

    python experiments/transformer_train.py --quick --out /tmp/tt_quick     # seconds
    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
      nice -n 5 python experiments/transformer_train.py \\
      --out experiments/results/transformer_train                           # ~40 CPU min

writes ``results.csv``/``.json`` (one row per depth and setting), ``runs.csv``/``.json``
(every run), ``curves.png`` and ``report.md`` to ``--out``; each finished run is
stored at once in ``--out/store``, so a rerun of the same command resumes.
Trains in float32 unless ``--dtype float64``.
"""
import jax

from jaxbp.studies import cli
from jaxbp.studies import transformer_train as tt

FLAGS = ("depths", "seeds", "length", "vocab", "d_model", "heads", "d_ff", "batch", "steps",
         "learning_rate", "warmup", "test_size", "tail", "curve_every", "data_seed", "dtype")


def main(argv=None):
  full, quick = tt.Config(), tt.Config.quick()
  parser = cli.parser(__doc__)
  cli.add_preset(parser, tt.Config, "depth 2 and 3, narrow, 40 steps")
  parser.add_argument("--settings", nargs="+", choices=tt.SETTINGS,
                      help="which settings to train (default: all four)")
  for name in FLAGS:
    cli.flag(parser, full, name, preset=quick,
             **({"choices": tt.DTYPES} if name == "dtype" else {}))
  args = parser.parse_args(argv)
  if args.dtype == "float64":    # never turned off here: a caller's float64 stays on
    jax.config.update("jax_enable_x64", True)

  def make():
    fields = cli.preset(tt.Config, args, FLAGS + ("settings",))
    return tt.Config.from_dict({k: tuple(v) if isinstance(v, list) else v
                                for k, v in fields.items()})

  config = cli.config_or_exit(parser, make, args.out)
  cli.run_or_exit(parser, lambda: tt.run(config, args.out))
  print(open(f"{args.out}/report.md").read())


if __name__ == "__main__":
  main()
