"""The lab's in-API Redis cache (seed section 5): `heavy` for 30 s, `last` for 15 s, and the
`last` entry deleted when a product is added. Built on aiocache's RedisCache."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from aiocache import RedisCache
from aiocache.serializers import StringSerializer

log = logging.getLogger("origin.api_cache")

LAST_KEY = "last"


def heavy_key(name: str) -> str:
    # The lab's decorator keyed on the view's (empty) arguments, so every name shared one
    # entry; keying on the name is what it meant to do.
    return f"heavy:{name}"


class ApiCache:
    """Plain-text answers in Redis under `<prefix>:<key>`. A Redis error is logged and the
    request is served uncached, as the cache is an optimisation."""

    def __init__(self, url: str, prefix: str, heavy_ttl: float, last_ttl: float) -> None:
        parts = urlsplit(url)
        db = parts.path.lstrip("/") or "0"
        self.url = url
        self.heavy_ttl = heavy_ttl
        self.last_ttl = last_ttl
        self._cache = RedisCache(
            serializer=StringSerializer(),
            endpoint=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=int(db),
            password=parts.password,
            namespace=prefix,
            timeout=2,
            create_connection_timeout=2,
        )

    async def get(self, key: str) -> str | None:
        try:
            value = await self._cache.get(key)
        except Exception as exc:
            log.warning("api cache get %s failed (%s): serving uncached", key, exc)
            return None
        return None if value is None else str(value)

    async def set(self, key: str, value: str, ttl: float) -> None:
        try:
            await self._cache.set(key, value, ttl=float(ttl))  # a float: PSETEX in milliseconds
        except Exception as exc:
            log.warning("api cache set %s failed: %s", key, exc)

    async def delete(self, key: str) -> None:
        try:
            await self._cache.delete(key)
        except Exception as exc:
            log.warning("api cache delete %s failed: %s", key, exc)

    async def close(self) -> None:
        # aiocache's close() calls redis' deprecated close(); close its client directly.
        await self._cache.client.aclose()
