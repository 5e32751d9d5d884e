"""Shared fixtures: the real Redis and MariaDB of this machine, each test with its own namespace.

When CI=true a test that needs a missing service fails; elsewhere it is skipped with a message.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

REDIS_URL = os.environ.get("EDGE_TEST_REDIS", "redis://127.0.0.1:6379/0")
MYSQL_URL = os.environ.get("ORIGIN_TEST_MYSQL", "mysql://root:@127.0.0.1:3306")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def require_service(name: str, url: str, default_port: int) -> None:
    """Fail (in CI) or skip (elsewhere) when a service a test needs is not listening."""
    if _reachable(url, default_port):
        return
    message = f"{name} is not reachable at {url}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: tests that need it must run)")
    pytest.skip(f"{message}: start it to run this test")


@pytest.fixture
def redis_url() -> str:
    """The real Redis; pair it with `key_prefix` so runs never collide."""
    require_service("Redis", REDIS_URL, 6379)
    return REDIS_URL


# Every key of this test session starts with this; the session deletes them all at its end,
# which also catches a write that a background task made after its test's own clean-up.
SESSION_PREFIX = f"wtest-{uuid.uuid4().hex[:8]}"


def _delete_keys(pattern: str) -> None:
    if not _reachable(REDIS_URL, 6379):
        return
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


@pytest.fixture(scope="session", autouse=True)
def _forget_session_keys() -> Iterator[None]:
    yield
    _delete_keys(f"{SESSION_PREFIX}-*")


@pytest.fixture
def key_prefix() -> Iterator[str]:
    """A Redis key prefix of this test alone; its keys are deleted afterwards."""
    prefix = f"{SESSION_PREFIX}-{uuid.uuid4().hex[:8]}"
    yield prefix
    _delete_keys(f"{prefix}*")


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """A fresh MariaDB database of this test alone, dropped afterwards."""
    require_service("MariaDB", MYSQL_URL, 3306)
    import pymysql

    parsed = urlparse(MYSQL_URL)
    name = f"wtest_{uuid.uuid4().hex[:12]}"
    conn = pymysql.connect(
        host=parsed.hostname or "127.0.0.1",
        port=parsed.port or 3306,
        user=parsed.username or "root",
        password=parsed.password or "",
    )
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
        base = MYSQL_URL.rstrip("/")
        yield f"{base}/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()
