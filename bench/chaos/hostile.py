"""The hostile-memory run: what one client can make a node keep.

A 2-worker node (HTTP and HTTPS, default limits) against each pattern in turn, over raw
sockets, each request's answer checked:

- multi-range HEADs on a 6 MB object (each answer a multipart copy of nearly all of it);
- huge Accept-Encoding values (100 field lines of 8,000 bytes) on a compressible page;
- many distinct `only-if-cached` targets of 4 KB (none reaches the origin);
- many Vary values (X-Variant on /bench/vary: each a variant stored, each answer its own);
- many query strings (distinct keys, each stored);
- long cookies (800 KB heads) and many distinct 4 KB heads;
- big HTTP/2 header blocks (HEADERS and 63 CONTINUATION frames, ~1 MB) held open;
- many TLS handshakes begun (a ClientHello) and never finished.

The node's PSS (its processes summed, bench.procfs) is read before each pattern, every
quarter second while it runs (the peak), and `settle` seconds after its connections closed.
Target (issue 27): the peak at most 64 MiB over the PSS before, and back within 16 MiB of it
`settle` (60) seconds later. The ledger (`edge_kept_bytes` in /_edge/metrics) is read at the
end of each pattern.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.chaos.common import edge_yaml, say
from bench.procfs import tree_memory_kib
from bench.procs import ProcessGroup, free_port
from bench.servers import OriginSpec, start_edge, start_origin, tls_section

PEAK_OVER_IDLE_MIB = 64
AFTER_OVER_IDLE_MIB = 16
EMPTIED_SECONDS = 12.0  # after the purge: the kept hits collected, the heap trimmed (10 s)
BIG = "/bench/obj/6000000"
TEXT = "/bench/text/20000"  # compressible: coded copies are made
CONNECTIONS = 8


@dataclass
class Pattern:
    """What one pattern counted."""

    name: str
    requests: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    wrong: int = 0  # answers that were not what the request should get
    notes: list[str] = field(default_factory=list)
    pss_before: float = 0.0  # MiB
    pss_peak: float = 0.0
    pss_after: float = 0.0
    pss_emptied: float = 0.0  # after that, the cache emptied (a purge of everything)
    kept: dict[str, int] = field(default_factory=dict)  # edge_kept_bytes at its end
    cache_before: float = 0.0  # MiB the node tier holds (objects the pattern stored)
    cache_after: float = 0.0
    seconds: float = 0.0

    def count(self, status: str, ok: bool = True) -> None:
        self.requests += 1
        self.statuses[status] += 1
        self.wrong += not ok

    @property
    def verdict(self) -> list[str]:
        bad = []
        if self.pss_peak - self.pss_before > PEAK_OVER_IDLE_MIB:
            bad.append(
                f"{self.name}: peak {self.pss_peak - self.pss_before:+.1f} MiB over its idle "
                f"({PEAK_OVER_IDLE_MIB} allowed)"
            )
        if min(self.pss_after, self.pss_emptied) - self.pss_before > AFTER_OVER_IDLE_MIB:
            bad.append(
                f"{self.name}: {self.pss_after - self.pss_before:+.1f} MiB a minute after, "
                f"{self.pss_emptied - self.pss_before:+.1f} with the cache emptied "
                f"({AFTER_OVER_IDLE_MIB} allowed)"
            )
        if self.wrong:
            bad.append(f"{self.name}: {self.wrong} wrong answers")
        return bad

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "requests": self.requests,
            "statuses": dict(self.statuses),
            "wrong": self.wrong,
            "notes": self.notes,
            "pss_before_mib": round(self.pss_before, 1),
            "pss_peak_mib": round(self.pss_peak, 1),
            "pss_after_mib": round(self.pss_after, 1),
            "pss_emptied_mib": round(self.pss_emptied, 1),
            "kept_bytes": self.kept,
            "cache_before_mib": round(self.cache_before, 1),
            "cache_after_mib": round(self.cache_after, 1),
            "seconds": round(self.seconds, 1),
        }


class Conn:
    """One keep-alive HTTP/1.1 connection over a raw socket: a request out, its answer in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    async def ask(self, raw: bytes, head_only: bool = False) -> tuple[str, dict[str, str], bytes]:
        self.writer.write(raw)
        await self.writer.drain()
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 60)
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split()[1]
        fields: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                fields[name.strip().lower()] = value.strip()
        body = b""
        if head_only or status in ("204", "304"):
            return status, fields, body
        if fields.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            body = b"".join(parts)
        elif "content-length" in fields:
            body = await asyncio.wait_for(
                self.reader.readexactly(int(fields["content-length"])), 60
            )
        return status, fields, body

    def close(self) -> None:
        self.writer.close()


