"""The edge's configuration: YAML file, then environment, then command line.

Every value is validated at start; an error names the key and the file
(`config/edge.yaml: rules[2].ttl: expected a duration like 30s, 15m, 1d`).
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from collections.abc import Callable, Container
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from edge.base import ledger
from edge.config.images import ImageSettings, parse_images
from edge.config.terms import Defaults, RuleTerms
from edge.config.tls import TlsSettings, override_tls, parse_tls


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key and the file."""


QueryMode = Literal["all", "none", "allow", "ignore"]


@dataclass(frozen=True, slots=True)
class QueryPolicy:
    """Which query parameters make the cache key (always sorted, so order never matters)."""

    mode: QueryMode = "all"
    names: frozenset[str] = frozenset()

    def keeps(self, name: str) -> bool:
        if self.mode == "all":
            return True
        if self.mode == "none":
            return False
        if self.mode == "allow":
            return name in self.names
        return name not in self.names


Glob = Callable[[str], re.Match[str] | None]


def path_glob(pattern: str) -> Glob:
    """A path pattern compiled once, matched as `fnmatch.fnmatchcase` matches it."""
    return re.compile(fnmatch.translate(pattern)).match


def path_matches(
    glob: Glob, with_query: tuple[str, ...], path: str, query_names: Container[str]
) -> bool:
    """A path glob that matches, and every query parameter named in `with_query` present
    (`query_names` is only asked when there is one)."""
    return glob(path) is not None and (not with_query or all(q in query_names for q in with_query))


CODING_NAMES = ("br", "zstd", "gzip")
DEFAULT_COMPRESSIBLE = (
    "text/",
    "application/javascript",
    "application/x-javascript",
    "application/json",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/manifest+json",
    "application/wasm",
    "image/svg+xml",
    "font/ttf",
    "font/otf",
)


@dataclass(frozen=True, slots=True)
class Compression:
    """`compression:`: what the edge compresses itself (see edge/engine/compress.py)."""

    enabled: bool = True
    codings: tuple[str, ...] = CODING_NAMES
    min_size: int = 1024
    types: tuple[str, ...] = DEFAULT_COMPRESSIBLE
    # Stored objects are compressed once: slow, dense levels; a streamed answer is
    # compressed per client: fast ones.
    stored_levels: tuple[tuple[str, int], ...] = (("br", 9), ("zstd", 12), ("gzip", 9))
    stream_levels: tuple[tuple[str, int], ...] = (("br", 4), ("zstd", 3), ("gzip", 6))

    def level(self, coding: str, stored: bool) -> int:
        return dict(self.stored_levels if stored else self.stream_levels)[coding]


@dataclass(frozen=True, slots=True)
class SlicePolicy:
    """How a large object is cut into fixed-size ranges (see edge/engine/slices.py). `size` 0 turns
    slicing off."""

    size: int = 0
    parallel: int = 4


@dataclass(frozen=True, slots=True)
class Slicing:
    """`slices:`: the default for objects no rule slices: above `above` bytes (0 = never)."""

    size: int = 1024 * 1024
    parallel: int = 4
    above: int = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Rule:
    """Per-path behaviour for origins that send no caching headers."""

    match: str
    with_query: tuple[str, ...] = ()
    terms: RuleTerms = field(default_factory=RuleTerms)
    query: QueryPolicy = QueryPolicy()
    bypass: bool = False
    tags: tuple[str, ...] = ()
    slice: SlicePolicy | None = None  # None: the `slices:` default decides by size
    glob: Glob = field(init=False, repr=False, compare=False)  # `match`, compiled

    def __post_init__(self) -> None:
        object.__setattr__(self, "glob", path_glob(self.match))

    def matches(self, path: str, query_names: Container[str]) -> bool:
        return path_matches(self.glob, self.with_query, path, query_names)


