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


def main(argv=None):
  c = train_digits.Config()
  parser = cli.parser(__doc__)
  parser.add_argument("--dataset", default=c.dataset, choices=data.DATASETS)
  parser.add_argument("--sizes", type=int, nargs="+", default=list(c.sizes))
  parser.add_argument("--activation", default=c.activation)
  parser.add_argument("--optimizer", default=c.optimizer, choices=training.OPTIMIZERS)
  parser.add_argument("--learning-rate", type=float, default=c.learning_rate)
  parser.add_argument("--momentum", type=float, default=c.momentum)
  parser.add_argument("--batch-size", type=int, default=c.batch_size)
  parser.add_argument("--epochs", type=int, default=c.epochs)
  parser.add_argument("--seed", type=int, default=c.seed)
  parser.add_argument("--grad-method", default=c.grad_method, choices=training.GRAD_METHODS)
  parser.add_argument("--tensorboard", action="store_true")
  parser.add_argument("--float32", action="store_true", help="run in float32, not float64")
  args = parser.parse_args(argv)
  jax.config.update("jax_enable_x64", not args.float32)
  config = cli.config_or_exit(parser, lambda: train_digits.Config(
      name=args.dataset, **{k: getattr(args, k) for k in FLAGS}), args.out)
  print(json.dumps(train_digits.run(config, args.out), indent=1))


if __name__ == "__main__":
  main()
