"""Where the shared tier lives: one Redis, a Sentinel set or a Redis Cluster, from one URL.

The syntax (docs/storage.md):

- ``redis://[[user]:password@]host[:port][/db]`` (also ``rediss://``, ``unix://``): one Redis.
- ``redis+sentinel://[[user]:password@]s1[:26379],s2[:26379],.../master-name[/db]``: the
  master that the sentinels name; the client asks them again after a failover.
- ``redis+cluster://[[user]:password@]h1[:6379],h2[:6379],...``: a Redis Cluster reached
  through any of these seed nodes (db 0 only, as a cluster has no other).

The password is the data nodes' (the sentinels are reached without one).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

SINGLE, SENTINEL, CLUSTER = "single", "sentinel", "cluster"
_DEFAULT_PORT = {SENTINEL: 26379, CLUSTER: 6379}


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed ``redis.url``."""

    url: str
    mode: str  # single, sentinel or cluster
    nodes: tuple[tuple[str, int], ...] = ()  # sentinels or cluster seeds
    master: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None

    @property
    def failover(self) -> bool:
        """Whether a failed primary is replaced by another one on its own."""
        return self.mode != SINGLE


def parse_url(url: str) -> RedisTarget:
    """Parse and check a ``redis.url``; ValueError says what is wrong."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"expected redis://host:port/db, got {url!r}")
    if scheme in ("redis", "rediss", "unix"):
        return RedisTarget(url, SINGLE)
    if scheme not in ("redis+sentinel", "redis+cluster"):
        raise ValueError(
            f"unknown scheme {scheme!r} in {url!r}: expected redis://, rediss://, unix://, "
            "redis+sentinel:// or redis+cluster://"
        )
    mode = SENTINEL if scheme == "redis+sentinel" else CLUSTER
    userinfo, _, hostpart = rest.rpartition("@")
    username = password = None
    if userinfo:
        user, has_pw, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if has_pw else None
    hosts, _, path = hostpart.partition("/")
    nodes = tuple(_host_port(h, _DEFAULT_PORT[mode], url) for h in hosts.split(",") if h)
    if not nodes:
        raise ValueError(f"no host in {url!r}")
    parts = [p for p in path.split("/") if p]
    master = ""
    if mode == SENTINEL:
        if not parts:
            raise ValueError(
                f"no master name in {url!r}: expected redis+sentinel://s1:26379,s2:26379/mymaster/0"
            )
        master = unquote(parts.pop(0))
    if len(parts) > 1:
        raise ValueError(f"unexpected path {path!r} in {url!r}")
    try:
        db = int(parts[0]) if parts else 0
    except ValueError:
        raise ValueError(f"the database must be a number in {url!r}") from None
    if db < 0 or (mode == CLUSTER and db != 0):
        raise ValueError(f"a Redis Cluster has database 0 only, got {db} in {url!r}")
    return RedisTarget(url, mode, nodes, master, db, username, password)


def redacted(url: str) -> str:
    """`url` without its password, for a log line."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{hosts}"


def _host_port(text: str, default: int, url: str) -> tuple[str, int]:
    parsed = urlsplit(f"//{text}")
    try:
        port = parsed.port or default
    except ValueError:
        raise ValueError(f"bad port in {text!r} of {url!r}") from None
    if not parsed.hostname:
        raise ValueError(f"bad host {text!r} in {url!r}")
    return parsed.hostname, port
