"""5mo.jpg: a real JPEG of 5 MB ±5%, the same bytes on every run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from origin.assets import TARGET_SIZE, ensure_image, render_image, size_ok
from tests.origin.conftest import REPO


def test_rendered_image_is_a_valid_5mb_jpeg(tmp_path: Path) -> None:
    path, written = ensure_image(tmp_path / "5mo.jpg")
    assert written
    data = path.read_bytes()
    assert size_ok(len(data))
    assert abs(len(data) - 5_000_000) <= 250_000
    with Image.open(path) as image:
        assert image.format == "JPEG"
        image.load()  # decodes every scan: the padding did not break it
        assert image.size[0] >= 1920 and image.size[1] >= 1080


def test_rendering_is_deterministic(tmp_path: Path) -> None:
    first = render_image()
    assert render_image() == first
    path, _ = ensure_image(tmp_path / "5mo.jpg")
    assert path.read_bytes() == first


def test_existing_correct_file_is_left_alone(tmp_path: Path) -> None:
    path, _ = ensure_image(tmp_path / "5mo.jpg")
    mtime = path.stat().st_mtime_ns
    started = time.monotonic()
    _, written = ensure_image(path)
    assert not written
    assert path.stat().st_mtime_ns == mtime  # a stable ETag across `make test` runs
    assert time.monotonic() - started < 1.0
    path.write_bytes(b"broken")
    _, written = ensure_image(path)
    assert written
    assert len(path.read_bytes()) == len(render_image())


def test_assets_command_makes_the_shipped_file() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "origin", "assets"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    shipped = REPO / "origin" / "static" / "5mo.jpg"
    assert shipped.read_bytes() == render_image()
    assert TARGET_SIZE == 5_000_000
