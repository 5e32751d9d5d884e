"""A local stand-in for the Swarm stack: origin, optional Redis and N edge nodes as processes.

    python -m bench topology up --edges 1                 # what `make run` starts
    python -m bench topology up --edges 3 --redis redis://127.0.0.1:6379/0
    python -m bench topology up --edges 3 --detach        # then: python -m bench topology down

`up` starts `python -m origin serve` on the origin port (8081), a `redis-server` when `--redis`
names a loopback URL where nothing listens yet, and the edge nodes. One edge listens on the edge
port (8080) itself; with several, node i listens on 8090+i and a small round-robin TCP balancer
in this process listens on the edge port, standing in for the Swarm routing mesh. Every child
runs in its own process group and is stopped, group and all, on Ctrl-C or SIGTERM.

From Python (the bench and the chaos tests):

    async with Topology(TopologyConfig(edges=3, redis_url=url)) as topo:
        ... topo.edge_url, topo.origin_url, topo.node_urls, topo.purge_token ...
        await topo.stop_node(1); await topo.start_node(1)

or, from synchronous code, `with BackgroundTopology(config) as topo: ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar
from urllib.parse import urlparse

import aiohttp

DEFAULT_EDGE_PORT = 8080
DEFAULT_ORIGIN_PORT = 8081
DEFAULT_NODE_BASE_PORT = 8090
LOOPBACK = "127.0.0.1"
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
EDGE_ENV_WE_SET = ("EDGE_ORIGIN", "EDGE_REDIS_URL", "EDGE_NODE", "EDGE_PORT", "EDGE_HOST")
"""Variables that would override the command-line arguments we give each node: not inherited."""

REDIS_NO_DISK = ("--save", "", "--appendonly", "no")
T = TypeVar("T")


class TopologyError(RuntimeError):
    """Something of the topology did not start (the message says what, and shows its log)."""


@dataclass
class TopologyConfig:
    edges: int = 1
    origin_replicas: int = 1
    redis_url: str | None = None
    """Redis shared by the edge nodes; started here when it is on loopback and not listening."""
    edge_port: int = DEFAULT_EDGE_PORT
    origin_port: int = DEFAULT_ORIGIN_PORT
    node_base_port: int = DEFAULT_NODE_BASE_PORT
    """With several edges, node i (from 1) listens on node_base_port + i."""
    host: str = LOOPBACK
    heavy_seconds: float | None = None
    db_seconds: float | None = None
    static_rate: int | None = None
    origin_db: str | None = None
    edge_config: str | None = None
    edge_workers: int | None = None
    purge_token: str | None = None
    """None: EDGE_PURGE_TOKEN from the environment, else a fresh secrets.token_urlsafe()."""
    log_dir: Path | None = None
    """Where each child's output goes (default var/topology/)."""
    startup_timeout: float = 30.0
    python: str = sys.executable
    cwd: Path = field(default_factory=Path.cwd)
    extra_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Service:
    """One child process of the topology."""

    role: str
    name: str
    argv: list[str]
    url: str
    health_url: str | None
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    note: str = ""
    reported_exit: bool = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def port_in_use(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout):
            return True
    except OSError:
        return False


# --- the routing-mesh stand-in ---------------------------------------------------------------


