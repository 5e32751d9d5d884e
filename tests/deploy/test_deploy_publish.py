"""scripts/publish-images: builds, tags and pushes the names it says, and stops at a failure.

A fake `docker` on PATH records its calls; it fails on the call number given by FAIL_AT.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.deploy.helpers import DOCKERFILES, REPO

SCRIPT = REPO / "scripts" / "publish-images"


def fake_docker(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(
        "#!/bin/sh\n"
        'n=$(($(cat "$CALLS.n" 2>/dev/null || echo 0) + 1)); echo "$n" > "$CALLS.n"\n'
        'echo "$*" >> "$CALLS"\n'
        'if [ "$n" = "${FAIL_AT:-0}" ]; then echo "docker: refused" >&2; exit 1; fi\n'
    )
    docker.chmod(0o755)
    return bin_dir


def run(
    tmp_path: Path, *args: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    calls = tmp_path / "calls"
    full_env = {
        **os.environ,
        "PATH": f"{fake_docker(tmp_path)}:{os.environ['PATH']}",
        "CALLS": str(calls),
        **env,
    }
    result = subprocess.run(
        [str(SCRIPT), *args], env=full_env, capture_output=True, text=True, timeout=60
    )
    lines = calls.read_text().splitlines() if calls.exists() else []
    return result, lines


def test_script_is_executable_strict_bash() -> None:
    assert os.access(SCRIPT, os.X_OK)
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_builds_tags_and_pushes_every_image(tmp_path: Path) -> None:
    result, calls = run(tmp_path, "1.4", REGISTRY="registry.test:5000", IMAGE_PREFIX="woody")
    assert result.returncode == 0, result.stderr
    builds = [c for c in calls if c.startswith("build ")]
    assert len(builds) == len(DOCKERFILES)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    for name, dockerfile in DOCKERFILES.items():
        repo = f"registry.test:5000/woody/{name}"
        (build,) = [b for b in builds if f"--tag {repo}:1.4 " in b]
        assert f"--file {dockerfile.relative_to(REPO)} " in build
        assert f"--build-arg GIT_COMMIT={commit}" in build
        assert f"tag {repo}:1.4 {repo}:latest" in calls
        assert f"push {repo}:1.4" in calls
        assert f"push {repo}:latest" in calls
    # Every build comes before any push: a broken image is never half-published.
    last_build = max(i for i, c in enumerate(calls) if c.startswith("build "))
    first_push = min(i for i, c in enumerate(calls) if c.startswith("push "))
    assert last_build < first_push


def test_stops_at_the_first_failure(tmp_path: Path) -> None:
    result, calls = run(tmp_path, "1.0", FAIL_AT="3")
    assert result.returncode != 0
    assert len(calls) == 3, calls
    assert "refused" in result.stderr


def test_push_0_only_builds_and_dry_run_runs_nothing(tmp_path: Path) -> None:
    result, calls = run(tmp_path, "2.0", PUSH="0")
    assert result.returncode == 0, result.stderr
    assert calls and not any(c.startswith("push ") for c in calls)
    (tmp_path / "calls").unlink()
    dry = tmp_path / "dry"
    dry.mkdir()
    result, calls = run(dry, "2.0", DRY_RUN="1")
    assert result.returncode == 0
    assert calls == []
    assert "+ docker push docker.io/woodytoys/woody-edge:2.0" in result.stdout
