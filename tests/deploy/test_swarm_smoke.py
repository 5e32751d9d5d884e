"""scripts/swarm-smoke and the override it deploys with (deploy/swarm/local.yml).

The real run (images built, stack deployed, the lab measured) is scripts/swarm-smoke itself, which
.ci/run runs after these tests. Here: the override is valid for `docker stack config` together
with stack.yml and changes only what a machine without IPVS and without a registry needs; the
script's pure parts (command line, page assets, load summaries, report) behave.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.deploy.helpers import (
    DOCKERFILES,
    LOCAL_DOCKERFILES,
    OVERRIDE,
    REPO,
    STACK,
    assert_script,
    assert_usage_error,
    load_stack,
    script_module,
    stack_config,
)

SCRIPT = REPO / "scripts" / "swarm-smoke"


@pytest.fixture(scope="module")
def smoke() -> ModuleType:
    return script_module("swarm_smoke")


@pytest.fixture(scope="module")
def merged() -> dict[str, Any]:
    """stack.yml + deploy/swarm/local.yml as `docker stack config` merges them for the smoke."""
    return stack_config(STACK, OVERRIDE, api_role="manager")


def test_override_makes_every_service_dnsrr_with_host_ports(merged: dict[str, Any]) -> None:
    services = merged["services"]
    assert set(services) == set(load_stack()["services"])
    for name, service in services.items():
        assert service["deploy"]["endpoint_mode"] == "dnsrr", name
        for port in service.get("ports", []):
            assert port["mode"] == "host", name
    ports = {
        n: [(p["published"], p["target"]) for p in s.get("ports", [])] for n, s in services.items()
    }
    assert ports["edge"] == [(80, 8080), (443, 8443)] and ports["proxy"] == [(8081, 8080)]
    edge = services["edge"]["deploy"]
    # A host port cannot be bound twice on one node: start-first could never place the new task.
    assert edge["update_config"]["order"] == "stop-first"
    assert edge["rollback_config"]["order"] == "stop-first"
    assert edge["mode"] == "global"
    assert services["proxy"]["deploy"]["replicas"] == 1
    assert services["api"]["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    command = services["api"]["command"]
    assert command.count("python") == 1, "a list was appended instead of replaced"
    assert command[command.index("--heavy-seconds") + 1] == "2"
    assert command[command.index("--db-seconds") + 1] == "3"
    (proxy_config,) = services["proxy"]["configs"]
    assert merged["configs"][proxy_config["source"]]["file"].endswith("proxy-dnsrr.conf")


def test_override_sets_no_list_that_docker_20_would_append() -> None:
    """docker 20.10 appends lists (command, constraints, configs) when it merges stack files."""
    with OVERRIDE.open() as f:
        override = yaml.safe_load(f)
    for name, service in override["services"].items():
        assert not {"command", "configs", "secrets", "volumes"} & set(service), name
        assert "placement" not in service.get("deploy", {}), name


def test_every_image_of_the_merged_stack_is_built_by_the_smoke(
    merged: dict[str, Any], smoke: ModuleType
) -> None:
    built = {f"local/woodytoys/{name}:smoke" for name, _, _ in smoke.image_builds()}
    running = [s for n, s in merged["services"].items() if n not in smoke.NOT_RUN_HERE]
    assert {s["image"] for s in running} == built
    dockerfiles = {dockerfile for _, dockerfile, _ in smoke.image_builds()}
    expected = {**DOCKERFILES, **LOCAL_DOCKERFILES}
    expected.pop("woody-database")  # mysql:8.0 cannot be pulled here: MariaDB stands in
    assert dockerfiles == {str(p.relative_to(REPO)) for p in expected.values()}


def test_stack_defaults_stay_the_labs() -> None:
    stack = load_stack()
    command = stack["services"]["api"]["command"]
    assert command[command.index("--heavy-seconds") + 1] == "5"
    assert command[command.index("--db-seconds") + 1] == "15"
    edge = stack["services"]["edge"]
    assert edge["environment"]["EDGE_NODE"] == "{{.Task.Name}}"
    assert "edge-cache:/var/cache/woody-edge" in edge["volumes"]
    assert "edge-cache" in stack["volumes"]


def test_script_is_executable_and_valid(smoke: ModuleType) -> None:
    options = ("--keep", "--down", "--heavy-seconds", "--db-seconds", "--edge-port")
    assert_script(SCRIPT, REPO / "scripts" / "swarm_smoke.py", options)


@pytest.mark.parametrize(
    "argv",
    [
        ["--keep", "--down"],
        ["--edge-port", "0"],
        ["--edge-port", "http"],
        ["--heavy-seconds", "-1"],
        ["--db-seconds", "soon"],
        ["--edge-port", "8081"],
    ],
)
def test_bad_options_are_refused_clearly(argv: list[str]) -> None:
    assert_usage_error(REPO / "scripts" / "swarm_smoke.py", argv)


def test_page_assets_follow_the_page_and_its_stylesheet(smoke: ModuleType) -> None:
    static = REPO / "origin" / "static"
    page = smoke.page_assets("/", (static / "index.html").read_text(), False)
    assert {"/woody.css", "/htmx.min.js", "/spinner.svg"} <= set(page)
    assert smoke.page_assets("/woody.css", (static / "woody.css").read_text(), True) == ["/5mo.jpg"]
    html = '<a href="http://elsewhere/x">x</a><img src="data:1"><img src="a/b.png"><a href="#t">'
    assert smoke.page_assets("/", html, False) == ["/a/b.png"]


def test_summarize_counts_failures_and_the_longest_gap(smoke: ModuleType) -> None:
    sample = smoke.Sample
    samples = [
        sample(0.0, 0.1, True, 200, "a", ""),
        sample(1.0, 1.0, False, 0, "", "ConnectionRefusedError"),
        sample(2.0, 2.0, False, 502, "", ""),
        sample(4.0, 4.2, True, 200, "b", ""),
    ]
    summary = smoke.summarize(samples, since=0.0)
    assert summary["requests"] == 4 and summary["failed"] == 2
    assert summary["errors"] == {"ConnectionRefusedError": 1, "HTTP 502": 1}
    assert summary["longest_gap_s"] == pytest.approx(4.1)


def test_load_is_bounded_in_count(smoke: ModuleType) -> None:
    """Against a closed port: every request fails fast, and the load stops at max_requests."""
    from bench.procs import free_port

    with smoke.Load(free_port(), "/", threads=2, pause=0, max_requests=20, max_seconds=10) as load:
        deadline = 10.0
        while len(load.snapshot()) < 20 and load.now() < deadline:
            load.wait_for(lambda s: False, 0.2)
    samples = load.snapshot()
    assert 20 <= len(samples) <= 22
    assert not any(s.ok for s in samples)


def test_proxy_dnsrr_conf_keeps_the_lab_rules() -> None:
    text = (REPO / "config" / "nginx" / "proxy-dnsrr.conf").read_text()
    assert "limit_rate 300k;" in text
    assert "resolver 127.0.0.11" in text
    assert "proxy_pass http://$woody_api;" in text and "set $woody_api api:5000;" in text
    assert "listen 8080;" in text


def test_proxy_dnsrr_conf_passes_nginx_t(tmp_path: Path) -> None:
    from tests.deploy.test_deploy_nginx import nginx_test, render

    result = nginx_test(render("proxy-dnsrr.conf", tmp_path, {}), tmp_path)
    assert result.returncode == 0, result.stderr