@dataclass(frozen=True, slots=True)
class Invalidation:
    """A request matching `match` (and carrying `with_query`) invalidates these on success."""

    match: str
    with_query: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    glob: Glob = field(init=False, repr=False, compare=False)  # `match`, compiled

    def __post_init__(self) -> None:
        object.__setattr__(self, "glob", path_glob(self.match))

    def matches(self, path: str, query_names: Container[str]) -> bool:
        return path_matches(self.glob, self.with_query, path, query_names)


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    source: str = "<defaults>"
    node: str = "edge-1"
    host: str = "127.0.0.1"
    port: int = 8080
    origins: tuple[str, ...] = ("http://127.0.0.1:8081",)
    workers: int = 1
    redis_url: str | None = None
    redis_prefix: str = "edge"
    purge_token: str | None = None
    connect_timeout: float = 3.0
    read_timeout: float = 60.0
    origin_down: float = 5.0
    redis_timeout: float = 0.25
    memory_max_bytes: int = 256 * 2**20
    memory_max_object_bytes: int = 16 * 2**20
    memory_hot_bytes: int | None = None
    memory_sendfile: bool = True
    node_cache_enabled: bool = True
    node_cache_path: str | None = None
    node_cache_max_bytes: int | None = None
    hosts: tuple[str, ...] = ()
    body_timeout: float = 20.0
    body_min_rate: int = 500
    origin_idle: float = 4.0
    max_request_body: int = 10 * 2**20
    max_line_size: int = 8190
    max_field_size: int = 8190
    max_headers: int = 128
    keepalive_timeout: float = 75.0
    header_timeout: float = 10.0
    max_connections: int = 8192
    # limits.kept: what a worker keeps beyond one request, bytes per kind (edge.base.ledger)
    kept_limits: dict[str, int] = field(default_factory=dict)
    collapse_timeout: float = 30.0
    purge_staleness_bound: float = 5.0
    defaults: Defaults = field(default_factory=Defaults)
    keep_tag_headers: bool = False
    rules: tuple[Rule, ...] = ()
    invalidations: tuple[Invalidation, ...] = ()
    compression: Compression = field(default_factory=Compression)
    slicing: Slicing = field(default_factory=Slicing)
    images: ImageSettings = field(default_factory=ImageSettings)  # edge.config.images
    early_hints: bool = True
    tls: TlsSettings | None = None  # the HTTPS listener (edge.config.tls)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def node_cache_bytes(self) -> int:
        """The node tier's budget: `node_cache.max_bytes`, else `memory.max_bytes`."""
        if self.node_cache_max_bytes is not None:
            return self.node_cache_max_bytes
        return self.memory_max_bytes

    @property
    def hot_bytes(self) -> int:
        """Each worker's hot copy: `memory.hot_bytes`; by default an eighth of the node
        budget shared by the workers (32 MB per worker of the default 256 MB with one
        worker); the whole budget when the node tier is off. An object bigger than the hot
        copy is served from the node tier, with a copy per hit."""
        if self.memory_hot_bytes is not None:
            return self.memory_hot_bytes
        if not self.node_cache_enabled:
            return self.memory_max_bytes
        return self.memory_max_bytes // (8 * self.workers)

    def rule_for(self, path: str, query_names: Container[str]) -> Rule | None:
        """The first rule whose pattern matches (rules are read top to bottom)."""
        for rule in self.rules:
            if path_matches(rule.glob, rule.with_query, path, query_names):  # rule.matches
                return rule
        return None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}


