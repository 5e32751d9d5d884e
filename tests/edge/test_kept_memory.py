"""What a worker keeps from clients' requests is bounded in bytes (edge.base.ledger), whatever the
clients send: multi-range answers are not kept (a HEAD builds one without sending it), long
Accept-Encoding values are not keys, distinct request-targets and request heads fill their
bound and no more. Each test sends what an attacker would, checks the answers are still
right, and reads what the worker keeps from its structures and from /_edge/metrics."""

from __future__ import annotations

import asyncio
import re

import aiohttp

from edge.engine import compress
from edge.engine.engine import Engine, owned_bytes
from tests.edge.conftest import url
from tests.edge.test_kept import Client, get

KiB = 1 << 10
MiB = 1 << 20


async def kept_metrics(port: int) -> dict[str, dict[str, float]]:
    """edge_kept_bytes, edge_kept_limit_bytes, edge_kept_refused_total by kind."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s,
        s.get(f"http://127.0.0.1:{port}/_edge/metrics") as r,
    ):
        text = await r.text()
    out: dict[str, dict[str, float]] = {}
    for name, kind, value in re.findall(
        r'^(edge_kept_\w+)\{[^}]*kind="(\w+)"\} (\S+)$', text, re.M
    ):
        out.setdefault(name, {})[kind] = float(value)
    return out


async def ask(client: Client, raw: bytes) -> tuple[dict[str, str], bytes]:
    """One request in one write, its answer read back."""
    client.writer.write(raw)
    await client.writer.drain()
    return await client.answer()


async def head_answer(client: Client, raw: bytes) -> dict[str, str]:
    """A HEAD's answer: its head only (no body follows)."""
    await client.send(raw)
    head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 30)
    lines = head.decode("latin-1").split("\r\n")
    fields = {"status": lines[0].split()[1]}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            fields[name.strip().lower()] = value.strip()
    return fields


def answers_owned(engine: Engine) -> int:
    """Bytes of their own the answers kept on entries and on kept hits hold."""
    total = 0
    for entry in engine.tiers.hot.entries():
        total += sum(owned_bytes(entry, a.body) for a in entry.answers.values())
    for kept in engine.kept_hits.kept.values():
        total += sum(owned_bytes(kept.entry, a.body) for a in kept.stamped.values())
    return total


async def test_multi_range_heads_keep_no_copy_of_the_object(scripted, make_edge) -> None:  # type: ignore[no-untyped-def]
    script, origin = scripted
    body = bytes(range(256)) * (8 * KiB)  # 2 MiB
    script.set(
        "/big.bin", body=body, Content_Type="application/octet-stream", Cache_Control="max-age=600"
    )
    edge = await make_edge(url(origin, "/"))
    engine = edge.engine
    client = await Client.open(edge.port)
    fields, got = await client.get(get("/big.bin", edge.port))
    assert fields["status"] == "200" and got == body
    # Each HEAD names other ranges: a multipart answer of nearly the whole object, built
    # and (on the old code) kept on the entry and on its kept hit.
    for i in range(40):
        raw = get("/big.bin", edge.port, f"Range: bytes=0-0,{i + 2}-").replace(b"GET", b"HEAD", 1)
        fields = await head_answer(client, raw)
        assert fields["status"] == "206" and fields["x-cache"] == "HIT"
        assert fields["content-type"].startswith("multipart/byteranges")
    # A GET with such a Range still gets the right multipart body, every time.
    for _ in range(2):
        fields, got = await client.get(get("/big.bin", edge.port, "Range: bytes=0-0,2-"))
        assert fields["status"] == "206"
        assert body[:1] in got and body[2:] in got and len(got) < len(body) + 1024
    # A single range is a view of the stored body: kept, and answered right.
    for _ in range(2):
        fields, got = await client.get(get("/big.bin", edge.port, "Range: bytes=10-19"))
        assert fields["status"] == "206" and got == body[10:20]
    client.close()
    assert answers_owned(engine) < 64 * KiB  # was 40 copies of 2 MiB
    answers = engine.ledger.account("answers")
    assert 0 < answers.used < 64 * KiB
    metrics = await kept_metrics(edge.port)
    assert metrics["edge_kept_bytes"]["answers"] == answers.used
    assert metrics["edge_kept_limit_bytes"]["answers"] == answers.limit
    # The answers kept on an entry are given back when they are dropped: a reload, or the
    # entry itself dropped (here the whole hot tier; a purge or an eviction alike).
    engine.tiers.forget_answers()
    engine.kept_hits.clear()
    assert answers.used == 0 and engine.ledger.account("hits").used == 0
    client = await Client.open(edge.port)
    fields, got = await client.get(get("/big.bin", edge.port, "Range: bytes=10-19"))
    client.close()
    assert fields["x-cache"] == "HIT" and got == body[10:20] and answers.used > 0
    engine.tiers.clear_here()
    engine.collect_hits()  # the kept hits that held the entry are let go
    assert answers.used == 0


