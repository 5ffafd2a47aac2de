"""Section "monitor": what recording gradient flow during training costs.

The benchmark's tanh MLP (float32, MSE, SGD with momentum) at ``monitor_width``
x ``monitor_batch``, timed interleaved in one process (one framework, so they
share nothing but the clock):

* *plain step*: ``jit`` of ``jax.grad`` + ``tx.update`` + ``apply_updates``;
* *monitored step*: :func:`jaxbp.monitor`'s step, which also returns the
  per-layer report (its update's gradient is the report's backward pass);
* *fit*: ``training.fit`` over ``monitor_fit_steps`` steps, plain, with
  ``monitor=True`` (every step) and ``monitor=10``; per step.

The overhead is (monitored - plain) / plain, per pair.
"""
from __future__ import annotations

import functools

import jax
import optax

from jaxbp.core.nets import objective
from jaxbp.measure.monitor import monitor
from jaxbp.train import training
import benchmarks.methods as methods
import benchmarks.timing as timing
from benchmarks.config import Config

PAIRS = (("monitored step", "plain step"),
         ("fit, monitor=True (per step)", "fit (per step)"),
         ("fit, monitor=10 (per step)", "fit (per step)"))


def programs(config: Config):
  """name -> zero-argument function, and the number of steps one call makes."""
  net, params, x, y = methods.problem(config.monitor_width, config.monitor_batch, config.depth,
                                      config.seed)
  tx = optax.sgd(0.01, momentum=0.9)
  loss_fn = objective(net, "mse")
  state = tx.init(params)

  @jax.jit
  def plain(params, state, x, y):
    grads = jax.grad(loss_fn)(params, x, y)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  monitored = monitor(loss_fn, tx)
  T = config.monitor_fit_steps
  fit = lambda every: functools.partial(training.fit, net, "mse", params, x, y, tx, steps=T,
                                        monitor=every)
  fns = {"plain step": (functools.partial(plain, params, state, x, y), 1),
         "monitored step": (functools.partial(monitored, params, state, x, y), 1),
         "fit (per step)": (fit(False), T), "fit, monitor=True (per step)": (fit(True), T),
         "fit, monitor=10 (per step)": (fit(10 if T % 10 == 0 else 1), T)}
  return net, fns


def monitor_overhead(config: Config) -> dict:
  """The section: per-step times and each pair's overhead."""
  net, fns = programs(config)
  times = timing.time_interleaved({k: f for k, (f, _) in fns.items()}, config.repeats,
                                  config.warmup, config.min_time)
  per_step = {k: {s: v / fns[k][1] if s.endswith("_s") else v for s, v in t.items()}
              for k, t in times.items()}
  overhead = {f"{a} vs {b}": per_step[a]["median_s"] / per_step[b]["median_s"] - 1
              for a, b in PAIRS}
  return {"width": config.monitor_width, "batch": config.monitor_batch, "depth": config.depth,
          "layers": len(net.sizes) - 1, "fit_steps": config.monitor_fit_steps,
          "times": per_step, "overhead": overhead}


def monitor_md(sec: dict) -> list:
  """The section's table for results.md."""
  lines = [f"## 1c. Monitoring overhead (width {sec['width']}, batch {sec['batch']}, depth "
           f"{sec['depth']}, float32)", "",
           "One process, programs timed interleaved: a plain optax step (`jit` of grad + "
           "update), `jaxbp.monitor`'s step (the same update plus the per-layer report from "
           "the same backward pass), and `training.fit` over "
           f"{sec['fit_steps']} steps without and with `monitor`, per step.", "",
           "| program | ms per step (median) | min | max |", "|---|---:|---:|---:|"]
  for name, t in sec["times"].items():
    lines.append(f"| {name} | {t['median_s'] * 1e3:.4g} | {t['min_s'] * 1e3:.4g} | "
                 f"{t['max_s'] * 1e3:.4g} |")
  lines += ["", "| monitored vs plain | overhead |", "|---|---:|"]
  lines += [f"| {k} | {v:+.1%} |" for k, v in sec["overhead"].items()]
  return lines + [""]
