"""bench/topology.py: the balancer, the process lifecycle (with stand-ins), a real smoke test."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bench import topology
from bench.procs import port_open
from bench.topology import (
    BackgroundTopology,
    RoundRobinBalancer,
    Topology,
    TopologyConfig,
    TopologyError,
)
from tests.deploy import fake_services
from tests.deploy.helpers import REPO


def free_ports(n: int) -> list[int]:
    """n distinct ports free right now on loopback."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


# --- the balancer ----------------------------------------------------------------------------


async def _named_server(name: bytes) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readline()
        writer.write(name + b":" + data)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _ask(port: int, line: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(line)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


async def test_balancer_spreads_connections_round_robin() -> None:
    a, b = await _named_server(b"a"), await _named_server(b"b")
    backends = [("127.0.0.1", s.sockets[0].getsockname()[1]) for s in (a, b)]
    balancer = RoundRobinBalancer(backends)
    await balancer.start()
    try:
        answers = [await _ask(balancer.port, f"hello {i}\n".encode()) for i in range(6)]
        assert answers == [
            b"a:hello 0\n",
            b"b:hello 1\n",
            b"a:hello 2\n",
            b"b:hello 3\n",
            b"a:hello 4\n",
            b"b:hello 5\n",
        ]
        assert balancer.counts == [3, 3]
        # Many at once: both backends get an equal share, and every byte comes back.
        answers = await asyncio.gather(*(_ask(balancer.port, b"x\n") for _ in range(20)))
        assert sorted(answers) == [b"a:x\n"] * 10 + [b"b:x\n"] * 10
    finally:
        await balancer.stop()
        for s in (a, b):
            s.close()
            await s.wait_closed()


async def test_balancer_skips_a_backend_that_refuses() -> None:
    a = await _named_server(b"a")
    (dead_port,) = free_ports(1)
    balancer = RoundRobinBalancer(
        [("127.0.0.1", dead_port), ("127.0.0.1", a.sockets[0].getsockname()[1])]
    )
    await balancer.start()
    try:
        answers = [await _ask(balancer.port, b"q\n") for _ in range(4)]
        assert answers == [b"a:q\n"] * 4
        assert balancer.counts == [0, 4]
    finally:
        await balancer.stop()
        a.close()
        await a.wait_closed()


async def test_balancer_carries_large_bodies_both_ways() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the balancer passes on the client's half-close
        writer.write(data[::-1])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    balancer = RoundRobinBalancer([("127.0.0.1", server.sockets[0].getsockname()[1])])
    await balancer.start()
    try:
        payload = os.urandom(3 * 1024 * 1024)
        reader, writer = await asyncio.open_connection("127.0.0.1", balancer.port)
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        assert await reader.read() == payload[::-1]
        writer.close()
    finally:
        await balancer.stop()
        server.close()
        await server.wait_closed()


# --- the command line ------------------------------------------------------------------------


def test_cli_options_map_to_config() -> None:
    args = topology.build_parser().parse_args(
        [
            *("up", "--edges", "3", "--origin-replicas", "2"),
            *("--redis", "redis://127.0.0.1:6399/0", "--edge-port", "9080"),
            *("--origin-port", "9081", "--heavy-seconds", "1"),
            *("--db-seconds", "2", "--static-rate", "0", "--tls-port", "0"),
        ]
    )
    config = topology.config_from_args(args)
    assert (config.edges, config.origin_replicas, config.redis_url) == (
        3,
        2,
        "redis://127.0.0.1:6399/0",
    )
    assert (config.edge_port, config.origin_port) == (9080, 9081)
    assert (config.heavy_seconds, config.db_seconds, config.static_rate) == (1, 2, 0)
    topo = Topology(config)
    assert topo.edge_url == "http://127.0.0.1:9080"
    assert topo.origin_url == "http://127.0.0.1:9081"
    assert topo.node_urls == [f"http://127.0.0.1:{p}" for p in (8091, 8092, 8093)]
    assert topo.origin_argv()[1:] == [
        "-m",
        "origin",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "9081",
        "--replicas",
        "2",
        "--heavy-seconds",
        "1",
        "--db-seconds",
        "2",
        "--static-rate",
        "0",
    ]
    assert topo.edge_argv(2)[1:] == [
        "-m",
        "edge",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "8092",
        "--node",
        "edge-2",
        "--origin",
        "http://127.0.0.1:9081",
        "--redis",
        "redis://127.0.0.1:6399/0",
    ]


def test_quick_flag_and_single_edge_on_the_edge_port() -> None:
    args = topology.build_parser().parse_args(["up", "--quick", "--heavy-seconds", "3"])
    config = topology.config_from_args(args)
    assert (config.heavy_seconds, config.db_seconds, config.static_rate) == (3, 0.5, 0)
    topo = Topology(config)
    assert topo.node_urls == [topo.edge_url] == ["http://127.0.0.1:8080"]


def test_purge_token_generated_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_PURGE_TOKEN", raising=False)
    one, two = Topology(), Topology()
    assert one.token_generated and len(one.purge_token) >= 24
    assert one.purge_token != two.purge_token
    monkeypatch.setenv("EDGE_PURGE_TOKEN", "from-env")
    assert Topology().purge_token == "from-env"
    assert not Topology().token_generated


def test_real_parsers_accept_what_the_topology_passes() -> None:
    """The commands the topology builds parse with the real origin and edge parsers."""
    from tests.deploy.helpers import real_parser

    config = TopologyConfig(
        edges=2,
        origin_replicas=3,
        redis_url="redis://127.0.0.1:6379/0",
        heavy_seconds=0.2,
        db_seconds=0.5,
        static_rate=0,
        edge_config="config/edge.yaml",
        edge_workers=2,
    )
    topo = Topology(config)
    origin_ns = real_parser("origin").parse_args(topo.origin_argv()[3:])
    assert (origin_ns.port, origin_ns.replicas, origin_ns.static_rate) == (8081, 3, 0)
    edge_ns = real_parser("edge").parse_args(topo.edge_argv(2)[3:])
    assert edge_ns.port == 8092


# --- the lifecycle, with stand-ins for the origin and the edge ------------------------------


@pytest.fixture
def fake_root(tmp_path: Path) -> Iterator[Path]:
    fake_services.install(tmp_path)
    yield tmp_path


def _node_base_port(edges: int) -> int:
    """A base port whose next `edges` ports can all be bound right now."""
    for base in range(random.randrange(20000, 30000, 10), 40000, 10):
        socks = []
        try:
            for port in range(base + 1, base + edges + 1):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def _fake_config(root: Path, edges: int, **kw: object) -> TopologyConfig:
    ports = free_ports(2)
    base = _node_base_port(edges)
    return TopologyConfig(
        edges=edges,
        edge_port=ports[0],
        origin_port=ports[1],
        node_base_port=base,
        cwd=root,
        log_dir=root / "logs",
        purge_token="tok-123",
        startup_timeout=20,
        **kw,  # type: ignore[arg-type]
    )


async def test_topology_starts_balances_and_stops_everything(fake_root: Path) -> None:
    config = _fake_config(fake_root, edges=2, origin_replicas=2, heavy_seconds=0.2)
    topo = Topology(config)
    await topo.start()
    try:
        children = json.loads((fake_root / "origin-children.json").read_text())
        assert len(children) == 2 and all(pid_alive(p) for p in children)
        async with aiohttp.ClientSession() as session:
            served = []
            for _ in range(4):
                # a new connection each time: the balancer spreads connections
                async with session.get(
                    f"{topo.edge_url}/5mo.jpg", headers={"Connection": "close"}
                ) as resp:
                    served.append(resp.headers["X-Served-By"])
            assert sorted(served) == ["edge-1", "edge-1", "edge-2", "edge-2"]
            async with session.get(f"{topo.node_urls[1]}/_edge/health") as resp:
                health = await resp.json()
            assert health["token"] == "tok-123"
            assert health["origin"] == topo.origin_url
            async with session.get(f"{topo.origin_url}/x") as resp:
                assert "'heavy_seconds': 0.2" in await resp.text()
        roles = [row[0] for row in topo.rows()]
        assert roles == ["origin", "edge", "edge", "balancer"]
        assert "round-robin" in topo.table()
        state = topo.state()
        assert state["purge_token"] == "tok-123" and len(state["services"]) == 3

        # A stopped node is routed around; started again, it is back in the rotation.
        await topo.stop_node(1)
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                async with session.get(topo.edge_url, headers={"Connection": "close"}) as resp:
                    assert resp.headers["X-Served-By"] == "edge-2"
        assert [s.name for s in topo.exited()] == []  # stopped on purpose: already accounted
        await topo.start_node(1)
        assert topo.services[1].running
    finally:
        pids = [s.pid for s in topo.services if s.pid]
        await topo.stop()
    assert not any(pid_alive(p) for p in pids + children)
    for port in (
        config.edge_port,
        config.origin_port,
        *[config.node_base_port + i for i in (1, 2)],
    ):
        assert not port_open(port)


async def test_topology_reports_a_child_that_dies_while_starting(fake_root: Path) -> None:
    (fake_root / "edge" / "__main__.py").write_text("import sys\nprint('boom')\nsys.exit(3)\n")
    topo = Topology(_fake_config(fake_root, edges=1))
    with pytest.raises(TopologyError, match=r"edge-1 exited with status 3[\s\S]*boom"):
        await topo.start()
    assert all(not s.running for s in topo.services)


async def test_topology_refuses_busy_ports(fake_root: Path) -> None:
    config = _fake_config(fake_root, edges=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", config.edge_port))
        s.listen()
        with pytest.raises(TopologyError, match="already in use"):
            await Topology(config).start()


def test_background_topology_from_sync_code(fake_root: Path) -> None:
    with BackgroundTopology(_fake_config(fake_root, edges=1)) as topo:
        origin = topo.services[0]
        assert origin.running
        with socket.create_connection(("127.0.0.1", topo.config.edge_port), 2):
            pass
    assert not origin.running


def test_up_command_runs_in_the_foreground_and_stops_on_sigterm(fake_root: Path) -> None:
    """`python -m bench.topology up`: prints the table, the URLs and the token; SIGTERM stops."""
    edge_port, origin_port = free_ports(2)
    env = {k: v for k, v in os.environ.items() if k != "EDGE_PURGE_TOKEN"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "bench.topology", "up", "--edges", "1", "--quick"),
            *("--edge-port", str(edge_port), "--origin-port", str(origin_port)),
            *("--tls-port", "0"),
        ],
        cwd=fake_root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Ctrl-C stops"):
                break
        out = "".join(lines)
        assert f"Edge:   http://127.0.0.1:{edge_port}" in out, out
        assert f"Origin: http://127.0.0.1:{origin_port}" in out, out
        assert "Purge token: " in out and "generated" in out, out
        state = json.loads((fake_root / "var" / "topology.json").read_text())
        pids = [s["pid"] for s in state["services"]]
        proc.terminate()
        rest, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + rest
    assert "stopped." in rest
    assert not any(pid_alive(p) for p in pids)
    assert not (fake_root / "var" / "topology.json").exists()


def test_detach_then_down(fake_root: Path) -> None:
    edge_port, origin_port = free_ports(2)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "bench.topology"]
    up = subprocess.run(
        [
            *(*cmd, "up", "--detach", "--quick", "--edge-port", str(edge_port)),
            *("--origin-port", str(origin_port), "--startup-timeout", "20", "--tls-port", "0"),
        ],
        cwd=fake_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"Edge:   http://127.0.0.1:{edge_port}" in up.stdout
    state = json.loads((fake_root / "var" / "topology.json").read_text())
    pids = [state["pid"]] + [s["pid"] for s in state["services"]]
    assert all(pid_alive(p) for p in pids)
    down = subprocess.run(
        [*cmd, "down"], cwd=fake_root, env=env, capture_output=True, text=True, timeout=60
    )
    assert down.returncode == 0, down.stdout + down.stderr
    deadline = time.monotonic() + 5
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(pid_alive(p) for p in pids)
    assert not (fake_root / "var" / "topology.pid").exists()


async def test_topology_with_the_real_origin(tmp_path: Path) -> None:
    """The real `python -m origin serve` (with replicas) behind a stand-in edge."""
    fake_services.install(tmp_path, roles=("edge",))
    config = _fake_config(tmp_path, edges=1, origin_replicas=2, heavy_seconds=0.2, db_seconds=0.2)
    config.static_rate = 0
    async with Topology(config) as topo, aiohttp.ClientSession() as session:
        async with session.get(f"{topo.origin_url}/api/misc/heavy?name=t") as resp:
            assert resp.status == 200
            assert "Woody -t- Woody" in await resp.text()
        async with session.get(f"{topo.edge_url}/_edge/health") as resp:
            assert (await resp.json())["origin"] == topo.origin_url
    assert not any(s.running for s in topo.services)


# --- the real thing ----------------------------------------------------------------------------


async def test_smoke_real_origin_and_edge(tmp_path: Path) -> None:
    """`make run`'s topology for real: origin on one port, one edge in front; an image HITs."""
    edge_port, origin_port = free_ports(2)
    config = TopologyConfig(
        edges=1,
        edge_port=edge_port,
        origin_port=origin_port,
        static_rate=0,
        heavy_seconds=0.2,
        db_seconds=0.5,
        origin_db=f"sqlite:///{tmp_path / 'woody.db'}",
        cwd=REPO,
        log_dir=tmp_path / "logs",
        startup_timeout=60,
    )
    async with Topology(config) as topo, aiohttp.ClientSession() as session:
        async with session.get(f"{topo.origin_url}/api/ping") as resp:
            assert resp.status == 200
        async with session.get(f"{topo.edge_url}/_edge/health") as resp:
            assert (await resp.json())["status"] == "ok"
        statuses = []
        for _ in range(2):
            async with session.get(f"{topo.edge_url}/api/misc/heavy?name=smoke") as resp:
                assert resp.status == 200
                await resp.read()
                statuses.append(resp.headers.get("X-Cache"))
        assert statuses[-1] == "HIT", statuses
