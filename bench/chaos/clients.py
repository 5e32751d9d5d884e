"""The chaos suite's clients: keep-alive load with orders, and raw held connections."""

from __future__ import annotations

import asyncio
import random
import re
import time

import aiohttp

from bench.chaos.common import IMAGE, PAGE
from bench.chaos.report import Tally


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
