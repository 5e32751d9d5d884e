"""`python -m origin assets`: makes `origin/static/5mo.jpg`, the shop's ~5 MB background photo.

The lab's photo is not in its public repository, so a deterministic stand-in is drawn: a warm
wood-coloured gradient with seeded noise (pure Python `random`, no numpy), encoded by Pillow at a
fixed quality, then padded with JPEG comment (COM) segments to exactly 5,000,000 bytes. The same
Pillow gives the same bytes on every run; an existing correct file is left untouched (so its
mtime, hence its ETag, stays stable).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import random
from pathlib import Path

from PIL import Image, ImageOps

from origin.settings import STATIC_DIR

log = logging.getLogger("origin.assets")

IMAGE_NAME = "5mo.jpg"
TARGET_SIZE = 5_000_000
TOLERANCE = 0.05
WIDTH, HEIGHT = 3200, 2000
SEED = 20_240_527
NOISE = 0.33
QUALITY = 95
# sha256 of the image rendered by the pinned Pillow (13.0.0); another Pillow may encode other
# bytes, which is fine: the file is then compared with a fresh rendering instead.
REFERENCE_SHA256 = "32e3337188b58172bfe8e00ad47f95f3e86d886a5414a9f182cae5f386462ff3"
_PAD_TEXT = b"Woodytoys 5mo.jpg stand-in: padding to 5,000,000 bytes. "


def size_ok(size: int) -> bool:
    return abs(size - TARGET_SIZE) <= TARGET_SIZE * TOLERANCE


def _pad(jpeg: bytes, target: int) -> bytes:
    """Insert COM segments after the JFIF APP0 header so the file is exactly `target` bytes."""
    missing = target - len(jpeg)
    if missing < 4 or jpeg[:4] != b"\xff\xd8\xff\xe0":
        return jpeg
    app0_end = 4 + int.from_bytes(jpeg[4:6], "big")
    count = -(-missing // 65537)  # segments of at most 2 marker + 2 length + 65533 payload bytes
    payload_total = missing - 4 * count
    segments = []
    filler = _PAD_TEXT * (65533 // len(_PAD_TEXT) + 1)
    for i in range(count):
        size = payload_total // count + (1 if i < payload_total % count else 0)
        segments.append(b"\xff\xfe" + (size + 2).to_bytes(2, "big") + filler[:size])
    return jpeg[:app0_end] + b"".join(segments) + jpeg[app0_end:]


def render_image() -> bytes:
    """The JPEG bytes (about 0.3 s)."""
    size = (WIDTH, HEIGHT)
    linear = Image.linear_gradient("L").resize(size)
    radial = Image.radial_gradient("L").resize(size)
    base = ImageOps.colorize(Image.blend(linear, radial, 0.5), (92, 52, 24), (236, 196, 140))
    rng = random.Random(SEED)
    noise = Image.frombytes("RGB", size, rng.randbytes(WIDTH * HEIGHT * 3))
    image = Image.blend(base, noise, NOISE)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=QUALITY, optimize=False, progressive=False)
    return _pad(buffer.getvalue(), TARGET_SIZE)


def ensure_image(path: Path | None = None) -> tuple[Path, bool]:
    """Make sure `path` holds the image; return (path, whether it was (re)written)."""
    path = path or STATIC_DIR / IMAGE_NAME
    try:
        current = path.read_bytes()
    except FileNotFoundError:
        current = None
    if current is not None and hashlib.sha256(current).hexdigest() == REFERENCE_SHA256:
        return path, False  # fast path: the bytes the pinned Pillow makes
    data = render_image()
    if current == data:
        return path, False
    if not size_ok(len(data)):
        raise RuntimeError(f"rendered {IMAGE_NAME} is {len(data)} bytes, not 5 MB ±5%")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    log.info("wrote %s (%d bytes, sha256 %s)", path, len(data), hashlib.sha256(data).hexdigest())
    return path, True
