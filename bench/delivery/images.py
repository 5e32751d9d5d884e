"""`images`: the page in headless Chromium (1280x800, DPR 1) with the edge's image conversion
off and on (`images: {enabled: false|true}`): bytes on the wire, time on a cold and a warm
edge, and the quality of the image shown (PSNR against the original, both scaled to what
the screen displayed).

- **Cold:** the edge is purged (`POST /_edge/purge {"all": true}`: the variants go with
  their URL) and a fresh browser loads the page through it; the origin sends its static files
  at the lab's 300 KB/s per response (`--static-rate`), as in `bench table`.
- **Warm:** after one more load (the edge may make its variants in the background, as it
  makes its compressed copies) and until the image, asked for again with that load's
  request fields every half second, has come back the same size for 5 s, fresh browsers
  (empty caches) load the page from the edge's stored answers.
- Off and on each have an origin and an edge of their own, started first; their loads take
  turns (off, on, off, on, ...), so other work on the machine weighs on both alike.
- **Bytes:** every Resource Timing entry's `transferSize` (headers included).
- **Time:** the last `responseEnd` of the page's own resources (navigation and what it asked
  for, not the browser's `/favicon.ico`), ms from navigation start; the image's too.
- **Quality:** the image's bytes as Chromium received them (DevTools'
  `Network.getResponseBody`; the request's headers, Accept and Sec-CH-*, are kept in the
  JSON from `Network.requestWillBeSentExtraInfo`), in every load, cold and warm. They and the
  original file are decoded with Pillow and scaled to the painted area (the background's
  `background-size: cover` over the viewport when `background-attachment: fixed`, else over
  the element's `getBoundingClientRect()`, times `devicePixelRatio`), then compared: PSNR
  in dB over R, G and B (Pillow's ImageChops and ImageStat; infinite for identical pixels).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import math
import os
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from PIL import Image, ImageChops, ImageOps, ImageStat

from bench.delivery.browser import chromium, edge_config, purge_all, short, visit
from bench.procs import REPO, ProcessGroup
from bench.servers import OriginSpec, start_edge, start_origin

VIEWPORT = (1280, 800, 1.0)  # width, height, device pixel ratio
IMAGE = "/5mo.jpg"
PAGE_BYTES = 5_060_000  # the lab's page today: 5.06 MB, 5.0 MB of it the image
TARGET_SHARE = 0.10  # warm page with images on: at most 10 % of PAGE_BYTES
TARGET_PSNR = 30.0
TOKEN = "bench-delivery-token-0123456789"
CLIENT_HINTS = {"sec-ch-viewport-width", "sec-ch-dpr", "viewport-width", "dpr", "sec-ch-width"}

PAINTED_JS = """
const want = arguments[0];
const view = [document.documentElement.clientWidth, document.documentElement.clientHeight];
for (const el of document.querySelectorAll('*')) {
  const s = getComputedStyle(el);
  const r = el.getBoundingClientRect();
  if (s.backgroundImage.includes(want)) {
    return {element: el.tagName.toLowerCase(), box: [r.width, r.height], viewport: view,
            size: s.backgroundSize, attachment: s.backgroundAttachment,
            dpr: window.devicePixelRatio};
  }
  if (el.tagName === 'IMG' && (el.currentSrc || '').includes(want)) {
    return {element: 'img', box: [r.width, r.height], viewport: view,
            size: s.objectFit === 'cover' ? 'cover' : 'box', attachment: 'scroll',
            dpr: window.devicePixelRatio};
  }
}
return null;
"""


# --- the pure parts: PSNR, scaling to the painted area, the table -------------------------


def psnr(a: Image.Image, b: Image.Image) -> float:
    """Peak signal-to-noise ratio of two images of the same size, in dB over R, G and B
    (8 bits: peak 255); infinite when every pixel is equal."""
    if a.size != b.size:
        raise ValueError(f"sizes differ: {a.size} and {b.size}")
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    stat = ImageStat.Stat(diff)
    mse = sum(s / n for s, n in zip(stat.sum2, stat.count, strict=True)) / len(stat.sum2)
    if mse == 0:
        return math.inf
    return 10 * math.log10(255**2 / mse)


def painted(image: Image.Image, width: int, height: int, fit: str) -> Image.Image:
    """What a `width` x `height` device-pixel area shows of `image`: `cover` scales it to cover
    the area, keeping its aspect, centred and cropped (CSS `background-size: cover`,
    `background-position: center`); anything else stretches it to the area."""
    image = ImageOps.exif_transpose(image).convert("RGB")
    if fit != "cover":
        return image.resize((width, height), Image.Resampling.LANCZOS)
    scale = max(width / image.width, height / image.height)
    w = max(width, round(image.width * scale))
    h = max(height, round(image.height * scale))
    scaled = image.resize((w, h), Image.Resampling.LANCZOS)
    left, top = (w - width) // 2, (h - height) // 2
    return scaled.crop((left, top, left + width, top + height))


def painted_area(seen: dict[str, Any]) -> tuple[int, int, str]:
    """Device pixels the image was painted on, and its fit, from PAINTED_JS's answer."""
    w, h = seen["viewport"] if seen["attachment"] == "fixed" else seen["box"]
    dpr = float(seen["dpr"])
    return round(w * dpr), round(h * dpr), "cover" if seen["size"] == "cover" else "box"


