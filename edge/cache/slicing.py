"""How a sliced object is laid out in storage: its manifest and its slices under keys made
from the object's, the bytes each slice holds, and what every slice of one fill must agree
on (RFC 9111 section 3.4). Pure: `edge.engine.slices` fills and serves by these rules; the
tiers (`edge.store`) store and purge by them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from multidict import MultiMapping

MANIFEST = "#slices"


def manifest_key(key: str) -> str:
    return key + MANIFEST


def slice_key(key: str, size: int, index: int) -> str:
    return f"{key}#slice/{size}/{index}"


def purged_with(key: str) -> tuple[str, ...]:
    """The keys a purge of `key` drops: the key and its manifest."""
    return (key, manifest_key(key))


def count(total: int, size: int) -> int:
    return max(1, -(-total // size))


def bounds(index: int, size: int, total: int) -> tuple[int, int]:
    """First and last byte (inclusive) of slice `index`."""
    first = index * size
    return first, min(total, first + size) - 1


def covering(first: int, last: int, size: int) -> range:
    """The slices holding bytes first..last."""
    return range(first // size, last // size + 1)


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+)\s*$", re.IGNORECASE)


def parse_content_range(value: str | None) -> tuple[int, int, int] | None:
    """`bytes 0-99/5000` -> (0, 99, 5000); None for `*` totals or anything malformed."""
    if value is None:
        return None
    m = _CONTENT_RANGE.match(value)
    if m is None:
        return None
    first, last, total = (int(g) for g in m.groups())
    if last < first or last >= total:
        return None
    return first, last, total


def validator(headers: MultiMapping[str]) -> str | None:
    """What slices must share: a strong ETag, else Last-Modified (RFC 9111 section 3.4)."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return "etag:" + etag
    last_modified = headers.get("Last-Modified")
    return "lm:" + last_modified if last_modified else None


def whole_fields(headers: MultiMapping[str]) -> tuple[tuple[str, str], ...]:
    """A 206's fields as the whole object's 200 carries them."""
    drop = {"content-range", "content-length"}
    return tuple((k, v) for k, v in headers.items() if k.lower() not in drop)


@dataclass(frozen=True, slots=True)
class Shape:
    """What every slice of one fill agrees on."""

    total: int
    validator: str

    def agrees(self, headers: MultiMapping[str], index: int, size: int) -> bool:
        got = parse_content_range(headers.get("Content-Range"))
        if got is None or validator(headers) != self.validator:
            return False
        first, last, total = got
        return total == self.total and (first, last) == bounds(index, size, self.total)
