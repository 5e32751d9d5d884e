"""deploy/swarm/sentinel.yml: the stack's Sentinel variant is well formed, and the edge
accepts the URL it is given."""

from __future__ import annotations

from pathlib import Path

import yaml

from edge.config.redis_url import parse_url
from edge.config.settings import apply_overrides, parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_sentinel_override_is_a_master_a_replica_and_three_sentinels() -> None:
    stack = yaml.safe_load((ROOT / "stack.yml").read_text())
    doc = yaml.safe_load((ROOT / "deploy" / "swarm" / "sentinel.yml").read_text())
    services = doc["services"]
    assert set(services) == {"redis", "redis-replica", "sentinel", "edge"}
    assert set(services) - {"redis-replica", "sentinel"} <= set(stack["services"])
    assert services["redis-replica"]["command"][-3:] == ["--replicaof", "redis", "6379"]
    assert services["sentinel"]["deploy"]["replicas"] == 3
    script = services["sentinel"]["command"][2]
    assert "'sentinel monitor mymaster redis 6379 2'" in script
    assert "'sentinel down-after-milliseconds mymaster 5000'" in script
    for name in ("redis", "redis-replica", "sentinel"):
        assert services[name]["deploy"]["endpoint_mode"] == "dnsrr"
    url = services["edge"]["environment"]["EDGE_REDIS_URL"]
    target = parse_url(url)
    assert (target.mode, target.master, target.nodes) == (
        "sentinel",
        "mymaster",
        (("sentinel", 26379),),
    )
    cfg = apply_overrides(parse_config({}, "edge.yaml"), {"EDGE_REDIS_URL": url})
    assert cfg.redis_url == url
