"""The clients of the shared tier: one Redis, a Sentinel set or a Redis Cluster, made from
`redis.url` (its syntax and checks: `edge.config.redis_url`), and what calls them the same
way on every mode (scripts, node clients, the primaries, refreshing the slot map)."""

from __future__ import annotations

import contextlib
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import (
    NoScriptError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
)

from edge.base.shutdown import close_within
from edge.config.redis_url import (
    SENTINEL,
    SINGLE,
    RedisTarget,
    parse_url,
)

__all__ = ["FAILURES", "Client", "RedisTarget", "make_client", "parse_url", "primaries"]

Client = Redis | RedisCluster

FAILURES: tuple[type[BaseException], ...] = (
    RedisError,
    RedisClusterException,  # not a RedisError: "cannot be connected", a slot not covered...
    OSError,
    TimeoutError,
)
"""What a call to Redis raises when Redis (or the way to it) fails."""


def make_client(url: str, timeout: float, name: str | None = None) -> Client:
    """A client that fails fast: short connect/read timeouts and no silent retries (the
    callers decide what a failure means). `name` is set with CLIENT SETNAME."""
    target = parse_url(url)
    common: dict[str, Any] = {
        "client_name": name,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "username": target.username,
        "password": target.password,
    }
    no_retry = Retry(NoBackoff(), 0)
    if target.mode == SINGLE:
        return Redis.from_url(
            url,
            client_name=name,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=no_retry,
            retry_on_timeout=False,
        )
    if target.mode == SENTINEL:
        sentinel = Sentinel(
            list(target.nodes),
            sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
        )
        return sentinel.master_for(
            target.master, db=target.db, retry=no_retry, retry_on_timeout=False, **common
        )
    return RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in target.nodes],
        require_full_coverage=False,
        retry=no_retry,
        **common,
    )


def node_client(client: Client, key: str, timeout: float, name: str | None = None) -> Redis:
    """A plain client to the node that holds `key` now (a cluster's primary of its slot; the
    client's own server otherwise): for a subscription that must stay on one connection.
    Call after one command went through `client` (the cluster's map is known then)."""
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(key)
        if node is None:
            raise SlotNotCoveredError(f"no primary serves the slot of {key!r}")
        kwargs = client.get_connection_kwargs()
        return Redis(
            host=node.host,
            port=int(node.port),
            client_name=name,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            retry=Retry(NoBackoff(), 0),
        )
    return client


async def primaries(client: Client) -> frozenset[str]:
    """The ``host:port`` of the primaries `client` talks to now: one for a single Redis or
    a Sentinel set, one per shard for a cluster. A change after a failure is a failover."""
    if isinstance(client, RedisCluster):
        return frozenset(n.name for n in client.get_primaries())
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        host, port = await pool.get_master_address()
        return frozenset({f"{host}:{port}"})
    kw = pool.connection_kwargs
    return frozenset({f"{kw.get('host', kw.get('path', ''))}:{kw.get('port', '')}"})


async def refresh(client: Client) -> None:
    """After a failure: a cluster client reads the slot map again (a failed-over slot's
    new primary); redis-py does this by itself for single commands, not for pipelines."""
    if isinstance(client, RedisCluster):
        await client.nodes_manager.initialize()


async def close_client(client: Client, what: str) -> None:
    """Close `client` (and the connections to its sentinels), bounded in time."""
    await close_within(client.aclose(), what)
    pool = getattr(client, "connection_pool", None)
    if isinstance(pool, SentinelConnectionPool):
        for sentinel in pool.sentinel_manager.sentinels:
            await close_within(sentinel.aclose(), f"{what}: sentinel")


async def run_script(client: Client, text: str, sha: str, keys: list[Any], args: list[Any]) -> Any:
    """EVALSHA, or EVAL when this node does not know the script yet (then it does). Every
    key of a script is in one hash slot (docs/storage.md), so it runs on a cluster too."""
    with contextlib.suppress(NoScriptError):
        return await client.evalsha(sha, len(keys), *keys, *args)
    return await client.eval(text, len(keys), *keys, *args)
