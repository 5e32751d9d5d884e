"""`hints`: when a cold page's image request starts, with and without Early Hints."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from bench.delivery.browser import SPKI, edge_config, load, purge_all, wait_tls
from bench.procs import ProcessGroup
from bench.servers import OriginSpec, Server, start_edge, start_origin


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
