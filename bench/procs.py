"""The one owner of the bench's processes: free ports, spawning, readiness, a clean stop.

Every server the bench starts (origin, edge nodes, nginx, varnishd, redis-server, the
stand-in) is a `Child`: a subprocess in its own process group (so stopping it stops its
workers too), its output appended to a log file, registered for a stop at interpreter exit.
`ProcessGroup` starts children and stops them all when its `with` block ends (an exception
and Ctrl-C included); `bench.topology.Topology` builds its services on `Child` as well.

Readiness is a probe, a function that says whether the server answers (`http_probe`,
`port_probe`, `redis_probe`); `Child.wait_ready` polls one until it holds, the process dies
(`StartError` with the tail of its log) or the time is up. Async callers run the same code in
a thread (`await asyncio.to_thread(child.wait_ready, probe, timeout)`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parent.parent

# Below Linux's ephemeral range (32768-60999): a port the kernel hands out as the source
# port of an outgoing connection could be taken between choosing it and the server binding
# it (seen under load as "address already in use").
PORT_RANGE = (20000, 32000)

Probe = Callable[[], bool]
"""True once the server answers."""


# --- ports -----------------------------------------------------------------------------------


def _bindable(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody uses right now, outside the ephemeral range."""
    return _free_run(1)


def free_block(n: int) -> int:
    """A base port with base+1 .. base+n free (node i listens on base + i), in PORT_RANGE."""
    return _free_run(n, offset=1) - 1


def _free_run(n: int, offset: int = 0) -> int:
    """The first of n consecutive free ports, starting at a random port of PORT_RANGE."""
    low, high = PORT_RANGE
    for _ in range(500):
        first = random.randrange(low, high - n)
        if all(_bindable(first + i) for i in range(n)):
            return first
    raise RuntimeError(f"no {n} free consecutive port(s) in {low}-{high} on 127.0.0.1")


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout):
            return True
    except OSError:
        return False


# --- readiness probes -------------------------------------------------------------------------


def http_status(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body) of a GET, or (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (OSError, ValueError):
        return 0, b""


def http_probe(url: str, *, healthy_json: bool = False) -> Probe:
    """Answers below 500; with healthy_json, a 200 whose JSON body has "status": "ok"."""

    def probe() -> bool:
        status, body = http_status(url)
        if not healthy_json:
            return 200 <= status < 500
        if status != 200:
            return False
        with contextlib.suppress(ValueError):
            doc = json.loads(body)
            return isinstance(doc, dict) and doc.get("status") == "ok"
        return False

    return probe


def port_probe(port: int, host: str = "127.0.0.1") -> Probe:
    return lambda: port_open(port, host)


def redis_probe(port: int, host: str = "127.0.0.1") -> Probe:
    """True once a Redis answers PING with +PONG."""

    def probe() -> bool:
        try:
            with socket.create_connection((host, port), 1) as s:
                s.settimeout(1)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    return probe


# --- children --------------------------------------------------------------------------------


class StartError(RuntimeError):
    """A server did not come up; carries the tail of its log."""


_LIVE: set[Child] = set()


def child_env(extra: dict[str, str] | None = None, drop: Sequence[str] = ()) -> dict[str, str]:
    """This process's environment without the names in `drop` (or starting with a name there
    that ends in "_"), unbuffered Python, and `extra` on top."""

    def dropped(name: str) -> bool:
        return any(name == d or (d.endswith("_") and name.startswith(d)) for d in drop)

    env = {k: v for k, v in os.environ.items() if not dropped(k)}
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


@dataclass(eq=False)
class Child:
    """One server process of the bench, in its own process group."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    """The whole environment (default: `child_env()` at spawn time)."""
    cwd: Path = REPO
    proc: subprocess.Popen[bytes] | None = None
    stop_at_exit: bool = True
    """Stopped when the bench exits (False: a detached process that outlives it)."""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None

    def spawn(self) -> Child:
        """Start (or start again) the process, its output appended to its log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- {time.strftime('%F %T')} {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env if self.env is not None else child_env(),
                start_new_session=True,  # its own process group: stopped as a whole
            )
        if self.stop_at_exit:
            _LIVE.add(self)
        return self

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def wait_ready(self, probe: Probe | None, timeout: float = 30.0) -> Child:
        """Poll `probe` until it holds; StartError if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise StartError(
                    f"{self.name} exited with status {self.returncode} while starting; "
                    f"command: {' '.join(self.argv)}\nits log ({self.log_path}):\n"
                    f"{self.log_tail()}"
                )
            if probe is None or probe():
                return self
            if time.monotonic() > deadline:
                raise StartError(
                    f"{self.name} not ready after {timeout:g} s; command: {' '.join(self.argv)}"
                    f"\nits log ({self.log_path}):\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def signal(self, sig: signal.Signals) -> None:
        """Send sig to the whole process group (the leader may be gone, its workers not)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group, as a crash would, and reap the leader."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)
        _LIVE.discard(self)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the group, then SIGKILL what is left of it after `grace` seconds."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        self.kill()


@atexit.register
def _stop_all() -> None:  # pragma: no cover - safety net
    for child in list(_LIVE):
        child.stop(2.0)


# --- a group of children ----------------------------------------------------------------------


def in_memory_workdir() -> Path:
    """A new directory for a group's files, on tmpfs (/dev/shm) where the machine has one:
    nginx's cache files live there, as the edge's node tier lives in memory by default, so a
    miss compares the two caches, not the cache against the machine's disk."""
    shm = Path("/dev/shm")
    where = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="woody-bench-", dir=where))


@dataclass
class ProcessGroup:
    """Starts subprocesses and guarantees they are all stopped when the block ends."""

    workdir: Path = field(default_factory=in_memory_workdir)
    procs: list[Child] = field(default_factory=list)
    keep: bool = field(default_factory=lambda: os.environ.get("WOODY_BENCH_KEEP") == "1")
    """Keep workdir (logs, configs, caches) after the block; WOODY_BENCH_KEEP=1 sets it."""

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
        # Logs, configs, nginx/Varnish caches: gone with the servers unless kept
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        ready: Probe | None = None,
        timeout: float = 30.0,
        env: dict[str, str] | None = None,
        drop_env: Sequence[str] = (),
        cwd: Path | None = None,
    ) -> Child:
        """Start argv and wait until `ready` holds, else stop it and raise StartError."""
        child = Child(
            name,
            list(argv),
            self.workdir / f"{name}.log",
            env=child_env(env, drop_env),
            cwd=cwd or REPO,
        )
        self.procs.append(child.spawn())
        try:
            return child.wait_ready(ready, timeout)
        except StartError:
            self.stop(child)
            raise

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self.procs:
            self.procs.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self.procs)):
            self.stop(child)

    def subdir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


# --- commands run to their end ------------------------------------------------------------


def run_tool(argv: Sequence[str], timeout: float, cwd: Path = REPO) -> tuple[int, str, str]:
    """Run a command to its end (wrk, git, `--help`): (exit status, stdout, stderr); status
    -1 when it could not run or took longer than `timeout` s."""
    try:
        done = subprocess.run(
            list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return -1, "", str(exc)
    return done.returncode, done.stdout, done.stderr


def help_text(module: str, *args: str) -> str:
    """`python -m module args... --help` (empty when it fails): which flags exist."""
    code, out, _ = run_tool([sys.executable, "-m", module, *args, "--help"], 30)
    return out if code == 0 else ""
