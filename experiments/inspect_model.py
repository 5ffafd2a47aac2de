"""jaxbp.inspect on a ready-made example model: per-layer q and delta_sq, theory beside them.

    python experiments/inspect_model.py --model {mlp,scan_mlp,flax_cnn,eqx_resnet} --out DIR

writes ``report.md`` (the per-layer table), ``profile.png`` (ln delta_sq and q
against layer, mean-field theory dashed where it applies), ``layers.csv``,
``layers.json``, ``config.json`` and ``provenance.json``. Needs flax and equinox
(``pip install 'jaxbp[inspect]'``).
"""
import json

import jax

from jaxbp.studies import cli
from jaxbp.studies import inspect_model


def main(argv=None):
  c = inspect_model.Config()
  parser = cli.parser(__doc__)
  parser.add_argument("--model", default=c.model, choices=inspect_model.MODELS)
  parser.add_argument("--width", type=int, default=c.width)
  parser.add_argument("--depth", type=int, default=c.depth)
  parser.add_argument("--batch", type=int, default=c.batch)
  parser.add_argument("--seed", type=int, default=c.seed)
  args = parser.parse_args(argv)
  jax.config.update("jax_enable_x64", True)
  config = cli.config_or_exit(parser, lambda: inspect_model.Config(
      model=args.model, width=args.width, depth=args.depth, batch=args.batch, seed=args.seed),
      args.out)
  print(json.dumps(inspect_model.run(config, args.out), indent=1))


if __name__ == "__main__":
  main()
