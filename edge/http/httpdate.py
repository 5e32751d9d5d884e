"""HTTP dates (RFC 9110 section 5.6.7): parse the three formats strictly, format IMF-fixdate.

A value that is not exactly one of the three forms is not a date. RFC 9111 section 5.3 says
what that means for Expires ("already expired"); the other callers treat it as absent.
"""

from __future__ import annotations

import calendar
import email.utils
import functools
import re
import time
from typing import NamedTuple

# RFC 9110 section 5.6.7:
#   IMF-fixdate  = day-name "," SP date1 SP time-of-day SP GMT      ; Sun, 06 Nov 1994 08:49:37 GMT
#   rfc850-date  = day-name-l "," SP date2 SP time-of-day SP GMT    ; Sunday, 06-Nov-94 08:49:37 GMT
#   asctime-date = day-name SP date3 SP time-of-day SP year         ; Sun Nov  6 08:49:37 1994
#   date1 = day SP month SP year (2DIGIT, 4DIGIT); date2 = day "-" month "-" 2DIGIT;
#   date3 = month SP ( 2DIGIT / ( SP DIGIT )); time-of-day = 2DIGIT ":" 2DIGIT ":" 2DIGIT
# RFC 9111 section 4.2: "Although all date formats are specified to be case-sensitive, a
# cache recipient SHOULD match the field value case-insensitively", hence IGNORECASE; and
# "A cache recipient SHOULD consider a date with a zone abbreviation other than "GMT" to be
# invalid for calculating expiration", hence GMT only. re.ASCII: DIGIT is 0-9, nothing else.
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH = "(" + "|".join(_MONTHS) + ")"
_TIME = r"([0-9]{2}):([0-9]{2}):([0-9]{2})"
_FLAGS = re.ASCII | re.IGNORECASE
_IMF_FIXDATE = re.compile(
    rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{{2}}) {_MONTH} ([0-9]{{4}}) {_TIME} GMT", _FLAGS
)
_RFC850 = re.compile(
    r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
    rf"([0-9]{{2}})-{_MONTH}-([0-9]{{2}}) {_TIME} GMT",
    _FLAGS,
)
_ASCTIME = re.compile(
    rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) {_MONTH} ([0-9]{{2}}| [0-9]) {_TIME} ([0-9]{{4}})", _FLAGS
)


class _TwoDigitYear(NamedTuple):
    """An rfc850-date, whose century depends on the current year (see `parse_http_date`)."""

    yy: int
    month: int
    day: int
    hour: int
    minute: int
    second: int


def _epoch(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float | None:
    # "Sun, 31 Feb 1994 25:61:61 GMT" matches the syntax but is no date (timegm would roll it
    # over). time-of-day is "00:00:00 - 23:59:60 (leap second)".
    if not (year >= 1 and 1 <= day <= calendar.monthrange(year, month)[1]):
        return None
    if not (hour <= 23 and minute <= 59 and second <= 60):
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


@functools.lru_cache(maxsize=4096)
def _parse(value: str) -> float | _TwoDigitYear | None:
    """The syntax check, cached: the same Date, Last-Modified and Expires values come back on
    every request for an entry. The cache holds at most 4096 values of at most 64 chars."""
    m = _IMF_FIXDATE.fullmatch(value)
    if m:
        day, mon, year, hh, mm, ss = m.groups()
        return _epoch(
            int(year), _MONTHS.index(mon.lower()) + 1, int(day), int(hh), int(mm), int(ss)
        )
    m = _ASCTIME.fullmatch(value)
    if m:
        mon, day, hh, mm, ss, year = m.groups()
        return _epoch(
            int(year), _MONTHS.index(mon.lower()) + 1, int(day), int(hh), int(mm), int(ss)
        )
    m = _RFC850.fullmatch(value)
    if m:
        day, mon, yy, hh, mm, ss = m.groups()
        month = _MONTHS.index(mon.lower()) + 1
        # Check the day against a leap year (2000) here; the real year is checked later.
        if _epoch(2000, month, int(day), int(hh), int(mm), int(ss)) is None:
            return None
        return _TwoDigitYear(int(yy), month, int(day), int(hh), int(mm), int(ss))
    return None


def parse_http_date(value: str | None) -> float | None:
    """Epoch seconds for an HTTP-date, or None when the value is not exactly one.

    RFC 9110 section 5.6.7: recipients accept IMF-fixdate, the obsolete RFC 850 form and
    asctime(), and nothing else: `... UTC`, `... +0000`, a 2-digit year or `18-Aug-2050` in
    the IMF-fixdate form, a missing comma, doubled spaces, `02.01.18`, a 1-digit hour are not
    dates. Leading and trailing whitespace (OWS, RFC 9110 section 5.5) is not part of a field
    value. RFC 9111 sections 4.2 and 5.3: an invalid date (`Expires: 0`) is not a date;
    callers decide what that means.
    """
    if not value or len(value) > 64:
        return None
    got = _parse(value.strip(" \t"))
    if not isinstance(got, _TwoDigitYear):
        return got
    # RFC 9110 section 5.6.7: "Recipients of a timestamp value in rfc850-date format, which
    # uses a two-digit year, MUST interpret a timestamp that appears to be more than 50 years
    # in the future as representing the most recent year in the past that had the same last
    # two digits."
    this_year = time.gmtime().tm_year
    year = got.yy + 100 * (this_year // 100)
    if year > this_year + 50:
        year -= 100
    elif year + 100 <= this_year + 50:
        year += 100  # "10" read in 2099 is 2110, not 2010
    return _epoch(year, got.month, got.day, got.hour, got.minute, got.second)


def date_or(value: str | None, received: float) -> float:
    """A response's Date, or when it has none (or an invalid one) the time it was received:
    RFC 9110 section 6.6.1, "A recipient with a clock that receives a response message
    without a Date header field MUST record the time it was received". (A date of 0.0, the
    epoch, is a date: this never tests truthiness.)"""
    parsed = parse_http_date(value)
    return received if parsed is None else parsed


def format_http_date(when: float | None = None) -> str:
    """IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`."""
    return email.utils.formatdate(time.time() if when is None else when, usegmt=True)
