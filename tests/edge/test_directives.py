"""Cache-Control-like fields (RFC 9111 section 5.2, 1.2.2, 4.2.1): parsing edge cases."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.http.directives import (
    DELTA_MAX,
    SFError,
    Token,
    parse_directives,
    parse_sf_dictionary,
    parse_targeted,
)


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


# == Structured Field dictionaries (RFC 8941) for CDN-Cache-Control (RFC 9213) ================


def sf(*lines: str) -> dict[str, object]:
    """Members without their parameters."""
    return {k: v for k, (v, _) in parse_sf_dictionary(lines).items()}


def test_sf_dictionary_items() -> None:
    """RFC 8941 3.2: "Dictionaries are ordered maps of name-value pairs"; 3.2: "When the
    member value is Boolean true, the value MUST be omitted"; 3.3: Integer, Decimal, String,
    Token, Byte Sequence, Boolean."""
    got = sf('max-age=60, no-store, private="set-cookie", x=tok/en:1, d=1.25, b=:aGk=:, f=?0')
    assert got == {
        "max-age": 60,
        "no-store": True,
        "private": "set-cookie",
        "x": "tok/en:1",
        "d": 1.25,
        "b": b"hi",
        "f": False,
    }
    assert type(got["x"]) is Token and type(got["private"]) is str


def test_sf_inner_list_and_parameters() -> None:
    """RFC 8941 3.1.1 Inner Lists, 3.1.2 Parameters (which RFC 9213 2.1 says to ignore)."""
    members = parse_sf_dictionary(['a=(1 "x" tok);p, max-age=5;foo=bar;baz'])
    assert members["a"] == ([(1, {}), ("x", {}), (Token("tok"), {})], {"p": True})
    assert members["max-age"] == (5, {"foo": Token("bar"), "baz": True})


def test_sf_several_lines_and_last_key_wins() -> None:
    """RFC 8941 4.2: lines are combined "separated by a comma and single SP"; 4.2.2: "If
    dictionary already contains a key this_key (comparing character for character),
    overwrite its value"."""
    assert sf("max-age=5", "max-age=60, public") == {"max-age": 60, "public": True}


@pytest.mark.parametrize(
    "value",
    [
        "max-age=10000, &&&&&",  # no key starts with "&"
        "MaX-aGe=3600",  # 3.1.2: keys are lower case: key = ( lcalpha / "*" ) ...
        "max-age =100",
        "max-age= 100",
        "max-age=100,",  # trailing comma
        "max-age=100,,public",
        "max-age=100 public",
        "max-age=1.",
        "max-age=1.2345",
        "max-age=1234567890123456",  # 16 digits: "more than 15 characters"
        "max-age=-",
        'private="unterminated',
        'private="bad \\escape"',
        'private="tab\there"',
        "b=:not base64!:",
        "b=:aGk=",
        "f=?2",
        "a=(1 2",
        "a=(1,2)",
        "max-age=60, caf\u00e9",  # 4.2: not ASCII
        "=5",
    ],
)
def test_sf_syntax_errors(value: str) -> None:
    """RFC 8941 4.2: "If parsing fails ..., the entire field value MUST be ignored"."""
    with pytest.raises(SFError):
        parse_sf_dictionary([value])
    assert parse_targeted([value]) is None


def test_sf_numbers() -> None:
    """RFC 8941 3.3.1: integers have "at most 15 decimal digits"; 3.3.2: decimals at most 12
    integer and 3 fractional digits."""
    assert sf("a=999999999999999, b=-7, c=123456789012.123") == {
        "a": 999_999_999_999_999,
        "b": -7,
        "c": 123456789012.123,
    }
    with pytest.raises(SFError):
        parse_sf_dictionary(["c=1234567890123.1"])


@pytest.mark.parametrize(
    "value",
    [
        'max-age="10000"',  # a String where the Integer is needed
        "max-age=10000.0",  # a Decimal
        "max-age=-1",
        "max-age=?1",
        "s-maxage=tok",
        "stale-if-error=(1)",
        "no-store=5",
        "no-store=?0",
        "public=x",
        'must-understand="yes"',
        "no-cache=5",
        "private=:aGk=:",
    ],
)
def test_targeted_value_of_the_wrong_type_voids_the_field(value: str) -> None:
    """RFC 9213 2.1: "the max-age directive ... has an integer value; no-store ... always has
    a Boolean true value, and no-cache ... has a value that can be either Boolean true or a
    string" and "Implementations ... SHOULD NOT consume values that violate these inferred
    constraints"; with "If ... a parsing error is encountered, that field MUST be ignored"."""
    assert parse_targeted([value]) is None


def test_targeted_directives() -> None:
    """RFC 9213 2.1: parameters "are to be ignored"; unknown directives are kept."""
    d = parse_targeted(['max-age=60;x=1, no-cache="set-cookie, x-a", foo=(1 2), s-maxage=0'])
    assert d is not None
    assert d == {"max-age": "60", "no-cache": "set-cookie, x-a", "foo": "(1 2)", "s-maxage": "0"}
    assert d.seconds("max-age") == 60 and d.field_names("no-cache") == ("set-cookie", "x-a")
    big = parse_targeted(["max-age=99999999999"])
    assert big is not None and big.seconds("max-age") == DELTA_MAX  # 1.2.2 of RFC 9111
    assert parse_targeted([]) is None
    assert parse_targeted(["", " "]) is None  # empty: ignored


@given(st.text(max_size=60) | st.text(alphabet='ax-=,; ()"?:*.019\\/', max_size=40))
def test_sf_never_raises_anything_else(value: str) -> None:
    with contextlib.suppress(SFError):
        parse_sf_dictionary([value])
    d = parse_targeted([value])
    assert d is None or isinstance(d, dict)
