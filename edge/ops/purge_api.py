"""The purge API: `POST /_edge/purge` with a JSON body, and `PURGE <url>` (Varnish, Squid).

Both need `Authorization: Bearer <token>`: 401 without it, 403 with a wrong one (compared
in constant time). Without a configured token the purge API is off and says so.

The answer (200, or 503 when the shared tier was unreachable and only this node purged):

    {"node": "edge-1", "kind": "urls", "soft": false, "memory": 1, "shared": 1,
     "generation": 42, "nodes": [{"node": "edge-1", "pid": 7, "entries": 1}, ...],
     "acks": {"expected": 3, "received": 3}, "ms": 2.1}

URLs are reduced to the cache key a GET of them is stored under (full URLs to their path,
the query sorted and filtered by the matching rule), so `PURGE /a?utm=1&name=x` purges
what `GET /a?name=x&utm=2` stored. See docs/purge.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from edge.cache.respond import json_reply
from edge.engine.purger import purge_kind
from edge.http.answer import Answer, Responder

if TYPE_CHECKING:
    from edge.engine.engine import Engine
    from edge.http.request import Request

MAX_ITEMS = 1000
MAX_ITEM_LENGTH = 4096
MAX_BODY = 1 << 20


class BadPurge(ValueError):
    pass


def _json_error(status: int, message: str, **extra: str) -> Answer:
    return json_reply({"error": message}, status, **extra)


def authorize(headers: Any, token: str | None) -> Answer | None:
    """None when the request may purge; otherwise the error answer."""
    if not token:
        return _json_error(
            403, "purge is off: no token configured (set EDGE_PURGE_TOKEN or purge.token)"
        )
    given = headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if not given or scheme.lower() != "bearer" or not value.strip():
        return _json_error(
            401,
            "purge needs Authorization: Bearer <token>",
            WWW_Authenticate='Bearer realm="edge-purge"',
        )
    # Digests of equal length: the comparison takes the same time whatever the length
    # or content of the guess.
    given_digest = hashlib.sha256(value.strip().encode("utf-8", "surrogateescape")).digest()
    if not hmac.compare_digest(given_digest, hashlib.sha256(token.encode()).digest()):
        return _json_error(403, "wrong purge token")
    return None


def _answer(result: dict[str, Any]) -> Answer:
    return json_reply(result, 503 if "error" in result else 200)


def _target(value: Any, where: str, allow_glob: bool) -> str:
    """A URL path (or a full URL, reduced to its path and query) from a purge body."""
    if not isinstance(value, str) or not value:
        raise BadPurge(f"{where}: expected a non-empty string")
    if len(value) > MAX_ITEM_LENGTH:
        raise BadPurge(f"{where}: longer than {MAX_ITEM_LENGTH} characters")
    if any(c in value for c in "\r\n\x00") or any(ord(c) < 0x20 for c in value):
        raise BadPurge(f"{where}: control characters are not allowed")
    if value.startswith(("http://", "https://")):
        parts = urlsplit(value)
        value = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not value.startswith("/") and not (allow_glob and value.startswith("*")):
        raise BadPurge(f"{where}: expected a path starting with / or a full http(s) URL")
    return value


def _list(body: dict[str, Any], name: str, allow_glob: bool = False) -> list[str]:
    raw = body.get(name, [])
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise BadPurge(f"{name}: expected a list of strings")
    if len(raw) > MAX_ITEMS:
        raise BadPurge(f"{name}: at most {MAX_ITEMS} items per purge, got {len(raw)}")
    if name == "tags":
        out = []
        for i, t in enumerate(raw):
            if not isinstance(t, str) or not t or len(t) > 256 or any(c.isspace() for c in t):
                raise BadPurge(f"tags[{i}]: expected a tag without spaces")
            out.append(t)
        return out
    return [_target(v, f"{name}[{i}]", allow_glob) for i, v in enumerate(raw)]


def parse_purge_body(raw: bytes) -> dict[str, Any]:
    """Validate a purge body; raises BadPurge with a message for the client."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadPurge("the body is not JSON") from None
    except RecursionError:  # json's parser recurses per nesting level
        raise BadPurge("the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise BadPurge("expected a JSON object")
    unknown = set(body) - {"urls", "prefixes", "tags", "all", "soft"}
    if unknown:
        raise BadPurge(
            f"unknown field {sorted(unknown)[0]!r} (known: urls, prefixes, tags, all, soft)"
        )
    for flag in ("all", "soft"):
        if not isinstance(body.get(flag, False), bool):
            raise BadPurge(f"{flag}: expected true or false")
    spec = {
        "urls": _list(body, "urls"),
        "prefixes": _list(body, "prefixes", allow_glob=True),
        "tags": _list(body, "tags"),
        "all": body.get("all", False),
        "soft": body.get("soft", False),
    }
    if not (spec["urls"] or spec["prefixes"] or spec["tags"] or spec["all"]):
        raise BadPurge("nothing to purge: give urls, prefixes, tags or all: true")
    return spec


async def purge_post(engine: Engine, req: Request, conn: Responder) -> None:
    conn.send(req, await _purge_post(engine, req))


async def _purge_post(engine: Engine, req: Request) -> Answer:
    denied = authorize(req.headers, engine.cfg.purge_token)
    if denied is not None:
        return denied
    raw = bytes(req.body)
    if len(raw) > MAX_BODY:
        return _json_error(413, f"purge body larger than {MAX_BODY} bytes")
    try:
        spec = parse_purge_body(raw)
    except BadPurge as exc:
        return _json_error(400, str(exc))
    try:
        result = await engine.purger.purge(
            spec["urls"],
            spec["prefixes"],
            spec["tags"],
            spec["all"],
            spec["soft"],
            kind=purge_kind(spec),
        )
    except ValueError as exc:
        return _json_error(400, str(exc))
    if engine.view is not None:
        engine.view.record_purge(result)  # for the dashboard's "last purge"
    return _answer(result)


SOFT_HEADERS = ("X-Purge-Soft", "Fastly-Soft-Purge")
_YES = ("1", "true", "yes", "on")


async def purge_method(engine: Engine, req: Request, conn: Responder) -> None:
    """`PURGE /path`: purge that one URL (every variant); soft with `X-Purge-Soft: 1` (or
    Fastly's `Fastly-Soft-Purge: 1`)."""
    conn.send(req, await _purge_method(engine, req))


async def _purge_method(engine: Engine, req: Request) -> Answer:
    denied = authorize(req.headers, engine.cfg.purge_token)
    if denied is not None:
        return denied
    soft = any(req.headers.get(h, "").strip().lower() in _YES for h in SOFT_HEADERS)
    try:
        target = _target(req.target, "PURGE target", allow_glob=False)
    except BadPurge as exc:
        return _json_error(400, str(exc))
    kind = "soft-urls" if soft else "urls"
    result = await engine.purger.purge([target], soft=soft, kind=kind)
    if engine.view is not None:
        engine.view.record_purge(result)
    return _answer(result)
