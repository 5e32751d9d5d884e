"""A stored response, and its compact, safe serialization for the shared tier.

An `Entry` is what RFC 9111 section 3 calls a stored response, plus what the
edge needs to serve it: the request times used for `Age` (section 4.2.3), the
request header values named by `Vary` (section 4.1), and its purge tags.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.http.answer import Answer

MAGIC = b"WE1\n"
_LEN = struct.Struct(">I")
# One encoder made once: `json.dumps` with any argument builds a new one at every call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def compact_json(value: object) -> bytes:
    """`value` as JSON without spaces (what `json.dumps(value, separators=(",", ":"))` gives)."""
    return _COMPACT.encode(value).encode()


class EntryFormatError(ValueError):
    """Bytes read back from the shared tier that are not an entry we wrote."""


@dataclass(slots=True)
class Entry:
    key: str
    """The primary cache key: method, scheme, host, path and normalized query."""
    status: int
    headers: tuple[tuple[str, str], ...]
    """Stored header fields as the origin sent them, hop-by-hop fields removed."""
    body: bytes | memoryview
    """A view of a memfd when the memory tier keeps it (`edge.base.memfile`), else bytes."""
    request_time: float
    """Epoch seconds when the request that produced this response was sent."""
    response_time: float
    """Epoch seconds when the response was received."""
    vary: tuple[tuple[str, str], ...] = ()
    """(lower-case header name, normalized request value) for each name in Vary."""
    tags: tuple[str, ...] = ()
    invalidated: bool = False
    """Soft-purged: treat as stale, revalidate before serving (stale-if-error may still use it)."""
    meta: dict[str, float] = field(default_factory=dict)
    """Numbers the edge computed at store time (e.g. the rule's ttl, swr, sie)."""
    answers: dict[object, Answer] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """Fresh-hit answers already built from this entry, by the request's conditional and
    Range fields: all but Age and Cache-Status (`respond.hit_stamp`). Never stored."""

    @property
    def size(self) -> int:
        """Approximate bytes held in memory by this entry."""
        return len(self.body) + sum(len(k) + len(v) for k, v in self.headers) + 256

    @property
    def variant_id(self) -> str:
        """Identifies this variant among the others stored under the same key."""
        if not self.vary:
            return "-"
        return "\x1f".join(f"{k}={v}" for k, v in self.vary)

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None

    def dumps(self) -> bytes:
        """Serialize as MAGIC, a 4-byte length, JSON metadata, then the raw body."""
        meta = {
            "k": self.key,
            "s": self.status,
            "h": self.headers,
            "rq": self.request_time,
            "rs": self.response_time,
            "v": self.vary,
            "t": self.tags,
            "i": self.invalidated,
            "m": self.meta,
        }
        head = compact_json(meta)
        return MAGIC + _LEN.pack(len(head)) + head + self.body

    @classmethod
    def loads(cls, data: bytes) -> Entry:
        """Parse bytes from `dumps`; anything else raises EntryFormatError (never pickle)."""
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _LEN.size:
            raise EntryFormatError("not an edge entry")
        start = len(MAGIC) + _LEN.size
        (n,) = _LEN.unpack_from(data, len(MAGIC))
        if start + n > len(data):
            raise EntryFormatError("truncated edge entry")
        try:
            meta = json.loads(data[start : start + n])
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise EntryFormatError(f"corrupt edge entry: {exc}") from exc
        if not isinstance(meta, dict):
            raise EntryFormatError("corrupt edge entry: not an object")
        try:
            status = meta["s"]
            numbers = meta["m"]
            if not isinstance(status, int) or isinstance(status, bool):
                raise TypeError("status is not an integer")
            if not isinstance(numbers, dict):
                raise TypeError("meta is not an object")
            return cls(
                key=_text(meta["k"]),
                status=status,
                headers=_pairs(meta["h"]),
                body=bytes(data[start + n :]),
                request_time=_number(meta["rq"]),
                response_time=_number(meta["rs"]),
                vary=_pairs(meta["v"]),
                tags=tuple(_text(t) for t in _list(meta["t"])),
                invalidated=_flag(meta["i"]),
                meta={_text(k): _number(v) for k, v in numbers.items()},
            )
        except (KeyError, TypeError) as exc:
            raise EntryFormatError(f"corrupt edge entry: {exc!r}") from exc


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {type(value).__name__}")
    return value


def _list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def _pairs(value: object) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for item in _list(value):
        pair = _list(item)
        if len(pair) != 2:
            raise TypeError("expected a [name, value] pair")
        out.append((_text(pair[0]), _text(pair[1])))
    return tuple(out)
