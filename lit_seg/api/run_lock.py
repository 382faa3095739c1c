"""One writer per run folder: an exclusive lock on ``<run>/.lock``, held for the process's lifetime.

``flock`` locks belong to the open file, so the kernel drops the lock when its process dies,
however it dies (``kill -9`` included): a lock left by a dead process is taken over by the next
one without any PID guessing. The holder's PID, host and start time are written into the file
only for the message the second writer prints. Where the file system has no ``flock`` (some
network mounts), the PID written there decides: a live process on this host keeps the folder, a
gone one (same host, PID not running) is taken over.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import os
import socket
import sys
import time
from pathlib import Path

from lit_seg.errors import RunError

LOCK_NAME = ".lock"

# Open lock files of this process, by folder: kept open (the lock lives as long as the file does).
_held: dict[Path, int] = {}


class RunFolderInUse(RunError):
    """Another live process writes this run folder (a second ``--resume``, a resubmitted job)."""


def _holder_text(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 512).decode(errors="replace").strip()


def describe_holder(text: str) -> tuple[int | None, str]:
    """(PID, "process 1234 (host h, since ...)") from a lock file's text."""
    fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
    pid = int(fields["pid"]) if fields.get("pid", "").isdigit() else None
    if pid is None:
        return None, "another process"
    since = f", since {fields['since'].replace('T', ' ')}" if fields.get("since") else ""
    return pid, f"process {pid} (host {fields.get('host', '?')}{since})"


def _alive_here(pid: int, host: str | None) -> bool:
    if host not in (None, socket.gethostname()):
        return True  # another host's process: cannot be checked from here, so it counts as alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire(folder: str | Path, what: str = "run folder") -> None:
    """Locks ``folder`` for this process, or raises :class:`RunFolderInUse` naming the holder.

    Calling it again for a folder this process holds does nothing.
    """
    folder = Path(folder)
    key = folder.resolve()
    if key in _held:
        return
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        _, holder = describe_holder(_holder_text(fd))
        os.close(fd)
        raise RunFolderInUse(f"{what} {folder} is in use by {holder}, which is still writing it: wait for it "
                             f"to end or stop it, then run this again") from None
    except OSError as err:
        if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            os.close(fd)
            raise
        # No flock here: the PID in the file decides.
        text = _holder_text(fd)
        pid, holder = describe_holder(text)
        host = dict(p.split("=", 1) for p in text.split() if "=" in p).get("host")
        if pid is not None and pid != os.getpid() and _alive_here(pid, host):
            os.close(fd)
            raise RunFolderInUse(f"{what} {folder} is in use by {holder}: wait for it to end or stop it, then run "
                                 f"this again") from None
    previous = _holder_text(fd)
    if previous:
        # A holder that did not release the lock (the file is cleared at a normal exit) is gone.
        _, holder = describe_holder(previous)
        print(f"lit-seg: note: {what} {folder} was left locked by {holder}, which is gone: taking it over",
              file=sys.stderr, flush=True)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"pid={os.getpid()} host={socket.gethostname()} since={time.strftime('%Y-%m-%dT%H:%M:%S')}\n"
             .encode())
    os.fsync(fd)
    _held[key] = fd


def release(folder: str | Path) -> None:
    """Clears and unlocks ``folder``'s lock if this process holds it (the file stays: removing it
    would let a process waiting on the old file and one creating a new file both hold "the" lock)."""
    fd = _held.pop(Path(folder).resolve(), None)
    if fd is None:
        return
    try:
        os.ftruncate(fd, 0)
    except OSError:
        pass
    os.close(fd)  # closing the last descriptor of the open file drops the flock


def holder(folder: str | Path) -> str | None:
    """Who holds ``folder``'s lock now ("process 1234 (host h, ...)"), or None when nobody does."""
    path = Path(folder) / LOCK_NAME
    if Path(folder).resolve() in _held:
        return describe_holder(_holder_text(_held[Path(folder).resolve()]))[1]
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return describe_holder(_holder_text(fd))[1]
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


def held_folders() -> list[Path]:
    return list(_held)


@atexit.register
def _release_all() -> None:
    for folder in list(_held):
        release(folder)