def quality(original: bytes, delivered: bytes, seen: dict[str, Any]) -> dict[str, Any]:
    """PSNR of the delivered image against the original, both as the page painted them."""
    width, height, fit = painted_area(seen)
    a, b = Image.open(io.BytesIO(original)), Image.open(io.BytesIO(delivered))
    out: dict[str, Any] = {
        "delivered_format": b.format,
        "delivered_size": list(b.size),
        "original_size": list(a.size),
        "painted": [width, height, fit],
        "identical_bytes": original == delivered,
    }
    out["psnr_db"] = psnr(painted(a, width, height, fit), painted(b, width, height, fit))
    return out


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f}" + (
        f" ({min(values):,.0f}–{max(values):,.0f})" if len(values) > 1 else ""
    )


def _bytes(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    return f"{hi:,}" if lo == hi else f"{lo:,}–{hi:,}"


def _db(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "∞ (same pixels)" if math.isinf(value) else f"{value:.1f} dB"


def _psnrs(loads: list[dict[str, Any]]) -> list[float]:
    return [x["quality"]["psnr_db"] for x in loads if "psnr_db" in x.get("quality", {})]


def _db_range(values: list[float]) -> str:
    if not values:
        return "n/a"
    lo, hi = min(values), max(values)
    return _db(lo) if lo == hi else f"{_db(lo)} – {_db(hi)}"


def _form(load: dict[str, Any]) -> str:
    """The image's Content-Type and, when decoded, its size in pixels."""
    kind = str(load["image"].get("type", "?"))
    size = load.get("quality", {}).get("delivered_size")
    return f"{kind} {size[0]}x{size[1]}" if size else kind


def _hints(data: dict[str, Any]) -> list[str]:
    """The Client Hints Chromium sent with the image in the last warm load of each run."""
    out = []
    for label, run in data["runs"].items():
        if not run.get("warm"):
            continue
        fields = run["warm"][-1]["image"].get("request", {})
        sent = [f"`{k}: {v}`" for k, v in sorted(fields.items()) if k.lower() in CLIENT_HINTS]
        accept = fields.get("Accept", fields.get("accept", "?"))
        out.append(
            f"- Images {label}, warm: the image asked for with `Accept: {accept}` and "
            + (", ".join(sent) if sent else "no viewport or DPR hint")
            + (
                f"; asked for again after the warm-up load, its answer changed for "
                f"{run['settled_s']:.1f} s, then kept its size for 5 s."
                if "settled_s" in run
                else "."
            )
        )
    return out


def _conversions(data: dict[str, Any]) -> list[str]:
    """What the edge with images on converted during the whole run (its metrics)."""
    counters = data["runs"].get("on", {}).get("conversions")
    if counters is None:
        return []
    made = {
        name.split("{", 1)[1].rstrip("}"): int(value)
        for name, value in counters.items()
        if name.startswith("edge_image_conversions_total{")
    }
    cpu = sum(v for k, v in counters.items() if k.startswith("edge_image_conversion_seconds"))
    listed = "; ".join(f"{k}: {v}" for k, v in sorted(made.items())) or "none"
    return [f"- Conversions by the edge with images on, whole run: {listed} ({cpu:.2f} s CPU)."]


def images_table(data: dict[str, Any]) -> str:
    """The summary (one row per images off/on and cold/warm), the page's resources on the
    wire, and the targets."""
    lines = [
        "| images | edge | page on the wire (bytes) | of which the image | image as | "
        "page done (ms) | image done (ms) | PSNR at the painted size |",
        "| :--- | :--- | ---: | ---: | :--- | ---: | ---: | :--- |",
    ]
    runs: dict[str, dict[str, Any]] = data["runs"]
    for label, run in runs.items():
        for phase in ("cold", "warm"):
            loads = run[phase]
            form = sorted({_form(x) for x in loads})
            lines.append(
                f"| {label} | {phase} | {_bytes([x['total'] for x in loads])} | "
                f"{_bytes([x['image']['transfer'] for x in loads])} | {', '.join(form)} | "
                f"{_ms([x['done_ms'] for x in loads])} | "
                f"{_ms([x['image']['end'] for x in loads])} | {_db_range(_psnrs(loads))} |"
            )
    columns = [(label, phase) for label in runs for phase in ("cold", "warm")]
    lines += [
        "",
        "| resource | " + " | ".join(f"{label}, {phase}" for label, phase in columns) + " |",
        "| :--- |" + " ---: |" * len(columns),
    ]
    names = sorted(
        {name for label, phase in columns for x in runs[label][phase] for name in x["resources"]}
    )
    for name in names:
        cells = []
        for label, phase in columns:
            values = [x["resources"][name] for x in runs[label][phase] if name in x["resources"]]
            cells.append(_bytes(values) if values else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", *targets(data), *_hints(data), *_conversions(data)]
    return "\n".join(lines)


def targets(data: dict[str, Any]) -> list[str]:
    runs = data["runs"]
    if "on" not in runs or "off" not in runs:
        return [
            "Targets: not measured (they compare images on with off; this run: "
            + ", ".join(runs)
            + ")."
        ]
    on, off = runs["on"], runs["off"]
    limit = TARGET_SHARE * PAGE_BYTES
    warm = max(x["total"] for x in on["warm"])
    psnrs = _psnrs(on["warm"])
    db = min(psnrs) if len(psnrs) == len(on["warm"]) else None
    bytes_ok = warm <= limit and db is not None and db >= TARGET_PSNR
    cold_on = statistics.median(x["done_ms"] for x in on["cold"])
    cold_off = statistics.median(x["done_ms"] for x in off["cold"])
    return [
        f"- Warm page, images on: {warm:,} bytes on the wire, {warm / PAGE_BYTES:.1%} of "
        f"5.06 MB (target ≤ {TARGET_SHARE:.0%}: {limit:,.0f}), at {_db(db)} (target ≥ "
        f"{TARGET_PSNR:.0f} dB): **{'met' if bytes_ok else 'not met'}**.",
        f"- Cold page at the origin's {data['static_rate'] // 1024} KB/s: {cold_on:,.0f} ms "
        f"with images on, {cold_off:,.0f} ms off (medians; target: not slower): "
        f"**{'met' if cold_on <= cold_off else 'not met'}** "
        f"({cold_on - cold_off:+,.0f} ms, {cold_on / cold_off - 1:+.1%}). {_paired(on, off)}",
    ]


def _paired(on: dict[str, Any], off: dict[str, Any]) -> str:
    """The cold loads round by round (off and on take turns): on minus off."""
    diffs = [a["done_ms"] - b["done_ms"] for a, b in zip(on["cold"], off["cold"], strict=False)]
    faster = sum(d < 0 for d in diffs)
    return (
        f"Round by round, on minus off: median {statistics.median(diffs):+,.0f} ms, from "
        f"{min(diffs):+,.0f} to {max(diffs):+,.0f}; on faster in {faster} of {len(diffs)}."
    )


# --- the run ----------------------------------------------------------------------------


def _one_load(url: str) -> dict[str, Any]:
    """A fresh Chromium at VIEWPORT loads `url`: what it downloaded, when, the image's bytes as
    it received them, and what the page painted the image on."""
    with chromium(performance_log=True, viewport=VIEWPORT) as driver:
        entries, messages = visit(driver, url)
        seen = driver.execute_script(PAINTED_JS, IMAGE.lstrip("/"))
        rid = next(
            m["params"]["requestId"]
            for m in messages
            if m.get("method") == "Network.requestWillBeSent"
            and short(m["params"]["request"]["url"]) == IMAGE
        )
        reply = driver.execute_cdp_cmd("Network.getResponseBody", {"requestId": rid})
    body = base64.b64decode(reply["body"]) if reply["base64Encoded"] else reply["body"].encode()
    sent: dict[str, str] = {}
    answer: dict[str, str] = {}
    for m in messages:
        params = m.get("params", {})
        if params.get("requestId") != rid:
            continue
        if m.get("method") == "Network.requestWillBeSentExtraInfo" and not sent:
            sent = params["headers"]
        elif m.get("method") == "Network.responseReceived" and not answer:
            answer = {k.lower(): v for k, v in params["response"]["headers"].items()}
    resources = {short(e["name"]): int(e["transfer"]) for e in entries}
    own = [e for e in entries if short(e["name"]) != "/favicon.ico"]
    img = next(e for e in entries if short(e["name"]) == IMAGE)
    return {
        "total": sum(resources.values()),
        "resources": resources,
        "done_ms": max(float(e["end"]) for e in own),
        "image": {
            "transfer": int(img["transfer"]),
            "encoded": int(img["encoded"]),
            "end": float(img["end"]),
            "type": answer.get("content-type", "?"),
            "cache_status": answer.get("cache-status", ""),
            "request": sent,
        },
        "image_body": body,
        "painted": seen,
        "entries": entries,
    }


def image_metrics(base: str) -> dict[str, float]:
    """The edge's `edge_image_*` counters (/_edge/metrics), by name and labels."""
    with urllib.request.urlopen(base + "/_edge/metrics", timeout=30) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("edge_image_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def settle(url: str, fields: dict[str, str], quiet: float = 5.0, timeout: float = 90) -> float:
    """GET `url` with a browser's request fields (not its connection's, nor those that would
    change the answer's bytes rather than choose them) every half second until its answer has
    kept the same length for `quiet` seconds (a variant made in the background has had time
    to be made and stored); the seconds until the last change."""
    skip = {"host", "connection", "accept-encoding", "range", "cookie", "if-none-match"}
    headers = {k: v for k, v in fields.items() if k.lower() not in skip and not k.startswith(":")}
    start = changed = time.monotonic()
    last = -1
    while time.monotonic() < start + timeout:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as r:
            size = len(r.read())
        now = time.monotonic()
        if size != last:
            last, changed = size, now
        elif now - changed >= quiet:
            return changed - start
        time.sleep(0.5)
    raise RuntimeError(f"{url}: the answer still changed after {timeout:g} s")


def _judge(loads: list[dict[str, Any]], original: bytes, known: dict[Any, Any]) -> None:
    """Each load's quality (the same bytes painted on the same area are compared once)."""
    for load in loads:
        body = load["image_body"]
        key = (hashlib.sha256(body).hexdigest(), painted_area(load["painted"]))
        if key not in known:
            known[key] = quality(original, body, load["painted"])
        load["quality"] = {**known[key], "bytes": len(body)}


def images_run(
    static_rate: int = 300 * 1024, rounds: int = 3, labels: tuple[str, ...] = ("off", "on")
) -> dict[str, Any]:
    """Each of `labels` ("off", "on": config/edge.yaml with `images.enabled` false or true)
    has an origin and an edge of its own, all started first; then, the labels taking turns
    (so a machine shared with other work weighs on each alike), `rounds` cold loads (each
    after a purge), one more load and a wait until the image's answer stops changing
    (`settle`), and `rounds` warm loads."""
    from origin.settings import STATIC_DIR

    original = (STATIC_DIR / IMAGE.lstrip("/")).read_bytes()
    shipped = yaml.safe_load((REPO / "config" / "edge.yaml").read_text()).get("images") or {}
    out: dict[str, Any] = {
        "static_rate": static_rate,
        "rounds": rounds,
        "viewport": list(VIEWPORT),
        "commit": _commit(),
        "load_average": [os.getloadavg()[0]],
        "runs": {},
    }
    runs: dict[str, dict[str, Any]] = {x: {"cold": [], "warm": []} for x in labels}
    with ProcessGroup() as group:
        edges = {}
        for label in labels:
            origin = start_origin(
                group,
                OriginSpec(heavy_seconds=0.2, db_seconds=0.2, static_rate=static_rate),
                name=f"origin-{label}",
            )
            # config/edge.yaml's `images:` section, on or off.
            extra = {"purge": {"token": TOKEN}, "images": {**shipped, "enabled": label == "on"}}
            cfg = edge_config(group, f"edge-images-{label}", extra)
            edges[label] = start_edge(group, origin.url, node=f"edge-images-{label}", config=cfg)
        for _ in range(rounds):
            for label, edge in edges.items():
                purge_all(edge, TOKEN)
                runs[label]["cold"].append(_one_load(edge.url + "/"))
        for label, edge in edges.items():
            # A hit that may ask for the variants, made in the background; then the image is
            # asked for again with the same request fields until its answer stops changing.
            fields = _one_load(edge.url + "/")["image"]["request"]
            runs[label]["settled_s"] = settle(edge.url + IMAGE, fields)
        for _ in range(rounds):
            for label, edge in edges.items():
                runs[label]["warm"].append(_one_load(edge.url + "/"))
        for label, edge in edges.items():
            runs[label]["conversions"] = image_metrics(edge.url)
    known: dict[Any, Any] = {}
    for run in runs.values():
        _judge(run["cold"] + run["warm"], original, known)
    out["runs"] = runs
    out["load_average"].append(os.getloadavg()[0])
    return out


def _commit() -> str:
    """The checked-out commit, `+changes` when the tree differs from it ('?' outside git)."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else "?"

    head = git("rev-parse", "--short", "HEAD")
    return head + ("+changes" if head != "?" and git("status", "--porcelain", "-uno") else "")


def write_results(data: dict[str, Any], folder: Path | None = None) -> Path:
    """bench/results/delivery-images-<UTC timestamp>.md (and .json beside it)."""
    import json

    folder = folder or REPO / "bench" / "results"
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d-%H%M%S")
    path = folder / f"delivery-images-{stamp}.md"
    w, h, dpr = data["viewport"]
    head = (
        f"# Images at the edge, in headless Chromium ({w}x{h}, DPR {dpr:g})\n\n"
        f"`python -m bench.delivery images`, {stamp} UTC; origin static files at "
        f"{data['static_rate'] // 1024} KB/s per response; times are medians (min–max) of "
        f"{data['rounds']} fresh browsers. Code: {data['commit']}; load average (1 min) "
        f"{data['load_average'][0]:.1f} at the start, {data['load_average'][-1]:.1f} at the "
        "end (2 cores).\n\n"
    )
    path.write_text(head + images_table(data) + "\n")
    # Without the image's bytes (the .md's PSNR says what they were).
    slim = {
        **data,
        "runs": {
            label: {
                phase: [{k: v for k, v in x.items() if k != "image_body"} for x in loads]
                if isinstance(loads, list)
                else loads
                for phase, loads in run.items()
            }
            for label, run in data["runs"].items()
        },
    }
    path.with_suffix(".json").write_text(json.dumps(slim, indent=1) + "\n")
    return path
