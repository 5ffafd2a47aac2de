"""Studies across processes: two CPU processes on JAX's multi-process runtime
(coordinator on localhost) against one process, results.csv bit for bit; the
work split and the flags' errors."""
import os
import pathlib
import socket
import subprocess
import sys

import pytest

from jaxbp.studies import multihost

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "depth_sweep.py"
# Two depths x two sigma_w^2: two depth units, one per process.
TINY = ["--activations", "tanh", "--depths", "3", "6", "--width", "12",
        "--batch", "4", "--seeds", "0", "1", "--sigma-w2", "1.0", "2.0", "--sigma-b2", "0.0",
        "--skip", "1", "--inits", "gaussian", "--no-figures"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env():
  env = dict(os.environ)
  env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
  return env


def test_two_processes_write_the_one_process_results_bit_for_bit(tmp_path):
  one, two = tmp_path / "one", tmp_path / "two"
  single = subprocess.run([sys.executable, str(SCRIPT), "--out", str(one)] + TINY,
                          capture_output=True, text=True, env=_env(), timeout=300)
  assert single.returncode == 0, single.stderr[-2000:]
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, str(SCRIPT), "--out", str(two)] + TINY
                            + ["--coordinator", f"localhost:{port}", "--num-processes", "2",
                               "--process-id", str(i)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())
           for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
  assert (two / "results.csv").read_bytes() == (one / "results.csv").read_bytes()
  # Both processes computed a share, and process 0's store holds every configuration.
  assert '"computed": 0' not in outs[1][0], outs[1][0]
  stored = sorted(p.name for p in (two / "store").glob("*.json"))
  assert stored == sorted(p.name for p in (one / "store").glob("*.json"))
  assert list((two / "process-1" / "store").glob("*.json"))
  assert not (two / "process-1" / "results.csv").exists()


def test_assign_balances_units_deterministically():
  units = {8: 8.0, 5: 5.0, 3: 3.0, 2: 2.0}
  split = multihost.assign(units, 2)
  assert split == multihost.assign(dict(reversed(list(units.items()))), 2)
  loads = [sum(c for u, c in units.items() if split[u] == p) for p in (0, 1)]
  assert sorted(loads) == [8.0, 10.0]
  assert set(multihost.assign(units, 1).values()) == {0}


@pytest.mark.parametrize("kwargs, match", [
    (dict(coordinator="localhost:1"), "go together"),
    (dict(num_processes=2, process_id=0), "go together"),
    (dict(coordinator="localhost:1", num_processes=2, process_id=2), "0 <= process_id"),
    (dict(coordinator="localhost:1", num_processes=0, process_id=0), "num_processes >= 1"),
    (dict(auto=True, num_processes=2), "not both"),
])
def test_initialize_rejects_partial_flags(kwargs, match):
  with pytest.raises(ValueError, match=match):
    multihost.initialize(**kwargs)


def test_one_process_needs_no_runtime():
  multihost.initialize()                       # nothing asked: nothing started
  multihost.initialize(num_processes=1, process_id=0)
  import jax
  # One process needs no coordinator: the distributed runtime stays down.
  assert not jax.distributed.is_initialized()


def test_script_flags_error_in_one_line(tmp_path):
  r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--num-processes",
                      "2"] + TINY, capture_output=True, text=True, env=_env(), timeout=120)
  assert r.returncode == 2 and "go together" in r.stderr