def request(target: str, *fields: str, method: str = "GET") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class Node:
    port: int
    tls_port: int
    pid: int
    origin: str
    token: str = ""  # the purge token


async def _purge_all(node: Node) -> None:
    """Everything the cache holds purged (the node tier and every worker's hot tier)."""
    body = b'{"all": true}'
    raw = (
        f"POST /_edge/purge HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {node.token}"
        f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    writer.write(raw)
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    if not answer.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"purge refused: {answer[:200]!r}")


async def _each(n: int, one: Callable[[Conn, int], Awaitable[None]], port: int) -> None:
    """`n` requests spread over CONNECTIONS keep-alive connections (both workers get some)."""
    queue = list(range(n))

    async def runner() -> None:
        conn = await Conn.open(port)
        try:
            while queue:
                await one(conn, queue.pop(0))
        finally:
            conn.close()

    await asyncio.gather(*(runner() for _ in range(CONNECTIONS)))


async def warm_big(node: Node, p: Pattern) -> None:
    """The 6 MB object stored, a hot copy in each worker (the cache's, before the attack)."""

    async def one(conn: Conn, i: int) -> None:
        status, _, body = await conn.ask(request(BIG))
        p.count(status, status == "200" and len(body) == 6_000_000)

    await _each(2 * CONNECTIONS, one, node.port)


async def multirange_heads(node: Node, p: Pattern) -> None:
    """HEADs with `Range: bytes=0-0,N-` on a 6 MB object: each a multipart answer built."""
    size = 6_000_000

    async def one(conn: Conn, i: int) -> None:
        if i % 25 == 24:  # now and then the GET: the multipart body must be right
            status, fields, body = await conn.ask(request(BIG, "Range: bytes=0-0,2-"))
            ok = status == "206" and size - 1 <= len(body) < size + 1024
            p.count(status, ok and fields.get("content-type", "").startswith("multipart/"))
            return
        raw = request(BIG, f"Range: bytes=0-0,{i + 2}-", method="HEAD")
        status, fields, _ = await conn.ask(raw, head_only=True)
        p.count(status, status == "206" and "multipart/" in fields.get("content-type", ""))

    await _each(400, one, node.port)


async def huge_accept_encoding(node: Node, p: Pattern) -> None:
    """100 Accept-Encoding lines of 8,000 bytes each, distinct, on a compressible text. An
    answer is right when its coding is one the client accepts (identity unless refused:
    RFC 9110 section 12.5.3) and its body decodes to the text; identity where a coding was
    preferred (a worker whose coded copies are not made yet) is counted apart."""
    from edge.engine.compress import accepted, negotiate

    text = await _origin_body(node, TEXT)
    prefs = ["gzip, br;q=0.5", "br, zstd;q=0.1", "identity, *;q=0", "zstd, gzip;q=0"]
    identity_instead = 0

    async def one(conn: Conn, i: int) -> None:
        nonlocal identity_instead
        values = [prefs[i % 4]] + [f"x-{i}-{j}-{'y' * 7950};q=0.1" for j in range(99)]
        status, fields, body = await conn.ask(
            request(TEXT, *(f"Accept-Encoding: {v}" for v in values))
        )
        joined = ", ".join(values)
        want = negotiate(joined, ("br", "zstd", "gzip"))
        got = fields.get("content-encoding")
        weights = accepted(joined)
        star = weights.get("*")
        if got is None:
            ok = weights.get("identity", star if star is not None else 1.0) > 0
            identity_instead += want is not None
        else:
            ok = got == want and _decode(body, got) == text
        ok = ok and (got is not None or body == text)
        p.count(status, status == "200" and ok)
        if not ok and len(p.notes) < 4:
            p.notes.append(f"{prefs[i % 4]!r}: {got} (want {want}, {fields.get('x-cache')})")

    await _each(200, one, node.port)
    p.notes.append(f"identity where a coding was preferred: {identity_instead}")


