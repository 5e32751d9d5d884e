"""Validators (RFC 9110 section 8.8) of the variants the edge makes of a stored object."""

from __future__ import annotations


def variant_etag(etag: str, suffix: str) -> str:
    """The ETag of a variant made from the representation `etag` names (a coding, a converted
    image): `"x"` -> `"x-<suffix>"`, `W/"x"` -> `W/"x-<suffix>"`. RFC 9110 section 8.8.3: a
    strong validator never names two byte sequences, so each variant gets a tag of its own,
    and If-None-Match against a variant is answered right; a weak one stays weak."""
    etag = etag.strip()
    weak = etag.startswith("W/")
    opaque = (etag[2:] if weak else etag).strip('"')
    tagged = f'"{opaque}-{suffix}"'
    return f"W/{tagged}" if weak else tagged
