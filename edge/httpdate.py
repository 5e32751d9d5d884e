"""HTTP dates (RFC 9110 section 5.6.7): parse leniently, format as IMF-fixdate."""

from __future__ import annotations

import calendar
import email.utils
import time

_MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}


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
    try:
        parsed = email.utils.parsedate_tz(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    year = parsed[0]
    # RFC 9110 section 5.6.7: a two-digit year more than 50 years in the future is in the past.
    if year < 100:
        this_year = time.gmtime().tm_year
        year += 1900 + 100 * ((this_year - 1900) // 100)
        if year > this_year + 50:
            year -= 100
    try:
        tz = parsed[9] or 0
        return float(calendar.timegm((year, *parsed[1:6], 0, 0, 0))) - tz
    except (OverflowError, ValueError):
        return None


def format_http_date(when: float | None = None) -> str:
    """IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`."""
    return email.utils.formatdate(time.time() if when is None else when, usegmt=True)
