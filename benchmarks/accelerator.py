"""The accelerator check: device tests, matmul peak, jit(grad) as % of peak, deep nets.

    python experiments/accelerator_check.py --out experiments/results/accelerator  # GPU, < 8 min
    python experiments/accelerator_check.py --out /tmp/acc --smoke                 # CPU, tiny sizes

Accelerator time is rare and short, so one run must bring back everything it
can. Each step runs in a process of its own with its own time box, so that a
failure, a hang or an out-of-memory in one loses none of the others; this
process never touches the device. ``results.json`` and ``results.md`` are
rewritten after every step, and a measuring step saves its finished pieces as
it goes (:mod:`benchmarks.accelerator_steps`), so a step cut off at its limit
keeps them. The steps:

1. ``tests``: the tests marked ``@pytest.mark.device`` (the hand recursion
   against ``jax.grad`` and finite differences, deltas against dL/dz, the depth
   sweep's row-stacked program against its per-configuration reference), found
   by the marker, not by path, and run on the default device. The step fails if
   a test fails, if the marker selects none, or if one of :data:`DEVICE_TESTS`
   (under ``smoke``, :data:`SMOKE_TESTS`) did not run and pass;
2. ``peak``: the float32 (default and highest precision) and bfloat16 matmul
   rates of one ``(n, n) @ (n, n)``;
3. ``jit_grad``: ``jit(grad(objective))`` of the depth-10 tanh MLP (MSE,
   float32) at widths up to 8192 and batches up to 8192, as % of the float32
   peak measured in the same process;
4. ``depth_sweep``: :func:`jaxbp.studies.depth_sweep.run` at width 4096, depth
   1000 (one critical tanh configuration, one seed, float32), or as deep as a
   quarter of the device's memory pool holds the weights (about 270 layers on an
   80 GB GPU, 480 on a 141 GB one; the results say which);
5. ``deep_net``: one gradient step of a depth-10,000 stacked tanh MLP, plain and
   with per-layer remat, with the device's peak memory.

The whole run is kept under ``budget_s`` (480 s by default): a step gets its own
limit or what is left, whichever is smaller. ``smoke`` runs every step, the
tests included (two of them), at tiny sizes on whatever device there is.
"""
from __future__ import annotations

import ast
import dataclasses
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from typing import Tuple

from jaxbp import io as _io
from jaxbp.core import checks
from jaxbp.studies import driver
import benchmarks.accelerator_steps as steps
import benchmarks.common as common

STEPS = ("tests",) + steps.MEASURED
# Seconds per step on one GPU; they add up to under the 480 s budget.
LIMITS = {"tests": 150, "peak": 40, "jit_grad": 90, "depth_sweep": 110, "deep_net": 80}
MARKER = "device"
# The tests the marker is meant to select (each must run and pass in a full check) ...
DEVICE_TESTS = ("test_hand_recursion_matches_autodiff",
                "test_hand_recursion_matches_finite_differences", "test_deltas_are_dloss_dz",
                "test_row_stacked_program_equals_measure_per_configuration")
# ... and the smoke run's tiny selection among them: -k SMOKE_K must run each of SMOKE_TESTS.
SMOKE_K = "deltas_are_dloss_dz or (row_stacked_program_equals_measure and tanh and gaussian)"
SMOKE_TESTS = ("test_deltas_are_dloss_dz",
               "test_row_stacked_program_equals_measure_per_configuration")
# The full selection (138 tests, about 80 CPU-seconds of mostly dispatch and compiles on
# a CPU) is split over this many processes sharing the device, each allocating device
# memory as it goes rather than JAX's default 75% up front.
TEST_WORKERS = 4


@dataclasses.dataclass(frozen=True)
class Config:
  """What one check runs.

  Attributes:
    smoke: tiny sizes and two tests: every step, in about a minute on a CPU.
    budget_s: seconds for the whole run; a step that would start with under 5 s
      left is recorded as skipped.
    steps: which of :data:`STEPS`, run in that order.
  """
  smoke: bool = False
  budget_s: float = 480.0
  steps: Tuple[str, ...] = STEPS

  def __post_init__(self):
    where = "accelerator Config"
    checks.boolean(self.smoke, "smoke", where)
    object.__setattr__(self, "budget_s", checks.positive(self.budget_s, "budget_s", where))
    names = (self.steps,) if isinstance(self.steps, str) else tuple(self.steps)
    for name in names:
      checks.one_of(name, STEPS, "each of steps", where)
    if not names or len(set(names)) != len(names):
      raise ValueError(f"{where}: steps must name at least one step, each once, "
                       f"from {STEPS}; got {self.steps!r}.")
    object.__setattr__(self, "steps", tuple(s for s in STEPS if s in names))


