"""The depth sweep's script as a real process: SIGTERM and SIGINT mid-run keep every
finished configuration, leave no partial file and exit non-zero, and a rerun
resumes; a second process on the same --out refuses, naming the first."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from jaxbp import io as results
from jaxbp.studies import depth_sweep as sweep

ROOT = pathlib.Path(__file__).resolve().parents[1]

FLAGS = ["--activations", "relu", "--inits", "gaussian", "he", "--sigma-w2", "1.0", "2.5",
         "--sigma-b2", "0.0", "0.05", "--depths", "6", "--width", "8", "--batch", "2",
         "--seeds", "0", "--skip", "1"]
# The same config as the flags give, for an in-process resume.
CONFIG = dict(sweep.FULL.to_dict(), activations=("relu",), inits=("gaussian", "he"),
              sigma_w2=(1.0, 2.5), sigma_b2=(0.0, 0.05), depths=(6,), width=8, batch=2,
              seeds=(0,), skip=1)
TOTAL = 2 * 2 + 1     # 2 sigma_w2 x 2 sigma_b2, and he: one compiled program

# The real script, slowed down before each save so that a signal lands mid-run.
_CHILD = textwrap.dedent("""
    import runpy, signal, sys, time
    # Ctrl-C in a terminal; a background job would have inherited SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from jaxbp.io import files
    real_save, delay = files.ResultStore.save, float(sys.argv[1])
    def slow_save(self, key, record):
      time.sleep(delay)
      real_save(self, key, record)
    files.ResultStore.save = slow_save
    sys.argv = ["depth_sweep.py"] + sys.argv[2:]
    runpy.run_path("experiments/depth_sweep.py", run_name="__main__")
""")


def _finished(out):
  store = out / "store"
  return sorted(n for n in os.listdir(store) if n.endswith(".json") and not n.startswith(".")) \
      if store.is_dir() else []


def _spawn(out, delay=0.3):
  return subprocess.Popen(
      [sys.executable, "-c", _CHILD, str(delay), "--out", str(out), *FLAGS], cwd=ROOT,
      env=dict(os.environ, JAX_PLATFORMS="cpu"), stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)


def _wait_for(proc, out, n, seconds=240):
  deadline = time.time() + seconds
  while len(_finished(out)) < n:
    if proc.poll() is not None:
      raise AssertionError("the sweep ended early: " + proc.stderr.read()[-2000:])
    assert time.time() < deadline, f"fewer than {n} saves within {seconds} s"
    time.sleep(0.01)


@pytest.mark.parametrize("sig", (signal.SIGTERM, signal.SIGINT), ids=("SIGTERM", "SIGINT"))
def test_a_signal_keeps_finished_configurations_and_a_rerun_resumes(tmp_path, sig):
  out = tmp_path / "o"
  proc = _spawn(out)
  try:
    _wait_for(proc, out, 2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
  finally:
    proc.kill()
    proc.wait()
  assert proc.returncode == 128 + sig, err
  last = err.strip().splitlines()[-1]
  assert "Traceback" not in err
  assert f"interrupted by {signal.Signals(sig).name}" in last and "rerun the same command" in last
  kept = _finished(out)
  assert 2 <= len(kept) < TOTAL
  assert not [n for d, _, ns in os.walk(out) for n in ns if n.endswith(".tmp")]
  assert not (out / "store" / ".lock").exists()           # released on the way out
  assert not (out / "results.json").exists()
  for name in kept:
    assert results.read_json(out / "store" / name)["sha256"]

  resumed = sweep.run(CONFIG, str(out), figures=False)
  assert resumed["computed"] == TOTAL - len(kept)
  assert resumed["configurations"] == TOTAL


def test_a_second_process_on_the_same_out_refuses_naming_the_first(tmp_path):
  out = tmp_path / "o"
  first = _spawn(out, delay=60)      # holds the lock while computing: a minute a record
  try:
    deadline = time.time() + 240
    while not (out / "store" / ".lock").exists():
      assert first.poll() is None and time.time() < deadline, "the first run never started"
      time.sleep(0.01)
    holder = json.loads((out / "store" / ".lock").read_text())
    assert holder["pid"] == first.pid
    second = subprocess.run(
        [sys.executable, "experiments/depth_sweep.py", "--out", str(out), *FLAGS], cwd=ROOT,
        env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=120)
    assert first.poll() is None, "the first run must still be running"
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
  finally:
    first.kill()
    first.wait()
  assert second.returncode == 2 and "Traceback" not in second.stderr
  line = second.stderr.strip().splitlines()[-1]
  assert f"in use by pid {first.pid} on host {holder['host']}" in line
  assert "depth_sweep.py" in line                      # the holder's command
  # Every stored file is intact, and the rerun computes exactly the rest: none twice.
  kept = _finished(out)
  for name in kept:
    assert results.read_json(out / "store" / name)["sha256"]
  assert sweep.run(CONFIG, str(out), figures=False)["computed"] == TOTAL - len(kept)
