"""A local Redis Cluster (3 primaries + 3 replicas) and a Sentinel set (1 master, 1 replica,
3 sentinels) on loopback ports, from Debian's redis-server and redis-cli, for the tests and
the benches. Each process is ours (started here, stopped by its pid); nothing is persisted.

    python -m bench.redis_sets up        # both, printing their URLs; Ctrl-C stops them
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

MASTER = "mymaster"


def _exe(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed (apt-get install redis-server)")
    return path


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int, bus: bool = False) -> list[int]:
    """`n` consecutive free loopback ports (and their cluster-bus ports, +10000)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        start = s.getsockname()[1]
    for base in [*range(start % 40000 + 12000, 55000, 17), *range(12000, 55000, 17)]:
        ports = list(range(base, base + n))
        if all(_free(p) and (not bus or _free(p + 10000)) for p in ports):
            return ports
    raise RuntimeError("no free ports")


def _wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s ({last!r})")


@dataclass
class Node:
    """One redis-server process of ours."""

    port: int
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        _wait(self._ours, 20, f"redis-server on port {self.port}")

    def _ours(self) -> bool:
        """Our process answers on the port (not someone else's that had it already)."""
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"redis-server on port {self.port} exited (see {self.log})")
        info: Any = self.client().info("server")
        return int(info["process_id"]) == self.proc.pid

    def kill(self) -> None:
        """SIGKILL, as a crash would: no goodbye to the other nodes."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)


def server_argv(port: int, workdir: Path, maxmemory: str | None, *extra: str) -> list[str]:
    argv = [_exe("redis-server"), "--port", str(port), "--bind", "127.0.0.1"]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
    argv += ["--enable-debug-command", "local"]
    if maxmemory:
        argv += ["--maxmemory", maxmemory, "--maxmemory-policy", "allkeys-lru"]
    return argv + list(extra)


@dataclass
class RedisCluster:
    """3 primaries + 3 replicas; `node_timeout` ms before a silent primary is replaced."""

    workdir: Path
    node_timeout: int = 2000
    maxmemory: str | None = None
    nodes: list[Node] = field(default_factory=list)

    def start(self) -> RedisCluster:
        for attempt in range(3):  # ports taken meanwhile by someone else: other ports
            try:
                return self._start()
            except RuntimeError:
                if attempt == 2:
                    raise
        return self

    def _start(self) -> RedisCluster:
        ports = free_ports(6, bus=True)
        self.nodes = []
        workdir = Path(tempfile.mkdtemp(prefix="cluster-", dir=self.workdir))
        for port in ports:
            argv = server_argv(port, workdir, self.maxmemory)
            argv += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
            argv += ["--cluster-node-timeout", str(self.node_timeout)]
            # a replica takes over however long it lost its primary (the test kills it)
            argv += ["--cluster-replica-validity-factor", "0"]
            self.nodes.append(Node(port, argv, self.workdir / f"cluster-{port}.log"))
        try:
            for node in self.nodes:
                node.start()
            made = subprocess.run(
                [_exe("redis-cli"), "--cluster", "create"]
                + [f"127.0.0.1:{p}" for p in ports]
                + ["--cluster-replicas", "1", "--cluster-yes"],
                capture_output=True,
                timeout=60,
            )
            if made.returncode != 0:
                out = (made.stdout + made.stderr).decode(errors="replace")
                raise RuntimeError(f"redis-cli --cluster create failed: {out[-2000:]}")
            _wait(self.healthy, 60, "the Redis Cluster")
        except BaseException:
            self.stop()
            raise
        return self

    def healthy(self) -> bool:
        """Every node says the cluster is ok and three primaries each have a replica."""
        alive = [n for n in self.nodes if n.alive]
        for node in alive:
            info = node.client().execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text:
                return False
        roles = [n.client().execute_command("ROLE")[0] for n in alive]
        return roles.count(b"master") == 3 and roles.count(b"slave") == len(alive) - 3

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def primary_of(self, key: str) -> Node:
        """The node serving `key`'s slot now."""
        for node in self.nodes:
            if not node.alive:
                continue
            with contextlib.suppress(redis.RedisError, OSError):
                slot = int(node.client().execute_command("CLUSTER", "KEYSLOT", key))
                for start, end, primary, *_ in node.client().execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        port = int(primary[1])
                        return next(n for n in self.nodes if n.port == port)
        raise RuntimeError("no node answers")

    def primaries(self) -> list[Node]:
        return [
            n for n in self.nodes if n.alive and n.client().execute_command("ROLE")[0] == b"master"
        ]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@dataclass
