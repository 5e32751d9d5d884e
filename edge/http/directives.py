"""Cache directives (RFC 9111 section 5.2) parsed from Cache-Control-like fields.

`parse_directives` reads `Cache-Control` and `Surrogate-Control`. It is lenient, as RFC 9111
section 5.2 asks of caches: unknown directives are kept, malformed ones are dropped.

`parse_targeted` reads `CDN-Cache-Control`, which RFC 9213 defines as a Structured Field
Dictionary (RFC 8941): strictly, and all or nothing -- a field that does not parse, or that
gives a known directive a value of the wrong type, is ignored whole.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence

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


# == Structured Field dictionaries (RFC 8941), for CDN-Cache-Control (RFC 9213) ==============


class Token(str):
    """An sf-token (RFC 8941 section 3.3.4), told apart from an sf-string."""

    __slots__ = ()


BareItem = int | float | str | bytes | bool
Params = dict[str, BareItem]
Member = tuple[BareItem | list[tuple[BareItem, Params]], Params]

_LCALPHA = frozenset("abcdefghijklmnopqrstuvwxyz")
_DIGITS = frozenset("0123456789")
_ALPHA = _LCALPHA | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_KEY_CHARS = _LCALPHA | _DIGITS | frozenset("_-.*")
_TOKEN_CHARS = _TCHAR | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ:/")
_BASE64 = _ALPHA | _DIGITS | frozenset("+/=")


class SFError(ValueError):
    """The field value is not a valid Structured Field: the whole field is to be ignored."""


class _SFParser:
    """RFC 8941 section 4.2's parsing algorithms, for the Dictionary type (4.2.2)."""

    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _skip(self, chars: str) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1

    def dictionary(self) -> dict[str, Member]:
        """4.2.2 Parsing a Dictionary."""
        out: dict[str, Member] = {}
        while self.pos < len(self.text):
            key = self._key()
            if self._peek() == "=":
                self.pos += 1
                member = self._item_or_inner_list()
            else:
                member = (True, self._parameters())
            out[key] = member  # "overwrite its value": the last one wins
            self._skip(" \t")  # OWS
            if self.pos >= len(self.text):
                return out
            if self.text[self.pos] != ",":
                raise SFError(f"expected ',' at {self.pos}")
            self.pos += 1
            self._skip(" \t")
            if self.pos >= len(self.text):
                raise SFError("trailing comma")
        return out

    def _item_or_inner_list(self) -> Member:
        if self._peek() == "(":
            return self._inner_list()
        return self._bare_item(), self._parameters()

    def _inner_list(self) -> Member:
        """4.2.1.2 Parsing an Inner List."""
        self.pos += 1
        items: list[tuple[BareItem, Params]] = []
        while self.pos < len(self.text):
            self._skip(" ")
            if self._peek() == ")":
                self.pos += 1
                return items, self._parameters()
            items.append((self._bare_item(), self._parameters()))
            if self._peek() not in (" ", ")"):
                raise SFError(f"bad inner list at {self.pos}")
        raise SFError("unterminated inner list")

    def _parameters(self) -> Params:
        """4.2.3.2 Parsing Parameters."""
        params: Params = {}
        while self._peek() == ";":
            self.pos += 1
            self._skip(" ")
            key = self._key()
            value: BareItem = True
            if self._peek() == "=":
                self.pos += 1
                value = self._bare_item()
            params[key] = value
        return params

    def _key(self) -> str:
        """4.2.3.3 Parsing a Key: ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )."""
        start = self.pos
        c = self._peek()
        if c not in _LCALPHA and c != "*":
            raise SFError(f"bad key at {self.pos}")
        self.pos += 1
        while self.pos < len(self.text) and self.text[self.pos] in _KEY_CHARS:
            self.pos += 1
        return self.text[start : self.pos]

    def _bare_item(self) -> BareItem:
        """4.2.3.1 Parsing a Bare Item."""
        c = self._peek()
        if c == "-" or c in _DIGITS:
            return self._number()
        if c == '"':
            return self._string()
        if c == "*" or c in _ALPHA:
            return self._token()
        if c == ":":
            return self._byte_sequence()
        if c == "?":
            return self._boolean()
        raise SFError(f"bad item at {self.pos}")

    def _number(self) -> int | float:
        """4.2.4 Parsing an Integer or Decimal."""
        start = self.pos
        if self._peek() == "-":
            self.pos += 1
        if self._peek() not in _DIGITS:
            raise SFError(f"bad number at {start}")
        digits_start = self.pos
        dot = -1
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c in _DIGITS:
                self.pos += 1
            elif c == "." and dot < 0:
                if self.pos - digits_start > 12:
                    raise SFError("decimal too long")
                dot = self.pos
                self.pos += 1
            else:
                break
            if self.pos - digits_start > (16 if dot >= 0 else 15):
                raise SFError("number too long")
        text = self.text[start : self.pos]
        if dot < 0:
            return int(text)
        if dot == self.pos - 1 or self.pos - dot - 1 > 3:
            raise SFError("bad decimal")
        return float(text)

    def _string(self) -> str:
        """4.2.5 Parsing a String: printable ASCII, with \\" and \\\\ escapes only."""
        self.pos += 1
        out: list[str] = []
        text = self.text
        while self.pos < len(text):
            c = text[self.pos]
            self.pos += 1
            if c == "\\":
                if self.pos >= len(text) or text[self.pos] not in '"\\':
                    raise SFError("bad escape")
                out.append(text[self.pos])
                self.pos += 1
            elif c == '"':
                return "".join(out)
            elif not " " <= c <= "~":
                raise SFError("bad string character")
            else:
                out.append(c)
        raise SFError("unterminated string")

    def _token(self) -> Token:
        """4.2.6 Parsing a Token."""
        start = self.pos
        self.pos += 1
        while self.pos < len(self.text) and self.text[self.pos] in _TOKEN_CHARS:
            self.pos += 1
        return Token(self.text[start : self.pos])

    def _byte_sequence(self) -> bytes:
        """4.2.7 Parsing a Byte Sequence."""
        end = self.text.find(":", self.pos + 1)
        if end < 0:
            raise SFError("unterminated byte sequence")
        content = self.text[self.pos + 1 : end]
        if any(c not in _BASE64 for c in content):
            raise SFError("bad byte sequence")
        self.pos = end + 1
        try:
            # 4.2.7: parsers "MAY" fail on missing padding; this one adds it.
            return base64.b64decode(content + "=" * (-len(content) % 4))
        except (binascii.Error, ValueError) as exc:
            raise SFError("bad byte sequence") from exc

    def _boolean(self) -> bool:
        """4.2.8 Parsing a Boolean."""
        self.pos += 1
        c = self._peek()
        if c not in ("0", "1"):
            raise SFError(f"bad boolean at {self.pos}")
        self.pos += 1
        return c == "1"


