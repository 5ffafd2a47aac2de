"""Trains an MLP on scikit-learn's 8x8 digits with mini-batch SGD + momentum.

    python experiments/train_digits.py --out runs/digits [--tensorboard]

writes ``config.json``, ``provenance.json``, ``history.csv``/``.json``,
``curves.png``, ``summary.json`` (test accuracy, seconds), ``report.md`` and,
with ``--tensorboard``, TensorBoard event files.
"""
import json

import jax

from jaxbp.studies import cli
from jaxbp.studies import train_digits
from jaxbp.train import data
from jaxbp.train import training

FLAGS = ("dataset", "sizes", "activation", "optimizer", "learning_rate", "momentum",
         "batch_size", "epochs", "seed", "grad_method", "tensorboard")
HELP = {"activation": "the hidden layers' activation (a name in jaxbp.activations)",
        "optimizer": "the optimizer (jaxbp.training.optimizer)",
        "learning_rate": "the optimizer's step size", "momentum": "the optimizer's momentum",
        "batch_size": "examples per step"}
CHOICES = {"dataset": data.DATASETS, "optimizer": training.OPTIMIZERS,
           "grad_method": training.GRAD_METHODS}


def main(argv=None):
  c = train_digits.Config()
  parser = cli.parser(__doc__)
  for name in FLAGS:
    cli.flag(parser, c, name, help=HELP.get(name),
             **({"choices": CHOICES[name]} if name in CHOICES else {}))
  parser.add_argument("--float32", action="store_true", help="run in float32, not float64")
  args = parser.parse_args(argv)
  jax.config.update("jax_enable_x64", not args.float32)
  config = cli.config_or_exit(parser, lambda: train_digits.Config(
      name=args.dataset, **{k: getattr(args, k) for k in FLAGS}), args.out)
  print(json.dumps(cli.run_or_exit(parser, lambda: train_digits.run(config, args.out)),
                   indent=1))


if __name__ == "__main__":
  main()