class SentinelSet:
    """A master, a replica and 3 sentinels (quorum 2); `down_after` ms of silence before
    the sentinels fail the master over."""

    workdir: Path
    down_after: int = 1000
    maxmemory: str | None = None
    servers: list[Node] = field(default_factory=list)
    sentinels: list[Node] = field(default_factory=list)

    def start(self) -> SentinelSet:
        ports = free_ports(5)
        master, replica = ports[:2]
        try:
            self.servers.append(
                Node(
                    master,
                    server_argv(master, self.workdir, self.maxmemory),
                    self.workdir / f"sentinel-master-{master}.log",
                )
            )
            self.servers.append(
                Node(
                    replica,
                    server_argv(
                        replica,
                        self.workdir,
                        self.maxmemory,
                        "--replicaof",
                        "127.0.0.1",
                        str(master),
                    ),
                    self.workdir / f"sentinel-replica-{replica}.log",
                )
            )
            for node in self.servers:
                node.start()
            for port in ports[2:]:
                conf = self.workdir / f"sentinel-{port}.conf"
                conf.write_text(
                    f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                    f"sentinel monitor {MASTER} 127.0.0.1 {master} 2\n"
                    f"sentinel down-after-milliseconds {MASTER} {self.down_after}\n"
                    f"sentinel failover-timeout {MASTER} {max(3000, 3 * self.down_after)}\n"
                    f"sentinel parallel-syncs {MASTER} 1\n"
                )
                argv = [_exe("redis-server"), str(conf), "--sentinel"]
                self.sentinels.append(Node(port, argv, self.workdir / f"sentinel-{port}.log"))
            for node in self.sentinels:
                node.start()
            _wait(self.healthy, 30, "the Sentinel set")
        except BaseException:
            self.stop()
            raise
        return self

    def healthy(self) -> bool:
        """Every sentinel knows the master, its replica and the two other sentinels."""
        for s in self.sentinels:
            if not s.alive:
                continue
            info: Any = s.client().sentinel_master(MASTER)
            if int(info["num-other-sentinels"]) < 2 or int(info["num-slaves"]) < 1:
                return False
            if info.get("is_sdown") or info.get("is_odown"):
                return False
        return self.master().client().execute_command("ROLE")[0] == b"master"

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER}/0"

    def master(self) -> Node:
        for s in self.sentinels:
            if s.alive:
                with contextlib.suppress(redis.RedisError, OSError):
                    _, port = s.client().execute_command(
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER
                    )
                    return next(n for n in self.servers if n.port == int(port))
        raise RuntimeError("no sentinel answers")

    def stop(self) -> None:
        for node in [*self.sentinels, *self.servers]:
            node.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_sets", description=__doc__)
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--node-timeout", type=int, default=5000, help="ms (cluster)")
    parser.add_argument("--down-after", type=int, default=5000, help="ms (sentinel)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="edge-redis-sets-"))
    cluster = RedisCluster(work, args.node_timeout).start()
    sentinel = SentinelSet(work, args.down_after)
    try:
        sentinel.start()
        print(f"cluster:  {cluster.url}\nsentinel: {sentinel.url}\nlogs:     {work}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        sentinel.stop()
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
