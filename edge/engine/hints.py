"""103 Early Hints (RFC 8297): the preload and preconnect links of a page, sent before it.

Cloudflare's way: the edge learns the `Link` header fields of a page's answer that ask the
browser to preload or preconnect, and on the next miss or revalidation of that page (when the
origin is about to make the browser wait) it first sends them as a `103 Early Hints`, so the
browser fetches the stylesheet, script and image while the origin is still working.

- Learnt from the origin's final answer (stored or not) and from a stored answer being
  revalidated; forgotten when the page's answer no longer carries such links. Per worker,
  bounded (`MAX_PAGES`), in memory: hints are an optimization, a worker that has not seen
  the page yet sends none.
- Sent to HTTP/1.1 and HTTP/2 clients, never to HTTP/1.0 (RFC 9110 section 15.2: "A server
  MUST NOT send a 1xx response to an HTTP/1.0 client"), through the `interim(status, fields)`
  of the object carrying the request: the HTTP/1.1 connection, or the h2 stream
  (`edge/protocol/http2.py`: a HEADERS frame with `:status 103`); nothing here depends on
  the protocol.
- Never stored: a 1xx is never an entry (the stored answer is the final one, whose `Link`
  fields the hints repeat, as RFC 8297 section 2 expects).
- The origin's own 103: aiohttp's client (3.14) reads and drops informational answers before
  the final one and exposes them through no API or trace signal, so the edge cannot forward
  them; it learns the same links from the final answer instead.

Note: Chromium acts on 103 only over HTTP/2 and HTTP/3 ("Chromium only handles 103 responses
over HTTP/2 and HTTP/3", its intent to ship); over HTTP/1.1 it ignores them. See
docs/delivery.md for both measurements.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

HINT_RELS = frozenset({"preload", "preconnect", "modulepreload"})
MAX_PAGES = 4096
MAX_LINKS = 32


def split_links(value: str) -> list[str]:
    """A Link field value cut into its link-values (RFC 8288 section 3): commas inside `<...>`
    or a quoted string do not separate."""
    out: list[str] = []
    start, depth, quoted, escaped = 0, False, False, False
    for i, ch in enumerate(value):
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth = True
        elif ch == ">":
            depth = False
        elif ch == "," and not depth:
            out.append(value[start:i].strip())
            start = i + 1
    out.append(value[start:].strip())
    return [v for v in out if v]


def rels(link_value: str) -> set[str]:
    """The relation types of one link-value (`rel="preload prefetch"` holds two)."""
    _, _, params = link_value.partition(">")
    found: set[str] = set()
    for param in params.split(";"):
        name, eq, raw = param.strip().partition("=")
        if eq and name.strip().lower() == "rel":
            found |= {r.lower() for r in raw.strip().strip('"').split()}
    return found


def hint_links(values: Iterable[str]) -> tuple[str, ...]:
    """The link-values of these Link fields that ask to preload or preconnect."""
    out: list[str] = []
    for value in values:
        for link in split_links(value):
            if link.startswith("<") and rels(link) & HINT_RELS and link not in out:
                out.append(link)
    return tuple(out[:MAX_LINKS])


def links_of(fields: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    return hint_links(v for k, v in fields if k.lower() == "link")


def interim_fields(links: tuple[str, ...]) -> list[tuple[str, str]]:
    return [("Link", link) for link in links]


def may_send(version: str) -> bool:
    """RFC 9110 section 15.2: no 1xx to an HTTP/1.0 client."""
    return version not in ("1.0", "0.9")


class Hints:
    """The learnt links of the pages of one worker, least recently learnt dropped first."""

    def __init__(self, max_pages: int = MAX_PAGES) -> None:
        self.max_pages = max_pages
        self.pages: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self.sent = 0

    def learn(self, key: str, fields: Iterable[tuple[str, str]]) -> None:
        links = links_of(fields)
        if not links:
            self.pages.pop(key, None)
            return
        self.pages[key] = links
        self.pages.move_to_end(key)
        while len(self.pages) > self.max_pages:
            self.pages.popitem(last=False)

    def for_fetch(self, key: str, stored: Iterable[tuple[str, str]] | None) -> tuple[str, ...]:
        """The links to hint before fetching `key`: learnt, else the stored answer's."""
        links = self.pages.get(key)
        if links is None and stored is not None:
            links = links_of(stored)
        return links or ()
