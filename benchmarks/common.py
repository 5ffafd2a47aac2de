"""What every section shares: the benchmark's nets and data, error checks, HLO op counts,
and the environment of the child processes."""
from __future__ import annotations

import os
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.core.nets import MLP, Dense

F32 = jnp.float32
# The checkout that holds ``benchmarks/`` (and ``jaxbp/``): the benchmark lives
# outside the installed package, so a child process finds it only from here.
ROOT = pathlib.Path(__file__).resolve().parents[1]


def child_env() -> dict:
  """The user's environment for a child process, with :data:`ROOT` first on ``PYTHONPATH``.

  ``python -m benchmarks.child`` then imports ``benchmarks`` (and ``jaxbp``) from
  this checkout from any working directory, even when jaxbp is not installed;
  nothing else of the environment is changed (thread counts stay the user's).
  """
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
  return env


def net(width: int, depth: int, **kwargs) -> MLP:
  """A tanh MLP with ``depth`` hidden layers and in = width = out.

  Every layer is a width x width matmul, so the flop count is
  ``(depth + 1) * width^2`` per example and the matmul-ceiling comparison is
  clean. ``kwargs`` go to :meth:`MLP.uniform` (``stack``, ``remat``).
  """
  return MLP.uniform(width, width, depth, width, activation="tanh", **kwargs)


def data(key, batch: int, width: int):
  """Standard-normal float32 inputs and targets, ``(batch, width)`` each."""
  kx, ky = jax.random.split(key)
  return (jax.random.normal(kx, (batch, width), F32), jax.random.normal(ky, (batch, width), F32))


def stacked(params):
  """Unstacked ``Dense`` per layer -> (first, stacked hidden, last), the ``stack=True`` layout."""
  hidden = params[1:-1]
  return (params[0], Dense(jnp.stack([p.W for p in hidden]), jnp.stack([p.b for p in hidden])),
          params[-1])


def max_rel_err(ref, other) -> float:
  """max |a - b| / max |a| over all leaves (both lists of arrays in the same order)."""
  a = [np.asarray(v, np.float64) for v in ref]
  b = [np.asarray(v, np.float64) for v in other]
  if [x.shape for x in a] != [x.shape for x in b]:
    raise ValueError(f"max_rel_err: shapes differ: {[x.shape for x in a]} vs "
                     f"{[x.shape for x in b]}")
  scale = max(float(np.max(np.abs(x))) for x in a)
  return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b)) / scale


# "%name = f32[8,4]{1,0} dot(...": the op follows the shape (which may be a tuple).
_HLO_OP = re.compile(r" = (?:\(.*?\)|\S+) ([a-z][\w-]*)\(")


def hlo_summary(compiled) -> dict:
  """Where the matmuls of an optimised CPU HLO module go, and what else it copies.

  XLA:CPU hands a dot to YNNPACK (a ``__ynn_fusion``) when it can; the others run
  in XLA's own dot emitter. Copies and transposes are memory traffic that a
  fused program would not need.
  """
  text = compiled.as_text()
  ynn, current = set(), None
  for line in text.splitlines():
    if "__ynn_fusion" in line and "calls=%" in line:
      ynn.add(line.split("calls=%", 1)[1].split(",", 1)[0].split(" ", 1)[0])
  counts = {"dots": 0, "dots_in_ynnpack": 0, "dots_in_xla": 0, "transposed_lhs_dots_in_xla": 0,
            "copies": 0, "transposes": 0, "while_loops": 0}
  for line in text.splitlines():
    stripped = line.strip()
    if stripped.endswith("{") and stripped.startswith(("%", "ENTRY")) and " = " not in stripped:
      current = ("ENTRY" if stripped.startswith("ENTRY")
                 else stripped.split(" ", 1)[0].lstrip("%"))
      continue
    m = _HLO_OP.search(stripped)
    if m is None:
      continue
    op = m.group(1)
    if op == "dot":
      counts["dots"] += 1
      if current in ynn:
        counts["dots_in_ynnpack"] += 1
      else:
        counts["dots_in_xla"] += 1
        # h^T @ delta: the LHS contracts its leading (batch) dimension, not its last
        # (rank 2: dim 0; rank 3 under vmap: dim 1 after the vmapped dim 0).
        if (("lhs_batch_dims" not in stripped and "lhs_contracting_dims={0}" in stripped)
            or "lhs_batch_dims={0}, lhs_contracting_dims={1}," in stripped):
          counts["transposed_lhs_dots_in_xla"] += 1
    elif op == "copy" or (op == "fusion" and "copy" in stripped.split(" = ", 1)[0]):
      counts["copies"] += 1
    elif op == "transpose":
      counts["transposes"] += 1
    elif op == "while":
      counts["while_loops"] += 1
  return counts
