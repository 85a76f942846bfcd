"""One writer per output folder: an exclusive lock file that names the process holding it.

Every command that writes a run (``defuse attack``, ``defend``, ``train``, ``evaluate --out``,
``model import-gguf``) and ``defuse bench`` hold a :class:`FolderLock` while they write, so a second command
on the same output stops at once with one line naming the process that holds it, instead of sharing a
staging folder with the first.

The lock is ``fcntl.flock`` on a small file holding the holder's process id. The operating system drops it
when the holder exits, however it exits, so a lock left by a killed process never blocks the next command;
the file is removed when the lock is released. POSIX only, like the rest of the training stack.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from defuse.errors import DefuseError


class FolderLock:
    """An exclusive, non-blocking lock on ``path`` (a lock file beside or inside the folder it guards).

    Args:
        path: The lock file.
        busy: The one-line message when another process holds it, given that process's id (0 if unknown).
    """

    def __init__(self, path: str | Path, busy: Callable[[int], str]):
        self.path = Path(path)
        self._busy = busy
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> FolderLock:
        """Take the lock (a no-op when already held).

        Raises:
            DefuseError: another process holds it (the message names that process), or the lock file cannot
                be created.
        """
        if self._fd is not None:
            return self
        for _ in range(20):  # retried only when the file was removed between our open and our lock
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                problem = exc.strerror or exc
                raise DefuseError(f"{self.path}: cannot create the lock file: {problem}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise DefuseError(self._busy(holder)) from None
            except OSError as exc:
                os.close(fd)
                raise DefuseError(f"{self.path}: cannot lock: {exc.strerror or exc}") from None
            if _same_file(fd, self.path):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return self
            os.close(fd)  # the holder released and removed it meanwhile: lock the new file instead
        raise DefuseError(f"{self.path}: cannot take the lock")

    def release(self) -> None:
        """Remove the lock file and drop the lock (a no-op when not held)."""
        if self._fd is None:
            return
        try:
            if _same_file(self._fd, self.path):
                self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


def output_lock(out: str | Path) -> FolderLock:
    """The lock of an output folder ``out``: ``<parent>/.<name>.lock``, beside it (so it outlives renames
    of ``out`` and of its staging folder)."""
    target = Path(os.path.abspath(out))
    return FolderLock(
        target.parent / f".{target.name}.lock",
        lambda pid: (
            f"{out}: another defuse command (process {pid}) is writing it; wait for it to finish or stop it"
        ),
    )


def _read_pid(fd: int) -> int:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else 0
    except OSError:
        return 0


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