class RoundRobinBalancer:
    """A TCP balancer: each new connection goes to the next backend that accepts it.

    Like the Swarm routing mesh it balances connections, not requests: a keep-alive client stays
    on one node. A backend that refuses the connection is skipped, so a stopped node is routed
    around.
    """

    def __init__(
        self, backends: Sequence[tuple[str, int]], host: str = LOOPBACK, port: int = 0
    ) -> None:
        if not backends:
            raise ValueError("a balancer needs at least one backend")
        self.backends = list(backends)
        self.host = host
        self.port = port
        self.counts = [0] * len(self.backends)
        """Connections handed to each backend so far."""
        self._next = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)
        self._server = None

    async def _connect(self) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self.backends)):
            index = self._next
            self._next = (self._next + 1) % len(self.backends)
            host, port = self.backends[index]
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                continue
            self.counts[index] += 1
            return index, reader, writer
        return None

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._writers.add(client_w)
        backend_w: asyncio.StreamWriter | None = None
        try:
            picked = await self._connect()
            if picked is None:
                return
            _, backend_r, backend_w = picked
            self._writers.add(backend_w)
            await asyncio.gather(
                _pipe(client_r, backend_w), _pipe(backend_r, client_w), return_exceptions=True
            )
        finally:
            for writer in (client_w, backend_w):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof() and not dst.is_closing():
            dst.write_eof()
    except (ConnectionError, OSError):
        dst.close()


# --- the topology ------------------------------------------------------------------------------


