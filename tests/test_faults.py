"""Faults injected into the store and the driver, in process: a disk that fills
mid-write, an output directory that takes no files, a config that changed, a
lock held by someone else, and interrupts while a study computes.

The real-subprocess versions (SIGTERM, SIGINT, two writers) are in
test_faults_processes.py.
"""
import builtins
import errno
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from jaxbp import io as results
from jaxbp.io import lock as lockmod
from jaxbp.io.files import remove_partial_files
from jaxbp.studies import depth_sweep as sweep
from jaxbp.studies import driver
from jaxbp.studies.depth_sweep import schedule

# Four distinct configurations, one compiled program: a few seconds.
TINY = dict(activations=("relu",), inits=("gaussian", "he"), sigma_w2=(1.0, 1.5, 3.0),
            sigma_b2=(0.0,), depths=(4,), width=8, batch=2, seeds=(0,), skip=1)
N_TINY = 4


def _store_files(root):
  store = os.path.join(root, "store")
  return sorted(n for n in os.listdir(store) if n.endswith(".json") and not n.startswith("."))


def _partial_files(root):
  return [os.path.join(d, n) for d, _, names in os.walk(root) for n in names
          if n.endswith(".tmp")]


def _disk_fills(monkeypatch, inside, after_files, after_bytes):
  """os.write fills the disk: under ``inside``, files after the first ``after_files``
  take ``after_bytes`` bytes, then ENOSPC. Other writes go through."""
  real = os.write
  seen = []

  def write(fd, data):
    path = os.readlink(f"/proc/self/fd/{fd}")
    if not path.startswith(str(inside)):
      return real(fd, data)
    if path not in seen:
      seen.append(path)
    if len(seen) <= after_files:
      return real(fd, data)
    done = os.fstat(fd).st_size
    if done >= after_bytes:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(fd, bytes(data[:after_bytes - done]))

  monkeypatch.setattr(os, "write", write)


# -- atomic writes ---------------------------------------------------------------


def test_disk_full_mid_write_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch):
  path = tmp_path / "r.json"
  results.write_json(path, {"v": 1})
  _disk_fills(monkeypatch, tmp_path, after_files=0, after_bytes=5)
  with pytest.raises(OSError) as info:
    results.write_json(path, {"v": list(range(1000))})
  assert info.value.errno == errno.ENOSPC
  assert "No space left on device" in str(info.value) and str(path) in str(info.value)
  monkeypatch.undo()
  assert results.read_json(path) == {"v": 1}
  assert os.listdir(tmp_path) == ["r.json"]


def test_an_interrupt_mid_write_leaves_no_partial_file(tmp_path, monkeypatch):
  real = os.write

  def write(fd, data):
    real(fd, bytes(data[:3]))
    raise KeyboardInterrupt

  monkeypatch.setattr(os, "write", write)
  with pytest.raises(KeyboardInterrupt):
    results.write_text(tmp_path / "report.md", "x" * 100)
  monkeypatch.undo()
  assert os.listdir(tmp_path) == []


def test_short_writes_are_completed(tmp_path, monkeypatch):
  real = os.write
  monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(data[:7])))
  payload = bytes(range(256)) * 40
  results.atomic_write(tmp_path / "b.bin", payload)
  monkeypatch.undo()
  assert (tmp_path / "b.bin").read_bytes() == payload


def test_partial_files_of_dead_writers_are_removed(tmp_path):
  dead = _dead_pid()
  live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    names = [f".a.json.{dead}.abcdef.tmp", f".b.json.{os.getpid()}.abcdef.tmp",
             f".c.csv.{live.pid}.abcdef.tmp", "kept.json", ".odd.tmp"]
    for name in names:
      (tmp_path / name).write_text("{")
    assert remove_partial_files(tmp_path) == [names[0]]
  finally:
    live.kill()
    live.wait()
  assert sorted(os.listdir(tmp_path)) == sorted(names[1:])


# -- the sweep on a full disk ----------------------------------------------------


