"""HTTP dates (RFC 9110 section 5.6.7): parse leniently, format as IMF-fixdate."""

from __future__ import annotations

import calendar
import email.utils
import re
import time

# rfc850-date = day-name-l "," SP date2 SP time-of-day SP GMT, date2 = day "-" month "-" 2DIGIT
_RFC850_YEAR = re.compile(r"^[A-Za-z]+\s*,\s*\d{1,2}-[A-Za-z]{3}-(\d{2})(?!\d)")


def parse_http_date(value: str | None) -> float | None:
    """Epoch seconds for an HTTP date, or None when it is not a valid date.

    RFC 9110 section 5.6.7: recipients accept IMF-fixdate, the obsolete RFC 850
    form and asctime(). RFC 9111 section 4.2: an invalid date (for instance
    `Expires: 0`) is not a date; callers decide what that means.
    """
    if not value:
        return None
    value = value.strip()
    if not value or len(value) > 64:
        return None
    if value.count(",") > 1:
        # Every HTTP-date form has at most one comma: "date, date" is a list, not a date
        # (RFC 9110 13.1.3: an If-Modified-Since "with more than one member" is ignored).
        return None
    try:
        parsed = email.utils.parsedate_tz(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    year, month, day, hour, minute, second = parsed[:6]
    two_digits = _RFC850_YEAR.match(value)
    if two_digits:
        # RFC 9110 section 5.6.7: "Recipients of a timestamp value in rfc850-date format, which
        # uses a two-digit year, MUST interpret a timestamp that appears to be more than 50
        # years in the future as representing the most recent year in the past that had the
        # same last two digits." (email.utils pivots at 69 instead.)
        this_year = time.gmtime().tm_year
        year = int(two_digits.group(1)) + 100 * (this_year // 100)
        if year > this_year + 50:
            year -= 100
    # "Sun, 31 Feb 1994 25:61:61 GMT" is not a date (timegm would silently roll it over).
    # time-of-day is "00:00:00 - 23:59:60 (leap second)".
    if not (1 <= year <= 9999 and 1 <= month <= 12):
        return None
    if not (1 <= day <= calendar.monthrange(year, month)[1]):
        return None
    if not (0 <= hour <= 23 and 0 <= minute <= 59 and 0 <= second <= 60):
        return None
    tz = parsed[9] or 0
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))) - tz


def format_http_date(when: float | None = None) -> str:
    """IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`."""
    return email.utils.formatdate(time.time() if when is None else when, usegmt=True)