async def test_long_accept_encoding_values_are_never_kept(scripted, make_edge) -> None:  # type: ignore[no-untyped-def]
    script, origin = scripted
    text = b"<html>" + b"wooden toys, each one carved by hand. " * 400 + b"</html>"
    script.set("/page", body=text, Content_Type="text/html", Cache_Control="max-age=600")
    edge = await make_edge(url(origin, "/"))
    engine = edge.engine
    client = await Client.open(edge.port)
    plain = get("/page", edge.port, "Accept-Encoding: gzip, br")
    assert (await client.get(plain))[0]["x-cache"] == "MISS"
    assert (await client.get(plain))[0]["x-cache"] == "HIT"  # asks for the coded copies
    await engine.encoder.drain()
    offered = ("br", "zstd", "gzip")
    # Each request: 100 Accept-Encoding lines of 8000 bytes (within the field limits), all
    # but their preferences distinct: about 800 KB that on the old code became keys.
    prefs = ["gzip;q=0.9, br;q=0.5", "br, zstd;q=0.1", "identity, *;q=0", "zstd, gzip;q=0"]
    for i in range(12):
        lines = [f"Accept-Encoding: {prefs[i % 4]}"]
        for j in range(99):
            junk = f"x-{i}-{j}-" + "y" * 7950
            lines.append(f"Accept-Encoding: {junk};q=0.1")
        fields, got = await client.get(get("/page", edge.port, *lines))
        joined = ", ".join(line.split(": ", 1)[1] for line in lines)
        want = compress.negotiate(joined, offered)
        assert fields["status"] == "200" and fields["x-cache"] == "HIT"
        assert fields.get("content-encoding") == want, (i, want)
        if want is None:
            assert got == text
    client.close()
    kept_keys = [k for k in engine.kept_hits.kept if isinstance(k, tuple)]
    assert kept_keys and all(len(k[1] or b"") < 100 for k in kept_keys)
    choices = engine.encoder.choices
    assert all(len(v) <= compress.MAX_KEPT_VALUE for v in choices.classes)
    assert all(len(v) <= compress.MAX_KEPT_VALUE for v, _ in choices.chosen)
    assert all(len(slot[2]) < 100 for slot in choices.picks)
    for kind in ("hits", "codings"):
        assert engine.ledger.account(kind).used < 64 * KiB, kind
    # The same choices as `negotiate` on the value as sent, class or not (RFC 9110 12.5.3).
    for value in ("gzip;q=0.9, br;q=0.5", "*;q=0.5, br;q=0", "x-gzip", "identity;q=0, foo", ""):
        for some in (offered, ("gzip",), ("br", "zstd")):
            assert compress.negotiate(compress.accept_class(value), some) == compress.negotiate(
                value, some
            )


async def test_many_only_if_cached_targets_keep_routes_bounded(scripted, make_edge) -> None:  # type: ignore[no-untyped-def]
    script, origin = scripted
    limit = 512 * KiB
    edge = await make_edge(url(origin, "/"), kept_limits={"routes": limit})
    engine = edge.engine
    client = await Client.open(edge.port)
    for i in range(200):  # each target about 4 KB: 800 KB of targets, none reaches the origin
        target = f"/api/products/{i}?q=" + "z" * 4000
        fields, _ = await ask(client, get(target, edge.port, "Cache-Control: only-if-cached"))
        assert fields["status"] == "504"
    client.close()
    assert sum(script.hits.values()) == 0
    assert len(engine.tiers._checked) < 10  # a key not found is not remembered either
    routes = engine.ledger.account("routes")
    assert routes.used <= limit and routes.refused > 0
    assert 3 * sum(len(t) for t in engine.routes) <= limit  # was 200 targets of 4 KB
    metrics = await kept_metrics(edge.port)
    assert metrics["edge_kept_refused_total"]["routes"] >= 1
    # A route still answers right after the drops.
    script.set("/a", body=b"A", Cache_Control="max-age=60")
    async with aiohttp.ClientSession() as s, s.get(url(edge, "/a")) as r:
        assert r.status == 200 and await r.read() == b"A"


