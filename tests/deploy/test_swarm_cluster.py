"""scripts/swarm-cluster and the override it adds (deploy/swarm/cluster.yml).

The real run (three machines in network namespaces, the stack deployed across them, a worker
lost under load) is scripts/swarm-cluster itself (root, Docker; `.ci/run --cluster`). Here: the
three stack files merge, with `docker stack config`, into the placement the cluster needs; the
round-robin clients fall back to the next address on a refused connection; the command line and
the report behave.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.deploy.helpers import (
    OVERRIDE,
    REPO,
    STACK,
    assert_script,
    assert_usage_error,
    script_module,
    stack_config,
)

CLUSTER = REPO / "deploy" / "swarm" / "cluster.yml"
SCRIPT = REPO / "scripts" / "swarm-cluster"


@pytest.fixture(scope="module")
def cluster() -> ModuleType:
    return script_module("swarm_cluster")


@pytest.fixture(scope="module")
def merged() -> dict[str, Any]:
    """stack.yml + local.yml + cluster.yml as scripts/swarm-cluster deploys them."""
    return stack_config(STACK, OVERRIDE, CLUSTER)


def test_cluster_places_the_services_by_role(merged: dict[str, Any]) -> None:
    services = merged["services"]
    constraints = {
        n: s["deploy"].get("placement", {}).get("constraints") for n, s in services.items()
    }
    assert constraints["database"] == ["node.role == manager"]
    assert constraints["redis"] == ["node.role == manager"]
    # The lab's placement: API_NODE_ROLE unset sends the API to the workers.
    assert constraints["api"] == ["node.role == worker"]
    assert constraints["edge"] == ["node.role == worker"]
    assert services["edge"]["deploy"]["mode"] == "global"
    proxy = services["proxy"]["deploy"]
    assert constraints["proxy"] == ["node.role == worker"]
    assert proxy["replicas"] == 2 and proxy["placement"]["max_replicas_per_node"] == 1
    # Each worker's edge keeps its node tier on that machine's own volume.
    assert services["edge"]["volumes"] == [
        {"type": "volume", "source": "edge-cache", "target": "/var/cache/woody-edge"}
    ]


def test_cluster_changes_only_placement_over_the_one_node_override(
    merged: dict[str, Any],
) -> None:
    one_node = stack_config(STACK, OVERRIDE, api_role="worker")
    changed = {}
    for name, service in merged["services"].items():
        before = one_node["services"][name]
        if service != before:
            diff = {k for k in set(service) | set(before) if service.get(k) != before.get(k)}
            changed[name] = diff
    assert changed == {"redis": {"deploy"}, "proxy": {"deploy"}, "edge": {"deploy"}}
    for name in changed:
        deploy, before = merged["services"][name]["deploy"], one_node["services"][name]["deploy"]
        keys = {k for k in set(deploy) | set(before) if deploy.get(k) != before.get(k)}
        assert keys <= {"placement", "replicas"}, (name, keys)
    # Still no IPVS: dnsrr and host-mode ports everywhere, the edge updated stop-first.
    for name, service in merged["services"].items():
        assert service["deploy"]["endpoint_mode"] == "dnsrr", name
        assert all(p["mode"] == "host" for p in service.get("ports", [])), name
    assert merged["services"]["edge"]["deploy"]["update_config"]["order"] == "stop-first"


def test_cluster_override_sets_no_list_docker_20_would_append_twice() -> None:
    """Constraint lists are appended when docker merges stack files: the override may only add
    them where stack.yml has none."""
    override = yaml.safe_load(CLUSTER.read_text())
    stack = yaml.safe_load(STACK.read_text())
    for name, service in override["services"].items():
        assert not {"command", "configs", "secrets", "volumes", "ports"} & set(service), name
        if "placement" in service.get("deploy", {}):
            assert "placement" not in stack["services"][name].get("deploy", {}), name


def test_machines_get_distinct_addresses_on_one_subnet(cluster: ModuleType) -> None:
    addresses = list(cluster.ADDRESS.values())
    assert len(set(addresses)) == 3
    assert all(a.startswith(cluster.SUBNET + ".") for a in addresses)
    assert cluster.BRIDGE_ADDR not in addresses
    # Interface names must fit the kernel's 15 characters.
    assert all(len(cluster.veth(n)) <= 15 for n in cluster.NODES)
    assert len(cluster.BRIDGE) <= 15


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Served-By", "edge-b")
        self.send_header("X-Cache", "HIT")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def one_server() -> Iterator[int]:
    """An HTTP server on 127.0.0.2 only: the same port on 127.0.0.1 refuses connections."""
    server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_round_robin_clients_fall_back_to_the_next_address(
    cluster: ModuleType, one_server: int
) -> None:
    hosts = ["127.0.0.1", "127.0.0.2"]
    with cluster.RoundRobinLoad(
        hosts, one_server, "/", threads=2, pause=0.01, max_requests=20, max_seconds=60, timeout=10
    ) as load:
        while len(load.snapshot()) < 20 and load.now() < 60:
            load.wait_for(lambda s: False, 0.2)
    samples = load.snapshot()
    assert len(samples) >= 20
    # Every request was answered: the refused address was skipped for the other one.
    assert all(s.ok and s.served_by == "edge-b" for s in samples)
    by_address = cluster.attempts_summary(load, 0.0)
    refused = by_address["127.0.0.1"]
    assert refused["failed"] == refused["requests"] >= 8
    assert set(refused["errors"]) == {"ConnectionRefusedError"}
    assert by_address["127.0.0.2"]["failed"] == 0
    # Half the requests started at each address (round robin).
    assert abs(refused["requests"] - len(samples) / 2) <= 2


def test_percentile_and_latency(cluster: ModuleType) -> None:
    values = [i / 1000 for i in range(1, 101)]
    assert cluster.percentile(values, 0.99) == pytest.approx(0.099)
    assert cluster.percentile(values, 0.5) == pytest.approx(0.050)
    assert cluster.percentile([0.3], 0.99) == 0.3
    sample = cluster.Sample
    got = cluster.latency([sample(0, 0.002, True, 200, "", ""), sample(1, 9, False, 0, "", "x")])
    assert got == {"p50_s": 0.002, "p99_s": 0.002, "max_s": 0.002}


def test_script_is_executable_and_valid_and_refuses_bad_options() -> None:
    module = REPO / "scripts" / "swarm_cluster.py"
    assert_script(SCRIPT, module, ("--down", "--purges", "--lose", "--loss-timeout"))
    bad = (
        ["--lose", "manager"],  # the manager holds the database: only a worker is lost
        ["--lose", "worker3"],
        ["--purges", "0"],
        ["--loss-timeout", "soon"],
        ["--edge-port", "8081"],  # the proxy's
        ["--edge-port", "70000"],
    )
    for argv in bad:
        assert_usage_error(module, argv)


def test_report_renders_every_table(cluster: ModuleType) -> None:
    def part(failed: int = 0) -> dict[str, Any]:
        return {
            "requests": 10,
            "failed": failed,
            "errors": {"TimeoutError": failed} if failed else {},
            "longest_gap_s": 0.1,
            "slowest_failure_s": 2.0 if failed else 0,
            "answered_all_after_s": 0,
            "latency": {"p50_s": 0.001, "p99_s": 0.002, "max_s": 0.003},
        }

    report = {
        "started": "2026-12-07 03:00:00 UTC",
        "commit": "abc",
        "setup": "Three machines.",
        "purge": {
            "purges": 100,
            "seen": 100,
            "failures": [],
            "p50_ms": 2.0,
            "p99_ms": 5.0,
            "max_ms": 6.0,
            "purge_p50_ms": 3.0,
            "purge_p99_ms": 7.0,
            "edge_p50_ms": 1.5,
            "edge_p99_ms": 4.0,
            "acks": {"4/4": 100},
        },
        "update": {
            **part(),
            "by_address": {"192.168.213.11": part(3)},
            "update_state": "completed",
            "update_s": 50.0,
            "new_tasks": {"worker1": {"after_s": 5.0, "first_cache": "HIT"}},
        },
        "loss": {
            "lost": "worker2",
            "survivor": "worker1",
            "killed_processes": 30,
            "kill_s": 0.5,
            "node_down_s": 12.0,
            "api_before": {"worker1": 2, "worker2": 3},
            "api_after": {"worker1": 5},
            "api_moved_s": 30.0,
            "loads": {"round robin": {**part(), "by_address": {"192.168.213.12": part(4)}}},
        },
        "steps": {"lab table": 50.0},
        "checks": [{"name": "edges healthy", "ok": False, "detail": "1 of 2"}],
        "targets": [
            {"name": "purge p99", "ok": False, "detail": "25 ms"},
            {"name": "warm page", "ok": True, "detail": "20 ms"},
        ],
    }
    text = cluster.render(report)
    row = "| 100 | 100 | 2.0 ms | 5.0 ms | 6.0 ms | 3.0 / 7.0 ms (1.5 / 4.0 ms) | 4/4 ×100 |"
    assert row in text
    assert "4/4 ×100" in text
    assert "completed in 50.0 s" in text and "worker1: after 5.0 s, first answer HIT" in text
    assert "worker1 2, worker2 3 -> worker1 5 (all 5 on worker1 after 30.0 s)" in text
    assert "192.168.213.12: 4/10 (TimeoutError 4, slowest failure 2.00 s)" in text
    assert "Cluster checks: 0 of 1 hold.\n- FAILED: edges healthy: 1 of 2" in text
    assert "Targets (issue 30): 1 of 2 met.\n- MISSED: purge p99: 25 ms" in text


def test_a_request_in_flight_when_a_machine_is_lost_counts_with_the_loss(
    cluster: ModuleType,
) -> None:
    sample = cluster.Sample
    samples = [
        sample(-3.0, -2.9, True, 200, "a", ""),  # done before: not counted
        sample(-0.5, 4.5, False, 0, "", "TimeoutError"),  # in flight at the loss
        sample(4.6, 4.7, True, 200, "a", ""),
    ]
    got = cluster.since_mark(samples, 0.0)
    assert got["requests"] == 2 and got["failed"] == 1
    assert got["errors"] == {"TimeoutError": 1}
    assert got["longest_gap_s"] == pytest.approx(5.2)


def test_attempts_to_a_lost_machine_are_told_apart_by_how_they_ended(
    cluster: ModuleType,
) -> None:
    """Refused or unreachable (the network answered), at the client's timeout, or past it."""
    load = cluster.RoundRobinLoad(["10.0.0.1", "10.0.0.2"], 80, "/", timeout=2)
    sample, attempt = cluster.Sample, cluster.Attempt
    load.attempts += [
        attempt("10.0.0.1", sample(1.0, 1.01, False, 0, "", "ConnectionRefusedError")),
        attempt("10.0.0.1", sample(2.0, 2.0, False, 0, "", "OSError EHOSTUNREACH")),
        attempt("10.0.0.1", sample(3.0, 5.02, False, 0, "", "TimeoutError")),
        attempt("10.0.0.1", sample(6.0, 8.6, False, 0, "", "TimeoutError")),  # a hang past it
        attempt("10.0.0.2", sample(1.01, 1.02, True, 200, "b", "")),
    ]
    got = cluster.attempts_summary(load, 0.0)
    lost = got["10.0.0.1"]
    assert (lost["failed"], lost["failed_by_network"], lost["failed_at_timeout"]) == (4, 2, 2)
    assert lost["past_timeout"] == 1 and lost["slowest_failure_s"] == 2.6
    assert got["10.0.0.2"]["failed"] == got["10.0.0.2"]["past_timeout"] == 0
    text = cluster.by_address(got)
    assert "2 refused, reset or unreachable, 2 at the client's timeout, 1 past it" in text
