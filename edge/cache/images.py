"""Images at the edge, the pure rules: which format and width a request gets, the class a
converted variant is stored under, and the fields of that variant. No I/O (the conversion
and its pool are `edge.engine.images`; the pixels `edge.engine.convert`).

Format, from `Accept` (RFC 9110 section 12.5.1): AVIF, then WebP, each only when the client
names it (`image/avif`, `image/webp`) with a weight above 0 and at least the weight the
original's own type gets (by name, `image/*` or `*/*`); ties go to the edge's order. A
wildcard alone (`*/*`, `image/*`) or no Accept at all, as wget and curl send, gets the
original format: a client that never said it decodes AVIF never gets AVIF.

Width: an explicit `?w=` (a positive integer), else the Client Hints the browser sends once
the page asked for them with `Accept-CH` (RFC 8942): `Sec-CH-Width` (the image's displayed
width in device pixels), else `Sec-CH-Viewport-Width` x `Sec-CH-DPR` (the legacy `Width`,
`Viewport-Width` and `DPR` too). The width wanted is rounded up to the next configured
width (a bounded number of variants whatever clients send); one wider than every configured
width, or at least the original's, means the original's width: never upscaled.

A variant is stored as one more `Entry` of the object's key whose `vary` ends with the
pseudo-field `~image` = its class (`avif-1280`, `webp`, `jpeg-640`): `keys.select_variant`
never picks one by itself (no request carries that field), so only this negotiation hands a
variant out. The original and every variant say `Vary: Accept` and, where widths come from
hints, the hint fields (RFC 9110 section 12.5.5: the fields the selection used; RFC 8942
section 3.2: "a server that varies on a hint lists it in Vary").

`?w=` and the cache key: the parameter is taken out of the key and out of what the origin
is asked (`strip_width`), so every width is a variant of the one object the origin sends
once; a purge of the URL, which names the key, removes every variant.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from multidict import MultiMapping

from edge.http.validators import variant_etag
from edge.http.weights import weighted

IMAGE_FIELD = "~image"  # the pseudo request field naming a converted variant
WIDTH_PARAM = "w"
MAX_WIDTH_PARAM = 16384
# The raster types the edge converts from, and the name of their format.
SOURCE_TYPES = {
    "image/jpeg": "jpeg",
    "image/pjpeg": "jpeg",
    "image/png": "png",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/avif": "avif",
}
TYPES = {"avif": "image/avif", "webp": "image/webp", "jpeg": "image/jpeg", "png": "image/png"}
RESIZABLE_IN_PLACE = ("jpeg", "png", "webp", "avif")  # an original resized in its own format
HINTS = ("Sec-CH-Width", "Sec-CH-Viewport-Width", "Sec-CH-DPR")
LEGACY_HINTS = ("Width", "Viewport-Width", "DPR")
ACCEPT_CH = ", ".join(HINTS)


class BadWidth(ValueError):
    """A `?w=` that is not a width: the client gets a 400 with this message."""


# -- format (Accept) ------------------------------------------------------------------------


def media_weights(accept: str | None) -> dict[str, float]:
    """Each media range of Accept with its weight (RFC 9110 section 12.5.1; q out of range
    or unreadable counts as 0: "not acceptable")."""
    out: dict[str, float] = {}
    if not accept:
        return out
    for name, q in weighted(accept):
        if not 0.0 <= q <= 1.0:
            q = 0.0
        out[name] = max(q, out.get(name, 0.0))
    return out


def choose_format(accept: str | None, offered: Sequence[str], original: str) -> str | None:
    """The format to convert to (one of `offered`, in the edge's order), or None for the
    original's own format."""
    weights = media_weights(accept)
    if not weights:
        return None
    own = TYPES.get(original, f"image/{original}")
    original_q = weights.get(own, weights.get("image/*", weights.get("*/*", 0.0)))
    best: str | None = None
    best_q = 0.0
    for fmt in offered:
        if fmt == original:
            continue
        q = weights.get(TYPES[fmt], 0.0)  # named only: a wildcard is no promise to decode it
        if q > best_q:
            best, best_q = fmt, q
    if best is None or best_q < original_q:
        return None
    return best


# -- width (?w=, Client Hints) ----------------------------------------------------------------


def width_param(query: str) -> int | None:
    """The `w` of a query string (the last one, if several); None when absent."""
    value: str | None = None
    for piece in query.split("&"):
        name, eq, v = piece.partition("=")
        if name == WIDTH_PARAM and eq:
            value = v
    if value is None:
        return None
    if not value.isdigit() or not 0 < int(value) <= MAX_WIDTH_PARAM:
        raise BadWidth(f"w must be a width in pixels from 1 to {MAX_WIDTH_PARAM}, got {value!r}")
    return int(value)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        n = float(value.strip().strip('"'))
    except ValueError:
        return None
    return n if math.isfinite(n) and n > 0 else None


def hinted_width(headers: MultiMapping[str]) -> int | None:
    """The width the Client Hints ask for, in device pixels; None without usable hints."""
    width = _number(headers.get("Sec-CH-Width") or headers.get("Width"))
    if width is not None:
        return min(MAX_WIDTH_PARAM, math.ceil(width))
    viewport = _number(headers.get("Sec-CH-Viewport-Width") or headers.get("Viewport-Width"))
    if viewport is None:
        return None
    dpr = _number(headers.get("Sec-CH-DPR") or headers.get("DPR")) or 1.0
    return min(MAX_WIDTH_PARAM, math.ceil(viewport * min(dpr, 8.0)))


def bucket(wanted: int | None, widths: Sequence[int], original_width: int) -> int | None:
    """The configured width `wanted` rounds up to; None: the original's width (nothing
    wanted, wider than every configured width, or not narrower than the original)."""
    if wanted is None:
        return None
    for w in widths:  # sorted ascending
        if w >= wanted:
            return w if w < original_width else None
    return None


# -- the class of a variant -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Choice:
    """What a request gets: `fmt` and `width` (None: the original's), and its class."""

    fmt: str
    width: int | None
    converted: bool

    @property
    def name(self) -> str:
        """The variant's class: `avif-1280`, `webp`, `jpeg-640`; `original` when nothing is
        converted."""
        if not self.converted:
            return "original"
        return self.fmt if self.width is None else f"{self.fmt}-{self.width}"


def choose(
    accept: str | None,
    wanted_width: int | None,
    offered: Sequence[str],
    widths: Sequence[int],
    original: str,
    original_width: int,
) -> Choice:
    """The variant a request gets, from its Accept and the width it wants."""
    fmt = choose_format(accept, offered, original)
    width = bucket(wanted_width, widths, original_width)
    if fmt is None:
        if width is None or original not in RESIZABLE_IN_PLACE:
            return Choice(original, None, False)
        return Choice(original, width, True)
    return Choice(fmt, width, True)


# -- fields ----------------------------------------------------------------------------------


def vary_names(hints: bool) -> tuple[str, ...]:
    """The request fields an image's answer depends on."""
    return ("Accept", *HINTS) if hints else ("Accept",)


def with_vary(fields: Iterable[tuple[str, str]], names: Sequence[str]) -> list[tuple[str, str]]:
    """The fields with `names` added to Vary, each once (RFC 9110 section 5.3: field lines
    combine, so one more Vary line is the same as a longer list)."""
    out = list(fields)
    present = {n.strip().lower() for k, v in out if k.lower() == "vary" for n in v.split(",")}
    if "*" in present:
        return out
    missing = [n for n in names if n.lower() not in present]
    return [*out, ("Vary", ", ".join(missing))] if missing else out


def varies_on_accept(fields: Iterable[tuple[str, str]]) -> bool:
    """The origin negotiates by Accept itself (or varies on everything): left alone."""
    names = {n.strip().lower() for k, v in fields if k.lower() == "vary" for n in v.split(",")}
    return "accept" in names or "*" in names


def variant_fields(
    fields: Iterable[tuple[str, str]], choice: Choice, names: Sequence[str]
) -> list[tuple[str, str]]:
    """The original's fields as they are for a converted variant: its type, its ETag, Vary;
    no Content-Length (the body's own counts)."""
    out: list[tuple[str, str]] = []
    for k, v in with_vary(fields, names):
        lname = k.lower()
        if lname == "content-length":
            continue
        if lname == "content-type":
            v = TYPES[choice.fmt]
        elif lname == "etag":
            v = variant_etag(v, choice.name)
        out.append((k, v))
    return out


def source_format(fields: Iterable[tuple[str, str]]) -> str | None:
    """The format of a convertible answer (`SOURCE_TYPES`), else None: not a raster image,
    encoded (Content-Encoding), or `no-transform` (RFC 9111 section 5.2.2.6)."""
    ctype = ""
    for k, v in fields:
        lname = k.lower()
        if lname == "content-type":
            ctype = v.split(";")[0].strip().lower()
        elif (lname == "content-encoding" and v.strip().lower() not in ("", "identity")) or (
            lname == "cache-control" and "no-transform" in v.lower()
        ):
            return None
    return SOURCE_TYPES.get(ctype)


def is_variant(vary: Sequence[tuple[str, str]]) -> bool:
    return bool(vary) and vary[-1][0] == IMAGE_FIELD


def strip_width(target: str) -> str:
    """A path and normalized query without its `w` parameters."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    kept = [p for p in query.split("&") if p.partition("=")[0] != WIDTH_PARAM]
    return f"{path}?{'&'.join(kept)}" if kept else path