def parse_sf_dictionary(lines: Iterable[str]) -> dict[str, Member]:
    """A Structured Field Dictionary (RFC 8941 section 4.2), or SFError.

    4.2: several field lines are combined "separated by a comma and single SP"; the input
    must be ASCII; leading and trailing SP are discarded, anything else left over fails.
    """
    text = ", ".join(lines)
    if not text.isascii():
        raise SFError("not ASCII")
    parser = _SFParser(text.strip(" "))
    return parser.dictionary()


# RFC 9213 section 2.1: directive values in a targeted field take the type their definition
# implies: "a Boolean ... when the member has no separate value, a Token ... for alphanumeric
# values, a String ... for quote-delimited values, or an Integer ... for purely numeric
# values. For example, the max-age directive ... has an integer value; no-store ... always
# has a Boolean true value, and no-cache ... has a value that can be either Boolean true or a
# string containing a comma-delimited list of field names."
_INTEGER_DIRECTIVES = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})
_TRUE_DIRECTIVES = frozenset(
    {"no-store", "must-revalidate", "proxy-revalidate", "must-understand", "public", "immutable"}
    | {"no-transform"}
)
_TRUE_OR_STRING_DIRECTIVES = frozenset({"no-cache", "private"})


def parse_targeted(lines: Sequence[str]) -> Directives | None:
    """The directives of a targeted cache-control field such as CDN-Cache-Control (RFC 9213
    section 2.1), or None when the field is to be ignored.

    2.1: "If a targeted field in a given response is empty, or a parsing error is
    encountered, that field MUST be ignored by the cache (i.e., it behaves as if the field
    were not present, likely falling back to other cache-control mechanisms present)."
    "Implementations ... SHOULD NOT consume values that violate these inferred constraints":
    a known directive with a value of the wrong type (`max-age="10000"`, `max-age=1.5`,
    `max-age=-1`, `no-store=5`) makes the whole field unusable here, like a syntax error.
    "Parameters received on cache directives are to be ignored". A key that appears twice
    takes its last value (RFC 8941 4.2.2).
    """
    if not lines:
        return None
    try:
        members = parse_sf_dictionary(lines)
    except SFError:
        return None
    if not members:
        return None
    out = Directives()
    for name, (value, _params) in members.items():
        if name in _INTEGER_DIRECTIVES:
            if type(value) is not int or value < 0:
                return None
            out[name] = str(value)
        elif name in _TRUE_DIRECTIVES:
            if value is not True:
                return None
            out[name] = None
        elif name in _TRUE_OR_STRING_DIRECTIVES:
            if value is True:
                out[name] = None
            elif type(value) is str:
                out[name] = value
            else:
                return None
        else:
            out[name] = None if value is True else _extension_argument(value)
    return out


def _extension_argument(value: object) -> str:
    """An unknown directive's argument as text (nothing in this edge reads it)."""
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode() + ":"
    if isinstance(value, list):
        return "(" + " ".join(_extension_argument(v) for v, _ in value) + ")"
    if value is False:
        return "?0"
    return str(value)
