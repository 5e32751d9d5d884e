"""The front: static files as nginx serves them, throttled like the lab's `limit_rate 300k`.

Validators as nginx makes them (ETag `"<mtime hex>-<size hex>"`, Last-Modified), no
Cache-Control (the lab's origin sends none), single byte ranges (206/416), conditional
requests (304), HEAD without a body, and the body paced to `rate` bytes/s per response.
"""

from __future__ import annotations

import asyncio
import email.utils
import mimetypes
import os
import re
from dataclasses import dataclass
from pathlib import Path

from aiohttp import hdrs, web

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_RANGE_RE = re.compile(r"^bytes=\s*(\d*)\s*-\s*(\d*)\s*$")
_TEXT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class _Loaded:
    mtime_ns: int
    size: int
    data: bytes


def content_type_for(path: Path) -> str:
    known = _TEXT_TYPES.get(path.suffix.lower())
    if known:
        return known
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def nginx_etag(mtime: float, size: int) -> str:
    return f'"{int(mtime):x}-{size:x}"'


def _etag_matches(header: str, etag: str) -> bool:
    """Weak comparison (RFC 9110 13.1.2) of If-None-Match against our ETag."""
    if header.strip() == "*":
        return True
    ours = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == ours for tag in header.split(","))


def parse_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """One `bytes=` range → (start, end inclusive); None when the header is to be ignored
    (malformed or several ranges: we answer 200 with the whole file); False when unsatisfiable.
    """
    match = _RANGE_RE.match(header.strip())
    if not match:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            return False
        return max(0, size - length), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return False
    return start, min(end, size - 1)


# The page's own subresources, announced with Link so that a CDN can send them as 103 Early
# Hints (RFC 8297) and a browser may preload them (issue 16).
PAGE_LINKS = ", ".join(
    (
        "</woody.css>; rel=preload; as=style",
        "</htmx.min.js>; rel=preload; as=script",
        "</5mo.jpg>; rel=preload; as=image",
    )
)


class StaticFiles:
    """Serves the files of one directory (no subdirectories), `/` being index.html."""

    def __init__(self, directory: Path, rate: int, page_delay: float = 0.0) -> None:
        self.directory = directory
        self.rate = rate
        self.page_delay = page_delay
        self._loaded: dict[Path, _Loaded] = {}
        self._reading: dict[tuple[Path, int, int], asyncio.Future[bytes]] = {}

    def _resolve(self, name: str) -> Path | None:
        if not _NAME_RE.match(name):
            return None
        path = self.directory / name
        return path if path.is_file() else None

    async def _load(self, path: Path, st: os.stat_result) -> bytes:
        """The file's bytes, read once per version (concurrent first requests share a read)."""
        cached = self._loaded.get(path)
        if cached and cached.mtime_ns == st.st_mtime_ns and cached.size == st.st_size:
            return cached.data
        key = (path, st.st_mtime_ns, st.st_size)
        reading = self._reading.get(key)
        if reading is None:
            reading = asyncio.ensure_future(
                asyncio.get_running_loop().run_in_executor(None, path.read_bytes)
            )
            self._reading[key] = reading
            reading.add_done_callback(lambda _: self._reading.pop(key, None))
        data = await asyncio.shield(reading)
        self._loaded[path] = _Loaded(st.st_mtime_ns, st.st_size, data)
        return data

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name") or "index.html"
        path = self._resolve(name)
        if path is None:
            raise web.HTTPNotFound(text="404 Not Found\n")
        st = path.stat()
        size = st.st_size
        etag = nginx_etag(st.st_mtime, size)
        headers = {
            hdrs.CONTENT_TYPE: content_type_for(path),
            hdrs.LAST_MODIFIED: email.utils.formatdate(int(st.st_mtime), usegmt=True),
            "ETag": etag,
            hdrs.ACCEPT_RANGES: "bytes",
        }
        if name == "index.html":
            headers[hdrs.LINK] = PAGE_LINKS
            if self.page_delay:
                await asyncio.sleep(self.page_delay)

        inm = request.headers.get(hdrs.IF_NONE_MATCH)
        if inm is not None:
            if _etag_matches(inm, etag):
                return self._not_modified(headers)
        elif (ims := request.if_modified_since) is not None and int(st.st_mtime) <= ims.timestamp():
            return self._not_modified(headers)

        start, end, status = 0, size - 1, 200
        range_header = request.headers.get(hdrs.RANGE)
        if range_header is not None and self._if_range_ok(request, etag, st.st_mtime):
            parsed = parse_range(range_header, size)
            if parsed is False:
                headers[hdrs.CONTENT_RANGE] = f"bytes */{size}"
                headers[hdrs.CONTENT_TYPE] = "text/plain; charset=utf-8"
                return web.Response(status=416, headers=headers, text="416 Range Not Satisfiable\n")
            if isinstance(parsed, tuple):
                start, end = parsed
                status = 206
                headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{end}/{size}"

        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = end - start + 1
        if request.method == hdrs.METH_HEAD:
            await response.prepare(request)
            await response.write_eof()
            return response
        data = await self._load(path, st)
        await response.prepare(request)
        await self._send(response, memoryview(data)[start : end + 1])
        await response.write_eof()
        return response

    @staticmethod
    def _not_modified(headers: dict[str, str]) -> web.Response:
        kept = {k: v for k, v in headers.items() if k in ("ETag", hdrs.LAST_MODIFIED)}
        return web.Response(status=304, headers=kept)

    @staticmethod
    def _if_range_ok(request: web.Request, etag: str, mtime: float) -> bool:
        if_range = request.headers.get(hdrs.IF_RANGE)
        if if_range is None:
            return True
        if if_range.startswith('"') or if_range.startswith("W/"):
            return if_range == etag  # strong comparison
        date = request.if_range
        return date is not None and int(mtime) == int(date.timestamp())

    async def _send(self, response: web.StreamResponse, body: memoryview) -> None:
        rate = self.rate
        if rate <= 0:
            for offset in range(0, len(body), 256 * 1024):
                await response.write(body[offset : offset + 256 * 1024])
            return
        chunk = max(1024, min(64 * 1024, rate // 20))
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = 0
        for offset in range(0, len(body), chunk):
            piece = body[offset : offset + chunk]
            await response.write(piece)
            sent += len(piece)
            delay = started + sent / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
