"""Range requests served from a complete stored response (RFC 9110 section 14)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from edge.httpdate import parse_http_date

MAX_RANGES = 32  # more parts than this is an abuse pattern; the whole body is served instead


@dataclass(frozen=True, slots=True)
class RangePlan:
    """What to send: `whole`, `unsatisfiable` (416), or the listed (first, last) byte ranges."""

    whole: bool = False
    unsatisfiable: bool = False
    ranges: tuple[tuple[int, int], ...] = ()


WHOLE = RangePlan(whole=True)


def plan_ranges(value: str | None, size: int) -> RangePlan:
    """Parse a Range header against a body of `size` bytes.

    RFC 9110 section 14.2: a server "MAY ignore the Range header field" -- we do so for
    unknown units and syntax errors. Section 14.1.1: a range whose first position is past the
    end is unsatisfiable; if none is satisfiable the answer is 416.
    """
    if value is None:
        return WHOLE
    unit, eq, spec = value.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return WHOLE
    parts = [p.strip() for p in spec.split(",")]
    if not parts or len(parts) > MAX_RANGES:
        return WHOLE
    wanted: list[tuple[int, int]] = []
    for part in parts:
        if not part:
            continue  # RFC 9110 5.6.1: empty list elements are ignored
        first_s, dash, last_s = part.partition("-")
        first_s, last_s = first_s.strip(), last_s.strip()
        if not dash or (first_s and not first_s.isdigit()) or (last_s and not last_s.isdigit()):
            return WHOLE
        if len(first_s) > 18 or len(last_s) > 18:
            return WHOLE
        if not first_s:
            if not last_s:
                return WHOLE
            suffix = int(last_s)  # suffix-range: the last N bytes
            if suffix == 0:
                continue
            wanted.append((max(0, size - suffix), size - 1))
            continue
        first = int(first_s)
        if last_s and int(last_s) < first:
            return WHOLE  # invalid range-spec: ignore the header
        if first >= size:
            continue  # unsatisfiable member
        last = int(last_s) if last_s else size - 1
        wanted.append((first, min(last, size - 1)))
    if not wanted:
        return RangePlan(unsatisfiable=True)
    # Coalesce overlapping or adjacent ranges (RFC 9110 14.6 allows it) in ascending order.
    wanted.sort()
    merged: list[tuple[int, int]] = [wanted[0]]
    for first, last in wanted[1:]:
        prev_first, prev_last = merged[-1]
        if first <= prev_last + 1:
            merged[-1] = (prev_first, max(prev_last, last))
        else:
            merged.append((first, last))
    return RangePlan(ranges=tuple(merged))


def if_range_allows(if_range: str | None, etag: str | None, last_modified: str | None) -> bool:
    """RFC 9110 section 13.1.5: apply Range only if the validator still matches (strongly)."""
    if if_range is None:
        return True
    if_range = if_range.strip()
    if if_range.startswith('"') or if_range.startswith("W/"):
        return (
            etag is not None
            and not etag.startswith("W/")
            and not if_range.startswith("W/")
            and etag == if_range
        )
    when = parse_http_date(if_range)
    return when is not None and last_modified is not None and parse_http_date(last_modified) == when


def multipart_body(
    body: bytes, ranges: tuple[tuple[int, int], ...], content_type: str | None
) -> tuple[bytes, str]:
    """A multipart/byteranges body (RFC 9110 section 14.6) and its Content-Type."""
    boundary = secrets.token_hex(12)
    size = len(body)
    chunks: list[bytes] = []
    for first, last in ranges:
        head = f"\r\n--{boundary}\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        head += f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n"
        chunks.append(head.encode("latin-1"))
        chunks.append(body[first : last + 1])
    chunks.append(f"\r\n--{boundary}--\r\n".encode("latin-1"))
    return b"".join(chunks), f"multipart/byteranges; boundary={boundary}"