async def warm_text(node: Node, p: Pattern) -> None:
    """The text stored with its coded copies, in each worker."""

    async def one(conn: Conn, i: int) -> None:
        status, _, _ = await conn.ask(request(TEXT, "Accept-Encoding: gzip, br"))
        p.count(status, status == "200")

    await _each(2 * CONNECTIONS, one, node.port)
    await asyncio.sleep(2)  # the coded copies are made
    await _each(2 * CONNECTIONS, one, node.port)


def _decode(body: bytes, coding: str) -> bytes:
    import gzip

    import brotli
    import zstandard

    if coding == "br":
        return bytes(brotli.decompress(body))
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompress(body, max_output_size=1 << 26)
    return gzip.decompress(body)


async def _origin_body(node: Node, path: str) -> bytes:
    host, port = node.origin.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    conn = Conn(reader, writer)
    _, _, body = await conn.ask(request(path, "Connection: close"))
    conn.close()
    return body


async def only_if_cached(node: Node, p: Pattern) -> None:
    """4,000 distinct targets of 4 KB with only-if-cached: 504 each, none to the origin."""

    async def one(conn: Conn, i: int) -> None:
        target = f"/api/products/oic-{i}?q=" + "z" * 4000
        status, _, _ = await conn.ask(request(target, "Cache-Control: only-if-cached"))
        p.count(status, status == "504")

    await _each(4000, one, node.port)


async def many_vary_values(node: Node, p: Pattern) -> None:
    """4,000 X-Variant values on one URL that varies on it: each answer its own variant."""

    async def one(conn: Conn, i: int) -> None:
        variant = f"v{i}-" + "w" * 200
        status, _, body = await conn.ask(request("/bench/vary", f"X-Variant: {variant}"))
        p.count(status, status == "200" and body == f"variant {variant}\n".encode())

    await _each(4000, one, node.port)


async def many_query_strings(node: Node, p: Pattern) -> None:
    """4,000 distinct query strings of 500 bytes on a small cacheable object: 4,000 keys
    stored (what each key costs beside its object, not the cache's budget filling up)."""

    async def one(conn: Conn, i: int) -> None:
        status, _, body = await conn.ask(request(f"/bench/obj/100?q={i}-" + "k" * 500))
        p.count(status, status == "200" and len(body) == 100)

    await _each(4000, one, node.port)


async def long_cookies(node: Node, p: Pattern) -> None:
    """200 requests with 100 Cookie lines of 8,000 bytes, then 3,000 distinct 4 KB heads."""

    async def huge(conn: Conn, i: int) -> None:
        cookies = [f"Cookie: c{j}={i}-" + "c" * 7980 for j in range(100)]
        status, _, body = await conn.ask(request("/style.css", *cookies))
        p.count(status, status == "200" and len(body) > 0)

    async def kept(conn: Conn, i: int) -> None:
        status, _, body = await conn.ask(request("/style.css", f"Cookie: s={i}-" + "s" * 3900))
        p.count(status, status == "200" and len(body) > 0)

    await _each(200, huge, node.port)
    await _each(3000, kept, node.port)


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big")


