"""Fixtures of the origin tests: the app in-process on SQLite and on the real MariaDB, and the
origin as a real subprocess."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from bench.procs import free_port
from origin.app import create_app
from origin.settings import OriginSettings

REPO = Path(__file__).resolve().parents[2]

# Tiny delays: the slow paths keep their shape, the suite stays fast.
FAST = OriginSettings(heavy_seconds=0.0, db_seconds=0.0, static_rate=0, access_log=False)

ClientFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture(params=["sqlite", "mysql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every test using it runs twice: on a fresh SQLite file and on a fresh MariaDB database."""
    if request.param == "mysql":
        return str(request.getfixturevalue("mysql_url"))
    return f"sqlite:///{tmp_path}/woody.sqlite3"


@pytest.fixture
def origin_client(aiohttp_client: Callable[..., Awaitable[TestClient]]) -> ClientFactory:
    """`await origin_client(db=..., heavy_seconds=...)`: a test client on a fresh origin app."""

    async def make(**overrides: object) -> TestClient:
        settings = replace(FAST, **overrides)  # type: ignore[arg-type]
        return await aiohttp_client(create_app(settings))

    return make


@dataclass
class OriginProcess:
    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise
        return int(self.proc.returncode)


def start_origin(args: list[str], log_path: Path, timeout: float = 20.0) -> OriginProcess:
    """`python -m origin serve ARGS` on a free port; returns once /api/ping answers."""
    port = free_port()
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "origin", "serve", "--port", str(port), *args],
        cwd=REPO,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    log_file.close()
    origin = OriginProcess(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"origin exited with {proc.returncode}:\n{origin.log()}")
        try:
            with urllib.request.urlopen(f"{origin.base_url}/api/ping", timeout=2) as answer:
                if answer.read() == b"ping":
                    return origin
        except OSError:
            time.sleep(0.1)
    origin.stop(signal.SIGKILL)
    raise RuntimeError(f"origin did not answer within {timeout}s:\n{origin.log()}")


@pytest.fixture
def origin_process(tmp_path: Path) -> Iterator[Callable[..., OriginProcess]]:
    """`origin_process("--heavy-seconds", "0.2", ...)`: a real origin, stopped afterwards."""
    started: list[OriginProcess] = []

    def start(*args: str) -> OriginProcess:
        if "--db" not in args:
            args = (*args, "--db", f"sqlite:///{tmp_path}/proc-{len(started)}.sqlite3")
        origin = start_origin(list(args), tmp_path / f"origin-{len(started)}.log")
        started.append(origin)
        return origin

    yield start
    for origin in started:
        if origin.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                origin.stop()
