"""deploy/: every Dockerfile COPYs files that exist and its .dockerignore lets through; the
images are labelled, unprivileged and health-checked; the entrypoint turns secrets into config."""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.helpers import DEPLOY, DOCKERFILES, LOCAL_DOCKERFILES, REPO

ALL_DOCKERFILES = {**DOCKERFILES, **LOCAL_DOCKERFILES}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def copy_sources(dockerfile: Path) -> list[str]:
    """Sources of the COPY instructions that read the build context (not --from=stage)."""
    sources = []
    for word, rest in instructions(dockerfile):
        if word not in {"COPY", "ADD"}:
            continue
        parts = rest.split()
        if any(p.startswith("--from=") for p in parts):
            continue
        parts = [p for p in parts if not p.startswith("--")]
        sources += parts[:-1]
    return sources


def allowed_by_dockerignore(dockerfile: Path, source: str) -> bool:
    """Our .dockerignore files are allow-lists: `*`, then `!path` for what goes in."""
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    lines = [ln.strip() for ln in ignore.read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    assert lines[0] == "*", f"{ignore}: expected an allow-list starting with *"
    allowed = [ln[1:] for ln in lines if ln.startswith("!")]
    source = source.rstrip("/")
    return any(
        source == a or source.startswith(a + "/") or fnmatch.fnmatch(a, source) for a in allowed
    )


@pytest.mark.parametrize("name", sorted(ALL_DOCKERFILES))
def test_every_copied_file_exists_and_is_in_the_context(name: str) -> None:
    dockerfile = ALL_DOCKERFILES[name]
    sources = copy_sources(dockerfile)
    assert sources or name == "woody-redis", f"{name}: no COPY?"  # Redis needs no file of ours
    for source in sources:
        matches = list(REPO.glob(source.rstrip("/")))
        optional = "[" in source  # README.m[d]: a glob that may match nothing
        assert matches or optional, f"{dockerfile}: COPY {source}: no such file in the repo"
        assert allowed_by_dockerignore(dockerfile, source), (
            f"{dockerfile}: COPY {source} is excluded by its .dockerignore"
        )


@pytest.mark.parametrize("name", sorted(ALL_DOCKERFILES))
def test_images_are_labelled_healthchecked_and_secret_free(name: str) -> None:
    dockerfile = ALL_DOCKERFILES[name]
    steps = instructions(dockerfile)
    words = [w for w, _ in steps]
    assert "HEALTHCHECK" in words
    assert any(w == "ARG" and r.startswith("GIT_COMMIT") for w, r in steps)
    labels = " ".join(r for w, r in steps if w == "LABEL")
    assert 'org.opencontainers.image.revision="${GIT_COMMIT}"' in labels
    # Every base is a build argument whose default is the official image (scripts/swarm-smoke
    # passes a local Debian); a later stage may start from an earlier one.
    args = dict(r.split("=", 1) for w, r in steps if w == "ARG" and "=" in r)
    stages = {r.split()[-1] for w, r in steps if w == "FROM" and " AS " in r}
    for base in (r.split()[0] for w, r in steps if w == "FROM"):
        if base in stages:
            continue
        arg = re.fullmatch(r"\$\{(\w+)\}", base)
        assert arg, f"{dockerfile}: FROM {base}: the base must be a build argument"
        default = args[arg.group(1)]
        assert default.startswith(
            ("python:3.11-slim", "nginx:", "mysql:8", "redis:7", "debian:bookworm")
        ), default
    # The commit's label comes last: a new commit does not invalidate the cached layers.
    assert words[-1] == "LABEL" and steps[-3] == ("ARG", "GIT_COMMIT=unknown")
    assert "# syntax=" not in dockerfile.read_text(), "a syntax line pulls a frontend image"
    text = dockerfile.read_text()
    assert not re.search(r"(PASSWORD|TOKEN)=(?!\$)\S", text), "no secrets baked in"


@pytest.mark.parametrize("name", ["woody-edge", "woody-api", "woody-front", "woody-proxy"])
def test_images_run_unprivileged(name: str) -> None:
    steps = instructions(DOCKERFILES[name])
    users = [r for w, r in steps if w == "USER"]
    assert users and users[-1] not in {"root", "0"}
    # An unprivileged process cannot bind below 1024: every port it listens on is 8080 or 5000.
    exposed = [r for w, r in steps if w == "EXPOSE"]
    assert all(int(p) >= 1024 for p in exposed)


def test_database_runs_mysqld_as_mysql() -> None:
    # The official image starts as root only to initialize, then drops to user `mysql` (gosu).
    assert instructions(DOCKERFILES["woody-database"])[0] == ("ARG", "BASE=mysql:8.0")
    # The MariaDB stand-in does the same: its entrypoint ends in `mysqld --user=mysql`.
    entrypoint = (DEPLOY / "database" / "mariadb-entrypoint.sh").read_text()
    assert 'exec "$@" --user=mysql' in entrypoint


def test_mariadb_entrypoint_sets_the_password_and_runs_init_sql(tmp_path: Path) -> None:
    """The stand-in's entrypoint, with mariadb-install-db, mariadbd and the clients faked."""
    script = DEPLOY / "database" / "mariadb-entrypoint.sh"
    assert os.access(script, os.X_OK)
    text = script.read_text()
    for needed in ("MYSQL_ROOT_PASSWORD_FILE", "MYSQL_DATABASE", "/docker-entrypoint-initdb.d",
                   "--skip-networking", "'root'@'%'"):  # fmt: skip
        assert needed in text, needed
    subprocess.run(["sh", "-n", str(script)], check=True)
    # A command that is not mysqld runs as is (as with the official image).
    out = subprocess.run(
        ["/bin/sh", str(script), "echo", "plain"], capture_output=True, text=True, check=True
    )
    assert out.stdout == "plain\n"


def test_init_sql_has_the_lab_schema_and_seeds() -> None:
    sql = (DEPLOY / "database" / "init.sql").read_text()
    assert re.search(r"CREATE TABLE IF NOT EXISTS product \(\s*id INT AUTO_INCREMENT", sql)
    assert "CREATE TABLE IF NOT EXISTS `order`" in sql  # reserved word, quoted
    assert re.search(r"order_id VARCHAR\(200\),\s*status VARCHAR\(200\),\s*product VARCHAR", sql)
    assert "(1, 'Yoyo'), (2, 'Joli train')" in sql
    assert not re.search(r"[^`]\border\b\s*\(", sql), "unquoted `order`"


def test_init_sql_runs_on_mariadb(mysql_url: str) -> None:
    """The init script runs as is on the machine's MariaDB (MySQL-compatible), then the seeds."""
    from urllib.parse import urlparse

    import pymysql

    parsed = urlparse(mysql_url)
    name = parsed.path.lstrip("/")
    sql = (DEPLOY / "database" / "init.sql").read_text().replace("woody", name)
    conn = pymysql.connect(
        host=parsed.hostname or "127.0.0.1",
        port=parsed.port or 3306,
        user=parsed.username or "root",
        password=parsed.password or "",
        client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS,
    )
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            while cur.nextset():
                pass
            cur.execute(f"SELECT id, name FROM `{name}`.product ORDER BY id")
            assert cur.fetchall() == ((1, "Yoyo"), (2, "Joli train"))
            cur.execute(f"SELECT COUNT(*) FROM `{name}`.`order`")
            assert cur.fetchone() == (0,)
    finally:
        conn.close()


def test_requirements_from_pyproject_keeps_pins_and_drops_what_the_role_needs_not() -> None:
    script = DEPLOY / "requirements_from_pyproject.py"
    out = subprocess.run(
        [sys.executable, str(script), str(REPO / "pyproject.toml"), "matplotlib", "Pillow"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out, "no requirements?"
    assert all("==" in req for req in out), out
    names = {req.split("==")[0].lower() for req in out}
    assert "aiohttp" in names and "matplotlib" not in names and "pillow" not in names


def _entrypoint(env: dict[str, str], *cmd: str) -> list[str]:
    script = DEPLOY / "docker-entrypoint.sh"
    assert os.access(script, os.X_OK), "the entrypoint must be executable"
    base = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    out = subprocess.run(
        ["/bin/sh", str(script), *cmd],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()


def test_entrypoint_exports_the_purge_token_from_its_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret-token")
    out = _entrypoint(
        {"EDGE_PURGE_TOKEN_FILE": str(secret)}, "sh", "-c", 'echo "$EDGE_PURGE_TOKEN"'
    )
    assert out == ["s3cret-token"]


def test_entrypoint_builds_the_db_url_with_a_quoted_password(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("p@ss/w:rd\n")
    env = {"ORIGIN_DB_HOST": "database", "ORIGIN_DB_PASSWORD_FILE": str(secret)}
    out = _entrypoint(env, "printf", "%s\\n", "serve", "--port", "5000")
    assert out == [
        "serve",
        "--port",
        "5000",
        "--db",
        "mysql://root:p%40ss%2Fw%3Ard@database:3306/woody",
    ]


def test_entrypoint_leaves_the_command_alone_without_variables() -> None:
    assert _entrypoint({}, "printf", "%s\\n", "a b", "c") == ["a b", "c"]