def _tls_context(alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(alpn)
    return ctx


async def h2_header_blocks(node: Node, p: Pattern, hold: float = 20.0) -> None:
    """40 HTTP/2 connections, each sending a HEADERS frame and 63 CONTINUATION frames of
    16 KB (~1 MB, END_HEADERS never set), then holding the connection open `hold` s."""
    ctx = _tls_context(["h2"])
    frame_size, frames = 16384, 64
    # One field line, valid HPACK (RFC 7541 section 6.2.2: a literal, a new name), whose
    # value fills the 64 frames: the block is only complete with END_HEADERS, never sent.
    start = b"\x00\x09x-padding"
    length = frames * frame_size - len(start) - 5
    block = start + _hpack_int(length, 7) + b"p" * length
    chunks = [block[i : i + frame_size] for i in range(0, frame_size * frames, frame_size)]
    writers: list[asyncio.StreamWriter] = []
    outcomes: Counter[str] = Counter()

    async def one(i: int) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", node.tls_port, ssl=ctx), 30
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            outcomes[f"connect: {type(exc).__name__}"] += 1
            return
        writers.append(writer)
        proto = writer.get_extra_info("ssl_object").selected_alpn_protocol()
        if proto != "h2":
            outcomes[f"alpn {proto}"] += 1
            return
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, b""))
        try:
            for n, chunk in enumerate(chunks):  # HEADERS then CONTINUATION, no END_HEADERS
                writer.write(_frame(1 if n == 0 else 9, 0, 1, chunk) + chunk)
                await asyncio.wait_for(writer.drain(), 30)
            outcomes["block sent"] += 1
        except (OSError, TimeoutError, ConnectionError) as exc:
            outcomes[f"send: {type(exc).__name__}"] += 1
        # What the edge does: its SETTINGS (and maybe a GOAWAY), or a close.
        try:
            data = await asyncio.wait_for(reader.read(1 << 16), 1.0)
            goaway = any(data[i + 3] == 7 for i in _frame_starts(data))
            outcomes["goaway" if goaway else "edge wrote" if data else "edge closed"] += 1
        except TimeoutError:
            outcomes["edge silent"] += 1
        except OSError:
            outcomes["reset"] += 1

    await asyncio.gather(*(one(i) for i in range(40)))
    await asyncio.sleep(hold)
    for w in writers:
        w.close()
    for name, n in outcomes.items():
        p.statuses[name] += n
        p.requests += n
    p.notes.append(f"held {hold:g} s")


def _hpack_int(value: int, prefix: int) -> bytes:
    """An HPACK integer with a `prefix`-bit prefix, its flag bits 0 (RFC 7541 section 5.1)."""
    top = (1 << prefix) - 1
    if value < top:
        return bytes([value])
    out = [top]
    value -= top
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def _frame_starts(data: bytes) -> list[int]:
    """Where each whole HTTP/2 frame in `data` begins."""
    starts, i = [], 0
    while i + 9 <= len(data):
        starts.append(i)
        i += 9 + int.from_bytes(data[i : i + 3], "big")
    return starts


async def pending_handshakes(node: Node, p: Pattern, hold: float = 10.0) -> None:
    """400 TCP connections to the HTTPS port, each sending a ClientHello and nothing more,
    held `hold` seconds; then one ordinary HTTPS request must still be answered."""
    ctx = _tls_context(["http/1.1"])
    writers: list[asyncio.StreamWriter] = []
    outcomes: Counter[str] = Counter()

    async def one(i: int) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", node.tls_port), 30
            )
        except (OSError, TimeoutError) as exc:
            outcomes[f"connect: {type(exc).__name__}"] += 1
            return
        writers.append(writer)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
        with contextlib.suppress(ssl.SSLWantReadError):
            obj.do_handshake()
        writer.write(outgoing.read())  # the ClientHello; the handshake is never finished
        with contextlib.suppress(Exception):
            await writer.drain()
        try:
            data = await asyncio.wait_for(reader.read(1 << 16), 5)
            outcomes["server hello" if data else "closed at once"] += 1
        except TimeoutError:
            outcomes["no answer"] += 1
        except OSError:
            outcomes["reset"] += 1

    await asyncio.gather(*(one(i) for i in range(400)))
    await asyncio.sleep(hold)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", node.tls_port, ssl=_tls_context(["http/1.1"])
    )
    writer.write(request("/style.css", "Connection: close"))
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    ok = answer.startswith(b"HTTP/1.1 200")
    p.count("https request while held", ok)
    for w in writers:
        w.close()
    for name, n in outcomes.items():
        p.statuses[name] += n
        p.requests += n
    p.notes.append(f"held {hold:g} s")