class Topology:
    """Starts and stops the local origin, Redis and edge nodes; see the module docstring."""

    def __init__(self, config: TopologyConfig | None = None) -> None:
        self.config = config or TopologyConfig()
        if self.config.edges < 1:
            raise ValueError("edges must be at least 1")
        token = self.config.purge_token or os.environ.get("EDGE_PURGE_TOKEN")
        self.token_generated = not token
        self.purge_token: str = token or secrets.token_urlsafe(24)
        self.log_dir = self.config.log_dir or (self.config.cwd / "var" / "topology")
        self.services: list[Service] = []
        self.redis_note = "off"
        self.balancer: RoundRobinBalancer | None = None
        self._edges: list[Service] = []

    # URLs ---------------------------------------------------------------------------------

    @property
    def origin_url(self) -> str:
        return f"http://{self.config.host}:{self.config.origin_port}"

    @property
    def edge_url(self) -> str:
        """Where clients go: the single edge, or the balancer in front of the nodes."""
        return f"http://{self.config.host}:{self.config.edge_port}"

    def node_port(self, index: int) -> int:
        """Port of edge node `index` (from 1)."""
        if self.config.edges == 1:
            return self.config.edge_port
        return self.config.node_base_port + index

    @property
    def node_urls(self) -> list[str]:
        return [f"http://{self.config.host}:{self.node_port(i)}" for i in self._node_range()]

    @property
    def redis_url(self) -> str | None:
        return self.config.redis_url

    def _node_range(self) -> range:
        return range(1, self.config.edges + 1)

    # building the commands ----------------------------------------------------------------

    def origin_argv(self) -> list[str]:
        c = self.config
        argv = [c.python, "-m", "origin", "serve", "--host", c.host, "--port", str(c.origin_port)]
        if c.origin_replicas != 1:
            argv += ["--replicas", str(c.origin_replicas)]
        if c.heavy_seconds is not None:
            argv += ["--heavy-seconds", _num(c.heavy_seconds)]
        if c.db_seconds is not None:
            argv += ["--db-seconds", _num(c.db_seconds)]
        if c.static_rate is not None:
            argv += ["--static-rate", str(c.static_rate)]
        if c.origin_db:
            argv += ["--db", c.origin_db]
        return argv

    def edge_argv(self, index: int) -> list[str]:
        c = self.config
        argv = [c.python, "-m", "edge", "serve"]
        if c.edge_config:
            argv += ["--config", c.edge_config]
        argv += [
            "--host",
            c.host,
            "--port",
            str(self.node_port(index)),
            "--node",
            f"edge-{index}",
            "--origin",
            self.origin_url,
        ]
        if c.redis_url:
            argv += ["--redis", c.redis_url]
        if c.edge_workers is not None:
            argv += ["--workers", str(c.edge_workers)]
        return argv

    def _child_env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in EDGE_ENV_WE_SET}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.config.extra_env)
        env.update(extra)
        return env

    # lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Topology:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start everything and wait until each part answers; on failure stop what started."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        c = self.config
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ports = [c.origin_port, c.edge_port]
        if c.edges > 1:
            ports += [self.node_port(i) for i in self._node_range()]
        busy = [p for p in ports if port_in_use(c.host, p)]
        if busy:
            raise TopologyError(
                f"port(s) {', '.join(map(str, busy))} on {c.host} already in use: "
                "stop what listens there or choose other ports (--edge-port, --origin-port)"
            )
        await self._start_redis()
        origin = Service(
            role="origin",
            name="origin",
            argv=self.origin_argv(),
            url=self.origin_url,
            health_url=f"{self.origin_url}/api/ping",
            log_path=self.log_dir / "origin.log",
            note=f"{c.origin_replicas} API process(es)",
        )
        self._spawn(origin)
        await self._wait_healthy(origin)
        self._edges = []
        for i in self._node_range():
            edge = self._edge_service(i)
            self._edges.append(edge)
            self._spawn(edge)
        for edge in self._edges:
            await self._wait_healthy(edge)
        if c.edges > 1:
            self.balancer = RoundRobinBalancer(
                [(c.host, self.node_port(i)) for i in self._node_range()], c.host, c.edge_port
            )
            await self.balancer.start()

    def _edge_service(self, index: int) -> Service:
        url = f"http://{self.config.host}:{self.node_port(index)}"
        return Service(
            role="edge",
            name=f"edge-{index}",
            argv=self.edge_argv(index),
            url=url,
            health_url=f"{url}/_edge/health",
            log_path=self.log_dir / f"edge-{index}.log",
            env={"EDGE_PURGE_TOKEN": self.purge_token},
        )

    async def _start_redis(self) -> None:
        url = self.config.redis_url
        if not url:
            self.redis_note = "off"
            return
        parsed = urlparse(url)
        host = parsed.hostname or LOOPBACK
        port = parsed.port or 6379
        if port_in_use(host, port):
            self.redis_note = f"already running at {host}:{port}"
            return
        if host not in LOOPBACK_NAMES:
            raise TopologyError(f"nothing answers at {url}, and it is not on loopback to start it")
        server = shutil.which("redis-server")
        if server is None:
            raise TopologyError(f"nothing answers at {url} and redis-server is not installed")
        service = Service(
            role="redis",
            name="redis",
            argv=[server, "--port", str(port), "--bind", LOOPBACK, *REDIS_NO_DISK],
            url=url,
            health_url=None,
            log_path=self.log_dir / "redis.log",
            note="started here",
        )
        self._spawn(service)
        await self._wait_redis(service, LOOPBACK, port)
        self.redis_note = f"started here (pid {service.pid})"

    def _spawn(self, service: Service) -> None:
        log: IO[bytes] = open(service.log_path, "ab")  # noqa: SIM115 (the child keeps it)
        try:
            log.write(f"\n--- {time.strftime('%F %T')} {' '.join(service.argv)}\n".encode())
            log.flush()
            service.proc = subprocess.Popen(
                service.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.config.cwd,
                env=self._child_env(service.env),
                start_new_session=True,  # its own process group: stopped as a whole
            )
        finally:
            log.close()
        service.reported_exit = False
        if service not in self.services:
            self.services.append(service)

    async def _wait_healthy(self, service: Service) -> None:
        deadline = time.monotonic() + self.config.startup_timeout
        assert service.health_url is not None
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                self._check_alive(service)
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                    async with session.get(service.health_url) as resp:
                        if resp.status == 200:
                            if service.role != "edge":
                                return
                            body: Any = await resp.json(content_type=None)
                            if isinstance(body, dict) and body.get("status") == "ok":
                                return
                if time.monotonic() > deadline:
                    raise TopologyError(
                        f"{service.name} did not answer {service.health_url} within "
                        f"{self.config.startup_timeout:g} s; its log ({service.log_path}):\n"
                        f"{service.log_tail()}"
                    )
                await asyncio.sleep(0.1)

    async def _wait_redis(self, service: Service, host: str, port: int) -> None:
        deadline = time.monotonic() + self.config.startup_timeout
        while True:
            self._check_alive(service)
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1)
                try:
                    writer.write(b"PING\r\n")
                    await writer.drain()
                    if (await asyncio.wait_for(reader.readline(), 1)).startswith(b"+PONG"):
                        return
                finally:
                    writer.close()
            if time.monotonic() > deadline:
                raise TopologyError(f"redis-server did not answer on {host}:{port}")
            await asyncio.sleep(0.1)

    @staticmethod
    def _check_alive(service: Service) -> None:
        if service.proc is not None and service.proc.poll() is not None:
            raise TopologyError(
                f"{service.name} exited with status {service.proc.returncode} while starting; "
                f"command: {' '.join(service.argv)}\nits log ({service.log_path}):\n"
                f"{service.log_tail()}"
            )

    async def stop(self) -> None:
        """Stop the balancer, then every child's process group (TERM, then KILL after 5 s)."""
        if self.balancer is not None:
            await self.balancer.stop()
            self.balancer = None
        for service in reversed(self.services):
            await _terminate(service)

    async def stop_node(self, index: int) -> None:
        """Stop edge node `index` (from 1), e.g. to see the others (and Redis) carry on."""
        await _terminate(self._edges[index - 1])

    async def start_node(self, index: int) -> None:
        """Start edge node `index` again and wait until it is healthy."""
        edge = self._edges[index - 1]
        if edge.running:
            return
        self._spawn(edge)
        await self._wait_healthy(edge)

    def exited(self) -> list[Service]:
        """Children that have exited and were not reported yet (the caller reports them)."""
        gone = [s for s in self.services if s.proc is not None and s.proc.poll() is not None]
        fresh = [s for s in gone if not s.reported_exit]
        for s in fresh:
            s.reported_exit = True
        return fresh

    # reporting ------------------------------------------------------------------------------

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        """(role, name, pid, url, note) for each part, in start order."""
        rows = []
        for s in self.services:
            pid = str(s.pid) if s.running else "exited"
            log = f"log {_rel(s.log_path, self.config.cwd)}"
            note = f"{s.note}; {log}" if s.note else log
            rows.append((s.role, s.name, pid, s.url, note))
        if self.config.redis_url and not any(s.role == "redis" for s in self.services):
            rows.insert(0, ("redis", "redis", "-", self.config.redis_url, self.redis_note))
        if self.balancer is not None:
            ports = ", ".join(str(p) for _, p in self.balancer.backends)
            rows.append(
                ("balancer", "mesh", str(os.getpid()), self.edge_url, f"round-robin to {ports}")
            )
        return rows

    def table(self) -> str:
        header = ("ROLE", "NAME", "PID", "URL", "NOTES")
        rows = [header, *self.rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        return "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in rows
        )

    def state(self) -> dict[str, Any]:
        """What `--detach`, the bench and `down` need to find the running topology."""
        return {
            "pid": os.getpid(),
            "edge_url": self.edge_url,
            "origin_url": self.origin_url,
            "node_urls": self.node_urls,
            "redis_url": self.redis_url,
            "purge_token": self.purge_token,
            "services": [
                {"role": s.role, "name": s.name, "pid": s.pid, "url": s.url} for s in self.services
            ],
        }


