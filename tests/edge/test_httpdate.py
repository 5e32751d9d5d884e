"""HTTP dates (RFC 9110 section 5.6.7)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.http.httpdate import date_or, format_http_date, parse_http_date

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


def test_case_insensitive() -> None:
    """RFC 9111 4.2: "Although all date formats are specified to be case-sensitive, a cache
    recipient SHOULD match the field value case-insensitively." """
    assert parse_http_date("SUN, 06 NOV 1994 08:49:37 gmt") == SUNDAY
    assert parse_http_date("sunday, 06-nov-94 08:49:37 Gmt") == SUNDAY
    assert parse_http_date("sun nov  6 08:49:37 1994") == SUNDAY


@pytest.mark.parametrize(
    "value",
    [
        "Thu, 18 Aug 2050 02:01:18 UTC",
        "Thu, 18 Aug 2050 02:01:18 AEST",
        "Thu, 18 Aug 2050 02:01:18 +0000",
        "Thu, 18 Aug 2050 02:01:18",
        "Thu, 18 Aug 50 02:01:18 GMT",  # 2-digit year in the IMF-fixdate form
        "Thu 18 Aug 2050 02:01:18 GMT",  # no comma after the day name
        "Thu, 18  Aug  2050 02:01:18 GMT",  # two spaces between fields
        "Thu, 18 Aug 2050  02:01:18 GMT",
        "Thu, 18-Aug-2050 02:01:18 GMT",  # date2's dashes in the IMF-fixdate form
        "Thu, 18 Aug 2050 02.01.18 GMT",
        "Thu, 18 Aug 2050 2:01:18 GMT",  # 1-digit hour
        "Thu, 8 Aug 2050 02:01:18 GMT",  # 1-digit day
        "Thursday, 18 Aug 2050 02:01:18 GMT",  # day-name-l belongs to the RFC 850 form
        "Thu, 18-Aug-50 02:01:18 GMT",  # and day-name to the other two
        "Thursday, 18-Aug-2050 02:01:18 GMT",  # RFC 850 has a 2-digit year
        "Thursday, 18-August-50 02:01:18 GMT",
        "Thu Aug 18 02:01:18 2050 GMT",
        "Thu Aug 8 02:01:18 2050",  # asctime pads a 1-digit day with a space
        "Thu, 18 Aug 2050 02:01:18 GMT junk",
        "Thu, 18 Aug 2050 02:01:18.5 GMT",
        "Thu, 18 Aug 2050 02:01:18 GMT\r\nX: y",
        "Thu, \uff11\uff18 Aug 2050 02:01:18 GMT",  # fullwidth digits are no DIGIT
        "2050-08-18T02:01:18Z",
        "Xyz, 18 Aug 2050 02:01:18 GMT",
    ],
)
def test_only_the_three_formats_exactly(value: str) -> None:
    """5.6.7: HTTP-date = IMF-fixdate / obs-date; IMF-fixdate = day-name "," SP date1 SP
    time-of-day SP GMT, date1 = day SP month SP year, day = 2DIGIT, year = 4DIGIT,
    time-of-day = hour ":" minute ":" second (2DIGIT each), GMT = %s"GMT". RFC 9111 4.2: "A
    cache recipient SHOULD consider a date with a zone abbreviation other than "GMT" to be
    invalid for calculating expiration." Anything else is no date (and an Expires that is
    no date means "already expired", RFC 9111 5.3, see test_policy)."""
    assert parse_http_date(value) is None


def test_asctime_day_forms() -> None:
    """5.6.7: date3 = month SP ( 2DIGIT / ( SP DIGIT ))."""
    assert parse_http_date("Sun Nov  6 08:49:37 1994") == SUNDAY
    assert parse_http_date("Sun Nov 06 08:49:37 1994") == SUNDAY


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
    # 29 Feb exists only in leap years: checked against the year the rule picked.
    leap = next(y for y in range(this_year - 49, this_year + 50) if y % 4 == 0 and y % 100)
    assert parse_http_date(f"Monday, 29-Feb-{leap % 100:02d} 00:00:00 GMT") is not None
    assert parse_http_date(f"Monday, 29-Feb-{(leap + 1) % 100:02d} 00:00:00 GMT") is None


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


def test_date_or_the_time_received() -> None:
    """RFC 9110 6.6.1: "A recipient with a clock that receives a response message without a
    Date header field MUST record the time it was received"; an invalid Date is none."""
    assert date_or("Sun, 06 Nov 1994 08:49:37 GMT", 5.0) == SUNDAY
    assert date_or(None, 5.0) == 5.0
    assert date_or("Sun, 06 Nov 1994 08:49:37 UTC", 5.0) == 5.0
    assert date_or("Thu, 01 Jan 1970 00:00:00 GMT", 5.0) == 0.0  # the epoch is a date
