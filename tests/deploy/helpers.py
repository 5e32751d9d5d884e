"""Shared helpers of the deploy tests: paths, the stack, and skip-or-fail for missing tools."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "stack.yml"
DEPLOY = REPO / "deploy"
DOCS = REPO / "docs" / "deploy.md"
IN_CI = os.environ.get("CI", "").lower() == "true"

DOCKERFILES = {
    "woody-edge": DEPLOY / "edge" / "Dockerfile",
    "woody-api": DEPLOY / "origin" / "Dockerfile",
    "woody-front": DEPLOY / "front" / "Dockerfile",
    "woody-proxy": DEPLOY / "proxy" / "Dockerfile",
    "woody-database": DEPLOY / "database" / "Dockerfile",
}
# Stand-ins for the official images where no registry can be reached (deploy/swarm/local.yml,
# scripts/swarm-smoke): not in stack.yml, not published.
LOCAL_DOCKERFILES = {
    "woody-database-mariadb": DEPLOY / "database" / "Dockerfile.mariadb",
    "woody-redis": DEPLOY / "redis" / "Dockerfile",
}
OVERRIDE = DEPLOY / "swarm" / "local.yml"

# The environment the stack gives each image, and who reads each variable. docs/deploy.md lists
# the same names; a test keeps the three (stack, this list, the doc) in step.
EDGE_ENV = {
    "EDGE_ORIGIN": "edge: origin URL (overrides edge.yaml)",
    "EDGE_REDIS_URL": "edge: shared Redis tier",
    "EDGE_NODE": "edge: node name",
    "EDGE_TLS_PORT": "edge: HTTPS listener port",
    "EDGE_TLS_CERT": "edge: certificate chain file (a secret)",
    "EDGE_TLS_KEY": "edge: private key file (a secret)",
    "EDGE_HOST": "edge: listen address",
    "EDGE_PORT": "edge: listen port (also read by the image's HEALTHCHECK)",
    "EDGE_PURGE_TOKEN_FILE": "edge and deploy/docker-entrypoint.sh: purge token file (secret)",
    "EDGE_PURGE_TOKEN": "edge: purge token (the entrypoint exports it from the file)",
    "EDGE_WORKERS": "edge: processes per node",
    "EDGE_NODE_CACHE_PATH": "edge: the node tier on disk (the edge-cache volume)",
}
ORIGIN_ENV = {
    "ORIGIN_DB_HOST": "deploy/docker-entrypoint.sh: builds --db",
    "ORIGIN_DB_PORT": "deploy/docker-entrypoint.sh: builds --db",
    "ORIGIN_DB_USER": "deploy/docker-entrypoint.sh: builds --db",
    "ORIGIN_DB_NAME": "deploy/docker-entrypoint.sh: builds --db",
    "ORIGIN_DB_PASSWORD_FILE": "deploy/docker-entrypoint.sh: builds --db",
}
DATABASE_ENV = {
    "MYSQL_DATABASE": "mysql image: database created at init",
    "MYSQL_ROOT_PASSWORD_FILE": "mysql image: root password file (secret)",
}


def need_tool(name: str) -> str:
    """The tool's path; skipped when it is missing, except in CI where it must be there."""
    path = shutil.which(name)
    if path:
        return path
    if IN_CI:
        pytest.fail(f"{name} is not installed (CI=true: .ci/run installs it)")
    pytest.skip(f"{name} is not installed")


def with_defaults(text: str) -> str:
    """`${VAR:-default}` -> default, as `docker stack deploy` reads the file with VAR unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


def load_stack(path: Path = STACK) -> dict[str, Any]:
    """stack.yml as Docker reads it with no variables set (each ${VAR:-default} as its default)."""
    data: dict[str, Any] = yaml.safe_load(with_defaults(path.read_text()))
    return data


def real_parser(package: str) -> Any:
    """`<package>.__main__.build_parser()`: the command line the stack must fit."""
    module = importlib.import_module(f"{package}.__main__")
    return module.build_parser()


def assert_script(command: Path, module: Path, options: tuple[str, ...]) -> None:
    """A scripts/ command: an executable bash wrapper that parses, whose Python module's
    `--help` names the options."""
    assert os.access(command, os.X_OK)
    assert command.read_text().startswith("#!/usr/bin/env bash")
    subprocess.run(["bash", "-n", str(command)], check=True, timeout=60)
    help_text = subprocess.run(
        [sys.executable, str(module), "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    for option in options:
        assert option in help_text


def assert_usage_error(script: Path, argv: list[str]) -> None:
    """Bad options: exit 2 and argparse's `error:` line, before anything is started."""
    result = subprocess.run(
        [sys.executable, str(script), *argv], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "error:" in result.stderr


def stack_config(*files: Path, api_role: str | None = None) -> dict[str, Any]:
    """The stack files merged by `docker stack config` as the swarm scripts deploy them (local
    images, the scripts' short API delays; API_NODE_ROLE only when given)."""
    docker = need_tool("docker")
    env = {
        **os.environ,
        "REGISTRY": "local",
        "IMAGE_PREFIX": "woodytoys",
        "TAG": "smoke",
        "WOODY_HEAVY_SECONDS": "2",
        "WOODY_DB_SECONDS": "3",
    }
    env.pop("API_NODE_ROLE", None)
    if api_role:
        env["API_NODE_ROLE"] = api_role
    args = [arg for f in files for arg in ("-c", str(f))]
    result = subprocess.run(
        [docker, "stack", "config", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = yaml.safe_load(result.stdout)
    return data


def script_module(name: str) -> ModuleType:
    """scripts/<name>.py imported as the module `name` (scripts/ is not a package: the swarm
    scripts import each other from there)."""
    scripts = str(REPO / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
