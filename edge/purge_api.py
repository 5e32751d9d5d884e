"""The purge API: `POST /_edge/purge` with a JSON body, and `PURGE <url>` (Varnish, Squid).

Both need `Authorization: Bearer <token>`: 401 without it, 403 with a wrong one (compared
in constant time). Without a configured token the purge API is off and says so.
"""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from edge.proxy import EdgeNode

MAX_ITEMS = 1000
MAX_ITEM_LENGTH = 4096
MAX_BODY = 1 << 20


class BadPurge(ValueError):
    pass


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def authorize(request: web.Request, token: str | None) -> web.Response | None:
    """None when the request may purge; otherwise the error answer."""
    if not token:
        return _json_error(
            403, "purge is off: no token configured (set EDGE_PURGE_TOKEN or purge.token)"
        )
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if not given or scheme.lower() != "bearer" or not value.strip():
        return web.json_response(
            {"error": "purge needs Authorization: Bearer <token>"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="edge-purge"'},
        )
    if not hmac.compare_digest(value.strip().encode(), token.encode()):
        return _json_error(403, "wrong purge token")
    return None


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


async def purge_post(request: web.Request, node: EdgeNode) -> web.Response:
    denied = authorize(request, node.cfg.purge_token)
    if denied is not None:
        return denied
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _json_error(413, f"purge body larger than {MAX_BODY} bytes")
    try:
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            return _json_error(413, f"purge body larger than {MAX_BODY} bytes")
        spec = parse_purge_body(raw)
    except BadPurge as exc:
        return _json_error(400, str(exc))
    kind = "all" if spec["all"] else "+".join(k for k in ("urls", "prefixes", "tags") if spec[k])
    if spec["soft"]:
        kind = f"soft-{kind}"
    try:
        result = await node.purge(
            spec["urls"], spec["prefixes"], spec["tags"], spec["all"], spec["soft"], kind=kind
        )
    except ValueError as exc:
        return _json_error(400, str(exc))
    return web.json_response(result)


async def purge_method(request: web.Request, node: EdgeNode) -> web.Response:
    """`PURGE /path`: purge that one URL (every variant)."""
    denied = authorize(request, node.cfg.purge_token)
    if denied is not None:
        return denied
    soft = request.headers.get("X-Purge-Soft", "").lower() in ("1", "true", "yes")
    result = await node.purge([request.rel_url.raw_path_qs], soft=soft, kind="url")
    return web.json_response(result)
