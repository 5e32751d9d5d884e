"""One image conversion: decode, resize, encode (Pillow). Runs in a conversion process of
`edge.engine.images` (a leaf module: the process imports nothing else of the edge).

A conversion is refused (`Refused`, the original is served) when the image has more pixels
than `max_pixels` (a decompression bomb: checked from the header, before any pixel is
decoded, and by Pillow's own `DecompressionBombError`), is animated, or cannot be decoded
whole (a truncated or corrupt file: Pillow's `LOAD_TRUNCATED_IMAGES` stays off). The
process's address space is bounded by `limit_memory` (RLIMIT_AS) and each conversion's time
by `SIGALRM` (its default action ends the process: an encoder busy in C is not interruptible
otherwise).
"""

from __future__ import annotations

import io
import resource
import signal
import time
import warnings

from PIL import Image, ImageOps

# What a conversion may write; an original resized in its own format keeps its encoder.
ENCODERS = {"avif": "AVIF", "webp": "WEBP", "jpeg": "JPEG", "png": "PNG"}
MIME = {"avif": "image/avif", "webp": "image/webp", "jpeg": "image/jpeg", "png": "image/png"}
ORIENTATION = 0x0112  # the EXIF tag
AVIF_SPEED = 8  # libavif's speed 0 (slowest, smallest) to 10: 8 measured on the lab's photo


class Refused(Exception):
    """The image is not converted; `reason` names why (a metric label)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def limit_memory(max_bytes: int) -> None:
    """A conversion process's initializer: its address space bounded (an allocation past it
    fails with MemoryError, the process stays up); SIGALRM ends it (`convert`'s time limit)."""
    resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the edge's Ctrl-C is the edge's to handle


def probe(body: bytes | memoryview) -> tuple[str, int, int] | None:
    """The format ("jpeg", "png", ...) and size of an image from its header (no pixel is
    decoded); None when Pillow cannot identify it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(body)) as im:
                return (im.format or "").lower(), im.width, im.height
    except Exception:  # any unreadable header: not an image the edge converts
        return None


def convert(
    body: bytes,
    fmt: str,
    width: int | None,
    quality: int,
    max_pixels: int,
    time_limit: float = 0.0,
) -> tuple[bytes, int, int, float]:
    """`body` as `fmt` ("avif", "webp", "jpeg", "png"), `width` pixels wide at most (None:
    its own width; never wider than it is). Returns the bytes, the width and height written,
    and the CPU seconds spent. `time_limit`: seconds before SIGALRM (0: none)."""
    if time_limit > 0:
        signal.setitimer(signal.ITIMER_REAL, time_limit)
    t0 = time.process_time()
    try:
        Image.MAX_IMAGE_PIXELS = max_pixels
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                im = Image.open(io.BytesIO(body))
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise Refused("too-many-pixels") from exc
            except Exception as exc:  # Pillow raises several kinds for a bad header
                raise Refused("unreadable") from exc
            with im:
                w, h = im.size
                if w * h > max_pixels:
                    raise Refused("too-many-pixels")
                if getattr(im, "is_animated", False):
                    raise Refused("animated")
                # The width asked is the width shown: after the EXIF orientation (5 to 8
                # turn the image a quarter).
                turned = im.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8)
                shown_w, shown_h = (h, w) if turned else (w, h)
                target_w = shown_w if width is None or width >= shown_w else width
                target_h = max(1, round(shown_h * target_w / shown_w))
                if im.format == "JPEG" and target_w < shown_w:
                    # Decoded at 1/2, 1/4 or 1/8 when that still covers the size asked.
                    im.draft("RGB", (target_h, target_w) if turned else (target_w, target_h))
                try:
                    im.load()
                    out = ImageOps.exif_transpose(im)
                except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                    raise Refused("too-many-pixels") from exc
                except (OSError, SyntaxError, ValueError) as exc:  # truncated, corrupt
                    raise Refused("unreadable") from exc
                alpha = "A" in out.getbands() or "transparency" in out.info
                mode = "RGBA" if alpha and fmt != "jpeg" else "RGB"
                if out.mode != mode:
                    out = out.convert(mode)
                if out.size != (target_w, target_h):
                    out = out.resize((target_w, target_h), Image.Resampling.LANCZOS)
                buf = io.BytesIO()
                options: dict[str, object] = {"quality": quality}
                if fmt == "avif":
                    options["speed"] = AVIF_SPEED
                if fmt == "png":
                    options = {"optimize": False}
                icc = im.info.get("icc_profile")
                if icc:
                    options["icc_profile"] = icc
                out.save(buf, ENCODERS[fmt], **options)
                return buf.getvalue(), target_w, target_h, time.process_time() - t0
    finally:
        if time_limit > 0:
            signal.setitimer(signal.ITIMER_REAL, 0)
