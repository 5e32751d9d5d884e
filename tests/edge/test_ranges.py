"""Range requests from a stored response (RFC 9110 section 14, 13.1.5, 15.3.7)."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.http.ranges import (
    MAX_RANGES,
    WHOLE,
    RangePlan,
    if_range_allows,
    multipart_body,
    plan_ranges,
)

SIZE = 1000


def ranges(value: str, size: int = SIZE) -> tuple[tuple[int, int], ...]:
    plan = plan_ranges(value, size)
    assert not plan.whole and not plan.unsatisfiable, plan
    return plan.ranges


def test_no_range_header_is_whole() -> None:
    assert plan_ranges(None, SIZE) is WHOLE


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes=0-499", ((0, 499),)),  # 14.1.2 examples: "The first 500 bytes"
        ("bytes=500-999", ((500, 999),)),  # "The second 500 bytes"
        ("bytes=500-", ((500, 999),)),  # open-ended: to the end
        ("bytes=-500", ((500, 999),)),  # suffix-range: "The final 500 bytes"
        ("bytes=-5000", ((0, 999),)),  # suffix longer than the body: the whole body
        ("bytes=0-0", ((0, 0),)),
        ("bytes=990-5000", ((990, 999),)),  # last-pos past the end: clamped
        ("bytes=0-99999999999999999999999", ((0, 999),)),
        ("BYTES = 1-2", ((1, 2),)),  # the unit is case-insensitive
    ],
)
def test_single_ranges(value: str, expected: tuple[tuple[int, int], ...]) -> None:
    """14.1.1: "If the last-pos value is absent, or if the value is greater than or equal to
    the current length of the representation data, the byte range is interpreted as the
    remainder of the representation"; "If the selected representation is shorter than the
    specified suffix-length, the entire representation is used." """
    assert ranges(value) == expected


def test_multiple_ranges_keep_their_order() -> None:
    """15.3.7.2: "the server SHOULD send the parts in the same order that the corresponding
    range-spec appeared in the received Range header field"."""
    assert ranges("bytes=500-600,0-9") == ((500, 600), (0, 9))


def test_overlapping_and_adjacent_ranges_are_coalesced() -> None:
    """14.2 lets a server coalesce; 15.3.7.2 then excludes ranges "that were coalesced into
    other ranges" -- a merged range takes the place of its earliest member."""
    assert ranges("bytes=500-700,0-10,600-800,11-20") == ((500, 800), (0, 20))
    assert ranges("bytes=0-1,2-3") == ((0, 3),)
    assert ranges("bytes=0-,-10") == ((0, 999),)


@pytest.mark.parametrize("value", ["bytes=1000-", "bytes=1000-2000", "bytes=5000-6000,2000-"])
def test_unsatisfiable_is_416(value: str) -> None:
    """14.1.1: "If a valid bytes range-set includes at least one range-spec with a first-pos
    that is less than the current length of the representation, or at least one suffix-range
    with a non-zero suffix-length, then the range-set is satisfiable. Otherwise, the range-set
    is unsatisfiable." """
    assert plan_ranges(value, SIZE) == RangePlan(unsatisfiable=True)


def test_unsatisfiable_members_are_dropped() -> None:
    assert ranges("bytes=2000-3000,5-6") == ((5, 6),)


def test_zero_suffix_is_unsatisfiable() -> None:
    assert plan_ranges("bytes=-0", SIZE).unsatisfiable


def test_empty_body() -> None:
    """A non-zero suffix-range makes the set satisfiable (14.1.1) yet an empty body has no
    byte to send: the whole (empty) response; `bytes=0-` has first-pos >= length: 416."""
    assert plan_ranges("bytes=-5", 0) is WHOLE
    assert plan_ranges("bytes=0-", 0).unsatisfiable


@pytest.mark.parametrize(
    "value",
    [
        "items=0-5",  # unknown unit
        "bytes",
        "bytes=",
        "bytes= , ,",  # range-set = 1#range-spec: none given
        "bytes=-",
        "bytes=abc",
        "bytes=5",
        "bytes=1-2-3",
        "bytes=a-5",
        "bytes=5-1",  # last-pos < first-pos: "invalid"
        "bytes=²-",
        "bytes=0-1,5-2",
        "bytes=0x10-20",
    ],
)
def test_bad_syntax_or_unit_is_ignored(value: str) -> None:
    """14.2: "An origin server MUST ignore a Range header field that contains a range unit it
    does not understand. A proxy MAY discard a Range header field that contains a range unit
    it does not understand." 14.1.1: "A byte-range-spec is invalid if the last-pos value is
    present and less than the first-pos." -> answered whole (200)."""
    assert plan_ranges(value, SIZE) is WHOLE


