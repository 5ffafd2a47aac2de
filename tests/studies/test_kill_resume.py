"""A sweep killed with SIGKILL mid-run and restarted loses nothing and recomputes only
what was unfinished; its final results equal an uninterrupted run's bit for bit."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

from jaxbp import io as results
from jaxbp.studies import depth_sweep as sweep

ROOT = pathlib.Path(__file__).resolve().parents[2]

CONFIG = dict(activations=("tanh", "relu"), inits=("gaussian", "he", "critical"),
              sigma_w2=(1.0, 2.5), sigma_b2=(0.0, 0.05), depths=(8,), width=16, batch=4,
              seeds=(0, 1), skip=2)

# The child is the real sweep; it only slows down between saves (a sleep before
# each), so that the parent's SIGKILL lands in the middle of the run.
_CHILD = textwrap.dedent("""
    import json, sys, time
    import jax
    jax.config.update("jax_enable_x64", True)
    from jaxbp import io as results
    from jaxbp.studies import depth_sweep as sweep
    real_save = results.ResultStore.save
    def slow_save(self, key, record):
      time.sleep(0.15)
      real_save(self, key, record)
    results.ResultStore.save = slow_save
    sweep.run(json.loads(sys.argv[1]), sys.argv[2], figures=False)
""")


def _finished(store):
  return [n for n in os.listdir(store) if n.endswith(".json") and not n.startswith(".")] \
      if os.path.isdir(store) else []


def test_sigkill_then_restart_equals_an_uninterrupted_run(tmp_path):
  killed = tmp_path / "killed"
  store = killed / "store"
  proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(CONFIG), str(killed)],
                          cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + 240
  try:
    while len(_finished(store)) < 3:
      assert proc.poll() is None, "the sweep ended before it could be killed: " + \
          proc.stderr.read().decode()[-2000:]
      assert time.time() < deadline, "the sweep saved nothing within 240 s"
      time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.kill()
    proc.wait()
  assert proc.returncode == -signal.SIGKILL
  on_disk = len(_finished(store))
  assert not (killed / "results.json").exists()       # it really died mid-run
  for name in _finished(store):                       # every file there is whole
    assert results.read_json(store / name)["sha256"]

  resumed = sweep.run(CONFIG, str(killed), figures=False)
  whole = sweep.run(CONFIG, str(tmp_path / "whole"), figures=False)
  assert 0 < on_disk < whole["computed"]
  assert resumed["computed"] == whole["computed"] - on_disk    # only the unfinished ones
  a = results.read_json(killed / "results.json")
  b = results.read_json(tmp_path / "whole" / "results.json")
  assert a["rows"] == b["rows"] and a["profiles"] == b["profiles"]   # bit for bit (JSON repr)


def test_a_damaged_result_is_recomputed_with_a_warning(tmp_path):
  import pytest
  small = dict(CONFIG, activations=("relu",), inits=("he", "gaussian"), sigma_w2=(1.0,),
               sigma_b2=(0.0,))
  first = sweep.run(small, str(tmp_path), figures=False)
  rows = results.read_json(tmp_path / "results.json")["rows"]
  victim = tmp_path / "store" / sorted(_finished(tmp_path / "store"))[0]
  victim.write_text(victim.read_text()[:-40])           # truncated
  with pytest.warns(RuntimeWarning, match="damaged"):
    again = sweep.run(small, str(tmp_path), figures=False)
  assert first["computed"] >= 2 and again["computed"] == 1
  assert results.read_json(tmp_path / "results.json")["rows"] == rows
