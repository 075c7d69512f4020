"""One run per workdir: an exclusive `fcntl.flock` on `WORKDIR/.lock`, held for the whole run.

Each process of a multi-process run locks its own file (`.lock` for process 0, `.lock.N` for
process N), so the processes of one run never block each other while a second run started on the
same workdir finds every file taken. The kernel releases a flock when its holder dies (even by
`kill -9`), so a stale lock file left by a dead run never blocks the next one. The file is opened
without following a link and must be a regular file (`safe_files.open_regular`): a link planted
at `.lock` is refused, its target never truncated.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time

from sharesnet_jax import safe_files
from sharesnet_jax.errors import UserError


class WorkdirLock:
    def __init__(self, workdir: str, process_index: int = 0):
        name = ".lock" if process_index == 0 else f".lock.{process_index}"
        self.path = os.path.join(workdir, name)
        self._fd = None

    def __enter__(self) -> "WorkdirLock":
        fd = safe_files.open_regular(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(fd)
            os.close(fd)
            raise UserError(f"workdir {os.path.dirname(self.path)} is in use by another run "
                            f"({holder}): wait for it to end or give another --workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}, since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _holder(fd: int) -> str:
    """Who holds the lock, as its file says. The holder writes its line just after locking, so
    the line may still be a dead run's: wait a moment for it, and never name as the holder a
    process of this host that is no longer running."""
    text = ""
    for _ in range(10):
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if text and _alive(text):
            return text
        time.sleep(0.05)
    if not text:
        return "a process that has not written its name yet"
    return (f"a process other than pid {text.split()[1]}, which the lock file names but which "
            "is no longer running on this host; perhaps a process it started holds the lock")


def _alive(line: str) -> bool:
    """False only for a line naming a pid of this host that no longer exists."""
    words = line.split()
    if len(words) < 5 or words[0] != "pid" or words[3] != "host":
        return True
    host = words[4].rstrip(",")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(words[1]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True
