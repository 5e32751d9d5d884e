"""Lists of weighted members (RFC 9110 section 12.4.2): `Accept`, `Accept-Encoding`.

weight = OWS ";" OWS "q=" qvalue
qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
"""

from __future__ import annotations

import math
from collections.abc import Iterator


def weighted(value: str) -> Iterator[tuple[str, float]]:
    """Each member of a list such as `br;q=0.5, gzip` as (its name lower-cased, its weight):
    no `q` is 1; a `q` that is no number (or NaN) is 0, "not acceptable"; empty members are
    skipped (RFC 9110 section 5.6.1). The weight is as written: out of 0..1 is the caller's
    to judge."""
    for part in value.split(","):
        name, _, params = part.strip().partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
                if math.isnan(q):
                    q = 0.0
        yield name, q
