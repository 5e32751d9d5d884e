"""`python -m origin`: the parser, clear errors, real processes, replicas on one port."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import aiohttp
import pytest

from origin.__main__ import build_parser, settings_from_args
from origin.settings import OriginSettings
from tests.origin.conftest import REPO, OriginProcess


def test_parser_defaults_match_the_lab() -> None:
    args = build_parser().parse_args(["serve"])
    settings = settings_from_args(args)
    assert settings == OriginSettings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8081)
    assert settings.db == "var/woody.sqlite3"
    assert (settings.heavy_seconds, settings.db_seconds) == (5.0, 15.0)
    assert settings.static_rate == 307_200
    assert settings.replicas == 1 and settings.api_cache is None


def test_parser_options() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--host=0.0.0.0",
            "--port=5000",
            "--db=mysql://root:pass@database:3306/woody",
            "--heavy-seconds=0.5",
            "--db-seconds=1.5",
            "--static-rate=300k",
            "--replicas=5",
            "--api-cache=redis://cache-server:6379/0",
            "--api-cache-prefix=lab",
        ]
    )
    settings = settings_from_args(args)
    assert settings.db_url.kind == "mysql" and settings.db_url.host == "database"
    assert settings.db_url.password == "pass"
    assert settings.static_rate == 307_200
    assert settings.replicas == 5
    assert settings.api_cache_prefix == "lab"
    settings.validate()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--db", "postgres://x/y"], "argument --db: unsupported scheme"),
        (["serve", "--static-rate", "fast"], "argument --static-rate"),
        (["serve", "--replicas", "0"], "argument --replicas: must be >= 1"),
        (["serve", "--heavy-seconds", "-1"], "argument --heavy-seconds: must be >= 0"),
        (["serve", "--api-cache", "localhost:6379"], "--api-cache: expected redis://"),
    ],
)
def test_bad_options_are_named(argv: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "origin", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_mysql_is_a_clear_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "origin", "serve", "--port", "0", "--db", "mysql://u@127.0.0.1:1/x"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--db: cannot connect to mysql://u@127.0.0.1:1/x" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_and_stop_gracefully(origin_process: Callable[..., OriginProcess]) -> None:
    origin = origin_process("--heavy-seconds", "0.1")
    import urllib.request

    with urllib.request.urlopen(f"{origin.base_url}/api/misc/heavy?name=cli") as answer:
        assert answer.read().decode().endswith("Woody -cli- Woody")
    started = time.monotonic()
    assert origin.stop(signal.SIGINT) == 0
    assert time.monotonic() - started < 5
    log = origin.log()
    assert "serving the Woodytoys shop" in log and "stopping" in log
    assert '"GET /api/misc/heavy?name=cli HTTP/1.1" 200' in log  # access log on stderr
    assert "Traceback" not in log


async def _pinned_session(base_url: str) -> tuple[aiohttp.ClientSession, int]:
    """A session with one keep-alive connection, and the pid of the replica serving it."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1, force_close=False))
    async with session.get(f"{base_url}/_origin/stats") as resp:
        pid = int((await resp.json())["pid"])
    return session, pid


async def test_replicas_share_the_port_and_run_concurrently(
    origin_process: Callable[..., OriginProcess],
) -> None:
    origin = origin_process("--replicas", "2", "--heavy-seconds", "1.0")
    sessions: dict[int, aiohttp.ClientSession] = {}
    extra: list[aiohttp.ClientSession] = []
    try:
        # The kernel spreads new connections over the replicas (once both listen).
        deadline = time.monotonic() + 15
        while len(sessions) < 2 and time.monotonic() < deadline:
            session, pid = await _pinned_session(origin.base_url)
            if pid in sessions:
                extra.append(session)
                await asyncio.sleep(0.05)
            else:
                sessions[pid] = session
        assert len(sessions) == 2, "all connections went to one process"

        async def heavy(session: aiohttp.ClientSession, name: str) -> float:
            async with session.get(f"{origin.base_url}/api/misc/heavy?name={name}") as resp:
                assert resp.status == 200
                await resp.read()
            return time.monotonic()

        started = time.monotonic()
        done = await asyncio.gather(
            *(heavy(session, f"r{i}") for i, session in enumerate(sessions.values()))
        )
        elapsed = max(done) - started
        assert 0.98 <= elapsed < 1.8, elapsed  # side by side, not 2 s one after the other
        # The supervisor replaces a replica that dies.
        victim = next(iter(sessions))
        os.kill(victim, signal.SIGKILL)
        for _ in range(150):
            if origin.log().count("serving the Woodytoys") >= 3:
                break
            await asyncio.sleep(0.1)
        assert f"(pid {victim}) exited with -9" in origin.log()
        assert origin.log().count("serving the Woodytoys") == 3
    finally:
        for session in [*sessions.values(), *extra]:
            await session.close()
    started = time.monotonic()
    assert origin.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 8
    log = origin.log()
    assert "supervising 2 replicas" in log
    assert "replica 1: stopping" in log and "replica 2: stopping" in log
    assert "Traceback" not in log