Step = Callable[[Node, Pattern], Awaitable[None]]
PATTERNS: tuple[tuple[str, Step | None, Step], ...] = (
    # name, what is stored first (before the PSS "before"), the attack
    ("multi-range HEADs", warm_big, multirange_heads),
    ("huge Accept-Encoding", warm_text, huge_accept_encoding),
    ("only-if-cached targets", None, only_if_cached),
    ("many Vary values", None, many_vary_values),
    ("many query strings", None, many_query_strings),
    ("long cookies", None, long_cookies),
    ("h2 header blocks", None, h2_header_blocks),
    ("pending TLS handshakes", None, pending_handshakes),
)


def _pss_mib(pid: int) -> float:
    return tree_memory_kib(pid)[1] / 1024


async def _get(port: int, path: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request(path, "Connection: close"))
    raw = (await asyncio.wait_for(reader.read(), 30)).decode("latin-1")
    writer.close()
    return raw.partition("\r\n\r\n")[2]


async def _kept_bytes(port: int) -> dict[str, int]:
    text = await _get(port, "/_edge/metrics")
    found = re.findall(r'^edge_kept_bytes\{[^}]*kind="(\w+)"\} (\S+)$', text, re.M)
    return {kind: int(float(v)) for kind, v in found if float(v)}


async def _cache_mib(port: int) -> float:
    """What the node's cache holds (its node tier, shared by the workers), MiB."""
    stats = json.loads(await _get(port, "/_edge/stats"))
    return int(stats["memory"]["bytes"]) / 1048576


async def _settle(pid: int, seconds: float) -> float:
    """The PSS `seconds` from now (the node idle)."""
    await asyncio.sleep(seconds)
    return _pss_mib(pid)


async def run_pattern(
    node: Node, name: str, setup: Step | None, fn: Step, settle: float
) -> Pattern:
    p = Pattern(name)
    if setup is not None:
        await setup(node, p)
        await asyncio.sleep(2)
    p.cache_before = await _cache_mib(node.port)
    p.pss_before = _pss_mib(node.pid)
    p.pss_peak = p.pss_before
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            p.pss_peak = max(p.pss_peak, _pss_mib(node.pid))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.25)

    sampler = asyncio.create_task(sample())
    t0 = time.monotonic()
    try:
        await fn(node, p)
    except Exception as exc:  # a pattern that broke off is reported, the others still run
        p.notes.append(f"broke off: {exc!r}")
        p.wrong += 1
    p.seconds = time.monotonic() - t0
    p.pss_peak = max(p.pss_peak, _pss_mib(node.pid))
    with contextlib.suppress(Exception):
        p.kept = await _kept_bytes(node.port)
    await asyncio.sleep(1)
    done.set()
    await sampler
    p.pss_after = await _settle(node.pid, settle)
    p.cache_after = await _cache_mib(node.port)
    # What is left once the cache (its budget, not what a client makes a worker keep) is
    # emptied: the kept structures at their bounds, the heap.
    await _purge_all(node)
    p.pss_emptied = await _settle(node.pid, EMPTIED_SECONDS)
    say(
        f"  {name}: {p.requests} requests {dict(p.statuses)}, wrong {p.wrong}; PSS "
        f"{p.pss_before:.1f} -> peak {p.pss_peak:.1f} -> {p.pss_after:.1f} MiB; kept {p.kept}"
    )
    return p


