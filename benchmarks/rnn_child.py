"""The rnn section's child: one method's RNN value-and-grad step, timed alone in a fresh process.

    python -m benchmarks.rnn_child "hand BPTT: backprop.value_and_grad" 256 256 200 64 10 \\
        --window 3 --warmup 2

(positional: method, input_size, hidden_size, T, batch, output_size) builds one
of :data:`benchmarks.rnn.METHODS` on :func:`benchmarks.rnn.problem` and times it:

* ``first_call_s``: the first call, tracing and compiling included;
* ``warmup`` more untimed calls;
* a window of at least ``window`` seconds (and at least 3 calls), each call
  timed and waited for: median, min, max, 10th / 90th percentiles; and the
  same calls' CPU time (``time.process_time``, all of the process's threads),
  ``cpu``: what a step costs the machine, which other processes' load changes
  far less than the wall time (they take cores away; they do not add to it).

Only then, so that nothing of it runs before or during the timing, it builds
the other method and compares the two losses and gradients
(:func:`benchmarks.rnn.grad_difference`). It also reads the 1-minute load
average before and after the window. It prints one JSON object on its last line.
The section (:mod:`benchmarks.rnn`) starts it; nothing imports this module at
package import.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import time

import jax

import benchmarks.rnn as rnn_section
import benchmarks.timing as timing


def measure(method: str, s: rnn_section.Size, window: float = 3.0, warmup: int = 2,
            seed: int = 0, section=rnn_section) -> dict:
  """One method: first-call time, a timed window, then the check against the other method.

  ``section`` is the module that builds the problem (:mod:`benchmarks.rnn`, or
  :mod:`benchmarks.transformer`): its ``problem``, ``program``, ``METHODS``,
  ``step_flops`` and ``grad_difference``.
  """
  out = {"method": method, "size": s._asdict(), "pid": os.getpid()}
  rnn, params, x, y = section.problem(s, seed)
  step_fn = section.program(method, rnn)
  step = lambda: step_fn(params, x, y)
  t0 = time.perf_counter()
  loss, grads = jax.block_until_ready(step())
  out["first_call_s"] = time.perf_counter() - t0
  for _ in range(warmup):
    timing.wait(step())
  cpu = []

  def cpu_timed():
    # The same calls' CPU time (every thread of this process), waited for inside.
    c0 = time.process_time()
    res = timing.wait(step())
    cpu.append(time.process_time() - c0)
    return res

  load_before = os.getloadavg()[0]
  out.update(timing.time_window(cpu_timed, window))
  out["loadavg"] = [load_before, os.getloadavg()[0]]
  out["cpu"] = timing.summary(cpu)
  flops = section.step_flops(s)
  out.update(step_flops=flops, gflops=flops / out["median_s"] / 1e9,
             peak_rss=timing.peak_rss_bytes())
  other = next(m for m in section.METHODS if m != method)
  ref_loss, ref_grads = section.program(other, rnn)(params, x, y)
  check = section.grad_difference(grads, ref_grads)
  check["loss_rel_diff"] = abs(float(loss) - float(ref_loss)) / abs(float(ref_loss))
  out.update(loss=float(loss), check=dict(check, against=other))
  return out


def parse(argv=None) -> argparse.Namespace:
  pre = argparse.ArgumentParser(add_help=False)
  pre.add_argument("--section", default=rnn_section.__name__,
                   choices=(rnn_section.__name__, "benchmarks.transformer"))
  section = importlib.import_module(pre.parse_known_args(argv)[0].section)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[pre])
  parser.add_argument("method", choices=section.METHODS)
  for field in section.Size._fields:
    parser.add_argument(field, type=int)
  parser.add_argument("--window", type=float, default=3.0, help="seconds of timed steps")
  parser.add_argument("--warmup", type=int, default=2, help="untimed calls after the first")
  parser.add_argument("--seed", type=int, default=0)
  return parser.parse_args(argv)


def main(argv=None) -> None:
  a = parse(argv)
  section = importlib.import_module(a.section)
  size = section.Size(*(getattr(a, f) for f in section.Size._fields))
  print(json.dumps(measure(a.method, size, a.window, a.warmup, a.seed, section)), flush=True)


if __name__ == "__main__":
  main()
