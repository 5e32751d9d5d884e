"""Counts and limits of client connections: refusals, timeouts, malformed requests.

- `max_connections`: open client connections per process, each counted from its accept (a
  TLS handshake in progress included: `edge.protocol.tls_transport`) until it closes; one more is
  refused at once, before anything is parsed (503 on plain HTTP, GOAWAY on h2, closed
  during a handshake), and counted (`refused`).
- malformed requests (answered 400/414/431 and closed) are counted and logged at most once a
  minute, not with a traceback each (a fuzzer or scanner must not fill the logs).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("edge.base.guard")

# How the TLS handshakes of a worker ended: a full one, a resumed session (a ticket), or a
# failure (a bad ClientHello, plain HTTP on the HTTPS port, no common version or cipher).
TLS_RESULTS = ("full", "resumed", "failed")


@dataclass
class ConnectionGuard:
    """Connection counters of one worker (see the module docstring)."""

    max_connections: int = 8192
    # The open connections: Http1Connection, Http2Connection, and TlsTransport while its
    # handshake is in progress (each has `tick` and `shutdown`).
    open: set[Any] = field(default_factory=set)
    accepted: int = 0
    header_timeouts: int = 0
    body_timeouts: int = 0
    over_limit: int = 0
    bad_requests: int = 0
    client_gone: int = 0
    tls_handshakes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TLS_RESULTS, 0))
    _logged_bad: int = 0
    _log_at: float = 0.0

    def admit(self, conn: Any) -> bool:
        """`conn` was accepted: it counts in `open` until it closes; False (counted as
        refused) when `max_connections` are open already."""
        if len(self.open) >= self.max_connections:
            self.over_limit += 1
            return False
        self.open.add(conn)
        return True

    def accept(self, conn: Any, transport: Any) -> str | None:
        """A client connection's protocol began (`connection_made` of every door): admitted
        (`admit`) and counted, its peer's address returned ("" when it has none, a Unix
        socket); None when refused, which the protocol says in its own bytes, then closes."""
        if not self.admit(conn):
            return None
        self.accepted += 1
        peer = transport.get_extra_info("peername")
        return str(peer[0]) if isinstance(peer, tuple) and peer else ""

    def bad_request(self, remote: str | None, exc: BaseException | None) -> None:
        self.bad_requests += 1
        now = time.monotonic()
        if now >= self._log_at:
            text = str(getattr(exc, "message", None) or exc or "?").strip()
            log.warning(
                "rejected %d malformed request(s) since the last report; latest from %s: %s",
                self.bad_requests - self._logged_bad,
                remote,
                text.splitlines()[0] if text else "?",
            )
            self._logged_bad = self.bad_requests
            self._log_at = now + 60.0

    def as_dict(self) -> dict[str, int | dict[str, int]]:
        return {
            "open": len(self.open),
            "accepted": self.accepted,
            "header_timeouts": self.header_timeouts,
            "body_timeouts": self.body_timeouts,
            "refused": self.over_limit,
            "bad_requests": self.bad_requests,
            "clients_gone": self.client_gone,
            "tls_handshakes": dict(self.tls_handshakes),
        }
