"""Processes and raw sockets for the resilience tests: real origin, real edge, own Redis."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
EDGE_YAML = ROOT / "config" / "edge.yaml"


def wait_port(
    port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port} after {timeout} s")


class Proc:
    """A child process in its own process group, its output in a log file."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log = log
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        for name in ("EDGE_ORIGIN", "EDGE_REDIS_URL", "EDGE_NODE", "EDGE_PORT", "EDGE_HOST"):
            self.env.pop(name, None)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=self.env,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def stop(self, grace: float = 5.0) -> int | None:
        if self.proc is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # stragglers of the group
        return self.proc.returncode

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


class RedisServer(Proc):
    """Our own redis-server on a free port, no persistence: safe to kill and restart."""

    def __init__(self, tmp: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        exe = shutil.which("redis-server") or "redis-server"
        super().__init__(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "local",
            ],
            tmp / f"redis-{self.port}.log",
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        super().start()
        wait_port(self.port, 15, self.proc)
        return self


def origin_argv(port: int, tmp: Path, **opts: Any) -> list[str]:
    argv = [sys.executable, "-m", "origin", "serve", "--port", str(port), "--no-access-log"]
    argv += ["--db", str(opts.pop("db", tmp / "origin.sqlite3"))]
    for key, value in opts.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def edge_config(tmp: Path, name: str = "edge.yaml", **changes: Any) -> Path:
    """A copy of config/edge.yaml with sections changed: edge_config(tmp, memory={...})."""
    doc = yaml.safe_load(EDGE_YAML.read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key].update(value)
        else:
            doc[key] = value
    path = tmp / name
    path.write_text(yaml.safe_dump(doc))
    return path


def edge_proc(
    tmp: Path,
    port: int,
    origins: list[str],
    config: Path,
    redis_url: str | None = None,
    node: str = "edge-1",
) -> Proc:
    argv = [sys.executable, "-m", "edge", "serve", "--config", str(config), "--port", str(port)]
    argv += ["--node", node]
    for o in origins:
        argv += ["--origin", o]
    if redis_url:
        argv += ["--redis", redis_url]
    return Proc(argv, tmp / f"{node}-{port}.log")


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def raw_exchange(
    port: int, data: bytes, timeout: float = 10.0, read_limit: int = 1 << 20
) -> bytes:
    """Send bytes, read until the server closes (or `timeout`); b"" if it closed at once."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        out = b""
        deadline = time.monotonic() + timeout
        while len(out) < read_limit:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                chunk = await asyncio.wait_for(reader.read(65536), left)
            except (TimeoutError, ConnectionError):
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def status_of(response: bytes) -> int | None:
    """The status code of the first response in raw bytes, None if there is none."""
    if not response.startswith(b"HTTP/"):
        return None
    parts = response.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


async def http_get(
    port: int, path: str, timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    """One GET over a fresh connection with Connection: close; headers lower-cased."""
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    raw = await raw_exchange(port, req, timeout, read_limit=64 << 20)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status_of(raw) or 0, headers, body