def test_disk_full_mid_sweep_keeps_what_finished_and_a_rerun_resumes(tmp_path, monkeypatch):
  out = tmp_path / "full"
  _disk_fills(monkeypatch, out / "store", after_files=2, after_bytes=100)
  with pytest.raises(OSError) as info:
    sweep.run(TINY, str(out), figures=False)
  assert info.value.errno == errno.ENOSPC
  note = " ".join(info.value.__notes__)
  assert "2 of 4 pending configurations" in note and "rerun the same command" in note
  monkeypatch.undo()
  assert len(_store_files(out)) == 2 and not _partial_files(out)
  assert not (out / "results.json").exists()
  for name in _store_files(out):
    assert results.read_json(out / "store" / name)["sha256"]

  resumed = sweep.run(TINY, str(out), figures=False)
  assert resumed["computed"] == N_TINY - 2
  whole = sweep.run(TINY, str(tmp_path / "whole"), figures=False)
  assert whole["computed"] == N_TINY
  assert results.read_json(out / "results.json")["rows"] == \
      results.read_json(tmp_path / "whole" / "results.json")["rows"]


# -- output directories that take no files -----------------------------------------


def _no_compute(monkeypatch):
  def no_compute(*args, **kwargs):
    raise AssertionError("computed before checking the output directory")
  monkeypatch.setattr(schedule, "compute", no_compute)


def test_an_out_dir_under_a_file_fails_before_compute(tmp_path, monkeypatch):
  (tmp_path / "file").write_text("")
  bad = tmp_path / "file" / "out"
  with pytest.raises(ValueError, match=f"output directory '{bad}' cannot be written"):
    driver.check_out_dir(bad)
  _no_compute(monkeypatch)
  with pytest.raises(ValueError, match="cannot be written.*Not a directory"):
    sweep.run(TINY, str(bad), figures=False)


def _kernel_refuses_writes_in(directory):
  probe = directory / ".probe"
  try:
    probe.write_text("")
  except PermissionError:
    return True
  probe.unlink()
  return False


def _refuse_writes_in(monkeypatch, directory):
  """Makes creating a file or directory under ``directory`` fail with EACCES, as the
  kernel does for an ordinary user in a directory of mode 0o555. Root is exempt
  from the mode (and CI runs the suite as root), so there the calls that create
  (open for writing, os.open with O_CREAT, os.mkdir) are refused in process."""
  inside = lambda path: os.path.abspath(os.fspath(path)).startswith(str(directory) + os.sep)

  def refuse(path):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

  real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

  def open_(file, mode="r", *args, **kwargs):
    if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+") and inside(file):
      refuse(file)
    return real_open(file, mode, *args, **kwargs)

  def os_open(path, flags, *args, **kwargs):
    if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR) and inside(path):
      refuse(path)
    return real_os_open(path, flags, *args, **kwargs)

  def mkdir(path, *args, **kwargs):
    if inside(path):
      refuse(path)
    return real_mkdir(path, *args, **kwargs)

  monkeypatch.setattr(builtins, "open", open_)
  monkeypatch.setattr(os, "open", os_open)
  monkeypatch.setattr(os, "mkdir", mkdir)


def test_a_read_only_out_dir_fails_before_compute(tmp_path, monkeypatch):
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o555)
  try:
    if not _kernel_refuses_writes_in(ro):      # root
      _refuse_writes_in(monkeypatch, ro)
    with pytest.raises(ValueError, match="cannot be written.*Permission denied"):
      driver.check_out_dir(ro / "out")
    with pytest.raises(ValueError, match="cannot be written.*Permission denied"):
      driver.check_out_dir(ro)
    _no_compute(monkeypatch)
    with pytest.raises(ValueError, match="Permission denied"):
      sweep.run(TINY, str(ro), figures=False)
    assert os.listdir(ro) == []
  finally:
    monkeypatch.undo()
    ro.chmod(0o755)