def _is_marker(node) -> bool:
  """Whether ``node`` is ``pytest.mark.<MARKER>`` (or a call of it)."""
  node = node.func if isinstance(node, ast.Call) else node
  return (isinstance(node, ast.Attribute) and node.attr == MARKER
          and ast.unparse(node.value) == "pytest.mark")


def marked_tests() -> dict:
  """``{test module: [test functions carrying the marker]}`` under ``tests/``, read from the
  source (nothing imported), with paths relative to the repository root.

  The tests step collects only these modules, wherever they have moved (the whole
  suite's collection costs more than the smoke run's two tests), and ``-m``
  selects the marked tests among them. A module-level ``pytestmark`` marks all.
  """
  found = {}
  for path in sorted((common.ROOT / "tests").rglob("test*.py")):
    tree = ast.parse(path.read_text())
    module_marked = any(
        isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
        and any(_is_marker(m) for m in ast.walk(n.value)) for n in tree.body)
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)
             and n.name.startswith("test")
             and (module_marked or any(_is_marker(d) for d in n.decorator_list))]
    if names:
      found[str(path.relative_to(common.ROOT))] = names
  return found


def tests_command(smoke: bool, junit: str, files) -> list:
  """The tests step's pytest command, run from the repository root: the smoke run's two
  tests in one process, the full selection on :data:`TEST_WORKERS` pytest-xdist workers."""
  # -v: one line per test as it finishes, so a run cut off at its limit keeps its count.
  return ([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-m", MARKER,
           "--continue-on-collection-errors", f"--junitxml={junit}"]
          + (["-k", SMOKE_K] if smoke else ["-n", str(TEST_WORKERS)]) + list(files))


def tests_outcome(junit: str, returncode: int, smoke: bool) -> dict:
  """The tests step's verdict from pytest's JUnit report: what ran, passed, failed, was missing."""
  try:
    cases = ElementTree.parse(junit).getroot().iter("testcase")
  except (OSError, ElementTree.ParseError) as e:
    return {"status": "failed", "reason": f"no JUnit report from pytest (exit {returncode}): {e}"}
  passed, failed, skipped, collection = [], [], [], []
  for case in cases:
    name = f"{case.get('classname')}::{case.get('name')}"
    kinds = {child.tag for child in case}
    if not case.get("classname"):          # a module that did not import: no test of it ran
      collection.append(case.get("name"))
    elif kinds & {"failure", "error"}:
      failed.append(name)
    elif "skipped" in kinds:
      skipped.append(name)
    else:
      passed.append(name)
  ran = {n.split("::")[-1].split("[")[0] for n in passed}
  missing = [t for t in (SMOKE_TESTS if smoke else DEVICE_TESTS) if t not in ran]
  out = {"passed": len(passed), "failed": failed, "skipped": skipped, "missing": missing,
         "collection_errors": collection, "returncode": returncode}
  if collection:
    reason = f"test module(s) did not import: {', '.join(collection)}"
  elif failed:
    reason = f"{len(failed)} test(s) failed: {', '.join(failed[:5])}"
  elif not passed:
    reason = f"no test passed: the marker '-m {MARKER}' selected none that ran"
  elif missing:
    reason = f"expected tests did not run and pass: {', '.join(missing)}"
  else:
    return dict(out, status="ok")
  return dict(out, status="failed", reason=reason)


# A verbose pytest line, "tests/x.py::test_y[id] PASSED  [ 50%]", or under pytest-xdist
# "[gw1] [ 50%] PASSED tests/x.py::test_y[id]".
_OUTCOME = "(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)"
_VERBOSE = re.compile(
    rf"^(?:(\S+::\S+) {_OUTCOME}\b|\[gw\d+\] \[\s*\d+%\] {_OUTCOME} (\S+::\S+))", re.M)


def tests_progress(log: str) -> dict:
  """What a tests step cut off at its time limit had finished, from pytest's verbose log."""
  results = {m[0] or m[3]: m[1] or m[2] for m in _VERBOSE.findall(log)}
  failed = [name for name, how in results.items() if how in ("FAILED", "ERROR")]
  return {"passed": sum(how == "PASSED" for how in results.values()), "failed": failed,
          "skipped": [name for name, how in results.items() if how == "SKIPPED"],
          "missing": [], "collection_errors": [],
          "reason": f"cut off at the time limit after {len(results)} test(s)"
                    f"{f', {len(failed)} failed' if failed else ''}"}


