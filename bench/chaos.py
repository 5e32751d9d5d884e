"""Fault and load suite: the edge keeps serving through faults, load and hostile input.

    python -m bench chaos            # the long run: 30 s outages, 1,000 connections for 60 s,
                                     # 2,000 fuzz cases, 10,000 x 1 MB objects through 64 MB
    python -m bench chaos --short    # the short run of `make test` (well under a minute)
    python -m bench chaos --memory   # only the bounded-memory run
    python -m bench chaos --json out.json

It starts real processes (bench.topology.Topology): the origin (`python -m origin serve`, its
own SQLite file), a redis-server of its own on a free port, and several edge nodes, then:

1. warms a cached page (`/`) and the 5 MB image on every node;
2. kills the origin (SIGKILL) under load for the outage time, then restarts it;
3. kills Redis under load for the outage time, then restarts it;
4. holds N concurrent keep-alive connections on the nodes for a while;
5. fuzzes request lines and headers over raw sockets (Hypothesis) against one node;
6. checks every order the edge answered 200 for exists exactly once at the origin;
7. (separately) the bounded-memory run: distinct 1 MB objects through a 64 MB memory tier,
   reading the edge process's VmRSS.

During 2-4 clients also place orders (`/api/orders/do`, a write behind GET) and ask for
uncached calls. It prints what it counts: requests, errors by kind (5xx by code, connection
errors), stale answers, origin requests, lost and duplicated orders, crashes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import yaml

from bench.procs import free_port
from bench.topology import Service, Topology, TopologyConfig, port_in_use

ROOT = Path(__file__).resolve().parent.parent
EDGE_YAML = ROOT / "config" / "edge.yaml"
IMAGE = "/5mo.jpg"
PAGE = "/"
CACHED = (PAGE, IMAGE)


@dataclass
class Profile:
    outage: float  # seconds the origin, then Redis, stay down
    connections: int
    hold: float  # seconds the connections are held
    fuzz_cases: int
    edges: int
    memory_tier_mb: int
    memory_objects: int
    memory_object_bytes: int


LONG = Profile(30.0, 1000, 60.0, 2000, 3, 64, 10_000, 1 << 20)
SHORT = Profile(3.0, 200, 5.0, 120, 2, 16, 300, 256 << 10)


@dataclass
class Tally:
    """What one phase counted."""

    name: str
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    conn_errors: Counter[str] = field(default_factory=Counter)
    cached_requests: int = 0
    cached_5xx: Counter[int] = field(default_factory=Counter)
    cached_conn_errors: int = 0
    stale: int = 0
    seconds: float = 0.0

    def add(self, path: str, status: int | None, x_cache: str = "", error: str = "") -> None:
        self.requests += 1
        cached = path in CACHED
        self.cached_requests += cached
        if status is None:
            self.conn_errors[error or "error"] += 1
            self.cached_conn_errors += cached
            return
        self.statuses[status] += 1
        if cached and status >= 500:
            self.cached_5xx[status] += 1
        if x_cache == "STALE":
            self.stale += 1

    def fivexx(self) -> dict[int, int]:
        return {k: v for k, v in sorted(self.statuses.items()) if k >= 500}

    def line(self) -> str:
        errs = dict(self.conn_errors)
        return (
            f"{self.name:<22} requests {self.requests:>7}  5xx {self.fivexx() or 0}  "
            f"conn errors {errs or 0}  stale {self.stale}  cached: {self.cached_requests} "
            f"requests, 5xx {dict(self.cached_5xx) or 0}, conn errors {self.cached_conn_errors}"
        )


@dataclass
class Report:
    profile: str
    phases: list[Tally] = field(default_factory=list)
    orders_ok: int = 0
    orders_failed: int = 0
    orders_found: int = 0
    orders_lost: int = 0
    orders_duplicated: int = 0
    orders_unanswered_at_origin: int = 0
    origin_requests: int = 0
    edge_origin_fetches: int = 0
    fuzz: dict[str, Any] = field(default_factory=dict)
    crashes: int = 0
    crash_notes: list[str] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)

    def phase(self, name: str) -> Tally:
        for t in self.phases:
            if t.name == name:
                return t
        raise KeyError(name)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: v for k, v in self.__dict__.items() if k not in ("phases", "crash_notes")
        }
        out["crash_notes"] = self.crash_notes
        out["phases"] = [
            {
                "name": t.name,
                "requests": t.requests,
                "statuses": dict(t.statuses),
                "conn_errors": dict(t.conn_errors),
                "stale": t.stale,
                "cached_requests": t.cached_requests,
                "cached_5xx": dict(t.cached_5xx),
                "cached_conn_errors": t.cached_conn_errors,
                "seconds": round(t.seconds, 1),
            }
            for t in self.phases
        ]
        return out


def say(text: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)


def free_block(n: int) -> int:
    """A base port with base+1..base+n free (node i listens on base + i)."""
    for _ in range(50):
        base = random.randint(20000, 55000)
        if not any(port_in_use("127.0.0.1", base + i, 0.05) for i in range(1, n + 1)):
            return base
    raise RuntimeError("no free block of ports")


def edge_yaml(tmp: Path, **sections: dict[str, Any]) -> Path:
    doc = yaml.safe_load(EDGE_YAML.read_text())
    for key, value in sections.items():
        doc.setdefault(key, {}).update(value)
    path = tmp / f"edge-{os.getpid()}-{random.randint(0, 1 << 30)}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _signal(service: Service, sig: int) -> None:
    if service.proc is not None and service.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.proc.pid, sig)


async def _kill(service: Service) -> None:
    """SIGKILL the service's whole process group (a crash, not a clean stop)."""
    _signal(service, signal.SIGKILL)
    if service.proc is not None:
        await asyncio.to_thread(service.proc.wait, 10)
    service.reported_exit = True


