"""The topology: the origin, Redis and the edge nodes as `bench.procs.Child` processes."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlparse

from bench.procs import Child, Probe, StartError, child_env, http_probe, port_open, redis_probe
from bench.topology.balancer import RoundRobinBalancer
from bench.topology.certs import DevCert, ensure_dev_cert
from bench.topology.config import LOOPBACK, LOOPBACK_NAMES, TopologyConfig

EDGE_ENV_WE_SET = ("EDGE_ORIGIN", "EDGE_REDIS_URL", "EDGE_NODE", "EDGE_PORT", "EDGE_HOST")
"""Variables that would override the command-line arguments we give each node: not inherited."""

REDIS_NO_DISK = ("--save", "", "--appendonly", "no")


class TopologyError(StartError):
    """Something of the topology did not start (the message says what, and shows its log)."""


@dataclass(eq=False)
class Service(Child):
    """One child process of the topology: a Child with a role, a URL and a readiness probe."""

    role: str = ""
    url: str = ""
    ready: Probe | None = None
    note: str = ""
    reported_exit: bool = False


class Topology:
    """Starts and stops the local origin, Redis and edge nodes; see the package docstring."""

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
            argv += ["--heavy-seconds", f"{c.heavy_seconds:g}"]
        if c.db_seconds is not None:
            argv += ["--db-seconds", f"{c.db_seconds:g}"]
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
            *("--host", c.host, "--port", str(self.node_port(index))),
            *("--node", f"edge-{index}", "--origin", self.origin_url),
        ]
        if c.redis_url:
            argv += ["--redis", c.redis_url]
        if c.edge_workers is not None:
            argv += ["--workers", str(c.edge_workers)]
        if c.tls_port:
            cert = self.dev_cert()
            argv += ["--tls-port", str(self.tls_port(index))]
            argv += ["--cert", str(cert.cert), "--key", str(cert.key)]
        return argv

    def tls_port(self, index: int) -> int:
        assert self.config.tls_port
        return self.config.tls_port if self.config.edges == 1 else self.config.tls_port + index

    @property
    def tls_url(self) -> str | None:
        if not self.config.tls_port:
            return None
        return f"https://{self.config.host}:{self.tls_port(1)}"

    def dev_cert(self) -> DevCert:
        """The certificate make run serves HTTPS with (var/tls/, made once)."""
        return ensure_dev_cert(self.config.cwd / "var" / "tls")

    def _service(self, role: str, name: str, argv: list[str], url: str, **kw: Any) -> Service:
        extra = {**self.config.extra_env, **kw.pop("env", {})}
        return Service(
            name=name,
            argv=argv,
            log_path=self.log_dir / f"{name}.log",
            env=child_env(extra, drop=EDGE_ENV_WE_SET),
            cwd=self.config.cwd,
            role=role,
            url=url,
            **kw,
        )

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
        if c.tls_port:
            ports += [self.tls_port(i) for i in self._node_range()]
        busy = [p for p in ports if port_open(p, c.host)]
        if busy:
            raise TopologyError(
                f"port(s) {', '.join(map(str, busy))} on {c.host} already in use: "
                "stop what listens there or choose other ports (--edge-port, --origin-port)"
            )
        await self._start_redis()
        origin = self._service(
            "origin",
            "origin",
            self.origin_argv(),
            self.origin_url,
            ready=http_probe(f"{self.origin_url}/api/ping"),
            note=f"{c.origin_replicas} API process(es)",
        )
        self._spawn(origin)
        await self._ready(origin)
        self._edges = [self._edge_service(i) for i in self._node_range()]
        for edge in self._edges:
            self._spawn(edge)
        for edge in self._edges:
            await self._ready(edge)
        if c.edges > 1:
            self.balancer = RoundRobinBalancer(
                [(c.host, self.node_port(i)) for i in self._node_range()], c.host, c.edge_port
            )
            await self.balancer.start()

    def _edge_service(self, index: int) -> Service:
        url = f"http://{self.config.host}:{self.node_port(index)}"
        return self._service(
            "edge",
            f"edge-{index}",
            self.edge_argv(index),
            url,
            ready=http_probe(f"{url}/_edge/health", healthy_json=True),
            env={"EDGE_PURGE_TOKEN": self.purge_token},
        )

    async def _start_redis(self) -> None:
        url = self.config.redis_url
        if not url:
            self.redis_note = "off"
            return
        from edge.config.redis_url import parse_url

        if parse_url(url).failover:  # a Sentinel set or a cluster: started by its owner
            self.redis_note = "given"
            return
        parsed = urlparse(url)
        host = parsed.hostname or LOOPBACK
        port = parsed.port or 6379
        if port_open(port, host):
            self.redis_note = f"already running at {host}:{port}"
            return
        if host not in LOOPBACK_NAMES:
            raise TopologyError(f"nothing answers at {url}, and it is not on loopback to start it")
        server = shutil.which("redis-server")
        if server is None:
            raise TopologyError(f"nothing answers at {url} and redis-server is not installed")
        service = self._service(
            "redis",
            "redis",
            [server, "--port", str(port), "--bind", LOOPBACK, *REDIS_NO_DISK],
            url,
            ready=redis_probe(port),
            note="started here",
        )
        self._spawn(service)
        await self._ready(service)
        self.redis_note = f"started here (pid {service.pid})"

    def _spawn(self, service: Service) -> None:
        service.spawn()
        service.reported_exit = False
        if service not in self.services:
            self.services.append(service)

    async def _ready(self, service: Service) -> None:
        try:
            await asyncio.to_thread(service.wait_ready, service.ready, self.config.startup_timeout)
        except StartError as exc:
            raise TopologyError(str(exc)) from None

    def service(self, name: str) -> Service:
        """The service called `name` ("origin", "redis", "edge-1", ...)."""
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(f"no service {name!r} in this topology")

    def _resolve(self, service: str | Service) -> Service:
        return self.service(service) if isinstance(service, str) else service

    async def kill(self, service: str | Service) -> None:
        """SIGKILL a service's whole process group: a crash, not a clean stop."""
        s = self._resolve(service)
        await asyncio.to_thread(s.kill)
        s.reported_exit = True

    async def terminate(self, service: str | Service) -> None:
        """Stop a service cleanly (SIGTERM, then SIGKILL after 5 s)."""
        s = self._resolve(service)
        await asyncio.to_thread(s.stop)
        s.reported_exit = True

    async def restart(self, service: str | Service) -> None:
        """Start a stopped or killed service again and wait until it answers."""
        s = self._resolve(service)
        if s.running:
            return
        self._spawn(s)
        await self._ready(s)

    async def stop(self) -> None:
        """Stop the balancer, then every child's process group (TERM, then KILL after 5 s)."""
        if self.balancer is not None:
            await self.balancer.stop()
            self.balancer = None
        for service in reversed(self.services):
            await self.terminate(service)

    async def stop_node(self, index: int) -> None:
        """Stop edge node `index` (from 1), e.g. to see the others (and Redis) carry on."""
        await self.terminate(self._edges[index - 1])

    async def start_node(self, index: int) -> None:
        """Start edge node `index` again and wait until it is healthy."""
        await self.restart(self._edges[index - 1])

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
            "tls_url": self.tls_url,
            "tls_ca": str(self.dev_cert().ca) if self.config.tls_port else None,
            "services": [
                {"role": s.role, "name": s.name, "pid": s.pid, "url": s.url} for s in self.services
            ],
        }


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)
