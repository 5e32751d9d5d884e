"""The HTTPS bench pieces: make run's local CA and certificate, h2load's output, nginx's TLS
configuration (same certificate, TLS 1.2+, h2)."""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509

from bench.loadgen import parse_h2load
from bench.peers import nginx_tls_cache_conf
from bench.topology.certs import ensure_dev_cert

H2LOAD_OUT = "\n".join(
    [
        "finished in 8.00s, 22816.62 req/s, 27.54MB/s",
        "requests: 182533 total, 182597 started, 182533 done, 182530 succeeded, 3 failed, "
        "0 errored, 0 timeout",
        "status codes: 182530 2xx, 0 3xx, 0 4xx, 3 5xx",
        "traffic: 220.29MB (230988123) total, 7.31MB (7665186) headers (space savings 88.80%), "
        "178.25MB (186913792) data",
        "                     min         max         mean         sd        +/- sd",
        "time for request:      224us     40.56ms      2.73ms      1.87ms    70.80%",
    ]
)


def test_dev_cert_is_made_once_for_loopback(tmp_path: Path) -> None:
    cert = ensure_dev_cert(tmp_path / "tls")
    leaf = x509.load_pem_x509_certificate(cert.cert.read_bytes())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert cert.key.stat().st_mode & 0o777 == 0o600
    # It verifies against its CA, and loads as a server certificate.
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert.cert, cert.key)
    client = ssl.create_default_context(cafile=str(cert.ca))
    assert client.cert_store_stats()["x509_ca"] == 1
    before = cert.cert.read_bytes()
    assert ensure_dev_cert(tmp_path / "tls").cert.read_bytes() == before  # reused


def test_h2load_output_is_read() -> None:
    r = parse_h2load(H2LOAD_OUT)
    assert r.tool == "h2load" and r.requests == 182530 and r.seconds == 8.0
    assert r.errors == 3 + 3  # failed, and the 5xx
    assert r.bytes == 230988123
    assert r.percentiles_ms == [(-1.0, 2.73)]


def test_nginx_tls_conf_uses_the_same_certificate(tmp_path: Path) -> None:
    conf = nginx_tls_cache_conf(tmp_path, 1000, 1001, 1002, Path("/c.pem"), Path("/k.pem"))
    assert "listen 127.0.0.1:1001 ssl http2 backlog=4096;" in conf
    assert "ssl_certificate /c.pem;" in conf and "ssl_certificate_key /k.pem;" in conf
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in conf
    assert "listen 127.0.0.1:1000 backlog=4096;" in conf


def test_h2load_output_over_http1_counts_heads_and_bodies() -> None:
    # h2load --h1 (the handshake scenario) reports no total traffic, only its parts.
    out = H2LOAD_OUT.replace(
        "traffic: 220.29MB (230988123) total, 7.31MB (7665186) headers (space savings 88.80%), ",
        "traffic: 0B (0) total, 612.30KB (627000) headers (space savings 0.00%), ",
    )
    assert parse_h2load(out).bytes == 627000 + 186913792
