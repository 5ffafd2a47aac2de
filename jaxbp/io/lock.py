"""A lock file for a result directory, so that two runs never write into one at once.

``DirLock(path).acquire()`` creates ``path`` holding the owner's pid, host,
start time and command line, or raises :class:`LockHeld` naming the process
that holds it. The file appears whole or not at all: it is written under a
temporary name and hard-linked into place, and ``link`` fails if the name
exists (the ``O_EXCL`` of a rename); where a filesystem has no hard links, it
is created with ``O_CREAT | O_EXCL`` and then filled.

A lock left by a process that is gone (killed with SIGKILL, or a machine that
rebooted: same host, pid no longer running) is stale and is taken over with a
warning. A lock from another host cannot be checked, so it is never taken
over: the error says which file to delete once that run is known to be over.
Within one process the newest holder wins, so a study run twice into one
directory by the same script never locks itself out.
"""
from __future__ import annotations

import datetime
import errno
import json
import os
import secrets
import socket
import sys
import warnings


class LockHeld(RuntimeError):
  """Another live process holds the lock; the message names it."""


def pid_alive(pid: int) -> bool:
  """Whether process ``pid`` runs on this host (a zombie does not)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:    # another user's process: it exists
    return True
  except OverflowError:
    return False
  # A zombie (exited, not yet reaped by its parent) holds nothing any more.
  try:
    with open(f"/proc/{pid}/stat", "rb") as f:
      return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
  except (OSError, IndexError):
    return True


class DirLock:
  """The lock file at ``path``; see the module docstring.

  >>> lock = DirLock("/tmp/jaxbp_doc.lock").acquire()
  >>> lock.holder()["pid"] == os.getpid()
  True
  >>> lock.release()
  """

  def __init__(self, path):
    self.path = os.fspath(path)
    self.token = None

  def holder(self) -> dict | None:
    """The lock file's contents, or None if there is no lock (or it is unreadable)."""
    try:
      with open(self.path, "rb") as f:
        info = json.loads(f.read().decode())
    except (OSError, ValueError, UnicodeDecodeError):
      return None
    return info if isinstance(info, dict) else None

  def _info(self) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "token": self.token,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)}

  def _create(self, replace: bool = False) -> bool:
    """Writes our lock file; False if one exists (unless ``replace``)."""
    self.token = secrets.token_hex(8)
    data = (json.dumps(self._info()) + "\n").encode()
    tmp = f"{self.path}.{os.getpid()}.{self.token}.new"
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    try:
      if replace:
        os.replace(tmp, self.path)
        return True
      try:
        os.link(tmp, self.path)
      except FileExistsError:
        return False
      except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
          raise
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
          f.write(data)
      return True
    except FileExistsError:
      return False
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)

  def _take_over(self, stale: dict) -> None:
    # Move the stale file aside under a name only we use, then check that it is
    # still the stale one: if another process replaced it in between, put it back.
    aside = f"{self.path}.stale.{os.getpid()}.{secrets.token_hex(4)}"
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return
    moved = DirLock(aside).holder()
    if moved != stale:
      try:
        os.link(aside, self.path)
      except FileExistsError:
        pass
    os.remove(aside)
    if moved == stale:
      warnings.warn(f"took over the stale lock {self.path} of pid {stale.get('pid')} on "
                    f"{stale.get('host')}, which is no longer running.", RuntimeWarning,
                    stacklevel=4)

  def acquire(self) -> "DirLock":
    """Takes the lock; raises :class:`LockHeld` naming the holder if a live process has it."""
    host = socket.gethostname()
    for _ in range(5):
      if self._create():
        return self
      info = self.holder()
      if info is None:
        if not os.path.exists(self.path):
          continue            # released between our attempt and the read
        raise LockHeld(f"{self.path} exists but is not a readable lock; if no run is using "
                       f"{os.path.dirname(self.path)}, delete it and retry.")
      pid, where = info.get("pid"), info.get("host")
      if where == host and pid == os.getpid():
        self._create(replace=True)    # ours, from an earlier run in this process
        return self
      if where == host and isinstance(pid, int) and not pid_alive(pid):
        self._take_over(info)
        continue
      raise LockHeld(
          f"{os.path.dirname(os.path.abspath(self.path))} is in use by pid {pid} on host "
          f"{where} (since {info.get('started')}: {info.get('command') or '?'}). Wait for "
          f"that run to finish, or use another output directory. If that process is gone "
          f"{'' if where == host else '(it ran on another host, so this one cannot check) '}"
          f"delete {self.path}.")
    raise LockHeld(f"could not take {self.path}: other processes keep taking and "
                   "releasing it; retry.")

  def release(self) -> None:
    """Deletes the lock file if it is still ours (a newer holder's is left alone)."""
    if self.token is not None and (self.holder() or {}).get("token") == self.token:
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass
    self.token = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
