"""Signal propagation through transformers at init: q, rho, rank collapse and gradient norms against theory.

    python experiments/transformer_sweep.py --quick --out out/transformer_sweep_quick   # ~1 min
    python experiments/transformer_sweep.py --out experiments/results/transformer_sweep

(a) q_l and the mean token cosine rho_l through depth 64 for pre/post/none-LN,
residual scale 1 and 1/sqrt(L), skip scales, qk_scale 0 and default, beside the
kernel recursion of jaxbp.theory.attention; (b) Dong's rank collapse of pure
attention; (c) the per-block gradient norm of pre- and post-LN (Xiong); (d) the
query and key gradients as the tokens align (Noci). Writes tables, figures and
``report.md`` to ``--out``; a rerun resumes from ``--out/store``. Runs in float64.
"""
import jax

from jaxbp.studies import cli
from jaxbp.studies import transformer_sweep

FLAGS = ("d_model", "heads", "d_ff", "tokens", "depth", "seeds", "batch", "q0", "rho0", "norms",
         "skip_scales", "rank_depth", "grad_depths", "noci_rhos", "noci_depth", "samples",
         "parts", "seed")


def main(argv=None):
  full, quick = transformer_sweep.Config(), transformer_sweep.Config.quick()
  parser = cli.parser(__doc__)
  cli.add_preset(parser, transformer_sweep.Config, "narrow, short and shallow")
  for name in FLAGS:
    cli.flag(parser, full, name, preset=quick)
  args = parser.parse_args(argv)
  jax.config.update("jax_enable_x64", True)
  config = cli.config_or_exit(parser, lambda: transformer_sweep.Config.from_dict(
      cli.preset(transformer_sweep.Config, args, FLAGS)), args.out)
  result = cli.run_or_exit(parser, lambda: transformer_sweep.run(config, args.out))
  print(result["report"])


if __name__ == "__main__":
  main()
