"""stack.yml: valid for `docker stack config`, shaped like the lab, and accepted by our CLIs."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest

from tests.deploy.helpers import (
    DATABASE_ENV,
    DOCKERFILES,
    DOCS,
    EDGE_ENV,
    ORIGIN_ENV,
    REPO,
    STACK,
    load_stack,
    need_tool,
    real_parser,
)


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return load_stack()


def services(stack: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = stack["services"]
    return result


def test_docker_stack_config_accepts_the_stack() -> None:
    docker = need_tool("docker")
    result = subprocess.run(
        [docker, "stack", "config", "-c", str(STACK)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "woody-edge" in result.stdout


def test_services_mirror_the_lab(stack: dict[str, Any]) -> None:
    s = services(stack)
    assert stack["version"] == "3.9"
    assert set(s) == {
        "database",
        "redis",
        "api",
        "front",
        "proxy",
        "edge",
        "prometheus",
        "grafana",
    }

    db = s["database"]
    assert "--max-connections=1" in db["command"]
    assert db["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    assert any(v.startswith("mysql-data:") for v in db["volumes"])
    assert "mysql-data" in stack["volumes"]

    api = s["api"]
    assert api["deploy"]["replicas"] == 5
    assert api["deploy"]["placement"]["constraints"] == ["node.role == worker"]
    assert "/api/ping" in " ".join(api["healthcheck"]["test"])

    assert s["front"]["deploy"]["replicas"] == 2
    proxy_ports = [(p["published"], p["target"]) for p in s["proxy"]["ports"]]
    assert proxy_ports == [(8081, 8080)]


def test_edge_is_global_on_port_80_with_rolling_updates(stack: dict[str, Any]) -> None:
    edge = services(stack)["edge"]
    deploy = edge["deploy"]
    assert deploy["mode"] == "global"
    assert deploy["update_config"]["order"] == "start-first"
    assert deploy["restart_policy"]["condition"] in {"any", "on-failure"}
    assert deploy["resources"]["limits"]["memory"]
    assert deploy["resources"]["limits"]["cpus"]
    port, https = edge["ports"]
    assert (port["published"], port["target"]) == (80, 8080)
    assert (https["published"], https["target"]) == (443, 8443)
    # start-first puts the new task beside the old one on the same node: only the routing mesh
    # (ingress) lets both exist; a host-mode port would make the update fail.
    assert port.get("mode", "ingress") == "ingress"
    assert https.get("mode", "ingress") == "ingress"
    env = edge["environment"]
    assert env["EDGE_ORIGIN"] == "http://proxy:8080"
    assert env["EDGE_REDIS_URL"].startswith("redis://redis:6379")
    assert env["EDGE_PURGE_TOKEN_FILE"] == "/run/secrets/woody_purge_token"
    assert edge["secrets"] == ["woody_purge_token", "woody_tls_cert", "woody_tls_key"]
    assert stack["secrets"]["woody_purge_token"]["external"] is True
    assert env["EDGE_TLS_PORT"] == "8443"
    assert env["EDGE_TLS_CERT"] == "/run/secrets/woody_tls_cert"
    assert env["EDGE_TLS_KEY"] == "/run/secrets/woody_tls_key"
    assert stack["secrets"]["woody_tls_key"]["external"] is True
    (config,) = edge["configs"]
    assert stack["configs"][config["source"]]["file"] == "./config/edge.yaml"
    assert edge["networks"] == ["woody"]
    assert stack["networks"]["woody"]["driver"] == "overlay"


def test_all_services_share_the_overlay_network(stack: dict[str, Any]) -> None:
    for name, service in services(stack).items():
        assert service["networks"] == ["woody"], name


def test_no_secret_values_in_the_stack() -> None:
    text = STACK.read_text()
    assert not re.search(r"PASSWORD\s*[:=]\s*\S", text.replace("PASSWORD_FILE", "")), (
        "passwords come from Docker secrets (*_FILE), never from stack.yml"
    )
    assert "EDGE_PURGE_TOKEN:" not in text


def test_config_files_exist(stack: dict[str, Any]) -> None:
    for name, config in stack["configs"].items():
        path = REPO / config["file"]
        assert path.is_file(), f"config {name}: {config['file']} is missing"


def test_images_are_the_ones_publish_images_builds(stack: dict[str, Any]) -> None:
    script = (REPO / "scripts" / "publish-images").read_text()
    built = set(re.findall(r'"(woody-[a-z]+):(deploy/[a-z]+/Dockerfile)"', script))
    assert built == {(name, str(path.relative_to(REPO))) for name, path in DOCKERFILES.items()}
    ours = {
        re.search(r"/(woody-[a-z]+):", svc["image"]).group(1)  # type: ignore[union-attr]
        for svc in services(stack).values()
        if "woody-" in svc["image"]
    }
    assert ours == set(DOCKERFILES)


# --- what the stack passes to our programs -----------------------------------------------------


def _entrypoint_db_args() -> list[str]:
    """What deploy/docker-entrypoint.sh appends for the ORIGIN_DB_* variables of the stack."""
    return ["--db", "mysql://root:secret@database:3306/woody"]


def test_edge_command_parses_with_the_real_edge_cli(stack: dict[str, Any]) -> None:
    parser = real_parser("edge")
    command = services(stack)["edge"]["command"]
    assert command[:3] == ["python", "-m", "edge"]
    args = parser.parse_args(command[3:])
    assert args.port == 8080
    assert args.config == "/etc/woody/edge.yaml"
    target = services(stack)["edge"]["configs"][0]["target"]
    assert target == args.config


def test_api_command_parses_with_the_real_origin_cli(stack: dict[str, Any]) -> None:
    parser = real_parser("origin")
    api = services(stack)["api"]
    command = api["command"]
    assert command[:3] == ["python", "-m", "origin"]
    args = parser.parse_args(command[3:] + _entrypoint_db_args())
    assert args.command == "serve"
    assert args.port == 5000  # the proxy's upstream: config/nginx/proxy.conf says api:5000
    assert args.static_rate == 0  # the proxy throttles, like the lab
    assert "server api:5000;" in (REPO / "config" / "nginx" / "proxy.conf").read_text()
    assert f"{args.port}/api/ping" in " ".join(api["healthcheck"]["test"])


def test_dockerfile_cmds_parse_with_the_real_clis() -> None:
    import json

    for package, dockerfile in (("origin", "origin"), ("edge", "edge")):
        text = (REPO / "deploy" / dockerfile / "Dockerfile").read_text()
        (cmd,) = re.findall(r"^CMD (\[.*\])$", text, re.M)
        argv = json.loads(cmd)
        assert argv[:3] == ["python", "-m", package]
        real_parser(package).parse_args(argv[3:])


def test_env_names_are_known_and_documented(stack: dict[str, Any]) -> None:
    known = {
        "edge": EDGE_ENV,
        "api": ORIGIN_ENV,
        "database": DATABASE_ENV,
    }
    docs = DOCS.read_text()
    for service, names in known.items():
        env = services(stack)[service].get("environment", {})
        unknown = set(env) - set(names)
        assert not unknown, f"{service}: undocumented variables {sorted(unknown)}"
        for name in env:
            assert f"`{name}`" in docs, f"docs/deploy.md does not explain {name}"
    for name in EDGE_ENV:
        assert f"`{name}`" in docs, f"docs/deploy.md does not explain {name}"
    for name in ORIGIN_ENV:
        assert name in (REPO / "deploy" / "docker-entrypoint.sh").read_text()


def test_edge_reads_the_env_names_the_stack_sets(stack: dict[str, Any]) -> None:
    """Every EDGE_* variable the stack sets is read by the edge or by the image's entrypoint."""
    sources = "\n".join(
        p.read_text() for p in (REPO / "edge").rglob("*.py") if p.name != "__init__.py"
    )
    entrypoint = (REPO / "deploy" / "docker-entrypoint.sh").read_text()
    for name in services(stack)["edge"]["environment"]:
        assert name in sources or name in entrypoint, f"nothing reads {name}"