def _run(cmd, env, timeout: float, log: str) -> dict:
  """``cmd`` from the repository root, time-boxed, its output streamed to ``log`` (kept
  whatever happens): its return code and the output's tail, or a timeout."""
  t0 = time.perf_counter()
  with open(log, "w") as f:
    try:
      returncode = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True,
                                  cwd=common.ROOT, env=env, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
      returncode = None
  with open(log, errors="replace") as f:
    output = f.read()
  rec = {"seconds": time.perf_counter() - t0, "limit_s": timeout, "log": log,
         "output_tail": output[-3000:]}
  if returncode is None:
    return dict(rec, status="timeout", output=output)
  return dict(rec, returncode=returncode, output=output)


def _errors(tree) -> int:
  """How many pieces of a step's result record an error instead of numbers."""
  if isinstance(tree, dict):
    return int("error" in tree) + sum(_errors(v) for v in tree.values())
  if isinstance(tree, list):
    return sum(_errors(v) for v in tree)
  return 0


def launch(step: str, smoke: bool, out: str, timeout: float) -> dict:
  """One step in a fresh process, time-boxed: its outcome, whatever happens."""
  if step == "tests":
    junit = os.path.join(out, "steps", "tests.xml")
    os.makedirs(os.path.dirname(junit), exist_ok=True)
    if os.path.exists(junit):
      os.remove(junit)                    # a report left by an earlier run is not this one's
    files = list(marked_tests())
    if not files:
      return {"status": "failed", "seconds": 0.0, "reason": f"no test module under tests/ "
              f"uses @pytest.mark.{MARKER}: nothing to run"}
    env = common.child_env()
    if not smoke:
      env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    rec = _run(tests_command(smoke, junit, files), env, timeout,
               os.path.join(out, "steps", "tests.log"))
    output = rec.pop("output")
    if rec.get("status") == "timeout":
      return dict(rec, files=files, **tests_progress(output))
    return dict(rec, files=files, **tests_outcome(junit, rec["returncode"], smoke))
  path = steps.step_path(out, step)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if os.path.exists(path):
    os.remove(path)                       # a result left by an earlier run is not this one's
  env = common.child_env()
  if step == "depth_sweep":
    # Width 4096, depth 1000 is 67 GB of float32 weights: the sweep takes a larger pool
    # than JAX's default 75% of the device (and caps its depth to fit that pool).
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
  cmd = [sys.executable, "-m", "benchmarks.accelerator_steps", step, "--out", out]
  rec = _run(cmd + (["--smoke"] if smoke else []), env, timeout, path[:-len(".json")] + ".log")
  rec.pop("output")
  saved = _io.read_json(path) if os.path.exists(path) else None
  if rec.get("status") != "timeout":
    rec["status"] = "ok" if rec["returncode"] == 0 and saved and saved.get("complete") \
        else "failed"
  errors = _errors(saved)
  if rec["status"] == "ok" and errors:
    rec["status"] = f"ok but {errors} of its pieces failed"
  if saved is not None:
    rec.update(result=saved, partial=not saved.get("complete", False))
  return rec


def run(config: Config, out_dir) -> dict:
  """Runs ``config``'s steps in order, rewriting results.json and results.md after each.

  Returns:
    The results as written to ``results.json``.

  Raises:
    ValueError: ``config`` is not a :class:`Config`, or ``out_dir`` cannot be written.
  """
  if not isinstance(config, Config):
    raise ValueError(f"accelerator.run: config must be an accelerator Config, got "
                     f"{type(config).__name__}.")
  out = os.path.abspath(driver.check_out_dir(out_dir))
  where = {"json": os.path.join(out, "results.json"), "md": os.path.join(out, "results.md")}
  print(f"accelerator check: writing {where['md']} and {where['json']} after every step",
        flush=True)
  mode = "smoke" if config.smoke else "full"
  res = {"mode": mode, "budget_s": config.budget_s, "config": driver.config_dict(config),
         "sizes": steps.SIZES[mode], "steps": {}, "seconds": 0.0}
  start = time.perf_counter()
  for step in config.steps:
    left = config.budget_s - (time.perf_counter() - start)
    if left < 5:
      rec = {"status": "skipped: out of budget", "seconds": 0.0}
    else:
      rec = launch(step, config.smoke, out, min(LIMITS[step], left))
    res["steps"][step] = rec
    res["seconds"] = time.perf_counter() - start
    _io.write_json(where["json"], res)
    _io.write_text(where["md"], markdown(res))
    why = f": {rec['reason']}" if rec.get("reason") else ""
    print(f"{step}: {rec['status']}{why} ({rec['seconds']:.1f} s)", flush=True)
  print(f"accelerator check: results in {where['md']} and {where['json']}", flush=True)
  return res


