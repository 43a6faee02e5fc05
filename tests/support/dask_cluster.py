"""A Dask scheduler and workers as separate processes, as on a real cluster, for the tests
that lose them: ``DaskProcesses`` runs ``dask scheduler`` on a free local port and
``dask worker`` processes against it, each killable on its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

import kuoro

# Where the kuoro package being tested lives: the workers import it from there too.
KUORO_SOURCE = Path(kuoro.__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def worker_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment, with the tested kuoro first on the workers' path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(KUORO_SOURCE), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


class DaskProcesses:
    """``dask scheduler`` on a free port of 127.0.0.1 and ``workers`` single-threaded
    ``dask worker`` processes; everything still running is killed on exit."""

    def __init__(
        self, workers: int = 1, *, log: Path, worker_env: Mapping[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.log = log
        self._out = log.open("ab")
        self.scheduler = self._start(
            "distributed.cli.dask_scheduler",
            "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard",
        )  # fmt: skip
        worker = ("distributed.cli.dask_worker", self.address, "--nthreads", "1", "--no-nanny")
        self.workers = [
            self._start(*worker, "--no-dashboard", env=worker_environment(worker_env))
            for _ in range(workers)
        ]

    def _start(
        self, module: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env or worker_environment(),
        )

    def wait_for_workers(self, timeout: float = 60) -> None:
        """Until every worker has joined the scheduler."""
        from distributed import Client

        with Client(self.address, timeout=timeout) as client:
            client.wait_for_workers(len(self.workers), timeout=timeout)

    def kill_scheduler(self) -> None:
        self.scheduler.kill()
        self.scheduler.wait()

    def close(self) -> None:
        for process in [self.scheduler, *self.workers]:
            if process.poll() is None:
                process.kill()
            process.wait()
        self._out.close()

    def __enter__(self) -> DaskProcesses:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def wait_until(condition: Callable[[], bool], timeout: float = 60, interval: float = 0.02) -> None:
    """Poll ``condition()`` until it is true; an AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {condition}")
        time.sleep(interval)
