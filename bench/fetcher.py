"""A recursive page fetcher: the page and everything it references, as `wget -r -np` would.

From HTML it follows `img src`/`srcset`, `link href`, `script src`, `a href`, `source src`,
`video poster`, inline `style="...url(...)"` and `<style>` blocks; from CSS it follows
`url(...)` and `@import`. Like wget without `-H` it stays on the starting host; like
`-np` it does not climb above the starting directory. Fetches are sequential on one
keep-alive connection, as wget does, and every body is read to its end.
"""

from __future__ import annotations

import gzip
import re
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import ClassVar
from urllib.parse import urldefrag, urljoin, urlsplit

import aiohttp

CSS_URL = re.compile(r"""url\(\s*(?:"([^"]*)"|'([^']*)'|([^)'"\s]*))\s*\)""", re.IGNORECASE)
CSS_IMPORT = re.compile(r"""@import\s+(?:"([^"]+)"|'([^']+)')""", re.IGNORECASE)


def css_urls(text: str) -> list[str]:
    """Every url(...) and @import "..." of a stylesheet, in order."""
    out = [next(g for g in m.groups() if g is not None) for m in CSS_URL.finditer(text)]
    out += [m.group(1) or m.group(2) for m in CSS_IMPORT.finditer(text)]
    return [u.strip() for u in out if u and u.strip() and not u.strip().startswith("data:")]


class _LinkParser(HTMLParser):
    ATTRS: ClassVar[dict[str, tuple[str, ...]]] = {
        "img": ("src", "srcset"),
        "script": ("src",),
        "link": ("href",),
        "a": ("href",),
        "source": ("src", "srcset"),
        "video": ("poster", "src"),
        "audio": ("src",),
        "iframe": ("src",),
        "embed": ("src",),
        "input": ("src",),
        "body": ("background",),
    }

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.base: str | None = None
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): v for k, v in attrs if v is not None}
        if tag == "base" and "href" in values:
            self.base = values["href"]
        for name in self.ATTRS.get(tag, ()):
            value = values.get(name)
            if not value:
                continue
            if name == "srcset":
                self.links += [part.strip().split()[0] for part in value.split(",") if part.strip()]
            else:
                self.links.append(value.strip())
        if "style" in values:
            self.links += css_urls(values["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.links += css_urls(data)


def html_links(text: str) -> tuple[list[str], str | None]:
    parser = _LinkParser()
    parser.feed(text)
    parser.close()
    return parser.links, parser.base


@dataclass
class Fetched:
    url: str
    status: int
    bytes: int
    seconds: float
    content_type: str
    x_cache: str | None = None
    cache_status: str | None = None
    age: str | None = None


@dataclass
class PageLoad:
    """One recursive load: wall time from the first request to the last byte of the last."""

    start_url: str
    seconds: float = 0.0
    resources: list[Fetched] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(r.bytes for r in self.resources)

    @property
    def ok(self) -> bool:
        return not self.errors and all(200 <= r.status < 400 for r in self.resources)

    def as_json(self) -> dict[str, object]:
        return {
            "url": self.start_url,
            "seconds": self.seconds,
            "bytes": self.total_bytes,
            "ok": self.ok,
            "errors": self.errors,
            "resources": [r.__dict__ for r in self.resources],
        }


def decoded(body: bytes, encoding: str) -> bytes:
    """The body as a browser reads it: the fetcher accepts what a browser accepts (aiohttp's
    default Accept-Encoding) and counts the bytes on the wire, so it decodes what it parses."""
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return body
    if coding in ("gzip", "x-gzip"):
        return gzip.decompress(body)
    if coding == "br":
        import brotli

        return bytes(brotli.decompress(body))
    if coding == "zstd":
        import zstandard

        return bytes(zstandard.ZstdDecompressor().decompressobj().decompress(body))
    if coding == "deflate":
        return zlib.decompress(body)
    raise ValueError(f"unknown Content-Encoding {encoding!r}")


def _in_scope(url: str, root: str) -> bool:
    u, r = urlsplit(url), urlsplit(root)
    if u.scheme not in ("http", "https") or (u.scheme, u.netloc) != (r.scheme, r.netloc):
        return False
    root_dir = r.path.rsplit("/", 1)[0] + "/"
    return (u.path or "/").startswith(root_dir)


async def fetch_page(
    url: str,
    *,
    session: aiohttp.ClientSession | None = None,
    max_depth: int = 5,
    max_resources: int = 200,
    total_timeout: float = 120.0,
) -> PageLoad:
    """Load `url` and, recursively, what it references on the same host (sequentially)."""
    own = session is None
    if session is None:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1, force_close=False),
            timeout=aiohttp.ClientTimeout(total=total_timeout),
            auto_decompress=False,
        )
    load = PageLoad(url)
    seen = {urldefrag(url)[0]}
    queue: deque[tuple[str, int]] = deque([(urldefrag(url)[0], 0)])
    start = time.perf_counter()
    try:
        while queue and len(load.resources) < max_resources:
            current, depth = queue.popleft()
            t0 = time.perf_counter()
            try:
                async with session.get(current, allow_redirects=True) as resp:
                    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                    parse = ctype in ("text/html", "text/css") and depth < max_depth
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in resp.content.iter_chunked(256 * 1024):
                        size += len(chunk)
                        if parse:
                            chunks.append(chunk)
                    fetched = Fetched(
                        url=current,
                        status=resp.status,
                        bytes=size,
                        seconds=time.perf_counter() - t0,
                        content_type=ctype,
                        x_cache=resp.headers.get("X-Cache"),
                        cache_status=resp.headers.get("Cache-Status"),
                        age=resp.headers.get("Age"),
                    )
                    final_url = str(resp.url)
                    encoding = resp.headers.get("Content-Encoding", "")
            except (TimeoutError, aiohttp.ClientError) as exc:
                load.errors.append(f"{current}: {exc!r}")
                continue
            load.resources.append(fetched)
            if not parse or fetched.status >= 400:
                continue
            text = decoded(b"".join(chunks), encoding).decode("utf-8", errors="replace")
            if ctype == "text/html":
                links, base = html_links(text)
                base_url = urljoin(final_url, base) if base else final_url
            else:
                links, base_url = css_urls(text), final_url
            for link in links:
                absolute = urldefrag(urljoin(base_url, link))[0]
                if absolute not in seen and _in_scope(absolute, url):
                    seen.add(absolute)
                    queue.append((absolute, depth + 1))
    finally:
        load.seconds = time.perf_counter() - start
        if own:
            await session.close()
    return load