async def test_many_distinct_heads_keep_the_kept_heads_bounded(scripted, make_edge) -> None:  # type: ignore[no-untyped-def]
    script, origin = scripted
    script.set("/a", body=b"A" * 10, Cache_Control="max-age=60")
    edge = await make_edge(url(origin, "/"))
    engine = edge.engine
    heads = engine.ledger.account("heads")
    client = await Client.open(edge.port)
    for i in range(400):  # each head just under the kept head's 4 KB: 1.6 MB in all
        raw = get("/a", edge.port, f"X-Pad: {i}-" + "p" * 3950)
        fields, got = await ask(client, raw)
        assert fields["status"] == "200" and got == b"A" * 10
    client.close()
    assert engine.request_heads and heads.used <= heads.limit
    assert 2 * sum(len(h) for h in engine.request_heads) <= heads.limit  # was 400 of 4 KB
    assert heads.refused > 0


def test_many_distinct_targets_keep_the_url_counters_and_stored_keys_bounded() -> None:
    """Many query strings: each target counted (top URLs) and each key stored once; what
    is kept of them stays within its bytes, the most counted targets first."""
    from edge.base.ledger import DEFAULT_LIMITS
    from edge.base.observe import TOP_BYTES, Observer
    from edge.store.memory import MemoryTier
    from edge.store.tiers import Tiers

    observer = Observer()
    for i in range(3000):
        target = f"/bench/obj/100?q={i}-" + "k" * 2000
        observer.hit(target, 100)
        observer.answered(target, "MISS", 100, 0.001)
    observer.hit("/popular", 100, 500)
    for _ in range(3):
        observer.answered("/popular", "HIT", 100, 0.001)
    keys = observer.url_hits.keys() | observer.url_bytes.keys()
    assert sum(len(k) for k in keys) <= observer.url_key_bytes <= TOP_BYTES  # was 6 MB
    assert observer.url_hits.most_common(1)[0] == ("/popular", 503)

    tiers = Tiers(MemoryTier(1 << 20))
    for i in range(5000):
        tiers.saw_stored(f"GET http 127.0.0.1 /bench/obj/100?q={i}-" + "k" * 500)
    assert sum(len(k) for k in tiers.stored_before) <= DEFAULT_LIMITS["stored_keys"]  # was 2.7 MB
    assert "GET http 127.0.0.1 /bench/obj/100?q=4999-" + "k" * 500 in tiers.stored_before


async def test_the_keys_seen_stored_are_counted_in_the_ledger_and_bounded(
    scripted, make_edge
) -> None:  # type: ignore[no-untyped-def]
    """Every stored miss adds its key to what the worker saw stored (its next misses are
    collapsed): charged to `stored_keys`, bounded by `limits.kept.stored_keys`, the least
    recent dropped first, shown in /_edge/metrics."""
    script, origin = scripted
    script.set("/a", body=b"A", Cache_Control="max-age=60")
    limit = 64 * KiB
    edge = await make_edge(url(origin, "/"), kept_limits={"stored_keys": limit})
    engine = edge.engine
    client = await Client.open(edge.port)
    for i in range(100):  # each key about 1.3 KB: 130 KB of keys seen stored
        fields, got = await ask(client, get(f"/a?q={i}-" + "z" * 1000, edge.port))
        assert fields["status"] == "200" and got == b"A"
    client.close()
    stored_keys = engine.ledger.account("stored_keys")
    assert 0 < stored_keys.used <= limit
    kept_keys = list(engine.tiers.stored_before)
    assert len(kept_keys) < 100 and kept_keys[-1].endswith("q=99-" + "z" * 1000)
    metrics = await kept_metrics(edge.port)
    assert metrics["edge_kept_bytes"]["stored_keys"] == stored_keys.used
    assert metrics["edge_kept_limit_bytes"]["stored_keys"] == limit
