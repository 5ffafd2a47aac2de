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

FIELDS = ("model", "width", "depth", "batch", "seed")


def main(argv=None):
  c = inspect_model.Config()
  parser = cli.parser(__doc__)
  cli.flag(parser, c, "model", choices=inspect_model.MODELS, help="the example model")
  for name in FIELDS[1:]:
    cli.flag(parser, c, name)
  args = parser.parse_args(argv)
  jax.config.update("jax_enable_x64", True)
  config = cli.config_or_exit(
      parser, lambda: inspect_model.Config(**{k: getattr(args, k) for k in FIELDS}), args.out)
  print(json.dumps(cli.run_or_exit(parser, lambda: inspect_model.run(config, args.out)),
                   indent=1))


if __name__ == "__main__":
  main()
