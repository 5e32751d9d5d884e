"""Processes the bench starts: free ports, readiness, and a clean stop of every one of them.

Every server the bench starts (origin, edge nodes, nginx, varnishd, the stand-in) runs as a
subprocess in its own process group, registered in a `ProcessGroup`; leaving the group's
`with` block, an exception, Ctrl-C or interpreter exit stops them all (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parent.parent

_LIVE: set[subprocess.Popen[bytes]] = set()


def _stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(grace)
    _LIVE.discard(proc)


@atexit.register
def _stop_all() -> None:  # pragma: no cover - safety net
    for proc in list(_LIVE):
        _stop(proc, 2.0)


# Below Linux's ephemeral range (32768-60999): a port the kernel hands out as the source
# port of an outgoing connection could be taken between choosing it and the server binding
# it (seen under load as "address already in use").
PORT_RANGE = (20000, 32000)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody uses right now, outside the ephemeral range."""
    for _ in range(500):
        port = random.randrange(*PORT_RANGE)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), 0.5):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= int(resp.status) < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError):
        return False


def python_module_works(module: str, *args: str) -> bool:
    """True when `python -m module args...` exits 0 (used to see if origin/edge have landed)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def help_text(module: str, *args: str) -> str:
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, *args, "--help"],
            cwd=REPO,
            capture_output=True,
            timeout=30,
            check=False,
            text=True,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


class StartError(RuntimeError):
    """A server did not come up; carries the tail of its log."""


@dataclass
class Managed:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


@dataclass
class ProcessGroup:
    """Starts subprocesses and guarantees they are all stopped when the block ends."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="woody-bench-")))
    procs: list[Managed] = field(default_factory=list)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
        # Logs, configs, nginx/Varnish caches: gone with the servers (WOODY_BENCH_KEEP=1 keeps)
        if os.environ.get("WOODY_BENCH_KEEP") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        ready_url: str | None = None,
        ready_port: int | None = None,
        timeout: float = 30.0,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Managed:
        """Start argv, wait until ready_url answers (or ready_port accepts), else raise."""
        log = self.workdir / f"{name}.log"
        full_env = dict(os.environ)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        if env:
            full_env.update(env)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd or REPO,
                env=full_env,
                start_new_session=True,
            )
        _LIVE.add(proc)
        managed = Managed(name, proc, log)
        self.procs.append(managed)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise StartError(
                    f"{name} exited with {proc.returncode}: {' '.join(argv)}\n{managed.log_tail()}"
                )
            if ready_url is not None and http_ok(ready_url):
                break
            if ready_url is None and ready_port is not None and port_open(ready_port):
                break
            if ready_url is None and ready_port is None:
                break
            if time.monotonic() > deadline:
                self.stop(managed)
                raise StartError(
                    f"{name} not ready after {timeout:.0f} s: {' '.join(argv)}\n"
                    f"{managed.log_tail()}"
                )
            time.sleep(0.05)
        return managed

    def stop(self, managed: Managed) -> None:
        _stop(managed.proc)
        if managed in self.procs:
            self.procs.remove(managed)

    def stop_all(self) -> None:
        for managed in reversed(list(self.procs)):
            self.stop(managed)

    def subdir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path
