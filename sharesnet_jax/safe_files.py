"""Files a run writes in a workdir it may share with other users: never through a symbolic link
and never over something that is not a file of ours.

A workdir on a shared disk can hold anything another user (or an earlier, killed run) left at
the names we write: a link planted at `results.json`'s temporary would have its target truncated
by a plain `open(path, 'w')`. So every file is either opened with `O_NOFOLLOW` and checked to be
a regular file after opening, or written under a fresh temporary name (`O_EXCL`, never an
existing path) and renamed into place, which replaces a name without following it.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import tempfile

from sharesnet_jax.errors import UserError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR,
          "a character device"), (stat.S_ISBLK, "a block device"))


def kind_of(mode: int) -> str:
    """'a directory', 'a FIFO'... for a non-regular file's `st_mode`."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _not_ours(path: str, kind: str) -> UserError:
    remedy = (" (its target is left alone)" if kind == "a symbolic link" else "")
    return UserError(f"{path} is {kind}, not a file this run may write: remove it{remedy} or use "
                     "another --workdir")


def _mode_of(path: str) -> int | None:
    """The path's own mode (a link's, not its target's), None when nothing is there."""
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as err:
        raise UserError(f"{path} cannot be examined ({err.strerror or err})") from None


def refuse_unless_regular(path: str) -> None:
    """A path the run will write must be absent or a regular file (a link is never followed)."""
    mode = _mode_of(path)
    if mode is not None and not stat.S_ISREG(mode):
        raise _not_ours(path, kind_of(mode))


def refuse_link_or_file(path: str) -> None:
    """A directory the run will write into must be absent or a real directory: through a link,
    checkpoints would be written into (and old ones deleted from) someone else's directory."""
    mode = _mode_of(path)
    if mode is not None and not stat.S_ISDIR(mode):
        raise UserError(f"{path} is {kind_of(mode) if not stat.S_ISREG(mode) else 'a file'}, "
                        "not a directory this run may write into: remove it or use another "
                        "--workdir")


def open_regular(path: str, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    """A descriptor of the regular file at `path` (created if `flags` say so), opened without
    following a link and without blocking on a FIFO; anything else is one line naming it."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise _not_ours(path, "a symbolic link") from None
        if err.errno == errno.EISDIR:
            raise _not_ours(path, "a directory") from None
        if err.errno == errno.ENXIO:  # a FIFO without a reader, opened write-only
            raise _not_ours(path, "a FIFO") from None
        raise UserError(f"{path} cannot be opened ({err.strerror or err})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_ours(path, kind_of(mode))
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def _temporary_prefix(path: str) -> str:
    return f".{os.path.basename(path)}."


def write_atomically(path: str, text: str) -> None:
    """`text` into `path` by a fresh temporary file (O_EXCL, O_NOFOLLOW: `mkstemp`) renamed over
    it: readers see the old or the new content, and no existing file or link is written through.
    A failure (disk full) leaves the old content and no temporary behind; an OSError is raised."""
    refuse_unless_regular(path)
    fd, temporary = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp",
                                     dir=os.path.dirname(path) or ".")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the results from the workdir's group
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def remove_stale_temporaries(path: str, legacy: tuple[str, ...] = ()) -> None:
    """Temporaries of `write_atomically(path)` left by a killed run (and older fixed names in
    `legacy`) are removed: unlinking a name never touches what a link there points to. Called
    under the workdir's lock, so no live run of ours is writing them."""
    directory = os.path.dirname(path) or "."
    prefix = _temporary_prefix(path)
    try:
        names = [n for n in os.listdir(directory)
                 if (n.startswith(prefix) and n.endswith(".tmp")) or n in legacy]
    except OSError:
        return
    for name in names:
        stale = os.path.join(directory, name)
        try:
            if stat.S_ISDIR(os.lstat(stale).st_mode):
                raise UserError(f"{stale} is a directory where this run keeps a temporary file: "
                                "remove it or use another --workdir")
            os.unlink(stale)
        except FileNotFoundError:
            continue
        except OSError as err:
            raise UserError(f"cannot remove the stale temporary {stale} ({err.strerror or err}): "
                            "remove it or use another --workdir") from None
        logging.warning("Removed %s, a temporary file left by an earlier run", stale)
