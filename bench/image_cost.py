"""What converting an image costs and gives, per format, quality and width: the measurement
behind `images:`'s default qualities (edge/config/images.py, docs/delivery.md).

    python -m bench.image_cost [--image origin/static/5mo.jpg] [--out bench/results/...]

Each conversion runs `edge.engine.convert.convert` (the edge's own code) once; CPU seconds
are the process's. PSNR (dB) compares the decoded result with the original resized to the
same size by the same filter (Lanczos), over R, G and B.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import time
from pathlib import Path

from PIL import Image, ImageChops, ImageOps, ImageStat

from edge.engine.convert import convert
from origin.assets import IMAGE_NAME, ensure_image
from origin.settings import STATIC_DIR

QUALITIES = {"avif": (40, 50, 60, 70), "webp": (60, 70, 75, 80, 85), "jpeg": (70, 80, 85)}
DEFAULT = STATIC_DIR / IMAGE_NAME
WIDTHS: tuple[int | None, ...] = (640, 1280, 1920, None)


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    stat = ImageStat.Stat(diff)
    mse = sum(stat.sum2) / (3 * a.width * a.height)
    return 99.0 if mse == 0 else 10 * math.log10(255 * 255 / mse)


def measure(path: Path) -> list[dict[str, object]]:
    body = path.read_bytes()
    original = ImageOps.exif_transpose(Image.open(io.BytesIO(body)))
    rows: list[dict[str, object]] = []
    for width in WIDTHS:
        w = original.width if width is None else width
        h = round(original.height * w / original.width)
        reference = original if width is None else original.resize((w, h), Image.Resampling.LANCZOS)
        for fmt, qualities in QUALITIES.items():
            for q in qualities:
                t0 = time.perf_counter()
                out, ow, oh, cpu = convert(body, fmt, width, q, 100_000_000)
                wall = time.perf_counter() - t0
                decoded = Image.open(io.BytesIO(out))
                decoded.load()
                rows.append(
                    {
                        "format": fmt,
                        "quality": q,
                        "width": ow,
                        "height": oh,
                        "bytes": len(out),
                        "cpu_s": round(cpu, 3),
                        "wall_s": round(wall, 3),
                        "psnr_db": round(psnr(decoded, reference), 2),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=DEFAULT)
    parser.add_argument("--out", default=None, help="JSON file of the rows")
    args = parser.parse_args()
    path = Path(args.image)
    if path == DEFAULT and not path.exists():
        ensure_image(path)  # the lab's photo is rendered, not kept in git
    rows = measure(path)
    table = [
        "| format | quality | width | bytes | CPU s | PSNR dB |",
        "| :--- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        cells = (r["format"], r["quality"], r["width"], f"{r['bytes']:,}", r["cpu_s"], r["psnr_db"])
        table.append("| " + " | ".join(str(c) for c in cells) + " |")
    print("\n".join(table))
    if args.out:
        Path(args.out).write_text(
            json.dumps({"image": str(path), "bytes": path.stat().st_size, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
