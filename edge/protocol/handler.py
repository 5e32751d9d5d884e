"""What a client connection uses of what answers its requests: a `Handler`.

The doors (`edge.protocol.http1.Http1Connection`, its TLS subclass, and
`edge.protocol.http2.Http2Connection`) are handed the worker's `edge.engine.engine.Engine`, or
on the plain listener with `tls.redirect` on, `edge.protocol.tls.Redirector` in front of it.
Both are `Handler`s structurally (mypy checks it where they are passed): the engine names no
protocol class, and this module imports nothing of the engine. It is the other half of
`edge.http.answer.Responder`, what the engine calls on the door.

The attributes are read-only here: a connection reads the limits, the counters and the
ledger's accounts once, when it opens (`cfg` as it is then: a reload changes the next
connections); `access_log` (h2) and `timed` (HTTP/1.1) say whether requests are stamped with
the time they came.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import logging

    from edge.base.guard import ConnectionGuard
    from edge.base.ledger import Ledger
    from edge.config.settings import EdgeConfig
    from edge.http.answer import Answer, Responder
    from edge.http.request import ParsedHead, Request


class Handler(Protocol):
    """The worker's side of a client connection: its limits, counters and kept heads, and
    the two ways a request is answered (`fresh_hit` from the parse, `serve` once made)."""

    @property
    def cfg(self) -> EdgeConfig:
        """The configuration in force: the connection's `limits:` and timeouts."""

    @property
    def guard(self) -> ConnectionGuard:
        """The worker's connection counters and `limits.max_connections`."""

    @property
    def ledger(self) -> Ledger:
        """The worker's memory ledger: request bodies, unfinished heads (`header_blocks`)."""

    @property
    def request_heads(self) -> dict[bytes, ParsedHead]:
        """HTTP/1.1's whole request heads kept with their parse (`Engine.request_heads`)."""

    @property
    def timed(self) -> bool:
        """HTTP/1.1 stamps each request's arrival (and takes no hit path from the parse)."""

    @property
    def access_log(self) -> logging.Logger | None:
        """h2 stamps each request's arrival when there is one."""

    def fresh_hit(
        self,
        method: str,
        target: str,
        host: str,
        flags: int,
        special: tuple[tuple[bytes, bytes], ...],
        fields: Sequence[tuple[bytes, bytes]],
    ) -> Answer | None:
        """HTTP/1.1's hit path, from a plain GET or HEAD's parsed head (`Engine.fresh_hit`):
        the answer of a fresh hit, or None (the request is made and goes to `serve`)."""

    def serve(self, req: Request, conn: Responder) -> Coroutine[Any, Any, None] | None:
        """Answer `req` through `conn`: at once (None), or through the returned coroutine."""
