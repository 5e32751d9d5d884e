"""Cache directives (RFC 9111 section 5.2) parsed from Cache-Control-like fields.

The same parser reads `Cache-Control`, `CDN-Cache-Control` (RFC 9213) and
`Surrogate-Control`. It is lenient, as RFC 9111 section 5.2 asks of caches:
unknown directives are kept, malformed ones are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable

# RFC 9111 section 1.2.2: a delta-seconds too large to represent is taken as 2^31.
DELTA_MAX = 2**31
# RFC 9110 section 5.6.2: token = 1*tchar.
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")


class Directives(dict[str, str | None]):
    """Directive name (lower case) to its argument (None when it has none).

    When a directive appears twice, `conflicts` names it: RFC 9111 section 4.2.1
    lets a cache consider such a response stale, which is what we do for the
    freshness directives.
    """

    __slots__ = ("conflicts",)

    def __init__(self) -> None:
        super().__init__()
        self.conflicts: set[str] = set()

    def seconds(self, name: str) -> int | None:
        """A delta-seconds argument (RFC 9111 section 1.2.2), or None if absent or invalid.

        An invalid value (negative, not a number) yields -1 so that callers see
        "present but unusable", which RFC 9111 section 4.2.1 treats as stale.
        """
        if name not in self:
            return None
        raw = self[name]
        # delta-seconds = 1*DIGIT, and DIGIT is ASCII: str.isdigit() alone would accept "²",
        # which int() then rejects.
        if raw is None or not raw.isascii() or not raw.isdigit():
            return -1
        # Compare by length first so a thousand-digit value never becomes a huge int.
        raw = raw.lstrip("0") or "0"
        if len(raw) > 10:
            return DELTA_MAX
        return min(int(raw), DELTA_MAX)

    def field_names(self, name: str) -> tuple[str, ...]:
        """Field names of a qualified `no-cache="a, b"` or `private="a"` directive."""
        raw = self.get(name)
        if not raw:
            return ()
        return tuple(p.strip().lower() for p in raw.split(",") if p.strip())


def _split_top_level(value: str) -> Iterable[str]:
    """Split on commas that are not inside a quoted string."""
    start = 0
    quoted = False
    escaped = False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            yield value[start:i]
            start = i + 1
    yield value[start:]


def _unquote(inner: str) -> str:
    """The content of a quoted-string: a backslash quotes the next character (RFC 9110 5.6.4)."""
    out: list[str] = []
    escaped = False
    for ch in inner:
        if escaped or ch != "\\":
            out.append(ch)
            escaped = False
        else:
            escaped = True
    return "".join(out)


def parse_directives(values: Iterable[str]) -> Directives:
    """Parse every line of a Cache-Control-like field into one `Directives`."""
    out = Directives()
    for value in values:
        if len(value) > 8192:
            value = value[:8192]
        for part in _split_top_level(value):
            part = part.strip()
            if not part:
                continue
            name, eq, arg = part.partition("=")
            name = name.strip().lower()
            if not name or not all(c in _TCHAR for c in name):
                continue
            argument: str | None = None
            if eq:
                arg = arg.strip()
                if len(arg) >= 2 and arg[0] == '"' and arg[-1] == '"':
                    arg = _unquote(arg[1:-1])
                argument = arg
            if name in out and out[name] != argument:
                out.conflicts.add(name)
                continue  # keep the first occurrence
            out[name] = argument
    return out
