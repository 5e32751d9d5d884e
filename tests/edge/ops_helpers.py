"""Real `python -m edge serve` processes for the operations tests (reload, top, dashboard,
node-wide numbers)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.origin.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-0123456789abcdef"


def get_json(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """A GET on a new connection: status, headers, body."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


@dataclass
class EdgeProcess:
    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    pid_file: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, path: str) -> str:
        return self.base_url + path

    def hangup(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def wait_log(self, text: str, count: int = 1, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if log.count(text) >= count:
                return log
            time.sleep(0.05)
        raise AssertionError(f"{text!r} x{count} not in the edge's log:\n{self.log()[-3000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(5)


def start_edge(
    tmp: Path,
    origin_url: str,
    *args: str,
    config: Path | None = None,
    name: str = "edge",
    env: dict[str, str] | None = None,
    timeout: float = 20.0,
) -> EdgeProcess:
    """`python -m edge serve` on a free port with the purge token set; returns once healthy."""
    port = free_port()
    log_path = tmp / f"{name}.log"
    pid_file = tmp / f"{name}.pid"
    full_env = {**os.environ, "EDGE_PURGE_TOKEN": TOKEN, **(env or {})}
    for var in ("EDGE_REDIS_URL", "EDGE_NODE", "EDGE_WORKERS", "EDGE_PORT", "EDGE_ORIGIN"):
        if env is None or var not in env:
            full_env.pop(var, None)
    command = [
        sys.executable,
        "-m",
        "edge",
        "serve",
        "--config",
        str(config or ROOT / "config" / "edge.yaml"),
        "--port",
        str(port),
        "--origin",
        origin_url,
        "--pid-file",
        str(pid_file),
        *args,
    ]
    log = log_path.open("wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=full_env)
    edge = EdgeProcess(proc, f"http://127.0.0.1:{port}", log_path, pid_file)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"edge exited with {proc.returncode}:\n{edge.log()}")
        with contextlib.suppress(OSError, ValueError):
            if get_json(edge.url("/_edge/health"), 2)["status"] == "ok":
                return edge
        time.sleep(0.1)
    edge.stop()
    raise AssertionError(f"edge did not become healthy:\n{edge.log()}")


def wait_for(check: Any, timeout: float = 10.0, every: float = 0.1) -> Any:
    """Call `check()` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"not reached in {timeout} s (last: {last!r})")
