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

# The real script, paused before its (n+1)-th save until a signal ends it, so that
# the signal lands mid-run however slow the machine: the pause writes a marker
# file the test waits for, rather than the test racing a timed delay.
_CHILD = textwrap.dedent("""
    import pathlib, runpy, signal, sys, time
    # Ctrl-C in a terminal; a background job would have inherited SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from jaxbp.io import files
    real_save, pause_after, marker = files.ResultStore.save, int(sys.argv[1]), sys.argv[2]
    saved = []
    def paused_save(self, key, record):
      if len(saved) == pause_after:
        pathlib.Path(marker).write_text(str(len(saved)))
        time.sleep(3600)                 # until the test's signal interrupts it
      real_save(self, key, record)
      saved.append(key)
    files.ResultStore.save = paused_save
    sys.argv = ["depth_sweep.py"] + sys.argv[3:]
    runpy.run_path("experiments/depth_sweep.py", run_name="__main__")
""")


def _finished(out):
  store = out / "store"
  return sorted(n for n in os.listdir(store) if n.endswith(".json") and not n.startswith(".")) \
      if store.is_dir() else []


def _spawn(out, pause_after):
  """The sweep on ``out``, paused before save ``pause_after + 1``; returns (process, marker)."""
  marker = out.parent / f"{out.name}.paused"
  proc = subprocess.Popen(
      [sys.executable, "-c", _CHILD, str(pause_after), str(marker), "--out", str(out), *FLAGS],
      cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)
  return proc, marker


def _wait_for_pause(proc, marker, seconds=300):
  # A generous bound for a loaded machine (start-up and compile take seconds):
  # it only limits how long a broken run can hang the suite.
  deadline = time.time() + seconds
  while not marker.exists():
    if proc.poll() is not None:
      raise AssertionError("the sweep ended before its pause: " + proc.stderr.read()[-2000:])
    assert time.time() < deadline, f"the sweep did not reach its pause within {seconds} s"
    time.sleep(0.01)


@pytest.mark.parametrize("sig", (signal.SIGTERM, signal.SIGINT), ids=("SIGTERM", "SIGINT"))
def test_a_signal_keeps_finished_configurations_and_a_rerun_resumes(tmp_path, sig):
  out = tmp_path / "o"
  proc, marker = _spawn(out, pause_after=2)
  try:
    _wait_for_pause(proc, marker)
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
  assert len(kept) == 2                     # the two saved before the pause, no more
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
  first, marker = _spawn(out, pause_after=1)   # holds the lock, paused mid-run
  try:
    _wait_for_pause(first, marker)
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
  assert len(kept) == 1
  for name in kept:
    assert results.read_json(out / "store" / name)["sha256"]
  assert sweep.run(CONFIG, str(out), figures=False)["computed"] == TOTAL - len(kept)