# --- load ----------------------------------------------------------------------------------


class Load:
    """Clients hitting the nodes: cached page and image, uncached calls and orders."""

    order_seq = 0  # shared by every Load: each order's product name is unique in a run

    def __init__(self, nodes: list[str], tally: Tally, orders: list[str], tag: str) -> None:
        self.nodes = nodes
        self.tally = tally
        self.orders = orders  # order ids the edge answered 200 for
        self.tag = tag
        self.order_failures = 0
        self.stop = asyncio.Event()

    async def one(
        self, s: aiohttp.ClientSession, node: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int | None, str, bytes]:
        try:
            async with s.get(node + path, headers=headers, allow_redirects=False) as r:
                body = await r.read()
                x = r.headers.get("X-Cache", "")
                self.tally.add(path, r.status, x)
                return r.status, x, body
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.tally.add(path, None, error=type(exc).__name__)
            return None, "", b""

    async def client(self, i: int, s: aiohttp.ClientSession, orders: bool) -> None:
        n = 0
        while not self.stop.is_set():
            node = self.nodes[(i + n) % len(self.nodes)]
            n += 1
            kind = n % 10
            if kind in (0, 1, 2, 3):
                await self.one(s, node, PAGE)
            elif kind in (4, 5):
                await self.one(s, node, IMAGE)
            elif kind == 6:
                await self.one(s, node, IMAGE, {"Range": "bytes=0-1023"})
            elif kind == 7:
                await self.one(s, node, f"/api/misc/heavy?name={self.tag}-{n % 7}")
            elif kind == 8 and orders:
                Load.order_seq += 1
                product = f"chaos-{self.tag}-{Load.order_seq}"
                status, _, body = await self.one(s, node, f"/api/orders/do?order={product}")
                m = re.match(rb"order ([0-9a-f-]{36}) created", body)
                if status == 200 and m:
                    self.orders.append(m.group(1).decode())
                else:
                    self.order_failures += 1
            else:
                await self.one(s, node, "/api/products/last")
            await asyncio.sleep(0.01)

    async def run(self, clients: int, seconds: float, orders: bool = True) -> None:
        timeout = aiohttp.ClientTimeout(total=30, sock_connect=5)
        conn = aiohttp.TCPConnector(limit=0, force_close=False)
        async with aiohttp.ClientSession(timeout=timeout, connector=conn) as s:
            tasks = [asyncio.create_task(self.client(i, s, orders)) for i in range(clients)]
            await asyncio.sleep(seconds)
            self.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)


