"""Speed, compile time and memory of jaxbp's gradients, beside PyTorch and NumPy.

The benchmark harness sits beside the package, not in it (as jax's and flax's
own ``benchmarks/`` do): it imports torch, flax and equinox, which jaxbp does
not need, and the wheel (``include = ["jaxbp*"]``) leaves it out. From the
repository root::

    python experiments/benchmark.py --out runs/benchmark          # the full run
    python experiments/benchmark.py --out /tmp/bench --quick      # tiny sizes, < 60 s
    python experiments/benchmark.py --out /tmp/rnn --sections rnn \\
        --merge-into experiments/results/benchmark    # one section, added to the committed run

or, in Python with the root on ``sys.path``::

    import benchmarks
    benchmarks.run(benchmarks.Config(), "runs/benchmark")
    benchmarks.run(benchmarks.quick(), "/tmp/bench")

writes ``results.json`` (every number), ``results.md`` (the tables, with the
machine: CPU, cores, jax / jaxlib / torch / numpy versions, device) and
``config.json``. One run measures, on the same shapes and data:

1. throughput, each method in its own process (:mod:`.processes`, section
   "processes"): one gradient step of tanh MLPs with MSE (widths 64, 256, 1024;
   depth 10; batch 128 and 1024; float32) by jaxbp's ``jit(grad(objective))``
   and hand recursion, flax.linen, equinox, raw JAX, a NumPy backprop, PyTorch
   eager (default threads; one thread as a labelled extra row) and
   torch.compile, each point a fresh ``python -m benchmarks.child``
   with the user's environment, which also times a jitted matmul, the ceiling.
   Rounds alternate the methods; medians and min-max over rounds, ratios of
   medians, first-call (compile) times apart. A step is ``6 * batch * sum(in *
   out)`` flops.
   "profile" (:mod:`.profile`): where a width-64 step's time goes (dispatch,
   matmuls, elementwise). "throughput" (:mod:`.throughput`, not run by
   default): the same methods timed interleaved in one process, where they
   contend for the cores.
2. compile time against depth (:mod:`.compile_time`; 10, 100, 1000): unrolled
   (``stack=False``), ``lax.scan`` (``stack=True``) and scan with ``remat=True``.
3. peak memory against depth (:mod:`.memory`; width 1024, batch 256): plain,
   per-layer remat, block remat and the hand recursion, each in a fresh
   subprocess (resident-set high-water mark over one step, minus the same
   process's resident set just before it), beside XLA's own accounting.
4. the depth sweep's grid (:mod:`.sweep_grid`; its ``measure`` over seeds x
   sigma_w^2 x sigma_b^2): one compiled program against a Python loop of jitted
   calls and the same loop in PyTorch; also on small nets, where dispatch dominates.
5. per-example gradients at batch 256 (:mod:`.per_example`): ``vmap(grad)``
   against a Python loop and ``backprop.per_example_grads``.
6. the RNN (:mod:`.rnn`, section "rnn"; hidden 256, T 200, batch 64): the hand
   BPTT of ``backprop.value_and_grad`` against ``jax.value_and_grad`` of the
   same loss written as a plain ``lax.scan`` loop, each in its own process in
   alternating rounds, their gradients compared.
7. the transformer (:mod:`.transformer`, section "transformer"; d_model 256,
   heads 4, T 128, depth 12, batch 16): the hand backward against
   ``jax.value_and_grad`` of the same objective, the same way, plus XLA's
   memory accounting of both programs.

Each target of issues #6, #15, #20 and #21 is reported as met or missed with its measured ratio
(:mod:`.report`). Timings on a shared machine are noisy: read the ratios and
their spread, not the absolute times.

The baselines run as their users get them: importing this package sets no
environment variable, thread count or JAX option.
"""
from benchmarks.config import DEFAULT_SECTIONS
from benchmarks.config import SECTIONS
from benchmarks.config import Config
from benchmarks.config import Grid
from benchmarks.config import quick
from benchmarks.merge import merge_into
from benchmarks.study import run

__all__ = ("DEFAULT_SECTIONS", "SECTIONS", "Config", "Grid", "merge_into", "quick", "run")
