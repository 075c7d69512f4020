"""One run per workdir: an exclusive `fcntl.flock` on `WORKDIR/.lock`, held for the whole run.

Each process of a multi-process run locks its own file (`.lock` for process 0, `.lock.N` for
process N), so the processes of one run never block each other while a second run started on the
same workdir finds every file taken. The kernel releases a flock when its holder dies (even by
`kill -9`), so a stale lock file left by a dead run never blocks the next one.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time

from sharesnet_jax.errors import UserError


class WorkdirLock:
    def __init__(self, workdir: str, process_index: int = 0):
        name = ".lock" if process_index == 0 else f".lock.{process_index}"
        self.path = os.path.join(workdir, name)
        self._file = None

    def __enter__(self) -> "WorkdirLock":
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown holder"
            handle.close()
            raise UserError(f"workdir {os.path.dirname(self.path)} is in use by another run "
                            f"({holder}): wait for it to end or give another --workdir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on host {socket.gethostname()}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
