"""`python -m bench.delivery bytes|hints`: what a real browser sees of issue 16's delivery work.

bytes  headless Chromium loads the shop's page through the edge with compression on, then
       with it off (`compression: {enabled: false}`), each time with an empty browser cache,
       once on a cold edge (the misses are compressed as they stream) and once warm (hits of
       the stored variants); it reports every resource's bytes on the wire
       (`transferSize`, headers included, and `encodedBodySize`) and decoded size, from the
       browser's own Resource Timing entries.
hints  headless Chromium loads a cold page (the edge learnt the page's `Link` headers on an
       earlier load, then the page was purged, so the next load is a miss) with Early Hints on
       and off; it reports when the image request started (Resource Timing `startTime`,
       milliseconds from navigation start) and when the HTML's response arrived. The origin's
       page is made slow (`--page-delay`) so there is time to win, as for a page a real
       origin renders.

Both start their own origin and edge on loopback and stop them at the end.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from bench.procs import REPO, ProcessGroup
from bench.servers import OriginSpec, Server, start_edge, start_origin

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--window-size=1280,900",
)
SPKI: list[str] = []  # `hints --tls`: the bench certificate's key, trusted by this browser
ENTRIES_JS = """
const out = [];
for (const e of performance.getEntriesByType('navigation').concat(
        performance.getEntriesByType('resource'))) {
  out.push({name: e.name, start: e.startTime, responseStart: e.responseStart,
            end: e.responseEnd, transfer: e.transferSize, encoded: e.encodedBodySize,
            decoded: e.decodedBodySize, protocol: e.nextHopProtocol,
            initiator: e.initiatorType});
}
return out;
"""


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    """A fresh headless Chromium with an empty cache."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    if SPKI:
        # Trusted as a valid certificate (a secure context), unlike --ignore-certificate-errors.
        options.add_argument("--ignore-certificate-errors-spki-list=" + ",".join(SPKI))
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def load(url: str) -> list[dict[str, Any]]:
    """Load `url` in a fresh browser; the Resource Timing entries once the page has loaded."""
    with browser() as driver:
        driver.get(url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if driver.execute_script("return document.readyState") == "complete":
                break
            time.sleep(0.05)
        time.sleep(0.3)
        entries: list[dict[str, Any]] = driver.execute_script(ENTRIES_JS)
        # When each request really left the browser (DevTools' Network.requestWillBeSent:
        # Resource Timing dates a preload from an early hint when the page first uses it).
        sent: dict[str, float] = {}
        hints = 0
        for record in driver.get_log("performance"):
            message = json.loads(record["message"])["message"]
            if message.get("method") == "Network.responseReceivedEarlyHints":
                hints += 1
            if message.get("method") == "Network.requestWillBeSent":
                params = message["params"]
                sent.setdefault(params["request"]["url"], float(params["timestamp"]))
        first = min(sent.values(), default=0.0)
        for e in entries:
            if e["name"] in sent:
                e["sent_ms"] = (sent[e["name"]] - first) * 1000
            e["early_hints_seen"] = hints
        return entries


def edge_config(group: ProcessGroup, name: str, extra: dict[str, Any]) -> Path:
    raw = yaml.safe_load((REPO / "config" / "edge.yaml").read_text())
    raw.update(extra)
    path = group.subdir(name) / "edge.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def purge_all(edge: Server, token: str) -> None:
    req = urllib.request.Request(
        edge.url + "/_edge/purge",
        data=json.dumps({"all": True}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def wait_tls(port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the edge's TLS port {port} did not open")


def short(name: str) -> str:
    path = name.split("//", 1)[-1].split("/", 1)[-1]
    return "/" + path


# -- bytes -------------------------------------------------------------------------------------


def bytes_run() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, compression in (("on", True), ("off", False)):
        with ProcessGroup() as group:
            origin = start_origin(
                group, OriginSpec(heavy_seconds=0.2, db_seconds=0.2, static_rate=0)
            )
            cfg = edge_config(group, f"edge-{label}", {"compression": {"enabled": compression}})
            edge = start_edge(group, origin.url, node=f"edge-{label}", config=cfg)
            cold = load(edge.url + "/")
            time.sleep(1.0)  # the stored variants are made in the background after the miss
            warm = load(edge.url + "/")
            out[label] = {"cold": cold, "warm": warm}
    return out


def bytes_table(data: dict[str, Any]) -> str:
    text = (".html", "/", ".css", ".js", ".svg")
    lines = [
        "| resource | decoded bytes | off: on the wire | on, cold edge: on the wire | "
        "on, warm edge: on the wire |",
        "| :--- | ---: | ---: | ---: | ---: |",
    ]
    totals = {"decoded": 0, "off": 0, "cold": 0, "warm": 0}
    image = {"off": 0, "cold": 0, "warm": 0}

    def by_name(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {short(e["name"]): e for e in entries}

    off = by_name(data["off"]["warm"])
    cold = by_name(data["on"]["cold"])
    warm = by_name(data["on"]["warm"])
    for name in sorted(off):
        o, c, w = off[name], cold.get(name, {}), warm.get(name, {})
        if not name.endswith(text):
            image["off"] += o["transfer"]
            image["cold"] += c.get("transfer", 0)
            image["warm"] += w.get("transfer", 0)
            continue
        totals["decoded"] += o["decoded"]
        totals["off"] += o["transfer"]
        totals["cold"] += c.get("transfer", 0)
        totals["warm"] += w.get("transfer", 0)
        lines.append(
            f"| {name} | {o['decoded']:,} | {o['transfer']:,} | {c.get('transfer', 0):,} "
            f"({c.get('encoded', 0):,} body) | {w.get('transfer', 0):,} "
            f"({w.get('encoded', 0):,} body) |"
        )
    lines.append(
        f"| **page + text assets** | {totals['decoded']:,} | {totals['off']:,} | "
        f"{totals['cold']:,} | {totals['warm']:,} |"
    )
    lines.append(
        f"| 5mo.jpg (never compressed) | | {image['off']:,} | {image['cold']:,} | "
        f"{image['warm']:,} |"
    )
    return "\n".join(lines)


# -- memory ------------------------------------------------------------------------------------


def _status_kib(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[name] = int(rest.split()[0])
    return out


def _edge_pids(edge: Server) -> list[int]:
    from bench.procfs import descendants

    pids: list[int] = []
    for child in edge.managed:
        if child.proc is not None:
            pids += [child.proc.pid, *descendants(child.proc.pid)]
    return pids


async def _fetch_sampled(
    url: str, pids: list[int], peaks: dict[int, dict[str, int]]
) -> tuple[float, int]:
    """One GET read to the end while the processes' memory is sampled every 20 ms."""
    import asyncio

    import aiohttp

    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            for pid in pids:
                with contextlib.suppress(OSError):
                    for k, v in _status_kib(pid).items():
                        peaks[pid][k] = max(peaks[pid].get(k, 0), v)
            await asyncio.sleep(0.02)

    sampler = asyncio.ensure_future(sample())
    try:
        async with aiohttp.ClientSession() as session:
            t0 = time.perf_counter()
            async with session.get(url) as resp:
                n = 0
                async for chunk in resp.content.iter_chunked(65536):
                    n += len(chunk)
            return time.perf_counter() - t0, n
    finally:
        done.set()
        await sampler


def memory_run(rate: int) -> dict[str, Any]:
    """RSS of the edge's processes sampled every 20 ms during one cold GET of the 5 MB image,
    sliced (config/edge.yaml: 128 KB slices, 8 at once) and not (`slice: false`)."""
    import asyncio

    out: dict[str, Any] = {}
    for label, slice_rule in (("sliced (128k x 8)", None), ("whole (slice: false)", False)):
        with ProcessGroup() as group:
            origin = start_origin(
                group, OriginSpec(heavy_seconds=0.2, db_seconds=0.2, static_rate=rate)
            )
            raw = yaml.safe_load((REPO / "config" / "edge.yaml").read_text())
            for rule in raw["rules"]:
                if rule.get("match") == "/*.jpg" and slice_rule is not None:
                    rule["slice"] = slice_rule
            path = group.subdir(f"edge-{len(out)}") / "edge.yaml"
            path.write_text(yaml.safe_dump(raw, sort_keys=False))
            edge = start_edge(group, origin.url, node="edge-m", config=path)
            pids = _edge_pids(edge)
            before = {pid: _status_kib(pid) for pid in pids}
            peaks: dict[int, dict[str, int]] = {pid: dict(v) for pid, v in before.items()}

            seconds, size = asyncio.run(_fetch_sampled(edge.url + "/5mo.jpg", pids, peaks))
            after = {pid: _status_kib(pid) for pid in pids}
            out[label] = {
                "seconds": seconds,
                "bytes": size,
                "processes": {
                    str(pid): {"before": before[pid], "peak": peaks[pid], "after": after[pid]}
                    for pid in pids
                },
            }
    return out


def memory_table(data: dict[str, Any]) -> str:
    lines = [
        "| cold GET /5mo.jpg | seconds | process | RSS before | RSS peak | growth | of which "
        "private (RssAnon) | of which shared memory (RssShmem: the node tier) |",
        "| :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, run in data.items():
        for pid, p in run["processes"].items():
            b, k = p["before"], p["peak"]
            lines.append(
                f"| {label} | {run['seconds']:.2f} | {pid} | {b['VmRSS'] / 1024:.1f} MiB | "
                f"{k['VmRSS'] / 1024:.1f} MiB | {(k['VmRSS'] - b['VmRSS']) / 1024:+.1f} MiB | "
                f"{(k['RssAnon'] - b['RssAnon']) / 1024:+.1f} MiB | "
                f"{(k['RssShmem'] - b['RssShmem']) / 1024:+.1f} MiB |"
            )
    return "\n".join(lines)


# -- hints -------------------------------------------------------------------------------------


def tls_section(group: ProcessGroup) -> tuple[dict[str, Any], int]:
    """A `tls:` section with a fresh certificate for 127.0.0.1 (trustme, a dev dependency):
    Chromium acts on 103 only over HTTP/2, which browsers speak over TLS only."""
    import trustme

    from bench.procs import free_port

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder = group.subdir("tls")
    cert_path, key_path = folder / "edge.pem", folder / "edge.key"
    cert_path.write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    key_path.write_bytes(cert.private_key_pem.bytes())
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    leaf = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes())
    spki = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    SPKI[:] = [base64.b64encode(digest.finalize()).decode()]
    port = free_port()
    section = {"port": port, "certificates": [{"cert": str(cert_path), "key": str(key_path)}]}
    return section, port


def edge_arrivals(edge: Server) -> dict[str, float]:
    """From the edge's JSON access log: when each request of the last page load reached the
    edge (answer time minus ttlb), in ms after the page's own request."""
    import datetime

    starts: list[tuple[str, float]] = []
    for child in edge.managed:
        for line in child.log_path.read_text(errors="replace").splitlines():
            text = line[line.find("{") :] if "{" in line else ""
            try:
                rec = json.loads(text)
            except ValueError:
                continue
            if not isinstance(rec, dict) or "target" not in rec or "ttlb" not in rec:
                continue
            when = datetime.datetime.fromisoformat(str(rec["time"]).replace("Z", "+00:00"))
            starts.append((str(rec["target"]), when.timestamp() - float(rec["ttlb"])))
    pages = [t for target, t in starts if target == "/"]
    if not pages:
        return {}
    page = pages[-1]
    out: dict[str, float] = {}
    for target, t in starts:
        if t >= page - 0.005 and target not in out and target != "/":
            out[target] = (t - page) * 1000
    return out


def hints_run(page_delay: float, rounds: int, tls: bool = False) -> dict[str, Any]:
    token = "bench-delivery-token-0123456789"
    out: dict[str, Any] = {}
    for label, on in (("hints on", True), ("hints off", False)):
        samples = []
        with ProcessGroup() as group:
            origin = start_origin(
                group,
                OriginSpec(
                    heavy_seconds=0.2,
                    db_seconds=0.2,
                    static_rate=0,
                    extra=("--page-delay", str(page_delay)),
                ),
            )
            extra: dict[str, Any] = {"early_hints": on, "purge": {"token": token}}
            tls_port = 0
            if tls:
                extra["tls"], tls_port = tls_section(group)
            cfg = edge_config(group, f"edge-{label}", extra)
            edge = start_edge(
                group, origin.url, node="edge-h", config=cfg, extra_args=("--access-log", "json")
            )
            page = f"https://127.0.0.1:{tls_port}/" if tls else edge.url + "/"
            if tls:
                wait_tls(tls_port)
            load(page)  # the edge learns the page's Link headers
            for _ in range(rounds):
                purge_all(edge, token)  # the next load is a cold page (a miss)
                entries = load(page)
                time.sleep(0.2)
                arrivals = edge_arrivals(edge)
                nav = next(e for e in entries if e["initiator"] == "navigation")
                none = {"start": float("nan"), "end": float("nan"), "initiator": "missing"}
                img = next((e for e in entries if e["name"].endswith("5mo.jpg")), none)
                css = next((e for e in entries if e["name"].endswith("woody.css")), none)
                samples.append(
                    {
                        "image_at_edge_ms": arrivals.get("/5mo.jpg", float("nan")),
                        "css_at_edge_ms": arrivals.get("/woody.css", float("nan")),
                        "image_sent_ms": img.get("sent_ms", float("nan")),
                        "css_sent_ms": css.get("sent_ms", float("nan")),
                        "early_hints_seen": nav.get("early_hints_seen", 0),
                        "html_response_start_ms": nav["responseStart"],
                        "image_start_ms": img["start"],
                        "image_end_ms": img["end"],
                        "css_start_ms": css["start"],
                        "protocol": nav["protocol"],
                        "image_initiator": img["initiator"],
                    }
                )
        out[label] = samples
    return out


def hints_table(data: dict[str, Any]) -> str:
    lines = [
        "| run | 103 seen | image request at the edge (ms) | CSS at the edge (ms) | image "
        "requestWillBeSent (ms) | HTML response start (ms) | image done (ms) | protocol | "
        "image initiator |",
        "| :--- | ---: | ---: | ---: | ---: | ---: | ---: | :--- | :--- |",
    ]
    for label, samples in data.items():
        for i, s in enumerate(samples):
            lines.append(
                f"| {label} #{i + 1} | {s.get('early_hints_seen', 'n/a')} | "
                f"{s.get('image_at_edge_ms', float('nan')):.0f} | "
                f"{s.get('css_at_edge_ms', float('nan')):.0f} | "
                f"{s.get('image_sent_ms', float('nan')):.0f} | "
                f"{s['html_response_start_ms']:.0f} | "
                f"{s['image_end_ms']:.0f} | {s['protocol']} | {s['image_initiator']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.delivery")
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("bytes", help="bytes a browser downloads, compression on and off")
    h = sub.add_parser("hints", help="when the image request starts, Early Hints on and off")
    h.add_argument("--page-delay", type=float, default=0.5, help="seconds the origin's page takes")
    h.add_argument("--rounds", type=int, default=3)
    h.add_argument("--tls", action="store_true", help="over HTTPS, where Chromium speaks h2")
    m = sub.add_parser("memory", help="RSS of the edge during a cold 5 MB fill")
    m.add_argument("--static-rate", type=int, default=300 * 1024)
    parser.add_argument("--json", type=Path, help="also write the raw entries here")
    args = parser.parse_args(argv)
    if args.what == "bytes":
        data = bytes_run()
        print(bytes_table(data))
    elif args.what == "memory":
        data = memory_run(args.static_rate)
        print(memory_table(data))
    else:
        data = hints_run(args.page_delay, args.rounds, args.tls)
        print(hints_table(data))
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