class _Reader:
    """Walks the YAML document, remembering where it is for error messages."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {where}: {message}")

    def mapping(self, value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, "expected a mapping")
        unknown = sorted(set(map(str, value)) - allowed)
        if unknown:
            raise self.fail(
                f"{where}.{unknown[0]}" if where else unknown[0],
                f"unknown key (known: {', '.join(sorted(allowed))})",
            )
        return value

    def duration(self, value: Any, where: str) -> float:
        if isinstance(value, bool):
            raise self.fail(where, "expected a duration like 30s, 15m, 1d")
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            m = _DURATION.match(str(value))
            if not m:
                raise self.fail(where, f"expected a duration like 30s, 15m, 1d, got {value!r}")
            seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        # NaN (YAML `.nan`) passes every comparison: reject it explicitly.
        if math.isnan(seconds) or seconds < 0 or seconds > 10 * 365 * 86400:
            raise self.fail(where, "duration out of range (0 to 10 years)")
        return seconds

    def size(self, value: Any, where: str) -> int:
        if isinstance(value, bool):
            raise self.fail(where, "expected a size like 64m or 2g")
        if isinstance(value, int):
            n = value
        else:
            m = _SIZE.match(str(value))
            if not m:
                raise self.fail(where, f"expected a size like 512k, 64m, 2g, got {value!r}")
            unit = (m.group(2) or "").lower()[:1]
            n = int(float(m.group(1)) * _SIZE_UNITS[unit])
        if n < 0:
            raise self.fail(where, "size must not be negative")
        return n

    def integer(self, value: Any, where: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(where, f"expected an integer from {low} to {high}, got {value!r}")
        return value

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"expected a non-empty string, got {value!r}")
        return value

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"expected true or false, got {value!r}")
        return value

    def strings(self, value: Any, where: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self.fail(where, "expected a list of strings")
        return tuple(self.string(v, f"{where}[{i}]") for i, v in enumerate(value))

    def path_pattern(self, value: Any, where: str) -> str:
        pattern = self.string(value, where)
        if not pattern.startswith("/"):
            raise self.fail(where, f"a path pattern starts with '/', got {pattern!r}")
        return pattern

    def url(self, value: Any, where: str) -> str:
        url = self.string(value, where)
        bad = self.fail(where, f"expected http://host:port, got {url!r}")
        if not re.match(r"^https?://[^/\s?#@]+/?$", url):
            raise bad
        try:
            parts = urlsplit(url)
            port = parts.port  # ValueError for a port that is not a number from 0 to 65535
        except ValueError:
            raise bad from None
        if not parts.hostname or port == 0:
            raise bad
        return url.rstrip("/")

    def redis_url(self, value: Any, where: str) -> str:
        """One Redis, a Sentinel set or a Cluster: `edge.config.redis_url.parse_url`."""
        from edge.config.redis_url import parse_url

        url = self.string(value, where)
        try:
            parse_url(url)
        except ValueError as exc:
            raise self.fail(where, str(exc)) from None
        return url


RULE_KEYS = {
    "match",
    "with_query",
    "ttl",
    "prefer",
    "query",
    "bypass",
    "tags",
    "stale_while_revalidate",
    "stale_if_error",
    "slice",
}


def _slice(r: _Reader, raw: Any, where: str, default: Slicing) -> SlicePolicy:
    """`slice: true`, `slice: false`, or `slice: {size: 128k, parallel: 8}`."""
    if isinstance(raw, bool):
        return SlicePolicy(default.size if raw else 0, default.parallel)
    d = r.mapping(raw, where, {"size", "parallel"})
    size = r.size(d.get("size", default.size), f"{where}.size")
    if size and size < 16 * 1024:
        raise r.fail(f"{where}.size", f"a slice is at least 16k, got {size} bytes")
    parallel = r.integer(d.get("parallel", default.parallel), f"{where}.parallel", 1, 64)
    return SlicePolicy(size, parallel)


def _compression(r: _Reader, raw: Any, where: str) -> Compression:
    d = r.mapping(raw, where, {"enabled", "codings", "min_size", "types"})
    out = Compression()
    changes: dict[str, Any] = {}
    if "enabled" in d:
        changes["enabled"] = r.boolean(d["enabled"], f"{where}.enabled")
    if "codings" in d:
        codings = r.strings(d["codings"], f"{where}.codings")
        for i, c in enumerate(codings):
            if c not in CODING_NAMES:
                raise r.fail(f"{where}.codings[{i}]", f"expected br, zstd or gzip, got {c!r}")
        changes["codings"] = codings
    if "min_size" in d:
        changes["min_size"] = r.size(d["min_size"], f"{where}.min_size")
    if "types" in d:
        changes["types"] = tuple(t.lower() for t in r.strings(d["types"], f"{where}.types"))
    return replace(out, **changes)


def _slicing(r: _Reader, raw: Any, where: str) -> Slicing:
    d = r.mapping(raw, where, {"size", "parallel", "above"})
    out = Slicing()
    size = r.size(d.get("size", out.size), f"{where}.size")
    if size < 16 * 1024:
        raise r.fail(f"{where}.size", f"a slice is at least 16k, got {size} bytes")
    return Slicing(
        size=size,
        parallel=r.integer(d.get("parallel", out.parallel), f"{where}.parallel", 1, 64),
        above=r.size(d.get("above", out.above), f"{where}.above"),
    )


def _rule(r: _Reader, raw: Any, where: str, slicing: Slicing = Slicing()) -> Rule:
    d = r.mapping(raw, where, RULE_KEYS)
    if "match" not in d:
        raise r.fail(f"{where}.match", "missing (a path pattern such as /api/misc/*)")
    prefer = d.get("prefer", "origin")
    if prefer not in ("origin", "rule"):
        raise r.fail(f"{where}.prefer", f"expected 'origin' or 'rule', got {prefer!r}")
    terms = RuleTerms(
        ttl=r.duration(d["ttl"], f"{where}.ttl") if d.get("ttl") is not None else None,
        rule_wins=prefer == "rule",
        stale_while_revalidate=(
            r.duration(d["stale_while_revalidate"], f"{where}.stale_while_revalidate")
            if "stale_while_revalidate" in d
            else None
        ),
        stale_if_error=(
            r.duration(d["stale_if_error"], f"{where}.stale_if_error")
            if "stale_if_error" in d
            else None
        ),
    )
    return Rule(
        match=r.path_pattern(d["match"], f"{where}.match"),
        with_query=r.strings(d.get("with_query"), f"{where}.with_query"),
        terms=terms,
        query=_query(r, d.get("query", "all"), f"{where}.query"),
        bypass=r.boolean(d.get("bypass", False), f"{where}.bypass"),
        tags=r.strings(d.get("tags"), f"{where}.tags"),
        slice=_slice(r, d["slice"], f"{where}.slice", slicing) if "slice" in d else None,
    )


def _query(r: _Reader, raw: Any, where: str) -> QueryPolicy:
    if raw in ("all", None):
        return QueryPolicy("all")
    if raw == "none":
        return QueryPolicy("none")
    if isinstance(raw, dict):
        d = r.mapping(raw, where, {"allow", "ignore"})
        if len(d) != 1:
            raise r.fail(where, "give exactly one of allow: [...] or ignore: [...]")
        mode: QueryMode = "allow" if "allow" in d else "ignore"
        return QueryPolicy(mode, frozenset(r.strings(d[mode], f"{where}.{mode}")))
    raise r.fail(where, f"expected all, none, {{allow: [...]}} or {{ignore: [...]}}, got {raw!r}")


def _invalidation(r: _Reader, raw: Any, where: str) -> Invalidation:
    d = r.mapping(raw, where, {"match", "with_query", "urls", "prefixes", "tags"})
    if "match" not in d:
        raise r.fail(f"{where}.match", "missing (the request path that invalidates)")
    inv = Invalidation(
        match=r.path_pattern(d["match"], f"{where}.match"),
        with_query=r.strings(d.get("with_query"), f"{where}.with_query"),
        urls=r.strings(d.get("urls"), f"{where}.urls"),
        prefixes=r.strings(d.get("prefixes"), f"{where}.prefixes"),
        tags=r.strings(d.get("tags"), f"{where}.tags"),
    )
    for name, values in (("urls", inv.urls), ("prefixes", inv.prefixes)):
        for i, u in enumerate(values):
            if not u.startswith("/"):
                raise r.fail(f"{where}.{name}[{i}]", f"must start with '/', got {u!r}")
    return inv


TOP_KEYS = {
    "node",
    "listen",
    "origins",
    "workers",
    "redis",
    "purge",
    "timeouts",
    "memory",
    "node_cache",
    "hosts",
    "limits",
    "defaults",
    "headers",
    "rules",
    "invalidate",
    "compression",
    "slices",
    "images",
    "early_hints",
    "tls",
}


def parse_config(doc: Any, source: str) -> EdgeConfig:
    """Build an EdgeConfig from a parsed YAML document, validating every key."""
    r = _Reader(source)
    top = r.mapping(doc, "", TOP_KEYS)
    cfg = EdgeConfig(source=source)
    changes: dict[str, Any] = {}
    if "node" in top:
        changes["node"] = r.string(top["node"], "node")
    listen = r.mapping(top.get("listen"), "listen", {"host", "port"})
    if "host" in listen:
        changes["host"] = r.string(listen["host"], "listen.host")
    if "port" in listen:
        changes["port"] = r.integer(listen["port"], "listen.port", 1, 65535)
    if "origins" in top:
        origins = r.strings(top["origins"], "origins")
        if not origins:
            raise r.fail("origins", "at least one origin URL is needed")
        changes["origins"] = tuple(r.url(o, f"origins[{i}]") for i, o in enumerate(origins))
    if "workers" in top:
        changes["workers"] = r.integer(top["workers"], "workers", 1, 64)
    redis = r.mapping(top.get("redis"), "redis", {"url", "prefix", "timeout"})
    if redis.get("url") is not None:
        changes["redis_url"] = r.redis_url(redis["url"], "redis.url")
    if "prefix" in redis:
        changes["redis_prefix"] = r.string(redis["prefix"], "redis.prefix")
    if "timeout" in redis:
        changes["redis_timeout"] = r.duration(redis["timeout"], "redis.timeout")
    purge = r.mapping(top.get("purge"), "purge", {"token", "staleness_bound"})
    if purge.get("token") is not None:
        changes["purge_token"] = r.string(purge["token"], "purge.token")
    if "staleness_bound" in purge:
        changes["purge_staleness_bound"] = r.duration(
            purge["staleness_bound"], "purge.staleness_bound"
        )
    timeouts = r.mapping(
        top.get("timeouts"),
        "timeouts",
        {"connect", "read", "collapse", "origin_down", "origin_idle"},
    )
    for key, attr in (
        ("connect", "connect_timeout"),
        ("read", "read_timeout"),
        ("origin_down", "origin_down"),
        ("origin_idle", "origin_idle"),
    ):
        if key in timeouts:
            changes[attr] = r.duration(timeouts[key], f"timeouts.{key}")
    if "collapse" in timeouts:
        changes["collapse_timeout"] = r.duration(timeouts["collapse"], "timeouts.collapse")
    memory = r.mapping(
        top.get("memory"), "memory", {"max_bytes", "max_object_bytes", "hot_bytes", "sendfile"}
    )
    if "hot_bytes" in memory:
        changes["memory_hot_bytes"] = r.size(memory["hot_bytes"], "memory.hot_bytes")
    if "sendfile" in memory:
        changes["memory_sendfile"] = r.boolean(memory["sendfile"], "memory.sendfile")
    node_cache = r.mapping(top.get("node_cache"), "node_cache", {"enabled", "path", "max_bytes"})
    if "enabled" in node_cache:
        changes["node_cache_enabled"] = r.boolean(node_cache["enabled"], "node_cache.enabled")
    if node_cache.get("path") is not None:
        changes["node_cache_path"] = r.string(node_cache["path"], "node_cache.path")
    if node_cache.get("max_bytes") is not None:
        changes["node_cache_max_bytes"] = r.size(node_cache["max_bytes"], "node_cache.max_bytes")
    if "hosts" in top:
        hosts = r.strings(top["hosts"], "hosts")
        for i, h in enumerate(hosts):
            if not re.match(r"^[A-Za-z0-9.\-\[\]:]+$", h):
                raise r.fail(f"hosts[{i}]", f"expected a host name like shop.example, got {h!r}")
        changes["hosts"] = tuple(h.lower() for h in hosts)
    if "max_bytes" in memory:
        changes["memory_max_bytes"] = r.size(memory["max_bytes"], "memory.max_bytes")
    if "max_object_bytes" in memory:
        changes["memory_max_object_bytes"] = r.size(
            memory["max_object_bytes"], "memory.max_object_bytes"
        )
    limits = r.mapping(
        top.get("limits"),
        "limits",
        {
            "max_request_body",
            "max_line_size",
            "max_field_size",
            "max_headers",
            "keepalive_timeout",
            "header_timeout",
            "body_timeout",
            "body_min_rate",
            "max_connections",
            "kept",
        },
    )
    if "body_timeout" in limits:
        changes["body_timeout"] = r.duration(limits["body_timeout"], "limits.body_timeout")
    if "body_min_rate" in limits:
        changes["body_min_rate"] = r.integer(
            limits["body_min_rate"], "limits.body_min_rate", 0, 1 << 30
        )
    if "max_request_body" in limits:
        changes["max_request_body"] = r.size(limits["max_request_body"], "limits.max_request_body")
    for key in ("max_line_size", "max_field_size"):
        if key in limits:
            changes[key] = r.integer(limits[key], f"limits.{key}", 256, 1 << 20)
    if "keepalive_timeout" in limits:
        changes["keepalive_timeout"] = r.duration(
            limits["keepalive_timeout"], "limits.keepalive_timeout"
        )
    if "header_timeout" in limits:
        changes["header_timeout"] = r.duration(limits["header_timeout"], "limits.header_timeout")
    if "max_headers" in limits:
        changes["max_headers"] = r.integer(limits["max_headers"], "limits.max_headers", 8, 1024)
    if "max_connections" in limits:
        changes["max_connections"] = r.integer(
            limits["max_connections"], "limits.max_connections", 1, 1 << 20
        )
    if limits.get("kept") is not None:
        kept = r.mapping(limits["kept"], "limits.kept", set(ledger.KINDS))
        changes["kept_limits"] = {
            kind: r.size(value, f"limits.kept.{kind}") for kind, value in kept.items()
        }
    defaults = r.mapping(
        top.get("defaults"),
        "defaults",
        {"stale_if_error", "stale_while_revalidate", "heuristic_max", "keep"},
    )
    changes["defaults"] = Defaults(
        stale_if_error=r.duration(defaults.get("stale_if_error", 0), "defaults.stale_if_error"),
        stale_while_revalidate=r.duration(
            defaults.get("stale_while_revalidate", 0), "defaults.stale_while_revalidate"
        ),
        heuristic_max=r.duration(defaults.get("heuristic_max", 86400), "defaults.heuristic_max"),
        keep=r.duration(defaults.get("keep", 3600), "defaults.keep"),
    )
    headers = r.mapping(top.get("headers"), "headers", {"keep_tag_headers"})
    if "keep_tag_headers" in headers:
        changes["keep_tag_headers"] = r.boolean(
            headers["keep_tag_headers"], "headers.keep_tag_headers"
        )
    changes["compression"] = _compression(r, top.get("compression"), "compression")
    slicing = _slicing(r, top.get("slices"), "slices")
    changes["slicing"] = slicing
    changes["images"] = parse_images(r, top.get("images"))
    if "early_hints" in top:
        changes["early_hints"] = r.boolean(top["early_hints"], "early_hints")
    rules = top.get("rules") or []
    if not isinstance(rules, list):
        raise r.fail("rules", "expected a list of rules")
    changes["rules"] = tuple(_rule(r, raw, f"rules[{i}]", slicing) for i, raw in enumerate(rules))
    inv = top.get("invalidate") or []
    if not isinstance(inv, list):
        raise r.fail("invalidate", "expected a list")
    changes["invalidations"] = tuple(
        _invalidation(r, raw, f"invalidate[{i}]") for i, raw in enumerate(inv)
    )
    changes["tls"] = parse_tls(r, top.get("tls"))
    return replace(cfg, **changes)


def load_config(path: str | Path | None) -> EdgeConfig:
    """Read a YAML file (or the built-in defaults when `path` is None)."""
    if path is None:
        return EdgeConfig()
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    return parse_config(doc, str(p))


ENV_VARS = (
    "EDGE_ORIGIN",
    "EDGE_REDIS_URL",
    "EDGE_PURGE_TOKEN",
    "EDGE_PURGE_TOKEN_FILE",
    "EDGE_NODE",
    "EDGE_PORT",
    "EDGE_HOST",
    "EDGE_WORKERS",
    "EDGE_TLS_PORT",
    "EDGE_TLS_CERT",
    "EDGE_TLS_KEY",
    "EDGE_NODE_CACHE_PATH",
)


def apply_overrides(cfg: EdgeConfig, env: dict[str, str], **flags: Any) -> EdgeConfig:
    """Environment over the file, command-line flags over both (None flags are ignored)."""
    r = _Reader("environment")
    changes: dict[str, Any] = {}
    if env.get("EDGE_ORIGIN"):
        changes["origins"] = tuple(
            r.url(u.strip(), "EDGE_ORIGIN") for u in env["EDGE_ORIGIN"].split(",") if u.strip()
        )
    if env.get("EDGE_REDIS_URL"):
        changes["redis_url"] = r.redis_url(env["EDGE_REDIS_URL"], "EDGE_REDIS_URL")
    token_from = f"{cfg.source}: purge.token"
    if env.get("EDGE_PURGE_TOKEN_FILE"):
        token_path = env["EDGE_PURGE_TOKEN_FILE"]
        try:
            changes["purge_token"] = Path(token_path).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(
                f"environment: EDGE_PURGE_TOKEN_FILE: cannot read {token_path}: {reason}"
            ) from exc
        token_from = f"environment: EDGE_PURGE_TOKEN_FILE ({token_path})"
    if env.get("EDGE_PURGE_TOKEN"):
        changes["purge_token"] = env["EDGE_PURGE_TOKEN"]
        token_from = "environment: EDGE_PURGE_TOKEN"
    if env.get("EDGE_NODE"):
        changes["node"] = env["EDGE_NODE"]
    if env.get("EDGE_HOST"):
        changes["host"] = env["EDGE_HOST"]
    if env.get("EDGE_NODE_CACHE_PATH"):
        changes["node_cache_path"] = env["EDGE_NODE_CACHE_PATH"]
        changes["node_cache_enabled"] = True
    for name, attr, high in (("EDGE_PORT", "port", 65535), ("EDGE_WORKERS", "workers", 64)):
        if env.get(name):
            try:
                changes[attr] = r.integer(int(env[name]), name, 1, high)
            except ValueError:
                raise r.fail(name, f"expected an integer, got {env[name]!r}") from None
    tls = override_tls(
        r,
        cfg.tls,
        env.get("EDGE_TLS_PORT"),
        env.get("EDGE_TLS_CERT"),
        env.get("EDGE_TLS_KEY"),
        ("EDGE_TLS_PORT", "EDGE_TLS_CERT", "EDGE_TLS_KEY"),
    )
    tls = override_tls(
        _Reader("command line"),
        tls,
        flags.pop("tls_port", None),
        flags.pop("cert", None),
        flags.pop("key", None),
        ("--tls-port", "--cert", "--key"),
    )
    if tls is not cfg.tls:
        changes["tls"] = tls
    cli = _Reader("command line")
    for attr, value in flags.items():
        if value is None:
            continue
        if attr == "origins":
            value = tuple(cli.url(u.strip(), "--origin") for u in value for u in u.split(","))
        elif attr == "port":
            value = cli.integer(value, "--port", 1, 65535)
        elif attr == "workers":
            value = cli.integer(value, "--workers", 1, 64)
        elif attr == "redis_url":
            value = cli.redis_url(value, "--redis")
        elif attr == "purge_token":
            token_from = "command line: --token"
        elif attr in ("host", "node"):
            value = cli.string(value, f"--{attr}")
        changes[attr] = value
    out = replace(cfg, **changes)
    if out.workers > 1 and not out.node_cache_enabled and out.redis_url is None:
        # Each worker would keep a cache of its own, and a purge (or the invalidation after a
        # write) reaches the worker that received it only, answered 200 all the same.
        raise ConfigError(
            f"{cfg.source}: workers: {out.workers} with node_cache.enabled: false and no "
            "redis.url: a purge would reach one worker only; turn the node tier on, give the "
            "node a Redis, or run one worker"
        )
    if out.purge_token is not None and len(out.purge_token) < 16:
        raise ConfigError(
            f"{token_from}: at least 16 characters are needed (a short token can be guessed)"
        )
    return out


def config_from_environment(path: str | None, **flags: Any) -> EdgeConfig:
    return apply_overrides(load_config(path), dict(os.environ), **flags)
