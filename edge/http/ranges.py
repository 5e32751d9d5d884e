"""Range requests served from a complete stored response (RFC 9110 section 14)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from edge.http.httpdate import parse_http_date

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
    # range-set = 1#range-spec: empty members are ignored (RFC 9110 5.6.1), but at least one
    # range-spec is needed; `bytes=` alone is a syntax error, not an unsatisfiable set.
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts or len(parts) > MAX_RANGES:
        return WHOLE
    wanted: list[tuple[int, int]] = []
    empty_suffix = False  # a non-zero suffix-range against an empty representation
    for part in parts:
        first_s, dash, last_s = part.partition("-")
        first_s, last_s = first_s.strip(), last_s.strip()
        if not dash or not _digits(first_s) or not _digits(last_s):
            return WHOLE
        if not first_s:
            if not last_s:
                return WHOLE
            suffix = _number(last_s)  # suffix-range: the last N bytes
            if suffix == 0:
                continue
            if size == 0:
                empty_suffix = True
                continue
            wanted.append((max(0, size - suffix), size - 1))
            continue
        first = _number(first_s)
        if last_s and _number(last_s) < first:
            return WHOLE  # invalid range-spec: ignore the header
        if first >= size:
            continue  # unsatisfiable member
        last = _number(last_s) if last_s else size - 1
        wanted.append((first, min(last, size - 1)))
    if not wanted:
        # 14.1.1: "at least one suffix-range with a non-zero suffix-length" makes the set
        # satisfiable, but there is no byte to send from an empty body: send it whole.
        return WHOLE if empty_suffix else RangePlan(unsatisfiable=True)
    # Coalesce overlapping or adjacent ranges (RFC 9110 14.6 allows it). 15.3.7.2: the parts
    # go "in the same order that the corresponding range-spec appeared in the received Range
    # header field, excluding those ranges that were deemed unsatisfiable or that were
    # coalesced into other ranges": a merged range takes the place of its earliest member.
    order = sorted(range(len(wanted)), key=lambda i: wanted[i])
    merged: list[list[int]] = []  # [first, last, position of the earliest member]
    for i in order:
        first, last = wanted[i]
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
            merged[-1][2] = min(merged[-1][2], i)
        else:
            merged.append([first, last, i])
    merged.sort(key=lambda m: m[2])
    return RangePlan(ranges=tuple((m[0], m[1]) for m in merged))


def _digits(text: str) -> bool:
    """Empty, or ASCII digits only (str.isdigit() alone accepts "²", which int() rejects)."""
    return not text or (text.isascii() and text.isdigit())


def _number(digits: str) -> int:
    """A byte position; one longer than 18 digits is past any body we hold, so it is capped."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10**18


def if_range_allows(
    if_range: str | None,
    etag: str | None,
    last_modified: str | None,
    date: str | None = None,
) -> bool:
    """RFC 9110 section 13.1.5: apply Range only if the validator still matches (strongly).

    `date` is the stored response's Date: when given, a Last-Modified only counts as a strong
    validator if that Date is at least one second later (section 8.8.2.2).
    """
    if if_range is None:
        return True
    if_range = if_range.strip()
    if if_range.startswith('"') or if_range.startswith("W/"):
        # 13.1.5: "the condition is false if the entity-tag ... is not a strong match"
        return (
            etag is not None
            and not etag.strip().startswith("W/")
            and not if_range.startswith("W/")
            and etag.strip() == if_range
        )
    when = parse_http_date(if_range)
    stored = parse_http_date(last_modified)
    if when is None or stored is None or stored != when:
        return False
    if date is not None:
        sent = parse_http_date(date)
        if sent is None or sent < stored + 1:
            return False  # 8.8.2.2: not "at least one second after the Last-Modified value"
    return True


def multipart_body(
    body: bytes | memoryview, ranges: tuple[tuple[int, int], ...], content_type: str | None
) -> tuple[bytes, str]:
    """A multipart/byteranges body (RFC 9110 section 14.6) and its Content-Type."""
    boundary = secrets.token_hex(12)
    size = len(body)
    chunks: list[bytes | memoryview] = []
    for first, last in ranges:
        head = f"\r\n--{boundary}\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        head += f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n"
        chunks.append(head.encode("latin-1"))
        chunks.append(body[first : last + 1])
    chunks.append(f"\r\n--{boundary}--\r\n".encode("latin-1"))
    return b"".join(chunks), f"multipart/byteranges; boundary={boundary}"