async def run_hostile(tmp: Path, settle: float = 60.0, workers: int = 2) -> dict[str, Any]:
    """Every pattern against one node of `workers` workers with default limits."""
    from bench.topology.certs import ensure_dev_cert

    token = secrets.token_hex(16)
    config = edge_yaml(tmp, memory={"max_object_bytes": "8m"}, purge={"token": token})
    spec = OriginSpec(heavy_seconds=0, db_seconds=0, static_rate=0, impl="standin")
    with ProcessGroup(workdir=tmp / "logs-hostile", keep=True) as group:
        origin = await asyncio.to_thread(start_origin, group, spec, "standin")
        cert = ensure_dev_cert(group.workdir / "tls")
        tls_port = free_port()
        server = await asyncio.to_thread(
            start_edge,
            group,
            origin.url,
            node="edge-hostile",
            config=config,
            workers=workers,
            sections={"tls": tls_section(tls_port, cert)},
        )
        pid = server.managed[0].pid
        assert pid is not None
        port = int(server.url.rsplit(":", 1)[1])
        node = Node(port, tls_port, pid, origin.url, token)
        await asyncio.sleep(2)
        idle = _pss_mib(pid)
        say(f"hostile: node of {workers} workers idle at {idle:.1f} MiB PSS")
        patterns = []
        for name, setup, fn in PATTERNS:
            patterns.append(await run_pattern(node, name, setup, fn, settle))
        crashed = not all(m.running for m in server.managed)
        log = server.managed[0].log_path.read_text(errors="replace")
        return {
            "workers": workers,
            "idle_pss_mib": round(idle, 1),
            "settle_seconds": settle,
            "peak_over_idle_mib": PEAK_OVER_IDLE_MIB,
            "after_over_idle_mib": AFTER_OVER_IDLE_MIB,
            "patterns": [p.as_json() for p in patterns],
            "verdict": [line for p in patterns for line in p.verdict]
            + (["the node exited"] if crashed else [])
            + ([f"{log.count('Traceback')} tracebacks in its log"] if "Traceback" in log else []),
        }


def table(result: dict[str, Any]) -> str:
    """The hostile-memory table (Markdown)."""
    lines = [
        f"node: {result['workers']} workers, idle PSS {result['idle_pss_mib']} MiB; target: "
        f"peak <= before + {result['peak_over_idle_mib']} MiB, "
        f"{result['settle_seconds']:g} s after <= before + {result['after_over_idle_mib']} MiB. "
        "node tier: MiB the pattern's answers added to the node's cache (its budget; each "
        "worker's hot tier holds copies of some); emptied: 12 s after a purge of everything "
        "(the after target is met by after or emptied: what the cache stores within its budget "
        "is not kept from requests); kept: the ledger at the attack's end in MiB, workers "
        "summed (kinds over 10 KiB)",
        "",
        "| pattern | requests | answers | wrong | PSS before | peak | after | node tier "
        "| emptied | kept |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p in result["patterns"]:
        before = p["pss_before_mib"]
        kept = ", ".join(f"{k} {v / 1048576:.2f}" for k, v in p["kept_bytes"].items() if v >= 10240)
        answers = ", ".join(f"{k}: {v}" for k, v in p["statuses"].items())
        lines.append(
            f"| {p['name']} | {p['requests']} | {answers} | {p['wrong']} | {before} MiB | "
            f"{p['pss_peak_mib']} ({p['pss_peak_mib'] - before:+.1f}) | "
            f"{p['pss_after_mib']} ({p['pss_after_mib'] - before:+.1f}) | "
            f"{p['cache_after_mib'] - p['cache_before_mib']:+.1f} | "
            f"{p['pss_emptied_mib']} ({p['pss_emptied_mib'] - before:+.1f}) | {kept} |"
        )
    lines.append("")
    lines.append("verdict: " + ("PASS" if not result["verdict"] else "FAIL"))
    lines += [f"  {line}" for line in result["verdict"]]
    return "\n".join(lines)
