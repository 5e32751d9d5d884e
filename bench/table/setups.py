"""What each row of the table starts: the origin, and the cache in front of it, if any."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from bench.peers import Server, nginx_binary, nginx_cache, varnish_cache, varnishd_binary
from bench.procs import ProcessGroup, port_open
from bench.servers import OriginSpec, edge_available, start_edge, start_origin
from bench.table.model import Endpoints

if TYPE_CHECKING:
    from bench.table.measure import TableRun


def _origin(run: TableRun, group: ProcessGroup, key: str, **kw: Any) -> Server:
    spec = OriginSpec(
        heavy_seconds=run.delays.heavy_seconds,
        db_seconds=run.delays.db_seconds,
        static_rate=run.delays.static_rate,
        key_prefix=run.prefix(key),
        impl=run.origin_impl,
        **kw,
    )
    return start_origin(group, spec, name=f"origin-{key}")


def setup(run: TableRun, key: str, group: ProcessGroup) -> Endpoints:
    """Start what the row needs; raise RuntimeError/StartError/FileNotFoundError if not."""
    needs_redis = key in ("api-cache", "edge-redis")
    if needs_redis and not redis_up(run.redis_url):
        raise RuntimeError(f"Redis is not reachable at {run.redis_url}")
    if key == "baseline":
        o = _origin(run, group, key)
        return Endpoints(o.url, o.url, caching=False)
    if key == "replicas":
        o = _origin(run, group, key, replicas=5)
        return Endpoints(o.url, o.url, caching=False)
    if key == "api-cache":
        o = _origin(run, group, key, api_cache=run.redis_url)
        return Endpoints(o.url, o.url, caching=True, page_cached=False)
    if key in ("edge", "edge-redis") and not edge_available():
        raise RuntimeError("`python -m edge serve` has not landed yet")
    if key == "edge":
        o = _origin(run, group, key)
        e = start_edge(group, o.url, node="edge-1", workers=run.edge_workers)
        return Endpoints(e.url, e.url, caching=True)
    if key == "edge-redis":
        o = _origin(run, group, key)
        prefix = run.prefix("edge-redis-shared")
        nodes = [
            start_edge(
                group,
                o.url,
                node=f"edge-{i}",
                workers=run.edge_workers,
                redis_url=run.redis_url,
                key_prefix=prefix,
            )
            for i in (1, 2, 3)
        ]
        return Endpoints(nodes[0].url, nodes[2].url, caching=True)
    if key == "nginx":
        if nginx_binary() is None:
            raise FileNotFoundError("nginx is not installed")
        o = _origin(run, group, key)
        n = nginx_cache(group, _port(o.url))
        return Endpoints(n.url, n.url, caching=True)
    if key == "varnish":
        if varnishd_binary() is None:
            raise FileNotFoundError("varnishd is not installed")
        o = _origin(run, group, key)
        v = varnish_cache(group, _port(o.url))
        return Endpoints(v.url, v.url, caching=True)
    raise ValueError(f"unknown row {key!r}")


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def redis_up(url: str) -> bool:
    parsed = urlparse(url)
    return port_open(parsed.port or 6379, parsed.hostname or "127.0.0.1")