def test_the_script_reports_an_unwritable_out_in_one_line(tmp_path):
  (tmp_path / "file").write_text("")
  proc = subprocess.run([sys.executable, "experiments/depth_sweep.py", "--quick", "--out",
                         str(tmp_path / "file" / "o")], capture_output=True, text=True,
                        timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert proc.returncode == 2
  assert "Traceback" not in proc.stderr
  assert "cannot be written" in proc.stderr.strip().splitlines()[-1]


# -- a changed config --------------------------------------------------------------


def test_a_changed_config_is_refused_and_nothing_mixed(tmp_path, monkeypatch):
  sweep.run(TINY, str(tmp_path), figures=False)
  before = (tmp_path / "config.json").read_text()
  rows = results.read_json(tmp_path / "results.json")["rows"]
  _no_compute(monkeypatch)
  with pytest.raises(ValueError, match=r"another config \(width: 8 there, 16 now\)"):
    sweep.run(dict(TINY, width=16), str(tmp_path), figures=False)
  with pytest.raises(ValueError, match=r"depths: \[4\] there, \[4, 6\] now; width"):
    sweep.run(dict(TINY, width=16, depths=(4, 6)), str(tmp_path), figures=False)
  assert (tmp_path / "config.json").read_text() == before
  assert results.read_json(tmp_path / "results.json")["rows"] == rows
  assert len(_store_files(tmp_path)) == N_TINY
  # The same config resumes, computing nothing.
  assert sweep.run(TINY, str(tmp_path), figures=False)["computed"] == 0


def test_fields_that_may_differ_do_not_block_a_resume(tmp_path):
  config = {"width": 8, "memory_gb": 1.0}
  driver.start(config, tmp_path).close()
  with pytest.raises(ValueError, match="memory_gb: 1.0 there, 2.0 now"):
    driver.start(dict(config, memory_gb=2.0), tmp_path)
  driver.start(dict(config, memory_gb=2.0), tmp_path, may_differ=("memory_gb",)).close()
  with pytest.raises(ValueError, match=r"seeds: \(absent\) there, \[0\] now"):
    driver.start(dict(config, seeds=[0]), tmp_path, may_differ=("memory_gb",))


# -- the lock ----------------------------------------------------------------------


def _lock_path(out):
  return os.path.join(out, "store", ".lock")


def _dead_pid():
  proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  return int(proc.stdout)


def _plant_lock(out, pid, host):
  os.makedirs(os.path.join(out, "store"), exist_ok=True)
  results.write_json(_lock_path(out), {"pid": pid, "host": host, "token": "x",
                                       "started": "then", "command": "an old run"})


def test_the_lock_is_held_from_start_to_the_end_of_resume(tmp_path):
  session = driver.start({"a": 1}, tmp_path)
  held = lockmod.DirLock(_lock_path(tmp_path)).holder()
  assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()

  def compute(pending):
    assert os.path.exists(_lock_path(tmp_path))          # held while computing
    return ((k, {"v": 1}) for k in pending)

  driver.resume(session, _keys(2), compute)
  assert not os.path.exists(_lock_path(tmp_path))
  driver.resume(session, _keys(3), compute)               # taken again, released again
  assert not os.path.exists(_lock_path(tmp_path))
  driver.finish(session, "done")
  session = driver.start({"a": 1}, tmp_path)
  assert os.path.exists(_lock_path(tmp_path))
  del session                      # stopped between start and resume
  assert not os.path.exists(_lock_path(tmp_path))


def test_a_live_holder_is_named_and_refused(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    _plant_lock(tmp_path, holder.pid, socket.gethostname())
    with pytest.raises(driver.LockHeld, match=f"in use by pid {holder.pid} on host "
                       f"{socket.gethostname()} .*an old run.*delete .*store/.lock"):
      driver.start({"a": 1}, tmp_path)
  finally:
    holder.kill()
    holder.wait()
  assert lockmod.DirLock(_lock_path(tmp_path)).holder()["pid"] == holder.pid  # left alone
  assert not (tmp_path / "config.json").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
  dead = _dead_pid()
  _plant_lock(tmp_path, dead, socket.gethostname())
  (tmp_path / "store" / f".x.json.{dead}.abc.tmp").write_text("{")     # its half-written file
  with pytest.warns(RuntimeWarning, match=f"stale lock .* of pid {dead}"):
    session = driver.start({"a": 1}, tmp_path)
  assert lockmod.DirLock(_lock_path(tmp_path)).holder()["pid"] == os.getpid()
  assert not _partial_files(tmp_path)
  session.close()


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
  _plant_lock(tmp_path, 1, "elsewhere.example")
  with pytest.raises(driver.LockHeld, match="on host elsewhere.example .*another host"):
    driver.start({"a": 1}, tmp_path)


def test_an_unreadable_lock_is_reported(tmp_path):
  (tmp_path / "store").mkdir()
  (tmp_path / "store" / ".lock").write_text("")
  with pytest.raises(driver.LockHeld, match="not a readable lock"):
    driver.start({"a": 1}, tmp_path)


def test_a_second_session_in_one_process_takes_over_and_the_first_leaves_it(tmp_path):
  first = driver.start({"a": 1}, tmp_path)
  second = driver.start({"a": 1}, tmp_path)
  first.close()                      # its token is no longer the file's
  assert lockmod.DirLock(_lock_path(tmp_path)).holder()["pid"] == os.getpid()
  second.close()
  assert not os.path.exists(_lock_path(tmp_path))


def test_two_threads_racing_for_a_lock_file_one_wins(tmp_path):
  # Across processes the pid tells holders apart; here two DirLocks race on link().
  path = tmp_path / "l"
  wins = []
  barrier = threading.Barrier(8)

  def grab():
    lock = lockmod.DirLock(path)
    barrier.wait()
    wins.append(lock._create())     # noqa: SLF001  (the raw O_EXCL step)

  threads = [threading.Thread(target=grab) for _ in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert sorted(wins) == [False] * 7 + [True]


# -- interrupts inside the driver ------------------------------------------------------


def _keys(n):
  return [{"i": i} for i in range(n)]


def test_an_interrupt_keeps_what_finished_and_a_rerun_resumes(tmp_path):
  def compute(pending):
    for i, key in enumerate(pending):
      if i == 2:
        raise KeyboardInterrupt
      yield key, {"v": key["i"] * 10}

  session = driver.start({"n": 5}, tmp_path)
  with pytest.raises(KeyboardInterrupt) as info:
    driver.resume(session, _keys(5), compute, desc="toy")
  assert "toy interrupted by SIGINT after computing 2 of 5" in info.value.__notes__[0]
  session.close()
  session = driver.start({"n": 5}, tmp_path)
  computed = []

  def rest(pending):
    computed.extend(k["i"] for k in pending)
    return ((k, {"v": k["i"] * 10}) for k in pending)

  assert driver.resume(session, _keys(5), rest) == [{"v": 10 * i} for i in range(5)]
  assert computed == [2, 3, 4]


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signal handlers need the main thread")
def test_sigterm_inside_the_driver_becomes_an_exception_and_is_restored(tmp_path):
  before = signal.getsignal(signal.SIGTERM)

  def compute(pending):
    for i, key in enumerate(pending):
      if i == 3:
        os.kill(os.getpid(), signal.SIGTERM)
      yield key, {"v": 1}

  session = driver.start({"n": 6}, tmp_path)
  with pytest.raises(driver.Interrupted) as info:
    driver.resume(session, _keys(6), compute, desc="toy")
  assert info.value.signum == signal.SIGTERM
  assert "interrupted by SIGTERM after computing 3 of 6" in info.value.__notes__[0]
  assert signal.getsignal(signal.SIGTERM) == before
  assert len(_store_files(tmp_path)) == 3 and not _partial_files(tmp_path)


# -- a flag that cannot be honoured ---------------------------------------------------


def test_a_skip_too_large_for_the_depth_is_a_warning_that_says_what_was_fitted(tmp_path):
  config = dict(TINY, inits=("he",), depths=(3, 10, 40), skip=5)
  with pytest.warns(UserWarning, match=r"skip=5 .* at depth 3, 10; fitting depth 3 over "
                    r"layers \[1, 3\] \(skip 0\); depth 10 over layers \[5, 6\] \(skip 4\)"):
    sweep.run(config, str(tmp_path), figures=False)
  rows = {r["depth"]: r for r in results.read_json(tmp_path / "results.json")["rows"]}
  assert [(rows[d]["fit_first"], rows[d]["fit_last"]) for d in (3, 10, 40)] == \
      [(1, 3), (5, 6), (6, 35)]
  assert sweep.config.narrowed_skip(sweep.SweepConfig(**dict(config, depths=(40,)))) == {}
