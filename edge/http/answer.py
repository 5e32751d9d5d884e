"""The answer every door writes, and what the engine calls on a door to write it.

The engine builds an `Answer` (status, header fields, a body or, after `Responder.start`, a
stream) for every request (`edge.cache.respond`) and hands it to the request's `Responder`:
the HTTP/1.1 connection (`edge.protocol.http1`) or the h2 stream (`edge.protocol.http2`) it
came by. Each protocol turns an `Answer` into its own bytes; none reads another's.

A hit's answer is built once per stored entry and kept (`Entry.answers`,
`edge.engine.fresh_hits`), then stamped for each second of its age with the fields that
change (Age, Cache-Status: `stamped`). So that a repeated hit costs no serialization, a
protocol keeps what it made of an answer on the answer itself, under its own key: `fixed`,
the status, fields and length, shared by every stamped copy of a kept answer; `wire`, the
whole head, stamp included, this answer's own.

An answer whose body is a view of a body kept in a memfd (`edge.base.memfile`) says where in
that file its bytes lie (`file`): HTTP/1.1 on plain TCP sends them from there with sendfile
(`edge.protocol.file_out`); every other writer uses the view.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from edge.base.memfile import MemFile, file_of
from edge.http.request import Request

Fields = list[tuple[str, str]]
FileSpan = tuple[MemFile, int]
"""The file an answer's body is a view of, and the offset of its first byte there."""
_new = object.__new__


class Answer:
    """An answer: `length` None means the body is streamed after the head (unknown length).

    The fields a protocol writes are `fields`, then the length (its framing), then `stamp`:
    the fields written for each request of a kept answer (empty otherwise)."""

    __slots__ = (
        "body",
        "close",
        "fields",
        "file",
        "fixed",
        "last",
        "length",
        "stamp",
        "status",
        "wire",
    )

    def __init__(
        self,
        status: int,
        fields: Fields,
        body: bytes | memoryview = b"",
        length: int | None = 0,
        close: bool = False,
        at: int | None = None,
    ) -> None:
        self.status = status
        self.fields = fields
        self.body = body
        self.length = length
        self.close = close  # the connection ends after it (HTTP/1.1)
        self.stamp: Sequence[tuple[str, str]] = ()
        # Serializations, by the protocol's key: of status, fields and length (shared with
        # the stamped copies), and of the whole head.
        self.fixed: dict[str, Any] = {}
        self.wire: dict[str, Any] = {}
        self.last: Answer | None = None  # the last stamped copy (`stamped`)
        self.file = file_span(body, at)

    def stamped(self, stamp: Sequence[tuple[str, str]]) -> Answer:
        """This answer with `stamp` written after its fields: the same body, and what the
        protocols made of the rest of its head (`fixed`) shared, not made again. The same
        stamp as the last one (the same second of a hit's age) gets the same copy, with
        what the protocols made of it (`wire`)."""
        last = self.last
        if last is not None and last.stamp == stamp:
            return last
        out = _new(Answer)
        out.status = self.status
        out.fields = self.fields
        out.body = self.body
        out.length = self.length
        out.close = self.close
        out.file = self.file
        out.stamp = stamp
        out.fixed = self.fixed
        out.wire = {}
        out.last = None
        self.last = out
        return out

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.fields!r}, {len(self.body)} bytes, {self.length})"


def file_span(body: bytes | memoryview, at: int | None = None) -> FileSpan | None:
    """Where `body` lies in a MemFile: a whole view's span is found; a part of one lies where
    its maker says (`at`: the view alone does not tell its offset)."""
    file = file_of(body)
    if file is None:
        return None
    if at is None:
        return (file, 0) if len(body) == len(file) else None
    return (file, at)


def held_bytes(answer: Answer) -> int:
    """About the bytes a kept answer holds beside its body: its fields, and a serialization
    of its head per protocol that sent it (HTTP/1.1's and h2's, each about as long), its
    own and its last stamped copy's."""
    size = 32 + sum(len(k) + len(v) + 4 for k, v in answer.fields)
    size += sum(len(k) + len(v) + 4 for k, v in answer.stamp)
    return 5 * size


class Responder(Protocol):
    """What the engine calls on the door a request came by (an HTTP/1.1 connection, an h2
    stream): one answer per request, whole (`send`), or its head (`start`) then its body
    (`write`, `end`), after maybe an interim answer (`interim`)."""

    def send(self, req: Request, answer: Answer) -> None:
        """A whole answer (no body after a HEAD's head, or for a status without one)."""

    def start(self, req: Request, answer: Answer) -> None:
        """The head of an answer whose body follows through `write` and `end`."""

    async def write(self, data: bytes | memoryview) -> None:
        """A piece of the body; waits while the client is not reading."""

    def end(self) -> None:
        """The body is whole."""

    def abort(self) -> None:
        """The body broke off: the client must see it short, never complete-looking."""

    def interim(self, status: int, fields: Fields) -> None:
        """A 1xx answer before the final one (103 Early Hints)."""
