"""The three ways to run the shared tier, for tests that run on each: one Redis (the
machine's), a Sentinel set and a Redis Cluster (ours, started on first use from Debian's
redis-server and stopped when the session ends; bench.redis_sets).

A test module takes them with `modes_fixture()`; failover tests start sets of their own
(they kill a primary)."""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from bench.redis_sets import Node, RedisCluster, SentinelSet

MODES = ("single", "sentinel", "cluster")
_started: dict[str, Any] = {}


def _workdir() -> Path:
    if "dir" not in _started:
        _started["dir"] = Path(tempfile.mkdtemp(prefix="edge-test-redis-sets-"))
        atexit.register(_stop_all)
    return Path(_started["dir"])


def _stop_all() -> None:
    for mode in ("sentinel", "cluster"):
        if mode in _started:
            _started.pop(mode).stop()
    if "dir" in _started:
        shutil.rmtree(_started.pop("dir"), ignore_errors=True)


def require_redis_server() -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        from tests.conftest import IN_CI

        message = "redis-server / redis-cli are not installed (apt-get install redis-server)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def mode_url(mode: str, single_url: str) -> str:
    """The URL of the shared set of `mode` (started now if needed)."""
    if mode == "single":
        return single_url
    require_redis_server()
    if mode not in _started:
        if mode == "cluster":
            _started[mode] = RedisCluster(_workdir(), node_timeout=2000).start()
        else:
            _started[mode] = SentinelSet(_workdir(), down_after=1000).start()
    return str(_started[mode].url)


def modes_fixture() -> Any:
    """A `redis_url` fixture for a test module: each test runs on the three modes."""

    @pytest.fixture(params=MODES)
    def redis_url(request: pytest.FixtureRequest, redis_url: str) -> str:
        return mode_url(str(request.param), redis_url)

    return redis_url


def slot_errors_fixture() -> Any:
    """An autouse fixture for a test module: no CROSSSLOT or MOVED error in a warning (or
    worse) of any test of it (a client never sees one either: they would be 5xx)."""

    @pytest.fixture(autouse=True)
    def no_slot_errors(caplog: pytest.LogCaptureFixture) -> Any:
        yield
        leaked = [
            r.getMessage()
            for r in caplog.get_records("setup") + caplog.get_records("call")
            if r.levelno >= logging.WARNING
            and ("CROSSSLOT" in r.getMessage() or "MOVED" in r.getMessage())
        ]
        assert leaked == []

    return no_slot_errors


class AclLink:
    """One node's access to a Sentinel set's or a cluster's data nodes, cut and restored
    without touching anybody else's: the node logs in as a user of its own, which `cut()`
    disables (and whose connections it kills) on every data node."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.user = f"cut-{uuid.uuid4().hex[:8]}"
        made = _started[mode]
        self.nodes: list[Node] = list(made.nodes if mode == "cluster" else made.servers)
        scheme, rest = str(made.url).split("://", 1)
        self.url = f"{scheme}://{self.user}:pw@{rest}"

    async def start(self) -> None:
        self._acl("on", ">pw", "~*", "&*", "+@all")

    def _acl(self, *rules: str) -> None:
        for node in self.nodes:
            if node.alive:
                node.client().execute_command("ACL", "SETUSER", self.user, *rules)

    async def cut(self) -> None:
        self._acl("off")
        for node in self.nodes:
            if node.alive:
                node.client().execute_command("CLIENT", "KILL", "USER", self.user)

    async def restore(self) -> None:
        self._acl("on")

    async def close(self) -> None:
        for node in self.nodes:
            if node.alive:
                node.client().execute_command("ACL", "DELUSER", self.user)
