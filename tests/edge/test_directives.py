"""Cache-Control-like fields (RFC 9111 section 5.2, 1.2.2, 4.2.1): parsing edge cases."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.directives import DELTA_MAX, parse_directives


def test_names_are_case_insensitive_and_arguments_kept() -> None:
    """5.2: "Cache directives are identified by a token, to be compared case-insensitively,
    and have an optional argument"."""
    d = parse_directives(["Max-Age=60, PUBLIC, No-Transform"])
    assert d == {"max-age": "60", "public": None, "no-transform": None}
    assert d.seconds("max-age") == 60


def test_several_field_lines_are_one_list() -> None:
    """RFC 9110 5.3: several field lines of a list field are one comma-separated value."""
    d = parse_directives(["max-age=60", "s-maxage=30", "must-revalidate"])
    assert set(d) == {"max-age", "s-maxage", "must-revalidate"}


def test_quoted_string_argument() -> None:
    """5.2: directives take "either token or quoted-string syntax"; a quoted comma does not
    split, and a backslash quotes the next character (RFC 9110 5.6.4)."""
    d = parse_directives(['no-cache="Set-Cookie, X-A", private="x\\"y\\\\z", max-age="30"'])
    assert d["no-cache"] == "Set-Cookie, X-A"
    assert d.field_names("no-cache") == ("set-cookie", "x-a")
    assert d["private"] == 'x"y\\z'
    assert d.seconds("max-age") == 30  # quoted form accepted from lenient senders


def test_empty_members_and_junk_are_dropped() -> None:
    """RFC 9110 5.6.1: a recipient MUST accept and ignore empty list elements; malformed
    directive names are dropped, unknown ones kept (5.2.3: "Caches MUST ignore unrecognized
    cache directives" -- kept here, the caller ignores them)."""
    d = parse_directives([",, ,max-age=5,,=7, bad name=1, x-ext, ü=1"])
    assert d == {"max-age": "5", "x-ext": None}


def test_identical_duplicates_are_no_conflict() -> None:
    d = parse_directives(["max-age=60, max-age=60"])
    assert d.seconds("max-age") == 60 and not d.conflicts


def test_conflicting_duplicates_are_recorded() -> None:
    """4.2.1: "When there is more than one value present for a given directive (e.g., two
    Expires header field lines or multiple Cache-Control: max-age directives), either the
    first occurrence should be used or the response should be considered stale." The first is
    kept and the conflict recorded (policy makes the response stale)."""
    d = parse_directives(["max-age=60", "max-age=3600"])
    assert d["max-age"] == "60"
    assert d.conflicts == {"max-age"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0", 0),
        ("60", 60),
        ("0060", 60),
        ("2147483647", 2**31 - 1),
        ("2147483648", DELTA_MAX),
        ("99999999999", DELTA_MAX),
        ("0000000000005", 5),  # leading zeros are not magnitude
        ("9" * 1000, DELTA_MAX),
    ],
)
def test_delta_seconds(raw: str, expected: int) -> None:
    """1.2.2: "If a cache receives a delta-seconds value greater than the greatest integer it
    can represent, or if any of its subsequent calculations overflows, the cache MUST consider
    the value to be 2147483648 (2^31) or the greatest positive integer it can conveniently
    represent." """
    assert parse_directives([f"max-age={raw}"]).seconds("max-age") == expected


@pytest.mark.parametrize("raw", ["-1", "1.5", "abc", "", "6 0", "²", "١٢", "+5", "0x10"])
def test_invalid_delta_seconds_is_present_but_unusable(raw: str) -> None:
    """1.2.2: delta-seconds = 1*DIGIT (ASCII digits). 4.2.1: "Caches are encouraged to
    consider responses that have invalid freshness information (e.g., a max-age directive
    with non-integer content) to be stale." -> -1, never an exception."""
    assert parse_directives([f"max-age={raw}"]).seconds("max-age") == -1


def test_absent_and_valueless() -> None:
    d = parse_directives(["max-age"])
    assert d.seconds("s-maxage") is None
    assert d.seconds("max-age") == -1  # present without its required argument
    assert d.field_names("no-cache") == ()


def test_huge_field_is_truncated_not_fatal() -> None:
    d = parse_directives(["max-age=5, " + "x" * 100_000 + ", public"])
    assert d.seconds("max-age") == 5
    assert "public" not in d  # past the 8 KiB we read


@given(st.lists(st.text(max_size=200), max_size=4))
def test_parse_never_raises(values: list[str]) -> None:
    d = parse_directives(values)
    for name in list(d):
        s = d.seconds(name)
        assert s is None or -1 <= s <= DELTA_MAX
        d.field_names(name)


@given(st.integers(min_value=0, max_value=10**40))
def test_seconds_is_clamped(n: int) -> None:
    assert parse_directives([f"max-age={n}"]).seconds("max-age") == min(n, DELTA_MAX)
