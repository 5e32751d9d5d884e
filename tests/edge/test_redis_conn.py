"""The `redis.url` syntax: one Redis, a Sentinel set, a Cluster; bad ones are config errors
naming the key and the file."""

from __future__ import annotations

import pytest

from edge.config.redis_url import RedisTarget, parse_url
from edge.config.settings import ConfigError, apply_overrides, parse_config


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("redis://r:6379/0", RedisTarget("redis://r:6379/0", "single")),
        ("unix:///run/redis.sock", RedisTarget("unix:///run/redis.sock", "single")),
        (
            "redis+sentinel://s1,s2:26380,s3:26381/mymaster/2",
            RedisTarget(
                "redis+sentinel://s1,s2:26380,s3:26381/mymaster/2",
                "sentinel",
                (("s1", 26379), ("s2", 26380), ("s3", 26381)),
                "mymaster",
                2,
            ),
        ),
        (
            "redis+cluster://:secret@h1:7000,h2:7001,[::1]:7002",
            RedisTarget(
                "redis+cluster://:secret@h1:7000,h2:7001,[::1]:7002",
                "cluster",
                (("h1", 7000), ("h2", 7001), ("::1", 7002)),
                password="secret",
            ),
        ),
        ("redis+cluster://h1/0", RedisTarget("redis+cluster://h1/0", "cluster", (("h1", 6379),))),
    ],
)
def test_the_three_modes(url: str, target: RedisTarget) -> None:
    assert parse_url(url) == target
    assert parse_url(url).failover == (target.mode != "single")


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://r", "unknown scheme 'http'"),
        ("localhost:6379", "expected redis://host:port/db"),
        ("redis+sentinel://s1:26379", "no master name"),
        ("redis+sentinel:///mymaster", "no host"),
        ("redis+sentinel://s1:port/m", "bad port"),
        ("redis+cluster://h1:7000/3", "database 0 only"),
        ("redis+cluster://h1:7000/a/b", "unexpected path"),
        ("redis+sentinel://s1/m/x", "must be a number"),
    ],
)
def test_bad_urls_are_config_errors_naming_key_and_file(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"redis": {"url": url}}, "cfg/edge.yaml")
    message = str(info.value)
    assert message.startswith("cfg/edge.yaml: redis.url: "), message
    assert fragment in message, message
    with pytest.raises(ConfigError) as info:
        apply_overrides(parse_config({}, "cfg/edge.yaml"), {"EDGE_REDIS_URL": url})
    assert str(info.value).startswith("environment: EDGE_REDIS_URL: "), str(info.value)


def test_environment_takes_a_cluster() -> None:
    url = "redis+cluster://h1:7000,h2:7001"
    cfg = apply_overrides(parse_config({}, "cfg/edge.yaml"), {"EDGE_REDIS_URL": url})
    assert cfg.redis_url == url


def test_logs_never_show_the_password() -> None:
    from edge.config.redis_url import redacted

    assert (
        redacted("redis+cluster://u:s3cret@h1:7000,h2:7001")
        == "redis+cluster://u:***@h1:7000,h2:7001"
    )
    assert redacted("redis://:s3cret@r:6379/0") == "redis://:***@r:6379/0"
    assert redacted("redis://r:6379/0") == "redis://r:6379/0"
