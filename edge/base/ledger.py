"""The memory ledger of one worker: everything it keeps beyond one request, in bytes, by
kind, each kind bounded by `limits.kept` in edge.yaml.

A structure that keeps something a client's request made (an answer built for its fields, a
parsed head, a route, a coding choice, a header block or a body being received, a TLS
handshake in progress) asks its account before it keeps it:

    account = ledger.account("routes")
    if account.take(size):      # within the bound: kept, and counted
        ...
    account.give(size)          # when it is dropped
    account.reset()             # the structure dropped everything it kept under this kind

`take` refuses what would go past the bound (and counts the refusal): the caller does not
keep it (a cache), or refuses the request (something a client is sending). The sizes are
estimates of what the kept objects cost in CPython, not of their payload alone: a
structure charges its bytes plus a fixed overhead per item (`ITEM_OVERHEAD`).

`/_edge/metrics` shows `edge_kept_bytes{kind}`, `edge_kept_limit_bytes{kind}` and
`edge_kept_refused_total{kind}` for the node (every worker summed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

# What one kept item costs beside its own bytes: the dict slot, the tuple or object that
# holds it, the bytes objects' headers (measured with tracemalloc on CPython 3.11: 150 to
# 300 bytes for the structures here; counted high).
ITEM_OVERHEAD = 256
# A client's field value longer than this is never a key of anything kept (it is read again
# on each request): keys made of client values stay small, whatever the client sends.
MAX_KEPT_VALUE = 256

MiB = 1 << 20
KiB = 1 << 10

# The kinds and their default bounds per worker. The hostile-memory bench phase (`bench
# chaos --hostile`) checks that a node of 2 workers stays within 64 MiB of its idle
# footprint under each pattern with these defaults.
DEFAULT_LIMITS: dict[str, int] = {
    "answers": 16 * MiB,  # hit answers built per entry for conditional and Range fields
    "hits": 8
    * MiB,  # kept hits (edge.engine.fresh_hits): a lookup's outcome and its stamped answers
    "heads": 2 * MiB,  # kept request heads (edge.protocol.http1) and their parse
    "routes": 2 * MiB,  # the route of each request-target (flow.recv's outcome)
    "codings": 1 * MiB,  # Accept-Encoding values and the coding they negotiate
    "header_blocks": 16 * MiB,  # h2 header blocks being assembled, HTTP/1.1 heads unfinished
    "handshakes": 16 * MiB,  # TLS handshakes in progress, every connection
    "bodies": 32 * MiB,  # request bodies being received, every connection
    "images": 1 * MiB,  # what the image maker knows of originals and variants (engine.images)
    "stored_keys": 1 * MiB,  # keys seen stored: their next misses collapse (store.tiers)
}
KINDS = tuple(DEFAULT_LIMITS)

# What one TLS handshake in progress costs (an SSLObject, its BIOs and buffers: measured as
# 400 pending handshakes = +18 MiB, about 46 KiB each).
HANDSHAKE_BYTES = 48 * KiB

# Seconds a client refused because a kind it was sending into is at its bound (a request
# body: 503) is told to wait (Retry-After) before it tries again.
RETRY_AFTER = 5


@dataclass
class Account:
    """One kind's bytes: what is kept, its bound, and how often the bound said no."""

    kind: str
    limit: int
    used: int = 0
    refused: int = 0

    def take(self, size: int) -> bool:
        """Count `size` more bytes kept, if they fit under the bound; else refuse them."""
        if self.used + size > self.limit:
            self.refused += 1
            return False
        self.used += size
        return True

    def fits(self, size: int) -> bool:
        """`size` more bytes would fit (nothing counted)."""
        return self.used + size <= self.limit

    def give(self, size: int) -> None:
        """`size` bytes that were kept are dropped."""
        self.used = max(0, self.used - size)

    def reset(self) -> None:
        """Everything kept under this kind was dropped at once."""
        self.used = 0


K = TypeVar("K")
V = TypeVar("V")


class Charged(dict[K, V]):
    """A dict whose items are counted in `account`: an item's bytes are taken when it is
    set (`keep`, or `d[key] = value` with `size`) and given back, all at once, when the dict
    is cleared or dropped (an entry's answers die with the entry). Items are only added and
    cleared, never removed one by one.

    When the account refuses an item: `drop_all` (a cache of one structure per account:
    the routes, the request heads) drops everything kept and keeps the new item; otherwise
    (one dict among many sharing the account) the item is not kept."""

    __slots__ = ("account", "charged", "drop_all", "size")

    def __init__(
        self, account: Account, size: Callable[[K, V], int] | None = None, drop_all: bool = False
    ) -> None:
        super().__init__()
        self.account = account
        self.size = size
        self.drop_all = drop_all
        self.charged = 0

    def keep(self, key: K, value: V, size: int) -> bool:
        """Keep `value` under `key` if the account takes `size` more bytes."""
        if key in self:
            return False  # kept already (the first one counted stays)
        account = self.account
        if not account.take(size):
            if not self.drop_all:
                return False
            self.clear()
            if not account.take(size):
                return False
        self.charged += size
        dict.__setitem__(self, key, value)
        return True

    def __setitem__(self, key: K, value: V) -> None:
        assert self.size is not None
        self.keep(key, value, self.size(key, value))

    def clear(self) -> None:
        self.account.give(self.charged)
        self.charged = 0
        dict.clear(self)

    def __del__(self) -> None:
        self.account.give(self.charged)


@dataclass
class Ledger:
    """A worker's accounts, one per kind (see the module docstring)."""

    accounts: dict[str, Account] = field(
        default_factory=lambda: {k: Account(k, v) for k, v in DEFAULT_LIMITS.items()}
    )

    @classmethod
    def with_limits(cls, limits: dict[str, int]) -> Ledger:
        merged = {**DEFAULT_LIMITS, **limits}
        return cls({k: Account(k, merged[k]) for k in KINDS})

    def account(self, kind: str) -> Account:
        return self.accounts[kind]

    def set_limits(self, limits: dict[str, int]) -> None:
        """A reload's new bounds; what is kept stays counted (each structure drops what it
        kept on reload anyway, and resets its account)."""
        merged = {**DEFAULT_LIMITS, **limits}
        for kind, account in self.accounts.items():
            account.limit = merged[kind]

    def as_dict(self) -> dict[str, dict[str, int]]:
        """For the node view: sums across workers (edge.ops.nodeview.merge adds numbers)."""
        return {
            "bytes": {k: a.used for k, a in self.accounts.items()},
            "limit": {k: a.limit for k, a in self.accounts.items()},
            "refused": {k: a.refused for k, a in self.accounts.items()},
        }
