"""`images:`: image conversion at the edge (see edge/cache/images.py, edge/engine/images.py).

images:
  enabled: true
  max_pixels: 40000000     # larger images are not converted (the original is served)
  time_limit: 10s          # per conversion; past it the worker process is ended
  workers: 1               # conversion processes per edge worker
  worker_memory: 768m      # address space of each conversion process (RLIMIT_AS)
  rules:
    - prefix: /
      formats: [avif, webp]
      widths: [640, 960, 1280, 1920, 2560]
      hints: true          # widths from Client Hints; Accept-CH on HTML answers
      quality: {avif: 50, webp: 75, jpeg: 80}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.config.settings import _Reader

FORMATS = ("avif", "webp")  # what the edge converts to, in its order of preference
# The encoders of the formats a conversion may write (an original resized in its own format
# is written with the original's encoder).
QUALITY_FORMATS = ("avif", "webp", "jpeg")
# Chosen on the lab's photo (origin/static/5mo.jpg, 3200x2000, bench/image_cost.py): at
# 1280 px, AVIF 50 gives 49 KB at 30.6 dB PSNR (60: 101 KB, 30.8 dB), WebP 75 107 KB at
# 30.6 dB (85: 236 KB, 31.6 dB): past these the bytes double for a few tenths of a dB.
DEFAULT_QUALITY: tuple[tuple[str, int], ...] = (("avif", 50), ("webp", 75), ("jpeg", 80))
DEFAULT_WIDTHS = (640, 960, 1280, 1920, 2560)
IMAGES_KEYS = {"enabled", "max_pixels", "time_limit", "workers", "worker_memory", "rules"}
RULE_KEYS = {"prefix", "formats", "widths", "hints", "quality"}


@dataclass(frozen=True, slots=True)
class ImageRule:
    """Images under `prefix`: the formats offered, the widths allowed, the quality of each."""

    prefix: str = "/"
    formats: tuple[str, ...] = FORMATS
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    hints: bool = True
    quality: tuple[tuple[str, int], ...] = DEFAULT_QUALITY

    def quality_of(self, fmt: str) -> int:
        return dict(self.quality).get(fmt, 80)


@dataclass(frozen=True, slots=True)
class ImageSettings:
    enabled: bool = False
    max_pixels: int = 40_000_000
    time_limit: float = 10.0
    workers: int = 1
    worker_memory: int = 768 * 2**20
    rules: tuple[ImageRule, ...] = field(default_factory=tuple)

    def rule_for(self, path: str) -> ImageRule | None:
        """The rule of the longest prefix `path` starts with; None: not converted."""
        best: ImageRule | None = None
        for rule in self.rules:
            if not path.startswith(rule.prefix):
                continue
            if best is None or len(rule.prefix) > len(best.prefix):
                best = rule
        return best


def parse_images(r: _Reader, raw: Any) -> ImageSettings:
    """The `images:` section (absent: off)."""
    if raw is None:
        return ImageSettings()
    d = r.mapping(raw, "images", IMAGES_KEYS)
    out = ImageSettings()
    enabled = r.boolean(d["enabled"], "images.enabled") if "enabled" in d else True
    max_pixels = (
        r.integer(d["max_pixels"], "images.max_pixels", 1, 1_000_000_000)
        if "max_pixels" in d
        else out.max_pixels
    )
    time_limit = (
        r.duration(d["time_limit"], "images.time_limit") if "time_limit" in d else out.time_limit
    )
    if not 0.1 <= time_limit <= 300:
        raise r.fail("images.time_limit", f"expected 100ms to 300s, got {time_limit:g} s")
    workers = r.integer(d.get("workers", out.workers), "images.workers", 1, 64)
    memory = (
        r.size(d["worker_memory"], "images.worker_memory")
        if "worker_memory" in d
        else out.worker_memory
    )
    if memory < 64 * 2**20:
        raise r.fail("images.worker_memory", f"at least 64m, got {memory} bytes")
    raw_rules = d.get("rules")
    if raw_rules is None:
        rules: tuple[ImageRule, ...] = (ImageRule(),)
    elif not isinstance(raw_rules, list):
        raise r.fail("images.rules", "expected a list of {prefix, formats, widths, quality}")
    else:
        rules = tuple(_rule(r, x, f"images.rules[{i}]") for i, x in enumerate(raw_rules))
    return ImageSettings(enabled, max_pixels, time_limit, workers, memory, rules)


def _rule(r: _Reader, raw: Any, where: str) -> ImageRule:
    d = r.mapping(raw, where, RULE_KEYS)
    default = ImageRule()
    prefix = r.path_pattern(d.get("prefix", "/"), f"{where}.prefix")
    formats = default.formats
    if "formats" in d:
        formats = r.strings(d["formats"], f"{where}.formats")
        for i, f in enumerate(formats):
            if f not in FORMATS:
                raise r.fail(f"{where}.formats[{i}]", f"expected avif or webp, got {f!r}")
        formats = tuple(f for f in FORMATS if f in formats)  # the edge's order: AVIF first
    widths = default.widths
    if "widths" in d:
        if not isinstance(d["widths"], list):
            raise r.fail(f"{where}.widths", "expected a list of widths in pixels")
        given = {r.integer(w, f"{where}.widths[{i}]", 16, 16384) for i, w in enumerate(d["widths"])}
        widths = tuple(sorted(given))
    hints = r.boolean(d["hints"], f"{where}.hints") if "hints" in d else default.hints
    quality = dict(default.quality)
    if "quality" in d:
        q = r.mapping(d["quality"], f"{where}.quality", set(QUALITY_FORMATS))
        for name, value in q.items():
            quality[name] = r.integer(value, f"{where}.quality.{name}", 1, 100)
    return ImageRule(
        prefix, formats, widths, hints, tuple((f, quality[f]) for f in QUALITY_FORMATS)
    )