def test_too_many_ranges_is_whole() -> None:
    """14.2: "A server that supports range requests MAY ignore or reject a Range header field
    that contains an invalid ranges-specifier ..., a ranges-specifier with more than two
    overlapping ranges, or a set of many small ranges that are not listed in ascending
    order" (denial of service)."""
    many = ",".join(f"{i}-{i}" for i in range(0, 2 * (MAX_RANGES + 1), 2))
    assert plan_ranges(f"bytes={many}", SIZE) is WHOLE
    ok = ",".join(f"{i}-{i}" for i in range(0, 2 * MAX_RANGES, 2))
    assert len(ranges(f"bytes={ok}")) == MAX_RANGES


@given(st.text(max_size=60), st.integers(min_value=0, max_value=5000))
def test_never_out_of_bounds_on_any_text(value: str, size: int) -> None:
    check_plan(plan_ranges(value, size), size)


@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(0, 3000)), st.one_of(st.none(), st.integers(0, 3000))
        ),
        min_size=1,
        max_size=8,
    ),
    st.integers(min_value=0, max_value=2000),
)
def test_never_out_of_bounds_on_range_sets(
    specs: list[tuple[int | None, int | None]], size: int
) -> None:
    value = "bytes=" + ",".join(
        f"{'' if a is None else a}-{'' if b is None else b}" for a, b in specs
    )
    check_plan(plan_ranges(value, size), size)


def check_plan(plan: RangePlan, size: int) -> None:
    assert [plan.whole, plan.unsatisfiable, bool(plan.ranges)].count(True) == 1
    covered: list[tuple[int, int]] = sorted(plan.ranges)
    for first, last in plan.ranges:
        assert 0 <= first <= last < size
    for (_, a_last), (b_first, _) in itertools.pairwise(covered):
        assert b_first > a_last + 1  # coalesced: neither overlapping nor adjacent


# -- If-Range ------------------------------------------------------------------------------

LM = "Sun, 06 Nov 1994 08:49:37 GMT"
DATE_LATER = "Sun, 06 Nov 1994 09:00:00 GMT"


def test_no_if_range_allows() -> None:
    assert if_range_allows(None, None, None)


def test_if_range_strong_etag() -> None:
    """13.1.5: "the condition is false if the entity-tag ... is not a strong match" (a strong
    comparison, 8.8.3.2: both must be strong and identical)."""
    assert if_range_allows('"v1"', '"v1"', None)
    assert not if_range_allows('"v1"', '"v2"', None)
    assert not if_range_allows('W/"v1"', 'W/"v1"', None)  # weak tags never match strongly
    assert not if_range_allows('"v1"', 'W/"v1"', None)
    assert not if_range_allows('"v1"', None, LM)


def test_if_range_date() -> None:
    """13.1.5: with an HTTP-date, the condition is true only if it is an exact match of the
    Last-Modified, and "the condition is false if the HTTP-date validator provided is not a
    strong validator in the sense defined by Section 8.8.2.2": the stored Date must be
    "at least one second after the Last-Modified value"."""
    assert if_range_allows(LM, None, LM)
    assert if_range_allows(LM, '"x"', LM, DATE_LATER)
    assert not if_range_allows(LM, None, LM, LM)  # Date == Last-Modified: weak
    assert not if_range_allows("Sun, 06 Nov 1994 08:49:38 GMT", None, LM)
    assert not if_range_allows(LM, None, None)
    assert not if_range_allows("garbage", '"x"', LM)


# -- multipart/byteranges ------------------------------------------------------------------


def test_multipart_body() -> None:
    """14.6: each part has its Content-Range (and the Content-Type of the whole), between
    boundary delimiters; the closing delimiter ends with "--"."""
    body = bytes(range(256)) * 4
    out, ctype = multipart_body(body, ((0, 9), (1000, 1023)), "image/jpeg")
    m = re.fullmatch(r"multipart/byteranges; boundary=([0-9a-f]+)", ctype)
    assert m
    boundary = m.group(1).encode()
    parts = out.split(b"\r\n--" + boundary)
    assert parts[0] == b"" and parts[-1] == b"--\r\n"
    first, second = parts[1:3]
    assert first == (
        b"\r\nContent-Type: image/jpeg\r\nContent-Range: bytes 0-9/1024\r\n\r\n" + body[0:10]
    )
    assert second.endswith(b"Content-Range: bytes 1000-1023/1024\r\n\r\n" + body[1000:1024])


def test_multipart_without_content_type() -> None:
    out, _ = multipart_body(b"abcdef", ((0, 0), (5, 5)), None)
    assert b"Content-Type" not in out