async def hold_connections(nodes: list[str], tally: Tally, count: int, seconds: float) -> None:
    """`count` keep-alive connections, each its own client, for `seconds`."""
    stop = time.monotonic() + seconds
    paths = [PAGE, "/api/products/last", IMAGE + "#range"]

    async def one_conn(i: int) -> None:
        host, port = nodes[i % len(nodes)].removeprefix("http://").split(":")
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 15)
        except (OSError, TimeoutError) as exc:
            tally.add(PAGE, None, error=f"connect:{type(exc).__name__}")
            return
        try:
            n = i
            while time.monotonic() < stop:
                path = paths[n % len(paths)]
                n += 1
                extra = ""
                if path.endswith("#range"):
                    path, extra = IMAGE, "Range: bytes=0-2047\r\n"
                writer.write(f"GET {path} HTTP/1.1\r\nHost: chaos\r\n{extra}\r\n".encode())
                try:
                    status, x_cache = await asyncio.wait_for(_read_response(reader), 30)
                except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
                    tally.add(path, None, error=type(exc).__name__)
                    return
                tally.add(path, status, x_cache)
                await asyncio.sleep(random.uniform(0.05, 0.3))
        finally:
            writer.close()

    await asyncio.gather(*(one_conn(i) for i in range(count)))


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, str]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, headers.get("x-cache", "")


# --- fuzzing ---------------------------------------------------------------------------------