def _gib(b) -> str:
  return "-" if b is None else f"{b / 2**30:.2f}"


def _error(piece: dict) -> str:
  return f"error: {piece['error'][:200]}" if "error" in piece else ""


def markdown(res: dict) -> str:
  """results.md: the steps' statuses, then one short section per step that has numbers."""
  lines = ["# Accelerator check", "", f"{res['mode']} run, {res['seconds']:.0f} s of a "
           f"{res['budget_s']:.0f} s budget.", "", "| step | status | seconds |",
           "|---|---|---:|"]
  steps_ = res["steps"]
  for step, rec in steps_.items():
    partial = " (partial)" if rec.get("partial") else ""
    lines.append(f"| {step} | {rec['status']}{partial} | {rec['seconds']:.1f} |")
  t = steps_.get("tests")
  if t and "passed" in t:
    lines += ["", f"Tests (`-m {MARKER}`): {t['passed']} passed, {len(t['failed'])} failed, "
              f"{len(t['skipped'])} skipped, in {', '.join(t.get('files', []))}."]
  p = steps_.get("peak", {}).get("result")
  if p:
    d = p["device"]
    lines += ["", f"Device: {d['platform']} {d['kind']} (x{d['count']}), jax {d['jax']}.", "",
              "| matmul | n | TFLOP/s |", "|---|---:|---:|"]
    for k in ("float32", "float32_highest", "bfloat16"):
      if k in p:
        v = p[k]
        lines.append(f"| {k} | {v.get('n', '-')} | "
                     f"{_error(v) or format(v['tflops'], '.3g')} |")
  g = steps_.get("jit_grad", {}).get("result")
  if g:
    lines += ["", f"`jit(grad)`, tanh MLP depth 10, MSE, float32; float32 peak "
              f"{g['peak_float32']['tflops']:.3g} TFLOP/s.", "",
              "| width | batch | ms/step | TFLOP/s | % of peak | first call s |",
              "|---:|---:|---:|---:|---:|---:|"]
    for r in g["rows"]:
      if "error" in r:
        lines.append(f"| {r['width']} | {r['batch']} | {_error(r)} | | | |")
        continue
      lines.append(f"| {r['width']} | {r['batch']} | {r['seconds'] * 1e3:.3g} | "
                   f"{r['tflops']:.3g} | {r['fraction_of_peak']:.0%} | {r['first_call_s']:.1f} |")
  s = steps_.get("depth_sweep", {}).get("result")
  if s and "seconds" in s:
    c = s["config"]
    if s.get("depth_asked", c["depths"][0]) != c["depths"][0]:
      lines += ["", f"Depth sweep: depth {s['depth_asked']} asked; depth {c['depths'][0]} run, "
                "whose float32 weights fill a quarter of the device's memory pool."]
    lines += ["", f"Depth sweep: width {c['width']}, depth {c['depths'][0]}: "
              f"{s['seconds']:.1f} s, device peak {_gib(s['peak_bytes_in_use'])} GiB "
              "(- where the device does not report it)."]
  n = steps_.get("deep_net", {}).get("result")
  if n:
    lines += ["", f"Depth {n['depth']}, width {n['width']}, batch {n['batch']}:", "",
              "| variant | compile s | step s | finite | XLA temp GiB | device peak GiB |",
              "|---|---:|---:|---|---:|---:|"]
    for name, v in n["variants"].items():
      if "error" in v:
        lines.append(f"| {name} | {_error(v)} | | | | |")
        continue
      lines.append(f"| {name} | {v['compile_s']:.1f} | {v['seconds']:.3g} | {v['finite']} | "
                   f"{_gib(v['xla_temp_bytes'])} | {_gib(v['peak_bytes_in_use'])} |")
  for step, rec in steps_.items():
    if rec["status"] != "ok":
      why = "\n".join(x for x in (rec.get("reason"), rec.get("output_tail")) if x)
      lines += ["", f"**{step}: {rec['status']}**", "", "```", why[-1500:].strip(), "```"]
  return "\n".join(lines) + "\n"