async def _terminate(service: Service, grace: float = 5.0) -> None:
    proc = service.proc
    if proc is None:
        return
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(proc.wait, grace)
    # The leader may be gone while some of its children (e.g. API replicas) linger.
    _signal_group(proc, signal.SIGKILL)
    if proc.poll() is None:
        await asyncio.to_thread(proc.wait)
    service.reported_exit = True


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _num(value: float) -> str:
    return f"{value:g}"


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


class BackgroundTopology:
    """A Topology driven from synchronous code: its event loop runs in a daemon thread."""

    def __init__(self, config: TopologyConfig | None = None) -> None:
        self.topology = Topology(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def start(self) -> Topology:
        self._thread.start()
        self._run(self.topology.start())
        return self.topology

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._run(self.topology.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> Topology:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- command line -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench topology",
        description="Run the origin, Redis and N edge nodes locally (a stand-in for the stack).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start everything; foreground unless --detach")
    up.add_argument("--edges", type=int, default=1, help="edge nodes (default 1)")
    up.add_argument("--origin-replicas", type=int, default=1, help="API processes of the origin")
    up.add_argument(
        "--redis",
        metavar="URL",
        default=os.environ.get("EDGE_REDIS_URL") or None,
        help="Redis shared by the edges (default $EDGE_REDIS_URL; none: memory only); "
        "started here when it is on loopback and nothing listens",
    )
    up.add_argument("--edge-port", type=int, default=DEFAULT_EDGE_PORT)
    up.add_argument("--origin-port", type=int, default=DEFAULT_ORIGIN_PORT)
    up.add_argument(
        "--node-base-port",
        type=int,
        default=DEFAULT_NODE_BASE_PORT,
        help="with several edges, node i listens on this + i (default 8090)",
    )
    up.add_argument("--host", default=LOOPBACK, help="address everything binds (127.0.0.1)")
    up.add_argument("--heavy-seconds", type=float, help="origin: the heavy call's delay")
    up.add_argument("--db-seconds", type=float, help="origin: the DB call's delay")
    up.add_argument("--static-rate", type=int, help="origin: static bytes/s (0 = no limit)")
    up.add_argument("--origin-db", metavar="URL", help="origin: --db (default its SQLite)")
    up.add_argument("--edge-config", metavar="PATH", help="edge: --config (default its own)")
    up.add_argument("--edge-workers", type=int, help="edge: --workers per node")
    up.add_argument(
        "--quick",
        action="store_true",
        help="short origin delays for tests: heavy 0.2 s, db 0.5 s, no static throttle "
        "(explicit values win)",
    )
    up.add_argument("--startup-timeout", type=float, default=30.0, metavar="SECONDS")
    up.add_argument("--log-dir", type=Path, help="children's logs (default var/topology/)")
    up.add_argument(
        "--detach",
        action="store_true",
        help="run in the background; pid in var/topology.pid; stop with `down`",
    )
    up.add_argument("--state-file", type=Path, help=argparse.SUPPRESS)
    down = sub.add_parser("down", help="stop a topology started with --detach")
    down.add_argument("--timeout", type=float, default=20.0)
    return parser


def config_from_args(args: argparse.Namespace) -> TopologyConfig:
    heavy, db, rate = args.heavy_seconds, args.db_seconds, args.static_rate
    if args.quick:
        heavy = 0.2 if heavy is None else heavy
        db = 0.5 if db is None else db
        rate = 0 if rate is None else rate
    return TopologyConfig(
        edges=args.edges,
        origin_replicas=args.origin_replicas,
        redis_url=args.redis,
        edge_port=args.edge_port,
        origin_port=args.origin_port,
        node_base_port=args.node_base_port,
        host=args.host,
        heavy_seconds=heavy,
        db_seconds=db,
        static_rate=rate,
        origin_db=args.origin_db,
        edge_config=args.edge_config,
        edge_workers=args.edge_workers,
        log_dir=args.log_dir,
        startup_timeout=args.startup_timeout,
    )


def _var_dir() -> Path:
    return Path.cwd() / "var"


def _pid_file() -> Path:
    return _var_dir() / "topology.pid"


def _state_file() -> Path:
    return _var_dir() / "topology.json"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


async def _run_up(config: TopologyConfig, state_file: Path) -> int:
    topo = Topology(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(topo.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        print("interrupted while starting; stopping", file=sys.stderr, flush=True)
        starting.cancel()
        with contextlib.suppress(BaseException):
            await starting
        await topo.stop()
        return 130
    stopping.cancel()
    try:
        starting.result()
    except TopologyError as exc:
        print(f"topology: {exc}", file=sys.stderr, flush=True)
        return 1
    try:
        _write_private(state_file, json.dumps(topo.state(), indent=2))
        print(topo.table())
        print()
        print(f"Edge:   {topo.edge_url}")
        print(f"Origin: {topo.origin_url}")
        origin = "generated; set EDGE_PURGE_TOKEN to choose it" if topo.token_generated else ""
        print(f"Purge token: {topo.purge_token}" + (f"  ({origin})" if origin else ""))
        print(
            f'  curl -X POST -H "Authorization: Bearer {topo.purge_token}" '
            f"-d '{{\"all\": true}}' {topo.edge_url}/_edge/purge"
        )
        print("Ctrl-C stops everything.", flush=True)
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 1)
            for service in topo.exited():
                code = service.proc.returncode if service.proc else "?"
                print(
                    f"topology: {service.name} exited with status {code}; log "
                    f"{service.log_path}:\n{service.log_tail(10)}",
                    file=sys.stderr,
                    flush=True,
                )
        print("stopping...", flush=True)
        return 0
    finally:
        await topo.stop()
        await asyncio.to_thread(state_file.unlink, missing_ok=True)
        print("stopped.", flush=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _detach(argv: list[str], timeout: float) -> int:
    pid_file, state_file = _pid_file(), _state_file()
    if pid_file.exists():
        with contextlib.suppress(ValueError):
            old = int(pid_file.read_text().strip())
            if _pid_alive(old):
                print(f"a topology already runs (pid {old}); `down` stops it", file=sys.stderr)
                return 1
    with contextlib.suppress(FileNotFoundError):
        state_file.unlink()
    log_path = _var_dir() / "topology" / "up.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_argv = [a for a in argv if a != "--detach"]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.topology", *child_argv, "--state-file", str(state_file)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _write_private(pid_file, f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pid_file.unlink(missing_ok=True)
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            print(f"topology failed to start (status {proc.returncode}):\n{tail}", file=sys.stderr)
            return 1
        if state_file.exists():
            state = json.loads(state_file.read_text())
            print(f"topology running in the background (pid {proc.pid}, log {log_path})")
            print(f"Edge:   {state['edge_url']}")
            print(f"Origin: {state['origin_url']}")
            print(f"Purge token: {state['purge_token']}")
            print("Stop it with: python -m bench topology down")
            return 0
        time.sleep(0.2)
    print(f"topology not ready after {timeout:g} s; stopping it (log {log_path})", file=sys.stderr)
    _down(20.0)
    return 1


def _down(timeout: float) -> int:
    pid_file = _pid_file()
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        print("no detached topology (var/topology.pid is missing)", file=sys.stderr)
        return 1
    if _pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if _pid_alive(pid):
            print(f"topology (pid {pid}) did not stop in {timeout:g} s; killing", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    _kill_leftovers()
    pid_file.unlink(missing_ok=True)
    print(f"topology (pid {pid}) stopped")
    return 0


def _kill_leftovers() -> None:
    """If the `up` process was killed before it could stop its children, stop their groups."""
    state_file = _state_file()
    try:
        state = json.loads(state_file.read_text())
    except (FileNotFoundError, ValueError):
        return
    for service in state.get("services", []):
        with contextlib.suppress(ValueError, TypeError, ProcessLookupError, PermissionError):
            pid = int(service["pid"])
            if pid != state.get("pid"):
                os.killpg(pid, signal.SIGKILL)
    state_file.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(raw)
    if args.command == "down":
        return _down(args.timeout)
    if args.edges < 1:
        print("--edges must be at least 1", file=sys.stderr)
        return 2
    if args.detach:
        return _detach(raw, args.startup_timeout * 2 + 10)
    config = config_from_args(args)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio works too
        runner = asyncio.run
    return int(runner(_run_up(config, args.state_file or _state_file())))


if __name__ == "__main__":
    sys.exit(main())
