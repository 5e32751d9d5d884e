"""HTTP dates (RFC 9110 section 5.6.7)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.httpdate import format_http_date, parse_http_date

SUNDAY = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850 format
        "Sun Nov  6 08:49:37 1994",  # ANSI C's asctime() format
        "  Sun, 06 Nov 1994 08:49:37 GMT  ",
    ],
)
def test_three_formats(value: str) -> None:
    """5.6.7: "A recipient that parses a timestamp value in an HTTP field MUST accept all
    three HTTP-date formats." """
    assert parse_http_date(value) == SUNDAY


def test_format_is_imf_fixdate_and_round_trips() -> None:
    """5.6.7: "a sender MUST generate ... IMF-fixdate"."""
    assert format_http_date(SUNDAY) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert parse_http_date(format_http_date(SUNDAY)) == SUNDAY


def test_rfc850_two_digit_year_50_year_rule() -> None:
    """5.6.7: "Recipients of a timestamp value in rfc850-date format, which uses a two-digit
    year, MUST interpret a timestamp that appears to be more than 50 years in the future as
    representing the most recent year in the past that had the same last two digits." """
    this_year = time.gmtime().tm_year
    soon = (this_year + 10) % 100  # 10 years ahead: in the future, not more than 50
    far = (this_year + 60) % 100  # 60 years ahead: taken as 40 years ago
    got_soon = parse_http_date(f"Monday, 01-Jan-{soon:02d} 00:00:00 GMT")
    got_far = parse_http_date(f"Monday, 01-Jan-{far:02d} 00:00:00 GMT")
    assert got_soon is not None and got_far is not None
    assert time.gmtime(got_soon).tm_year == this_year + 10
    assert time.gmtime(got_far).tm_year == this_year - 40


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "0",  # Expires: 0
        "-1",
        "now",
        "Sun, 06 Nov 1994",
        "Sun, 31 Feb 1994 08:49:37 GMT",  # no such day
        "Sun, 06 Nov 1994 25:00:00 GMT",
        "Sun, 06 Nov 1994 08:61:00 GMT",
        "Sun, 06 Xyz 1994 08:49:37 GMT",
        "x" * 100,
        "Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",  # a list
    ],
)
def test_invalid_dates_are_none(value: str | None) -> None:
    """RFC 9111 5.3: "A cache recipient MUST interpret invalid date formats, especially the
    value "0", as representing a time in the past" -- the parser says "not a date" and the
    caller decides (Expires: 0 is stale, see test_policy)."""
    assert parse_http_date(value) is None


def test_leap_second_is_a_time_of_day() -> None:
    """5.6.7: time-of-day "00:00:00 - 23:59:60 (leap second)"."""
    assert parse_http_date("Sun, 06 Nov 1994 23:59:60 GMT") is not None


@given(st.text(max_size=80))
def test_never_raises(value: str) -> None:
    result = parse_http_date(value)
    assert result is None or isinstance(result, float)


@given(st.integers(min_value=0, max_value=253402300799))
def test_round_trip(when: int) -> None:
    assert parse_http_date(format_http_date(float(when))) == float(when)