def fuzz(host: str, port: int, cases: int, alive: Any) -> dict[str, Any]:
    """Hypothesis-generated request lines and headers over raw sockets. Counts statuses; a 500,
    a dead process or an edge that stops answering is a failure. Synchronous (Hypothesis)."""
    try:
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st
    except ImportError as exc:  # pragma: no cover - a dev dependency
        raise SystemExit(
            "bench chaos: the fuzzing pass needs hypothesis (pip install -e .[dev])"
        ) from exc

    counts: Counter[str] = Counter()
    five_hundreds: list[bytes] = []
    tchar = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-!#$%&'*+.^_`|~"
    token = st.text(
        alphabet=tchar,
        min_size=1,
        max_size=20,
    )
    junk = st.binary(min_size=0, max_size=64)
    method = st.one_of(
        st.sampled_from(
            [
                "GET",
                "HEAD",
                "POST",
                "PUT",
                "DELETE",
                "OPTIONS",
                "PURGE",
                "TRACE",
                "CONNECT",
                "PATCH",
            ]
        ),
        token,
    ).map(str.encode)
    path_piece = st.one_of(
        *[
            st.sampled_from(
                [
                    b"/",
                    b"/5mo.jpg",
                    b"/api/misc/heavy?name=f",
                    b"/api/products/last",
                    b"/_edge/health",
                    b"/_edge/purge",
                    b"/..",
                    b"/%2F",
                    b"/%00",
                    b"//",
                    b"*",
                    b"http://x/",
                    b"/?a=%ff",
                    b"/\xff",
                ]
            )
        ]
        * 3,
        junk,
    )
    target = st.lists(path_piece, min_size=1, max_size=4).map(b"".join)
    version = st.sampled_from(
        [
            b"HTTP/1.1",
            b"HTTP/1.0",
            b"HTTP/0.9",
            b"HTTP/2.0",
            b"HTTP/1.1 ",
            b"",
            b"HTTP/1.10",
            b"http/1.1",
        ]
    )
    header_name = st.one_of(
        *[
            st.sampled_from(
                [
                    b"Host",
                    b"Content-Length",
                    b"Transfer-Encoding",
                    b"Range",
                    b"Cache-Control",
                    b"If-None-Match",
                    b"If-Modified-Since",
                    b"Connection",
                    b"Expect",
                    b"Upgrade",
                    b"Authorization",
                    b"X-Forwarded-For",
                    b"Pragma",
                    b"Vary",
                    b"Accept-Encoding",
                ]
            )
        ]
        * 3,
        token.map(str.encode),
        junk,
    )
    header_value = st.one_of(
        *[
            st.sampled_from(
                [
                    b"chunked",
                    b"0",
                    b"-1",
                    b"5, 6",
                    b"bytes=0-0,-1",
                    b"bytes=9999999999999999999-",
                    b"max-age=99999999999999999999",
                    b"no-cache, only-if-cached",
                    b"100-continue",
                    b"close",
                    b"websocket",
                    b"gzip, chunked",
                    b"Bearer x",
                ]
            )
        ]
        * 3,
        junk,
    )
    header = st.tuples(
        header_name, st.sampled_from([b": ", b":", b" : ", b":\t"]), header_value
    ).map(b"".join)
    eol = st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\r", b"\r\n "])
    request = st.tuples(
        method,
        st.sampled_from([b" ", b"  ", b"\t"]),
        target,
        st.sampled_from([b" ", b""]),
        version,
        eol,
        st.lists(st.tuples(header, eol).map(b"".join), max_size=8).map(b"".join),
        st.sampled_from([b"\r\n", b"", b"\r\n0\r\n\r\n", b"\r\nabcdef"]),
    ).map(b"".join)

    def exchange(data: bytes) -> bytes:
        with socket.create_connection((host, port), 10) as sock:
            sock.settimeout(5)
            with contextlib.suppress(OSError):
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            out = b""
            with contextlib.suppress(OSError):
                while len(out) < 1 << 16:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    out += chunk
            return out

    @settings(
        max_examples=cases, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(request)
    def one(data: bytes) -> None:
        try:
            out = exchange(data)
        except OSError as exc:
            counts[f"connect:{type(exc).__name__}"] += 1
            return
        m = re.match(rb"HTTP/\d\.\d (\d{3})", out)
        key = m.group(1).decode() if m else ("closed" if not out else "other")
        counts[key] += 1
        if key == "500":
            five_hundreds.append(data)
        if key == "500" or not alive():
            raise AssertionError(f"edge answered {key} or died on {data!r}")

    failure = ""
    try:
        one()
    except AssertionError as exc:
        failure = str(exc)[:500]
    return {
        "cases": sum(counts.values()),
        "statuses": dict(sorted(counts.items())),
        "500s": len(five_hundreds),
        "failure": failure,
    }


# --- lost writes ---------------------------------------------------------------------------------


def check_orders(db: Path, order_ids: list[str], products_prefix: str) -> tuple[int, int, int]:
    """(found, lost, duplicated): orders the edge answered 200 for, looked up at the origin;
    duplicated counts products ordered once but stored more than once (a replayed write)."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        found = 0
        for chunk in (order_ids[i : i + 500] for i in range(0, len(order_ids), 500)):
            marks = ",".join("?" * len(chunk))
            found += conn.execute(
                f'SELECT COUNT(*) FROM "order" WHERE order_id IN ({marks})', chunk
            ).fetchone()[0]
        dup = conn.execute(
            'SELECT COUNT(*) FROM (SELECT product FROM "order" WHERE product LIKE ? '
            "GROUP BY product HAVING COUNT(*) > 1)",
            (products_prefix + "%",),
        ).fetchone()[0]
    finally:
        conn.close()
    return found, len(order_ids) - found, dup


# --- the run ---------------------------------------------------------------------------------


async def _wait(url: str, ok: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as s:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with s.get(url) as r:
                    if ok(r.status, await r.read()):
                        return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout} s")


async def _json(s: aiohttp.ClientSession, url: str) -> Any:
    async with s.get(url) as r:
        return json.loads(await r.read())


async def run_faults(profile: Profile, tmp: Path, report: Report) -> None:
    redis_port = free_port()
    tag = f"{os.getpid()}x{random.randint(0, 1 << 20)}"
    db = tmp / "origin.sqlite3"
    config = edge_yaml(
        tmp,
        redis={"prefix": f"chaos-{tag}"},
        timeouts={"connect": "1s", "read": "10s", "origin_down": "1s"},
        limits={"max_connections": 4096},
    )
    edge_port = free_port()
    topo = Topology(
        TopologyConfig(
            edges=profile.edges,
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            edge_port=edge_port,
            origin_port=free_port(),
            node_base_port=free_block(profile.edges),
            heavy_seconds=0.05,
            db_seconds=0.05,
            static_rate=0,
            origin_db=str(db),
            edge_config=str(config),
            log_dir=tmp / "logs",
            startup_timeout=60,
        )
    )
    say(f"starting origin, redis-server :{redis_port} and {profile.edges} edge nodes")
    await topo.start()
    try:
        await _run_phases(topo, profile, tmp, report, tag, db)
    finally:
        for s in topo.services:
            if s.role == "edge" and (s.proc is None or s.proc.poll() is not None):
                report.crashes += 1
                report.crash_notes.append(f"{s.name} exited: {s.log_tail(5)}")
        await topo.stop()
        for s in topo.services:
            if s.role == "edge":
                text = s.log_path.read_text(errors="replace")
                n = text.count("Traceback")
                if n:
                    report.crash_notes.append(f"{s.name}: {n} traceback(s) in its log")


async def _run_phases(
    topo: Topology, profile: Profile, tmp: Path, report: Report, tag: str, db: Path
) -> None:
    nodes = topo.node_urls
    origin = next(s for s in topo.services if s.role == "origin")
    redis = next((s for s in topo.services if s.role == "redis"), None)
    assert redis is not None, "chaos needs its own redis-server"
    orders: list[str] = []
    order_failures = 0

    warm = Tally("warm-up")
    report.phases.append(warm)
    async with aiohttp.ClientSession() as s:
        for node in nodes:
            for path in CACHED:
                for _ in range(2):
                    async with s.get(node + path) as r:
                        await r.read()
                        warm.add(path, r.status, r.headers.get("X-Cache", ""))
    say(f"warm: {warm.line()}")

    clients = 16 if profile is LONG else 8

    # 2. the origin killed under load
    t = Tally("origin down")
    report.phases.append(t)
    load = Load(nodes, t, orders, tag)
    runner = asyncio.create_task(load.run(clients, profile.outage + 2))
    await asyncio.sleep(1)
    async with aiohttp.ClientSession() as s:
        with contextlib.suppress(Exception):
            report.origin_requests += int(
                (await _json(s, topo.origin_url + "/_origin/stats"))["total"]
            )
    say(f"killing the origin (SIGKILL) for {profile.outage:g} s under load ({clients} clients)")
    t0 = time.monotonic()
    await _kill(origin)
    await asyncio.sleep(profile.outage)
    say("restarting the origin")
    topo._spawn(origin)
    await topo._wait_healthy(origin)
    await runner
    t.seconds = time.monotonic() - t0
    order_failures += load.order_failures
    say(t.line())

    # 3. Redis killed under load
    t = Tally("redis down")
    report.phases.append(t)
    load = Load(nodes, t, orders, tag)
    runner = asyncio.create_task(load.run(clients, profile.outage + 3))
    await asyncio.sleep(1)
    say(f"killing redis-server (SIGKILL) for {profile.outage:g} s under load")
    t0 = time.monotonic()
    await _kill(redis)
    await asyncio.sleep(profile.outage / 2)
    async with aiohttp.ClientSession() as s:
        states = [(await _json(s, n + "/_edge/health"))["redis"] for n in nodes]
    say(f"  /_edge/health redis while down: {states}")
    await asyncio.sleep(profile.outage / 2)
    say("restarting redis-server")
    topo._spawn(redis)
    await topo._wait_redis(redis, "127.0.0.1", urlparse(str(topo.redis_url)).port or 6379)
    await runner
    t.seconds = time.monotonic() - t0
    order_failures += load.order_failures
    async with aiohttp.ClientSession() as s:
        for _ in range(100):
            states = [(await _json(s, n + "/_edge/health"))["redis"] for n in nodes]
            if all(x == "up" for x in states):
                break
            await asyncio.sleep(0.1)
    say(t.line())
    say(f"  /_edge/health redis after restart: {states}")

    # 4. many connections at once
    t = Tally(f"{profile.connections} connections")
    report.phases.append(t)
    say(f"holding {profile.connections} keep-alive connections for {profile.hold:g} s")
    t0 = time.monotonic()
    load = Load(nodes, t, orders, tag)
    runner = asyncio.create_task(load.run(4, profile.hold))
    await hold_connections(nodes, t, profile.connections, profile.hold)
    await runner
    order_failures += load.order_failures
    t.seconds = time.monotonic() - t0
    say(t.line())

    # 5. fuzzing
    node_edge = next(s for s in topo.services if s.role == "edge")
    host, port = nodes[0].removeprefix("http://").split(":")
    say(f"fuzzing {node_edge.name} with {profile.fuzz_cases} generated requests")
    t0 = time.monotonic()
    report.fuzz = await asyncio.to_thread(
        fuzz, host, int(port), profile.fuzz_cases, lambda: node_edge.running
    )
    async with aiohttp.ClientSession() as s:
        async with s.get(nodes[0] + IMAGE) as r:
            body = await r.read()
            image_ok = r.status == 200 and len(body) == 5_000_000
        async with s.get(topo.origin_url + IMAGE) as r:
            image_ok = image_ok and body == await r.read()
    report.fuzz["cached_image_intact_after"] = image_ok
    report.fuzz["seconds"] = round(time.monotonic() - t0, 1)
    if not node_edge.running:
        report.crashes += 1
    say(f"fuzz: {report.fuzz}")

    # 6. lost writes
    async with aiohttp.ClientSession() as s:
        stats = await asyncio.gather(*(_json(s, n + "/_edge/stats") for n in nodes))
        report.edge_origin_fetches = sum(int(x["origin_fetches"]) for x in stats)
        with contextlib.suppress(Exception):
            report.origin_requests += int(
                (await _json(s, topo.origin_url + "/_origin/stats"))["total"]
            )
    found, lost, dup = check_orders(db, orders, f"chaos-{tag}-")
    report.orders_ok = len(orders)
    report.orders_failed = order_failures
    report.orders_found, report.orders_lost, report.orders_duplicated = found, lost, dup
    say(
        f"orders: {len(orders)} answered 200, {found} found at the origin, {lost} lost, "
        f"{dup} duplicated; {order_failures} refused (5xx/errors, the client knows)"
    )


async def run_memory(
    tier_mb: int, objects: int, size: int, tmp: Path, progress: bool = True
) -> dict[str, Any]:
    """Distinct objects of `size` bytes through a `tier_mb` memory tier: the edge's VmRSS."""
    origin_port, edge_port = free_port(), free_port()
    logs = tmp / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    config = edge_yaml(tmp, memory={"max_bytes": f"{tier_mb}m", "max_object_bytes": "8m"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    procs = [
        _spawn(
            [
                sys.executable,
                "-m",
                "bench.standin",
                "serve",
                "--port",
                str(origin_port),
                "--static-rate",
                "0",
            ],
            logs / "standin.log",
            env,
        ),
        _spawn(
            [
                *(sys.executable, "-m", "edge", "serve", "--config", str(config)),
                *("--node", "mem", "--port", str(edge_port)),
                *("--origin", f"http://127.0.0.1:{origin_port}"),
            ],
            logs / "edge-memory.log",
            env,
        ),
    ]
    edge = procs[1]
    base = f"http://127.0.0.1:{edge_port}"
    try:
        await _wait(f"http://127.0.0.1:{origin_port}/_origin/stats", lambda st, _: st == 200)
        await _wait(base + "/_edge/health", lambda st, _: st == 200)
        rss0 = vm_rss_kib(edge.pid)
        peak = rss0
        hot = f"/bench/obj/{size}?hot=1"
        statuses: Counter[int] = Counter()
        hot_results: Counter[str] = Counter()
        wrong = 0
        t0 = time.monotonic()
        queue = list(range(objects))
        conn = aiohttp.TCPConnector(limit=8)
        async with aiohttp.ClientSession(connector=conn) as s:

            async def worker() -> None:
                nonlocal peak, wrong
                while queue:
                    i = queue.pop()
                    paths = [f"/bench/obj/{size}?i={i}"] + ([hot] if i % 10 == 0 else [])
                    for path in paths:
                        async with s.get(base + path) as r:
                            body = await r.read()
                            statuses[r.status] += 1
                            wrong += len(body) != size
                            if path == hot:
                                hot_results[r.headers.get("X-Cache", "")] += 1
                    if i % 100 == 0:
                        peak = max(peak, vm_rss_kib(edge.pid))
                        done = objects - len(queue)
                        if progress and done and done % max(objects // 10, 1) < 8:
                            say(
                                f"  memory: {done}/{objects} objects, edge VmRSS {peak // 1024} MiB"
                            )

            await asyncio.gather(*(worker() for _ in range(8)))
            async with s.get(base + hot) as r:
                await r.read()
                hot_last = r.headers.get("X-Cache", "")
            mem = (await _json(s, base + "/_edge/stats"))["memory"]
        peak = max(peak, vm_rss_kib(edge.pid))
        return {
            "tier_mib": tier_mb,
            "objects": objects,
            "object_bytes": size,
            "seconds": round(time.monotonic() - t0, 1),
            "statuses": dict(statuses),
            "wrong_length": wrong,
            "rss_start_mib": round(rss0 / 1024, 1),
            "rss_peak_mib": round(peak / 1024, 1),
            "rss_bound_mib": tier_mb + 100,
            "memory_tier_bytes": mem["bytes"],
            "memory_tier_keys": mem["keys"],
            "evictions": mem["evictions"],
            "hot_object": dict(hot_results),
            "hot_object_last": hot_last,
        }
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.to_thread(p.wait, 10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                await asyncio.to_thread(p.wait)


def _spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=out, cwd=ROOT, env=env, start_new_session=True
        )


async def run(profile: Profile, tmp: Path, faults: bool = True, memory: bool = True) -> Report:
    report = Report("long" if profile is LONG else "short")
    if faults:
        await run_faults(profile, tmp, report)
    if memory:
        say(
            f"memory: {profile.memory_objects} distinct objects of {profile.memory_object_bytes} "
            f"bytes through a {profile.memory_tier_mb} MiB tier"
        )
        report.memory = await run_memory(
            profile.memory_tier_mb, profile.memory_objects, profile.memory_object_bytes, tmp
        )
        say(f"memory: {report.memory}")
    return report


def summary(report: Report) -> str:
    lines = ["", f"== bench chaos ({report.profile}) =="]
    for t in report.phases:
        lines.append(t.line())
    total = Tally("total")
    for t in report.phases:
        total.requests += t.requests
        total.statuses.update(t.statuses)
        total.conn_errors.update(t.conn_errors)
        total.stale += t.stale
        total.cached_requests += t.cached_requests
        total.cached_5xx.update(t.cached_5xx)
        total.cached_conn_errors += t.cached_conn_errors
    if report.phases:
        lines.append(total.line())
        lines.append(f"statuses (all phases): {dict(sorted(total.statuses.items()))}")
        lines.append(
            f"origin requests: {report.origin_requests} (counted by the origin, before its kill "
            f"and since its restart); edge origin fetches: {report.edge_origin_fetches}"
        )
        lines.append(
            f"orders: {report.orders_ok} answered 200 by the edge, {report.orders_found} found at "
            f"the origin, LOST {report.orders_lost}, duplicated {report.orders_duplicated}; "
            f"{report.orders_failed} refused with an error (the client knows)"
        )
        lines.append(f"fuzzing: {report.fuzz}")
        lines.append(f"crashes: {report.crashes} {report.crash_notes or ''}")
    if report.memory:
        m = report.memory
        lines.append(
            f"memory: {m['objects']} x {m['object_bytes']} B through {m['tier_mib']} MiB: edge "
            f"VmRSS peak {m['rss_peak_mib']} MiB (start {m['rss_start_mib']}, bound "
            f"{m['rss_bound_mib']}), tier holds {m['memory_tier_bytes']} B in "
            f"{m['memory_tier_keys']} keys, {m['evictions']} evictions, hot object "
            f"{m['hot_object']} last {m['hot_object_last']}, statuses {m['statuses']}"
        )
    return "\n".join(lines)


def verdict(report: Report) -> list[str]:
    """What the issue's closing note needs; each failure is one line."""
    bad = []
    for name in ("origin down", "redis down"):
        with contextlib.suppress(KeyError):
            t = report.phase(name)
            if t.cached_5xx or t.cached_conn_errors:
                bad.append(
                    f"{name}: cached page/image got 5xx {dict(t.cached_5xx)} or "
                    f"{t.cached_conn_errors} connection errors"
                )
            if name == "redis down" and t.fivexx():
                bad.append(f"redis down: 5xx {t.fivexx()}")
    if report.phases:
        if report.orders_lost or report.orders_duplicated:
            bad.append(f"orders lost {report.orders_lost}, duplicated {report.orders_duplicated}")
        if report.fuzz.get("500s") or report.fuzz.get("failure"):
            bad.append(f"fuzzing: {report.fuzz.get('failure')}")
        if not report.fuzz.get("cached_image_intact_after"):
            bad.append("fuzzing: the cached image was not intact afterwards")
        if report.crashes or report.crash_notes:
            bad.append(f"crashes: {report.crashes} {report.crash_notes}")
        for t in report.phases:
            if t.name.endswith("connections") and (t.conn_errors or t.fivexx()):
                bad.append(f"{t.name}: connection errors {dict(t.conn_errors)}, 5xx {t.fivexx()}")
            if 500 in t.statuses:
                bad.append(f"{t.name}: {t.statuses[500]} answers 500")
    m = report.memory
    if m:
        if m["rss_peak_mib"] > m["rss_bound_mib"]:
            bad.append(f"memory: VmRSS {m['rss_peak_mib']} MiB over {m['rss_bound_mib']}")
        if m["hot_object_last"] != "HIT" or m["wrong_length"]:
            bad.append(
                f"memory: hot object {m['hot_object_last']}, wrong lengths {m['wrong_length']}"
            )
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--short", action="store_true", help="the short run of make test")
    parser.add_argument("--memory", action="store_true", help="only the bounded-memory run")
    parser.add_argument("--no-memory", action="store_true", help="skip the bounded-memory run")
    parser.add_argument("--json", type=Path, help="write the counts here as JSON")
    args = parser.parse_args(argv)
    profile = SHORT if args.short else LONG
    work = ROOT / "var" / f"chaos-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True, exist_ok=True)
    say(f"logs and databases in {work}")
    try:
        import uvloop

        report = uvloop.run(run(profile, work, faults=not args.memory, memory=not args.no_memory))
    except KeyboardInterrupt:
        return 130
    print(summary(report), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report.as_json(), indent=2, default=str))
    bad = verdict(report)
    print("\nverdict: " + ("PASS" if not bad else "FAIL\n  " + "\n  ".join(bad)), flush=True)
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
