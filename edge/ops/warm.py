"""`python -m edge warm`: prefetch a list of URLs through edge nodes (after a deploy and a
purge, so the first visitors get hits). Each URL is requested once on each node."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import aiohttp


def read_targets(paths: Iterable[str], file: str | None) -> list[str]:
    """Paths from the command line and from a file (one a line; # starts a comment)."""
    targets = [p.strip() for p in paths if p.strip()]
    if file:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                targets.append(line)
    bad = [t for t in targets if not t.startswith("/")]
    if bad:
        raise ValueError(f"not a path starting with '/': {bad[0]!r}")
    return targets


async def warm(
    edges: list[str],
    targets: list[str],
    concurrency: int,
    timeout: float,
    out: TextIO | None = None,
) -> int:
    """Fetch every target on every edge; print one line each. Returns how many failed."""
    stream = out if out is not None else sys.stdout
    failures = 0
    limit = asyncio.Semaphore(max(1, concurrency))
    client_timeout = aiohttp.ClientTimeout(total=timeout)

    async def one(session: aiohttp.ClientSession, edge: str, target: str) -> str:
        nonlocal failures
        async with limit:
            t0 = time.monotonic()
            try:
                async with session.get(edge.rstrip("/") + target) as resp:
                    size = 0
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        size += len(chunk)
                    status = resp.status
                    cache = resp.headers.get("X-Cache", "-")
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures += 1
                return f"{edge} {target} FAILED {exc.__class__.__name__}"
            ms = (time.monotonic() - t0) * 1000
            if status >= 400:
                failures += 1
            return f"{edge} {target} {status} {cache} {size} B {ms:.1f} ms"

    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        tasks = [one(session, e, t) for e in edges for t in targets]
        for line in await asyncio.gather(*tasks):
            print(line, file=stream)
    return failures
