"""`python -m bench.delivery images`: PSNR on known images, the painted area, the table, and
(in Chromium) the page with images off weighed against the files the origin serves."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
from PIL import Image

from bench.delivery.images import (
    IMAGE,
    images_run,
    images_table,
    painted,
    painted_area,
    psnr,
    quality,
)
from tests.bench.helpers import require_edge, require_tool


def _solid(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Image.Image:
    return Image.new("RGB", size, colour)


def _photo(size: tuple[int, int] = (320, 200)) -> Image.Image:
    """A picture with smooth parts and edges: gradients and a checkerboard in blue."""
    w, h = size
    img = Image.new("RGB", size)
    img.putdata(
        [
            ((x * 255) // w, (y * 255) // h, 160 if (x // 16 + y // 16) % 2 else 100)
            for y in range(h)
            for x in range(w)
        ]
    )
    return img


def _encoded(img: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def test_psnr_of_known_differences() -> None:
    black = _solid((0, 0, 0))
    assert math.isinf(psnr(black, _solid((0, 0, 0))))
    # Every sample off by 10: MSE 100, PSNR 10 log10(255² / 100) = 28.13 dB.
    assert psnr(black, _solid((10, 10, 10))) == pytest.approx(28.13, abs=0.01)
    # One band of three off by 30: MSE 900 / 3 = 300, 23.36 dB; the order does not matter.
    assert psnr(_solid((0, 30, 0)), black) == pytest.approx(23.36, abs=0.01)
    # Half the pixels off by 255 in every band: MSE 255² / 2, 3.01 dB.
    half = Image.new("RGB", (64, 48))
    half.paste((255, 255, 255), (0, 0, 32, 48))
    assert psnr(half, black) == pytest.approx(3.01, abs=0.01)
    with pytest.raises(ValueError, match="sizes differ"):
        psnr(black, _solid((0, 0, 0), (10, 10)))


def test_painted_cover_keeps_the_aspect_and_crops_the_middle() -> None:
    # Left half red, right half blue, 200x100, painted on a 100x100 square: `cover` scales by
    # 1 (the height fits) and shows the middle 100 columns: red then blue, split in the middle.
    img = Image.new("RGB", (200, 100), (255, 0, 0))
    img.paste((0, 0, 255), (100, 0, 200, 100))
    shown = painted(img, 100, 100, "cover")
    assert shown.size == (100, 100)
    assert shown.getpixel((10, 50)) == (255, 0, 0)
    assert shown.getpixel((90, 50)) == (0, 0, 255)
    # Stretched instead, the whole width is squeezed in.
    assert painted(img, 100, 100, "box").getpixel((10, 50)) == (255, 0, 0)
    # The lab's photo shape (16:10) on a 1280x800 viewport: scaled, nothing cropped.
    assert painted(_solid((1, 2, 3), (3200, 2000)), 1280, 800, "cover").size == (1280, 800)


def test_painted_area_from_the_page() -> None:
    fixed = {
        "box": [1280, 1400],
        "viewport": [1280, 800],
        "size": "cover",
        "attachment": "fixed",
        "dpr": 2,
    }
    # A fixed background is painted over the viewport, whatever the element's box.
    assert painted_area(fixed) == (2560, 1600, "cover")
    scrolling = {**fixed, "attachment": "scroll", "size": "100% 100%", "dpr": 1}
    assert painted_area(scrolling) == (1280, 1400, "box")


def test_quality_of_smaller_and_converted_copies() -> None:
    seen = {"box": [160, 100], "viewport": [160, 100], "size": "cover", "attachment": "fixed"}
    seen["dpr"] = 1
    photo = _photo()
    original = _encoded(photo, "PNG")
    same = quality(original, original, seen)
    assert same["identical_bytes"] and math.isinf(same["psnr_db"])
    good = quality(original, _encoded(photo, "JPEG", quality=95), seen)
    poor = quality(original, _encoded(photo, "JPEG", quality=5), seen)
    assert good["delivered_format"] == "JPEG"
    assert good["psnr_db"] > poor["psnr_db"] + 5
    # A copy half the size, converted to AVIF: compared at the painted 160x100, not its own.
    small = photo.resize((160, 100), Image.Resampling.LANCZOS)
    avif = quality(original, _encoded(small, "AVIF", quality=80), seen)
    assert avif["delivered_format"] == "AVIF"
    assert avif["delivered_size"] == [160, 100]
    assert avif["painted"] == [160, 100, "cover"]
    assert 30 < avif["psnr_db"] < math.inf


def _load(
    total: int, image: int, done: float, kind: str = "image/jpeg", db: float = math.inf
) -> dict[str, Any]:
    return {
        "total": total,
        "resources": {"/": total - image, IMAGE: image},
        "done_ms": done,
        "image": {"transfer": image, "encoded": image - 300, "end": done - 5, "type": kind},
        "quality": {"psnr_db": db},
    }


def _data(on: dict[str, Any]) -> dict[str, Any]:
    off = {
        "cold": [_load(5_061_000, 5_000_300, 2400.0), _load(5_061_000, 5_000_300, 2300.0)],
        "warm": [_load(5_061_000, 5_000_300, 90.0)] * 2,
    }
    return {
        "static_rate": 300 * 1024,
        "rounds": 2,
        "viewport": [1280, 800, 1.0],
        "runs": {"off": off, "on": on},
    }


def test_table_rows_and_targets() -> None:
    on = {
        "cold": [
            _load(5_061_000, 5_000_300, 2350.0),
            _load(140_000, 80_000, 2000.0, "image/avif", 36.04),
        ],
        "warm": [_load(140_000, 80_000, 40.0, "image/avif", 36.04)] * 2,
    }
    on["conversions"] = {
        'edge_image_conversions_total{node="e",format="avif",outcome="converted"}': 1.0,
        'edge_image_conversion_seconds_total{node="e"}': 0.61,
        'edge_image_bytes_saved_total{node="e"}': 4950628.0,
    }
    warm = on["warm"][0]
    warm["quality"]["delivered_size"] = [1280, 800]
    warm["image"]["request"] = {"Accept": "image/avif,*/*", "Sec-CH-DPR": "1", "Referer": "x"}
    text = images_table(_data(on))
    lines = text.splitlines()
    assert "| off | cold | 5,061,000 | 5,000,300 | image/jpeg | 2,350 (2,300–2,400) |" in text
    assert (
        "| on | warm | 140,000 | 80,000 | image/avif 1280x800 | 40 (40–40) | 35 (35–35) | 36.0 dB |"
        in (text)
    )
    # Cold, the first load may get the original while the variant is made: both shown.
    assert "| on | cold | 140,000–5,061,000 | 80,000–5,000,300 | image/avif, image/jpeg |" in text
    assert text.count("36.0 dB – ∞ (same pixels) |") == 1  # the cold rounds' worst and best
    assert f"| {IMAGE} | 5,000,300 | 5,000,300 | 80,000–5,000,300 | 80,000 |" in lines
    assert any("140,000 bytes on the wire, 2.8% of 5.06 MB" in x and "**met**" in x for x in lines)
    assert (
        "- Images on, warm: the image asked for with `Accept: image/avif,*/*` and "
        "`Sec-CH-DPR: 1`." in lines
    )
    assert (
        "- Images off, warm: the image asked for with `Accept: ?` and no viewport or DPR "
        "hint." in lines
    )
    assert (
        "- Conversions by the edge with images on, whole run: "
        'node="e",format="avif",outcome="converted": 1 (0.61 s CPU).' in lines
    )
    # Cold medians: 2,175 ms on against 2,350 ms off; round by round (they take turns),
    # 2,350 - 2,400 and 2,000 - 2,300.
    assert any(
        "**met** (-175 ms, -7.4%). Round by round, on minus off: median -175 ms, from -300 to "
        "-50; on faster in 2 of 2." in x
        for x in lines
    )
    assert any("2,175 ms with images on, 2,350 ms off" in x and "**met**" in x for x in lines)

    # The cold median a little slower than without, the warm image too poor.
    slow = {
        "cold": [_load(140_000, 80_000, 2600.0, "image/avif", 27.5)] * 2,
        "warm": [_load(140_000, 80_000, 40.0, "image/avif", 27.5)] * 2,
    }
    lines = images_table(_data(slow)).splitlines()
    assert sum("**not met**" in x for x in lines) == 2


def test_table_of_one_side() -> None:
    data = _data({})
    del data["runs"]["on"]
    text = images_table(data)
    assert "| resource | off, cold | off, warm |" in text
    assert "| off | warm | 5,061,000 | 5,000,300 | image/jpeg | 90 (90–90) |" in text
    assert "Targets: not measured (they compare images on with off; this run: off)." in text


@pytest.mark.browser
def test_page_with_images_off_weighs_what_the_origin_serves() -> None:
    """The whole measurement, images off, in Chromium with an unthrottled origin: the image
    arrives byte for byte, every file at its size on disk, the page total is the sum."""
    require_tool("chromium")
    require_tool("chromedriver")
    require_edge()
    from origin.settings import STATIC_DIR

    data = images_run(static_rate=0, rounds=1, labels=("off",))
    run = data["runs"]["off"]
    files = {"/": "index.html", "/woody.css": "woody.css", "/htmx.min.js": "htmx.min.js"}
    files |= {"/spinner.svg": "spinner.svg", IMAGE: IMAGE.lstrip("/")}
    for phase in ("cold", "warm"):
        (load,) = run[phase]
        decoded = {e["name"].split("/", 3)[-1]: e["decoded"] for e in load["entries"]}
        for path, name in files.items():
            assert decoded[path.lstrip("/")] == (STATIC_DIR / name).stat().st_size, path
        assert load["image"]["encoded"] == (STATIC_DIR / "5mo.jpg").stat().st_size
        assert load["total"] == sum(e["transfer"] for e in load["entries"])
        assert load["painted"]["viewport"] == [1280, 800]
        q = load["quality"]
        assert q["identical_bytes"] and math.isinf(q["psnr_db"]) and q["bytes"] == 5_000_000
        assert q["painted"] == [1280, 800, "cover"]
        assert q["delivered_format"] == "JPEG" and q["delivered_size"] == [3200, 2000]
        assert load["image"]["request"]["Accept"].startswith("image/")
    assert "| off | warm |" in images_table(data)
