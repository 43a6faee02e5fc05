"""Advisory file locks between Kuoro processes: one writer per project, shared stores.

The locks are ``flock(2)`` locks on small files beside what they guard: the kernel releases
them when the process ends in any way (``kill -9`` included), so a crash never leaves a project
locked. Each lock file holds a line about its holder (process id, command, start time), which
a refused or waiting process names in its message.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import time
from pathlib import Path
from types import TracebackType

from kuoro.errors import KuoroError

log = logging.getLogger(__name__)


class BusyError(KuoroError):
    """Another process holds the lock this one needs."""


class FileLock:
    """An exclusive or shared ``flock`` on ``path`` (created when missing), not reentrant.

    ``what`` names the guarded thing in messages, e.g. "project 'yso-fi'".
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        return self._fd

    def holder(self) -> str:
        """What the lock file says about the process that holds (or last held) the lock."""
        for _ in range(50):  # a holder that has just taken the lock writes its line next
            try:
                text = self.path.read_text(encoding="utf-8", errors="replace").strip()
            except OSError:
                text = ""
            if text:
                return text
            time.sleep(0.01)
        return "another process"

    def try_acquire(self, *, shared: bool = False) -> bool:
        """Take the lock if nobody holds it in a conflicting mode; whether it was taken."""
        fd = self._open()
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if not shared:
            self._write_holder(fd)
        return True

    def acquire_or_fail(self, hint: str) -> FileLock:
        """Take the lock exclusively now, or raise BusyError naming its holder and ``hint``."""
        if not self.try_acquire():
            holder = self.holder()
            self.release()
            raise BusyError(f"{self.what} is busy: {holder} holds it; {hint}")
        return self

    def acquire_waiting(self, *, shared: bool = False) -> FileLock:
        """Take the lock, waiting (with a message) while another process holds it."""
        if not self.try_acquire(shared=shared):
            log.warning("waiting for %s: %s holds it", self.what, self.holder())
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            if not shared:
                self._write_holder(fd)
        return self

    def share(self) -> None:
        """Turn a held exclusive lock into a shared one (other readers may join)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_SH)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    @staticmethod
    def _write_holder(fd: int) -> None:
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        line = f"process {os.getpid()} ({command[:200]}, since {started})\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, line.encode("utf-8", errors="replace"), 0)
