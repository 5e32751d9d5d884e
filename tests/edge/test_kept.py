"""What a worker keeps between requests to answer the next ones sooner: whole request heads with
their parse (edge.protocol.http1), and fresh hits with their lookup (edge.engine.fresh_hits).
Neither may change an answer: each test checks that a kept head or hit answers as the general
way would, and that what ends a hit (a purge here or by another worker, the end of freshness, a
new configuration) ends the kept one too."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys

import aiohttp

from tests.edge.conftest import TOKEN, url

AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Client:
    """One keep-alive connection, raw bytes out, one answer (head and Content-Length body)
    read back per request."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.writer.write(chunk)
            await self.writer.drain()
            await asyncio.sleep(0.02)  # each chunk its own read at the edge

    async def answer(self) -> tuple[dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.decode("latin-1").split("\r\n")
        fields = {"status": lines[0].split()[1]}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                fields[name.strip().lower()] = value.strip()
        length = int(fields.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), 5) if length else b""
        return fields, body

    async def get(self, raw: bytes) -> tuple[dict[str, str], bytes]:
        await self.send(raw)
        return await self.answer()

    def close(self) -> None:
        self.writer.close()


def get(path: str, port: int, *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_repeated_head_is_kept_once_and_answered_as_the_first(scripted, make_edge) -> None:  # type: ignore[no-untyped-def]
    script, origin = scripted
    script.set("/a", body=b"A" * 100, Cache_Control="max-age=60")
    edge = await make_edge(url(origin, "/"))
    engine = edge.engine
    client = await Client.open(edge.port)
    raw = get("/a", edge.port, "User-Agent: test")
    answers = [await client.get(raw) for _ in range(4)]
    client.close()
    assert [a[0]["x-cache"] for a in answers] == ["MISS", "HIT", "HIT", "HIT"]
    assert {a[1] for a in answers} == {b"A" * 100}
    assert list(engine.request_heads) == [raw]  # the one head, kept once
    assert script.hits["/a"] == 1
    # Another client sending the same bytes gets the same answer from the kept head.
    other = await Client.open(edge.port)
    fields, body = await other.get(raw)
    other.close()
    assert fields["x-cache"] == "HIT" and body == b"A" * 100


async def test_heads_that_do_not_come_whole_and_alone_are_not_kept(scripted, make_edge) -> None:  # type: ignore[no-untyped-def]
    script, origin = scripted
    script.set("/a", body=b"A", Cache_Control="max-age=60")
    script.set("/b", body=b"BB", Cache_Control="max-age=60")
    edge = await make_edge(url(origin, "/"))
    client = await Client.open(edge.port)
    split = get("/a", edge.port)
    await client.send(split[:10], split[10:])  # one head over two reads
    assert (await client.answer())[1] == b"A"
    await client.send(get("/a", edge.port) + get("/b", edge.port))  # two heads in one read
    assert [(await client.answer())[1] for _ in range(2)] == [b"A", b"BB"]
    # The end of one head and the whole of the next in one read: neither is kept.
    await client.send(split[:10], split[10:] + get("/b", edge.port))
    assert [(await client.answer())[1] for _ in range(2)] == [b"A", b"BB"]
    post = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
    await client.send(post)
    await client.answer()
    closing = get("/a", edge.port, "Connection: close")
    assert (await client.get(closing))[1] == b"A"
    client.close()
    assert edge.engine.request_heads == {}


async def test_a_kept_head_is_parsed_again_under_a_new_configuration(scripted, make_edge) -> None:  # type: ignore[no-untyped-def]
    script, origin = scripted
    script.set("/a", body=b"A", Cache_Control="max-age=60")
    edge = await make_edge(url(origin, "/"))
    engine = edge.engine
    raw = get("/a", edge.port, "X-Long: " + "x" * 300)
    client = await Client.open(edge.port)
    assert (await client.get(raw))[0]["status"] == "200"
    assert raw in engine.request_heads
    client.close()
    engine.reconfigure(dataclasses.replace(engine.cfg, max_field_size=200))
    client = await Client.open(edge.port)  # a new connection takes the new limits
    fields, _ = await client.get(raw)
    client.close()
    assert fields["status"] == "431"


async def test_kept_hits_are_counted_and_age_as_the_others(scripted, make_edge) -> None:  # type: ignore[no-untyped-def]
    script, origin = scripted
    script.set("/a", body=b"A" * 10, Cache_Control="max-age=60")
    edge = await make_edge(url(origin, "/"))
    client = await Client.open(edge.port)
    raw = get("/a", edge.port)
    first = [await client.get(raw) for _ in range(21)]
    await asyncio.sleep(1.1)
    later, _ = await client.get(raw)
    client.close()
    assert "/a" in edge.engine.kept_hits.kept
    ages = [int(a[0]["age"]) for a in first[1:]]
    assert ages[0] <= 1 and int(later["age"]) >= ages[-1] + 1  # Age goes on as time does
    assert int(later["cache-status"].split("ttl=")[1]) <= 60 - int(later["age"])
    async with aiohttp.ClientSession() as s, s.get(url(edge, "/_edge/stats")) as r:
        stats = await r.json()
    assert stats["results"]["HIT"] == 21 and stats["results"]["MISS"] == 1
    assert stats["bytes_served"] == 22 * 10


async def kept(scripted, make_edge, body: bytes, cache_control: str):  # type: ignore[no-untyped-def]
    """An edge whose /a is stored and a kept hit: a miss, then two hits on one connection."""
    script, origin = scripted
    script.set("/a", body=body, Cache_Control=cache_control)
    edge = await make_edge(url(origin, "/"))
    client = await Client.open(edge.port)
    raw = get("/a", edge.port)
    assert [(await client.get(raw))[0]["x-cache"] for _ in range(3)] == ["MISS", "HIT", "HIT"]
    assert "/a" in edge.engine.kept_hits.kept
    return script, edge, client, raw


async def test_a_kept_hit_ends_with_a_purge_here_or_by_another_worker(scripted, make_edge) -> None:  # type: ignore[no-untyped-def]
    script, edge, client, raw = await kept(scripted, make_edge, b"v1", "max-age=60")
    # A purge through this worker's API.
    script.set("/a", body=b"v2", Cache_Control="max-age=60")
    async with (
        aiohttp.ClientSession() as s,
        s.request("PURGE", url(edge, "/a"), headers=AUTH) as r,
    ):
        assert r.status == 200
    # The kept hit no longer stands, and the next collect lets go of it and its entry.
    edge.engine.collect_hits()
    assert "/a" not in edge.engine.kept_hits.kept
    fields, body = await client.get(raw)
    assert (fields["x-cache"], body) == ("MISS", b"v2")
    assert (await client.get(raw))[1] == b"v2"
    # Another worker of the node purges through the node tier: this worker's hot copy and
    # its kept hit know it only by the node's purge generation.
    script.set("/a", body=b"v3", Cache_Control="max-age=60")
    assert edge.server.node_path is not None
    purge = (
        "import sys; from edge.store.node import NodeTier; from edge.store.storage import Purge\n"
        "with NodeTier(sys.argv[1]) as tier: print(tier.purge(Purge(prefixes=['/a'])))"
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", purge, edge.server.node_path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "1", done.stderr
    fields, body = await client.get(raw)
    client.close()
    assert (fields["x-cache"], body) == ("MISS", b"v3")


async def test_a_kept_hit_ends_with_its_freshness(scripted, make_edge) -> None:  # type: ignore[no-untyped-def]
    script, _edge, client, raw = await kept(scripted, make_edge, b"A", "max-age=2")
    await asyncio.sleep(2.5)
    fields, _ = await client.get(raw)
    client.close()
    assert fields["x-cache"] != "HIT"  # MISS, or STALE with a refresh behind it
    for _ in range(100):
        if script.hits["/a"] >= 2:
            break
        await asyncio.sleep(0.02)
    assert script.hits["/a"] == 2
