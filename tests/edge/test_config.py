"""Configuration: every bad value is an error that names the key and the file."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from edge.config.settings import (
    ConfigError,
    EdgeConfig,
    QueryPolicy,
    apply_overrides,
    load_config,
    parse_config,
)

ROOT = Path(__file__).resolve().parents[2]
SRC = "cfg/edge.yaml"
TOKEN = "0123456789abcdef"  # 16 characters: the minimum


def parse(doc: Any) -> EdgeConfig:
    return parse_config(doc, SRC)


def fails(doc: Any, where: str, fragment: str = "") -> None:
    with pytest.raises(ConfigError) as info:
        parse(doc)
    message = str(info.value)
    assert message.startswith(f"{SRC}: {where}: "), message
    assert fragment in message


@pytest.mark.parametrize("name", ["edge.yaml", "standard.yaml"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(ROOT / "config" / name)
    assert cfg.source.endswith(name)


def test_defaults_and_empty_document() -> None:
    assert parse(None) == EdgeConfig(source=SRC)
    assert load_config(None) == EdgeConfig()


def test_values() -> None:
    cfg = parse(
        {
            "node": "edge-9",
            "listen": {"host": "0.0.0.0", "port": 9000},
            "origins": ["http://a:1/", "https://b"],
            "workers": 4,
            "redis": {"url": "redis://r:6379/0", "prefix": "p", "timeout": "250ms"},
            "purge": {"token": TOKEN, "staleness_bound": "2s"},
            "timeouts": {"connect": "1.5s", "read": "2m", "collapse": 10},
            "memory": {"max_bytes": "1g", "max_object_bytes": "512KiB"},
            "limits": {
                "max_request_body": "10mb",
                "max_line_size": 1024,
                "keepalive_timeout": "1h",
            },
            "defaults": {"stale_if_error": "1d", "heuristic_max": "12h"},
            "rules": [
                {
                    "match": "/api/*",
                    "ttl": "15s",
                    "prefer": "rule",
                    "query": {"allow": ["name"]},
                    "stale_while_revalidate": "5s",
                    "tags": "api",
                }
            ],
            "invalidate": [{"match": "/x", "urls": ["/y"], "prefixes": ["/z/"], "tags": ["t"]}],
        }
    )
    assert (cfg.node, cfg.host, cfg.port, cfg.workers) == ("edge-9", "0.0.0.0", 9000, 4)
    assert cfg.origins == ("http://a:1", "https://b")
    assert cfg.redis_timeout == 0.25 and cfg.purge_staleness_bound == 2.0
    assert (cfg.connect_timeout, cfg.read_timeout, cfg.collapse_timeout) == (1.5, 120.0, 10.0)
    assert cfg.memory_max_bytes == 2**30 and cfg.memory_max_object_bytes == 512 * 2**10
    assert cfg.max_request_body == 10 * 2**20 and cfg.keepalive_timeout == 3600.0
    assert cfg.defaults.stale_if_error == 86400.0 and cfg.defaults.heuristic_max == 43200.0
    rule = cfg.rules[0]
    assert rule.terms.ttl == 15.0 and rule.terms.rule_wins
    assert rule.terms.stale_while_revalidate == 5.0 and rule.terms.stale_if_error is None
    assert rule.query == QueryPolicy("allow", frozenset({"name"})) and rule.tags == ("api",)
    assert (
        cfg.rule_for("/api/x", frozenset()) is rule and cfg.rule_for("/other", frozenset()) is None
    )
    assert cfg.invalidations[0].urls == ("/y",)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30.0),
        (1.5, 1.5),
        ("250ms", 0.25),
        ("30s", 30.0),
        ("15m", 900.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("0", 0.0),
        (" 10 s ", 10.0),
    ],
)
def test_durations(value: Any, seconds: float) -> None:
    assert parse({"timeouts": {"read": value}}).read_timeout == seconds


@pytest.mark.parametrize(
    "value", [True, "-5s", "5 weeks", "1y", "", [], {}, -1, 11 * 365 * 86400, math.inf, math.nan]
)
def test_bad_durations(value: Any) -> None:
    fails({"timeouts": {"read": value}}, "timeouts.read")


@pytest.mark.parametrize(
    ("value", "n"),
    [
        (1024, 1024),
        ("512k", 512 * 2**10),
        ("64m", 64 * 2**20),
        ("2g", 2 * 2**30),
        ("64MiB", 64 * 2**20),
        ("10b", 10),
        ("1.5k", 1536),
    ],
)
def test_sizes(value: Any, n: int) -> None:
    assert parse({"memory": {"max_bytes": value}}).memory_max_bytes == n


@pytest.mark.parametrize("value", [True, -1, "-1m", "1t", "lots", [], math.nan, math.inf])
def test_bad_sizes(value: Any) -> None:
    fails({"memory": {"max_bytes": value}}, "memory.max_bytes")


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ([], ""),  # top level not a mapping: where is empty
        ({"nope": 1}, "nope"),
        ({"listen": {"port": 0}}, "listen.port"),
        ({"listen": {"port": 70000}}, "listen.port"),
        ({"listen": {"port": "80"}}, "listen.port"),
        ({"listen": {"port": True}}, "listen.port"),
        ({"listen": {"bogus": 1}}, "listen.bogus"),
        ({"listen": "0.0.0.0:80"}, "listen"),
        ({"listen": {"host": ""}}, "listen.host"),
        ({"node": 5}, "node"),
        ({"origins": []}, "origins"),
        ({"origins": ["ftp://x"]}, "origins[0]"),
        ({"origins": ["http://a", "http://b/path"]}, "origins[1]"),
        ({"origins": ["http://a:notaport"]}, "origins[0]"),
        ({"origins": ["http://a:99999"]}, "origins[0]"),
        ({"origins": ["http://user@a"]}, "origins[0]"),
        ({"origins": 5}, "origins"),
        ({"workers": 0}, "workers"),
        ({"workers": 65}, "workers"),
        ({"redis": {"url": "http://r"}}, "redis.url"),
        ({"redis": {"prefix": ""}}, "redis.prefix"),
        ({"purge": {"token": 123}}, "purge.token"),
        ({"limits": {"max_line_size": 10}}, "limits.max_line_size"),
        ({"headers": {"keep_tag_headers": "yes"}}, "headers.keep_tag_headers"),
        ({"defaults": {"stale_if_error": "forever"}}, "defaults.stale_if_error"),
        ({"rules": {"match": "/"}}, "rules"),
        ({"rules": [{"ttl": "1s"}]}, "rules[0].match"),
        ({"rules": [{"match": "api/*"}]}, "rules[0].match"),
        ({"rules": [{"match": "/", "ttl": "soon"}]}, "rules[0].ttl"),
        ({"rules": [{"match": "/"}, {"match": "/", "prefer": "cdn"}]}, "rules[1].prefer"),
        ({"rules": [{"match": "/", "query": "some"}]}, "rules[0].query"),
        ({"rules": [{"match": "/", "query": {"allow": ["a"], "ignore": ["b"]}}]}, "rules[0].query"),
        ({"rules": [{"match": "/", "query": {"deny": ["a"]}}]}, "rules[0].query.deny"),
        ({"rules": [{"match": "/", "bypass": "no"}]}, "rules[0].bypass"),
        ({"rules": [{"match": "/", "tags": [""]}]}, "rules[0].tags[0]"),
        ({"rules": [{"match": "/", "with_query": 5}]}, "rules[0].with_query"),
        ({"rules": [{"match": "/", "stale_if_error": "x"}]}, "rules[0].stale_if_error"),
        ({"rules": [{"match": "/", "colour": "red"}]}, "rules[0].colour"),
        ({"invalidate": "x"}, "invalidate"),
        ({"invalidate": [{"urls": ["/a"]}]}, "invalidate[0].match"),
        ({"invalidate": [{"match": "/a", "urls": ["/b", "c"]}]}, "invalidate[0].urls[1]"),
        ({"invalidate": [{"match": "/a", "prefixes": ["p/"]}]}, "invalidate[0].prefixes[0]"),
    ],
)
def test_errors_name_the_key_and_the_file(doc: Any, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(doc)
    message = str(info.value)
    assert message.startswith(f"{SRC}: {where}:" if where else f"{SRC}: :"), message


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing.yaml: cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("listen:\n  port: 0\n")
    with pytest.raises(ConfigError, match=r"wrong.yaml: listen.port: expected an integer"):
        load_config(wrong)


# -- environment and command line ----------------------------------------------------------


def base() -> EdgeConfig:
    return parse({"node": "file", "listen": {"port": 8080}})


def test_environment_over_file_and_flags_over_both() -> None:
    env = {
        "EDGE_ORIGIN": "http://o1:81, http://o2:82",
        "EDGE_REDIS_URL": "redis://r/1",
        "EDGE_NODE": "env",
        "EDGE_HOST": "0.0.0.0",
        "EDGE_PORT": "9090",
        "EDGE_WORKERS": "3",
    }
    cfg = apply_overrides(base(), env)
    assert cfg.origins == ("http://o1:81", "http://o2:82")
    assert (cfg.redis_url, cfg.node, cfg.host, cfg.port, cfg.workers) == (
        "redis://r/1",
        "env",
        "0.0.0.0",
        9090,
        3,
    )
    cfg = apply_overrides(
        base(), env, node="cli", port=7070, origins=["http://c:1,http://d:2"], workers=None
    )
    assert (cfg.node, cfg.port, cfg.workers) == ("cli", 7070, 3)
    assert cfg.origins == ("http://c:1", "http://d:2")


@pytest.mark.parametrize(
    ("env", "flags", "where"),
    [
        ({"EDGE_PORT": "eighty"}, {}, "environment: EDGE_PORT"),
        ({"EDGE_PORT": "0"}, {}, "environment: EDGE_PORT"),
        ({"EDGE_WORKERS": "100"}, {}, "environment: EDGE_WORKERS"),
        ({"EDGE_ORIGIN": "localhost:80"}, {}, "environment: EDGE_ORIGIN"),
        ({"EDGE_REDIS_URL": "localhost:6379"}, {}, "environment: EDGE_REDIS_URL"),
        ({}, {"port": 0}, "command line: --port"),
        ({}, {"workers": 1000}, "command line: --workers"),
        ({}, {"origins": ["nope"]}, "command line: --origin"),
        ({}, {"redis_url": "nope"}, "command line: --redis"),
        ({}, {"node": ""}, "command line: --node"),
    ],
)
def test_bad_overrides_name_their_source(
    env: dict[str, str], flags: dict[str, Any], where: str
) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(base(), env, **flags)
    assert str(info.value).startswith(f"{where}: "), str(info.value)


def test_purge_token_minimum_length_from_the_file() -> None:
    with pytest.raises(ConfigError, match=f"^{SRC}: purge.token: at least 16 characters"):
        apply_overrides(parse({"purge": {"token": "short"}}), {})
    assert apply_overrides(parse({"purge": {"token": TOKEN}}), {}).purge_token == TOKEN


def test_purge_token_from_environment() -> None:
    assert apply_overrides(base(), {"EDGE_PURGE_TOKEN": TOKEN}).purge_token == TOKEN
    with pytest.raises(ConfigError, match=r"^environment: EDGE_PURGE_TOKEN: at least 16"):
        apply_overrides(base(), {"EDGE_PURGE_TOKEN": TOKEN[:-1]})
    # an environment token replaces a short one in the file
    cfg = apply_overrides(parse({"purge": {"token": "short"}}), {"EDGE_PURGE_TOKEN": TOKEN})
    assert cfg.purge_token == TOKEN


def test_purge_token_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")  # trailing newline of `echo ... > file` is stripped
    env = {"EDGE_PURGE_TOKEN_FILE": str(secret)}
    assert apply_overrides(base(), env).purge_token == TOKEN
    # EDGE_PURGE_TOKEN, when also set, wins over the file
    other = "f" * 20
    assert apply_overrides(base(), {**env, "EDGE_PURGE_TOKEN": other}).purge_token == other
    secret.write_text("short\n")
    with pytest.raises(ConfigError, match=r"^environment: EDGE_PURGE_TOKEN_FILE .*: at least 16"):
        apply_overrides(base(), env)
    with pytest.raises(ConfigError, match=r"^environment: EDGE_PURGE_TOKEN_FILE: cannot read"):
        apply_overrides(base(), {"EDGE_PURGE_TOKEN_FILE": str(tmp_path / "absent")})
    secret.write_bytes(b"\xff\xfe" * 10)
    with pytest.raises(ConfigError, match="EDGE_PURGE_TOKEN_FILE: cannot read"):
        apply_overrides(base(), env)


def test_empty_environment_values_are_ignored() -> None:
    env = {name: "" for name in ("EDGE_ORIGIN", "EDGE_PORT", "EDGE_PURGE_TOKEN", "EDGE_NODE")}
    assert apply_overrides(base(), env) == base()


def test_compression_and_slices_are_read_and_checked() -> None:
    from edge.config.settings import ConfigError, parse_config

    cfg = parse_config(
        {
            "compression": {"codings": ["gzip"], "min_size": "2k"},
            "slices": {"size": "256k", "parallel": 2, "above": "4m"},
            "early_hints": False,
            "rules": [{"match": "/*.jpg", "slice": {"size": "128k", "parallel": 8}}],
        },
        "t.yaml",
    )
    assert cfg.compression.codings == ("gzip",) and cfg.compression.min_size == 2048
    assert cfg.slicing.size == 256 * 1024 and cfg.slicing.above == 4 * 2**20
    assert cfg.early_hints is False
    rule = cfg.rules[0].slice
    assert rule is not None and rule.size == 128 * 1024 and rule.parallel == 8
    for bad, where in (
        ({"compression": {"codings": ["lzma"]}}, "compression.codings[0]"),
        ({"slices": {"size": "1k"}}, "slices.size"),
        ({"rules": [{"match": "/x", "slice": {"parallel": 0}}]}, "rules[0].slice.parallel"),
    ):
        try:
            parse_config(bad, "t.yaml")
        except ConfigError as exc:
            assert where in str(exc), (where, str(exc))
        else:
            raise AssertionError(f"{bad} was accepted")


def test_node_cache_keys_and_the_swarm_path_from_the_environment() -> None:
    cfg = parse({"node_cache": {"path": "/var/cache/edge", "max_bytes": "1g"}, "workers": 2})
    assert cfg.node_cache_enabled and cfg.node_cache_path == "/var/cache/edge"
    assert cfg.node_cache_bytes == 2**30
    assert cfg.hot_bytes == cfg.memory_max_bytes // 16  # an eighth, over 2 workers
    off = parse({"node_cache": {"enabled": False}})
    assert off.hot_bytes == off.memory_max_bytes  # each worker its own whole cache
    cfg = apply_overrides(base(), {"EDGE_NODE_CACHE_PATH": "/var/cache/woody-edge"})
    assert cfg.node_cache_path == "/var/cache/woody-edge"
    with pytest.raises(ConfigError, match=r"node_cache\.enabled"):
        parse({"node_cache": {"enabled": "yes"}})
    with pytest.raises(ConfigError, match=r"hosts\[0\]"):
        parse({"hosts": ["bad host/"]})


def test_kept_limits() -> None:
    cfg = parse({"limits": {"kept": {"routes": "8m", "answers": "512k"}}})
    assert cfg.kept_limits == {"routes": 8 * 2**20, "answers": 512 * 2**10}
    assert parse({"limits": {"kept": None}}).kept_limits == {}


@pytest.mark.parametrize(
    ("kept", "where"),
    [
        ({"routes": "lots"}, "limits.kept.routes"),
        ({"heads": -1}, "limits.kept.heads"),
        ({"codings": True}, "limits.kept.codings"),
        ({"hits": "1t"}, "limits.kept.hits"),
        ({"bogus": "1m"}, "limits.kept.bogus"),
        ("16m", "limits.kept"),
    ],
)
def test_bad_kept_limits_name_their_kind(kept: Any, where: str) -> None:
    fails({"limits": {"kept": kept}}, where)


def test_several_workers_without_a_shared_tier_are_refused() -> None:
    """Issue 27 item 9: without the node tier and without Redis each worker keeps a cache of
    its own, and a purge answered 200 reached one of them only. Refused at start."""
    lonely = parse({"workers": 2, "node_cache": {"enabled": False}})
    with pytest.raises(ConfigError) as info:
        apply_overrides(lonely, {})
    assert "node_cache.enabled: false" in str(info.value) and "workers: 2" in str(info.value)
    assert apply_overrides(lonely, {"EDGE_REDIS_URL": "redis://r/0"}).workers == 2
    assert apply_overrides(lonely, {}, workers=1).workers == 1
    assert apply_overrides(parse({"workers": 2}), {}).workers == 2  # the node tier is on
