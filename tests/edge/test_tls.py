"""HTTPS at the edge (edge/protocol/tls.py): TLS 1.2+ only, SNI, reload in place, redirect and HSTS,
ALPN to HTTP/1.1 or h2 with the same headers on both, and the `tls:` configuration."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import socket
import ssl
from pathlib import Path
from typing import Any

import hpack
import pytest
import trustme

from edge.config.settings import ConfigError, apply_overrides, parse_config
from edge.config.tls import CertFiles
from edge.http.answer import Answer
from edge.protocol.http1 import wired
from edge.protocol.http2 import header_block
from tests.edge.conftest import url
from tests.edge.ops_helpers import fetch, get_json, start_edge, wait_for
from tests.edge.test_node_cache import workers_that_answered
from tests.edge.tls_helpers import H2Client, client_context, open_https, start_tls_edge, write_cert
from tests.origin.conftest import free_port, start_origin

HSTS = "max-age=31536000; includeSubDomains"


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA(key_type=trustme.KeyType.ECDSA)


@pytest.fixture
async def tls_front(scripted, tmp_path: Path, ca: trustme.CA):  # type: ignore[no-untyped-def]
    script, origin = scripted
    script.set("/a", body=b"A" * 1000, Cache_Control="max-age=60")
    script.set("/big", body=bytes(range(256)) * 2000, Cache_Control="max-age=60")
    shop = write_cert(ca, tmp_path, "shop", "shop.example", "*.shop.example")
    server, files = await start_tls_edge(url(origin, "/"), tmp_path, ca, hsts=HSTS)
    assert server.certs is not None
    # A second certificate, chosen by SNI.
    settings = server.certs.settings
    server.certs.settings = type(settings)(
        port=settings.port,
        certificates=(files, shop),
        hsts=HSTS,
        redirect=("shop.example",),
        redirect_port=server.tls_port,
        http2=settings.http2,
    )
    assert server.certs.reload("test")
    # The engine reads `tls:` as reloaded: the plain listener redirects shop.example.
    server.node.cfg = dataclasses.replace(server.node.cfg, tls=server.certs.settings)
    yield script, server, files
    await server.stop()


async def h1(
    port: int, ca: trustme.CA, path: str, host: str = "localhost", sni: str = "localhost"
) -> tuple[str, dict[str, str], bytes, ssl.SSLObject]:
    """One HTTP/1.1 request over TLS."""
    reader, writer = await open_https(port, ca, sni)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    sslobj = writer.get_extra_info("ssl_object")
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        fields[k.strip().lower()] = v.strip()
    return lines[0], fields, body, sslobj


async def plain(port: int, path: str, host: str) -> tuple[str, dict[str, str]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    return head[0], {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in head[1:])}


async def test_http1_over_tls_miss_then_hit_with_hsts(tls_front: Any, ca: trustme.CA) -> None:
    script, server, _ = tls_front
    status, fields, body, sslobj = await h1(server.tls_port, ca, "/a")
    assert status == "HTTP/1.1 200 OK" and body == b"A" * 1000
    assert fields["x-cache"] == "MISS"
    assert fields["strict-transport-security"] == HSTS
    assert sslobj.version() in ("TLSv1.2", "TLSv1.3")
    assert sslobj.selected_alpn_protocol() == "http/1.1"
    status, fields, body, _ = await h1(server.tls_port, ca, "/a")
    assert fields["x-cache"] == "HIT" and fields["cache-status"].startswith("edge-1; hit")
    assert fields["strict-transport-security"] == HSTS
    # A fetch whose answer is shared is not told the scheme (it is not in the key:
    # tests/edge/test_request_check.py has the pass-through case, which is).
    assert "X-Forwarded-Proto" not in script.seen[0].headers
    # No HSTS over plain HTTP (RFC 6797 section 7.2).
    _, plain_fields = await plain(server.port, "/a", "localhost")
    assert "strict-transport-security" not in plain_fields


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_old_tls_versions_are_refused(tls_front: Any, ca: trustme.CA) -> None:
    _, server, _ = tls_front
    ctx = client_context(ca, ["http/1.1"])
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1", server.tls_port, ssl=ctx, server_hostname="localhost"
            ),
            5,
        )
    # The listener is still there for a modern client.
    status, *_ = await h1(server.tls_port, ca, "/a")
    assert status.endswith("200 OK")


async def test_sni_chooses_the_certificate(tls_front: Any, ca: trustme.CA) -> None:
    _, server, _ = tls_front
    *_, sslobj = await h1(server.tls_port, ca, "/a", host="shop.example", sni="shop.example")
    sans = {v for _, v in sslobj.getpeercert()["subjectAltName"]}
    assert "shop.example" in sans
    *_, sslobj = await h1(server.tls_port, ca, "/a", host="x.shop.example", sni="x.shop.example")
    assert "*.shop.example" in {v for _, v in sslobj.getpeercert()["subjectAltName"]}
    # An unknown name (and no SNI at all) gets the first certificate.
    *_, sslobj = await h1(server.tls_port, ca, "/a")
    assert "localhost" in {v for _, v in sslobj.getpeercert()["subjectAltName"]}


async def test_reload_keeps_open_connections_and_new_handshakes_use_new_files(
    tls_front: Any, ca: trustme.CA, tmp_path: Path
) -> None:
    _, server, files = tls_front
    # A connection opened before the reload.
    reader, writer = await open_https(server.tls_port, ca)
    new_ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    fresh = write_cert(new_ca, tmp_path, "renewed", "127.0.0.1", "localhost")
    copy_cert(fresh, files)
    assert server.certs.changed()
    server.reload_certificates()  # what SIGHUP does
    assert server.certs.reloads >= 2
    *_, sslobj = await h1(server.tls_port, new_ca, "/a")
    assert sslobj is not None
    with pytest.raises(ssl.SSLCertVerificationError):
        await h1(server.tls_port, ca, "/a")
    # The old connection still works.
    writer.write(b"GET /a HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    assert data.startswith(b"HTTP/1.1 200 OK")
    writer.close()
    # A broken file: the certificates in use stay.
    copy_cert(CertFiles(fresh.cert, __file__), files)  # a key file that is no key
    assert not server.certs.reload("test")
    assert server.certs.reload_errors == 1
    *_, sslobj = await h1(server.tls_port, new_ca, "/a")
    assert sslobj is not None


async def test_plain_http_redirects_per_host(tls_front: Any) -> None:
    _, server, _ = tls_front
    # tls.redirect names shop.example only (set by the fixture as a reload would).
    port = server.port
    if True:
        status, fields = await plain(port, "/a?x=1", "shop.example:80")
        assert status == "HTTP/1.1 308 Permanent Redirect"
        assert fields["location"] == f"https://shop.example:{server.tls_port}/a?x=1"
        status, _ = await plain(port, "/_edge/health", "shop.example")
        assert status == "HTTP/1.1 200 OK"  # the healthcheck stays on plain HTTP
        status, fields = await plain(port, "/a", "localhost")
        assert status == "HTTP/1.1 200 OK" and "location" not in fields
        status, fields = await plain(port, "/a", "localhost")
        assert fields["x-cache"] == "HIT"
        # A fresh stored answer is no way around the redirect (HTTP/1.1's hit path).
        status, fields = await plain(port, "/a", "shop.example")
        assert status == "HTTP/1.1 308 Permanent Redirect"


async def test_plain_listener_redirects_when_configured(
    scripted: Any, tmp_path: Path, ca: trustme.CA
) -> None:
    _, origin = scripted
    server, _ = await start_tls_edge(
        url(origin, "/"), tmp_path, ca, redirect=True, redirect_port=443, hsts="max-age=60"
    )
    try:
        status, fields = await plain(server.port, "/5mo.jpg", "Shop.Example")
        assert status == "HTTP/1.1 308 Permanent Redirect"
        assert fields["location"] == "https://shop.example/5mo.jpg"  # 443: no port
        assert "strict-transport-security" not in fields
        status, _ = await plain(server.port, "/x", "bad host\\")
        assert not status.startswith("HTTP/1.1 308")
    finally:
        await server.stop()


async def test_h2_headers_are_the_same_as_http1(tls_front: Any, ca: trustme.CA) -> None:
    script, server, _ = tls_front
    client = await H2Client.open(server.tls_port, ca)
    try:
        headers, body = await client.response(client.request("/a"))
        assert headers[b":status"] == b"200" and body == b"A" * 1000
        assert headers[b"x-cache"] == b"MISS"
        # The request sent to the origin names the protocol the client spoke.
        assert script.seen[-1].headers["Via"] == "2 edge-1 (woodytoys-edge)"
        headers, body = await client.response(client.request("/a"))
        assert headers[b"x-cache"] == b"HIT"
        assert headers[b"cache-status"].startswith(b"edge-1; hit; ttl=")
        assert headers[b"strict-transport-security"] == HSTS.encode()
        assert b"connection" not in headers
        # Via names the protocol the answer was received in, from the origin (RFC 9110 7.6.3)
        assert headers[b"via"] == b"1.1 edge-1 (woodytoys-edge)"
        _, h1_fields, _, _ = await h1(server.tls_port, ca, "/a")
        assert h1_fields["via"] == "1.1 edge-1 (woodytoys-edge)"
        h1_names = set(h1_fields) - {"connection"}
        assert {k.decode() for k in headers if not k.startswith(b":")} == h1_names
        # A body larger than the windows (flow control: the client acknowledges as it reads).
        headers, body = await client.response(client.request("/big"), timeout=10)
        assert body == bytes(range(256)) * 2000
        headers, body = await client.response(client.request("/big", method="HEAD"))
        assert body == b"" and headers[b"content-length"] == b"512000"
    finally:
        await client.close()


async def test_h2_split_cookies_reach_the_origin_joined(tls_front: Any, ca: trustme.CA) -> None:
    script, server, _ = tls_front
    script.set("/api/c", body=b"c")
    client = await H2Client.open(server.tls_port, ca)
    try:
        sid = client.h2.get_next_available_stream_id()
        headers = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
            (b":path", b"/api/c"),
            (b"cookie", b"a=1"),
            (b"cookie", b"b=2"),
        ]
        client.h2.send_headers(sid, headers, end_stream=True)
        client.flush()
        await client.response(sid)
        assert script.seen[-1].headers.getall("Cookie") == ["a=1; b=2"]
    finally:
        await client.close()


async def test_http1_over_tls_reads_bodies_and_pipelined_requests_whole(
    tls_front: Any, ca: trustme.CA
) -> None:
    """The TLS transport (edge/protocol/tls_transport.py) decrypts into one buffer per worker: a
    body of many records, larger than the buffer, reaches the origin whole, requests pipelined
    in one write are each answered, in order, and a 512 KB answer (encrypted as the socket
    drains) arrives whole."""
    script, server, _ = tls_front

    async def digest(request: Any) -> Any:
        from aiohttp import web

        data = await request.read()
        return web.Response(text=f"{len(data)} {hashlib.sha256(data).hexdigest()}")

    script.handlers["/api/orders"] = digest
    body = bytes(range(251)) * 1200  # 301,200 bytes: 19 TLS records, 4.6 buffers
    reader, writer = await open_https(server.tls_port, ca)
    try:
        head = (
            f"POST /api/orders HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        writer.write(b"GET /a HTTP/1.1\r\nHost: localhost\r\n\r\n" * 2)
        writer.write(b"GET /big HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    answers = data.split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"200"] * 4
    expected = f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
    assert answers[0].endswith(expected)
    assert answers[1].endswith(b"A" * 1000) and answers[2].endswith(b"A" * 1000)
    assert answers[3].endswith(bytes(range(256)) * 2000)


async def test_h2_post_body_reaches_the_origin(tls_front: Any, ca: trustme.CA) -> None:
    script, server, _ = tls_front
    script.set("/api/orders", status=201, body=b"created")
    client = await H2Client.open(server.tls_port, ca)
    try:
        sid = client.request("/api/orders", method="POST", end=False)
        await client.send_body(sid, b"x" * 100000)  # larger than a frame and the first window
        headers, body = await client.response(sid)
        assert headers[b":status"] == b"201" and body == b"created"
    finally:
        await client.close()


async def test_graceful_stop_sends_goaway_and_finishes_streams(
    scripted: Any, tmp_path: Path, ca: trustme.CA
) -> None:
    script, origin = scripted
    script.set("/slow", body=b"s" * 10, Cache_Control="max-age=60")
    script.delay = 0.5
    server, _ = await start_tls_edge(url(origin, "/"), tmp_path, ca)
    client = await H2Client.open(server.tls_port, ca)
    sid = client.request("/slow")
    await asyncio.sleep(0.1)
    stopping = asyncio.create_task(server.stop())
    frames = await client.raw_frames(until_closed=10)
    kinds = [(type(f).__name__, f.stream_id) for f in frames]
    goaway = next(f for f in frames if type(f).__name__ == "GoAwayFrame")
    assert goaway.error_code == 0 and goaway.last_stream_id == sid
    # The stream in flight is answered after the GOAWAY, then the connection closes.
    assert kinds.index(("GoAwayFrame", 0)) < kinds.index(("HeadersFrame", sid))
    data = b"".join(f.data for f in frames if type(f).__name__ == "DataFrame")
    assert data == b"s" * 10
    assert any("END_STREAM" in f.flags for f in frames if f.stream_id == sid)
    await asyncio.wait_for(stopping, 10)
    await client.close()


def test_one_answer_in_each_protocols_bytes() -> None:
    """An answer is written by each protocol from its fields (never from another protocol's
    bytes): the fields, the length, then the stamp; h2 lower-cases the names and leaves out
    the connection's fields. A stamped copy reuses what was made of the answer's fields."""
    answer = Answer(200, [("X-Cache", "HIT"), ("Via", "1.1 e"), ("Connection", "close")], b"ab", 2)
    stamped = answer.stamped([("Age", "3")])
    assert wired(stamped)[0] == (
        b"HTTP/1.1 200 OK\r\nX-Cache: HIT\r\nVia: 1.1 e\r\nConnection: close\r\n"
        b"Content-Length: 2\r\nAge: 3\r\n\r\n"
    )
    assert hpack.Decoder().decode(header_block(stamped), raw=True) == [
        (b":status", b"200"),
        (b"x-cache", b"HIT"),
        (b"via", b"1.1 e"),
        (b"content-length", b"2"),
        (b"age", b"3"),
    ]
    again = answer.stamped([("Age", "4")])
    assert wired(again)[0].endswith(b"Content-Length: 2\r\nAge: 4\r\n\r\n")
    assert answer.fixed is again.fixed and set(answer.fixed) == {"http/1.1", "h2"}
    assert wired(Answer(304, [("ETag", '"v"')], b"x", 1)) == (
        b'HTTP/1.1 304 Not Modified\r\nETag: "v"\r\n\r\n',  # RFC 9110 sections 6.4.1, 8.6
        b"",
    )


def resumed_get(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None) -> Any:
    """GET /api/ping on a new TLS connection offering `session` (made with `ctx`): the
    session after it, whether it was resumed, the answer."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls,
    ):
        tls.sendall(b"GET /api/ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := tls.recv(65536):  # to the end: TLS 1.3 tickets come after the handshake
            answer += chunk
        return tls.session, tls.session_reused, answer


def edge_node(edge: Any) -> str:
    return str(get_json(edge.url("/_edge/health"), 5)["node"])


def test_a_session_ticket_resumes_on_every_worker(tmp_path: Path, ca: trustme.CA) -> None:
    """Two workers share one listener context, made before they fork: a ticket one issued
    resumes on the other too (SO_REUSEPORT sends reconnections to either)."""
    origin = start_origin(
        ["--static-rate", "0", "--db", f"sqlite:///{tmp_path}/w.sqlite3"], tmp_path / "o.log"
    )
    files = write_cert(ca, tmp_path, "edge", "127.0.0.1", "localhost")
    tls_port = free_port()
    edge = start_edge(
        tmp_path,
        origin.base_url,
        *("--workers", "2", "--access-log", "--tls-port", str(tls_port)),
        *("--cert", files.cert, "--key", files.key),
    )
    try:
        edge.wait_log("listening on", count=2)  # both workers take connections
        ctx = client_context(ca, ["http/1.1"])
        session, reused, answer = resumed_get(tls_port, ctx, None)
        assert not reused and answer.startswith(b"HTTP/1.1 200")
        verdicts = []
        for _ in range(16):
            session, reused, answer = resumed_get(tls_port, ctx, session)
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ping")
            verdicts.append(reused)
        assert verdicts == [True] * 16
        # Both workers answered some of them: the test saw a ticket cross between workers.
        wait_for(lambda: len(workers_that_answered(edge.log())) == 2, timeout=5)
        # Plain HTTP on the HTTPS port is a failed handshake; the node's metrics count all.
        with socket.create_connection(("127.0.0.1", tls_port), timeout=10) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            raw.recv(100)
        expected = [
            f'edge_tls_handshakes_total{{node="{node}",result="{result}"}} {n}'
            for node in [edge_node(edge)]
            for result, n in (("full", 1), ("resumed", 16), ("failed", 1))
        ]

        def counted() -> bool:
            text = fetch(edge.url("/_edge/metrics"))[2].decode()
            return all(line in text.splitlines() for line in expected)

        wait_for(counted, timeout=10)
    finally:
        edge.stop()
        origin.stop()


@pytest.mark.parametrize("tickets", [True, False])
async def test_session_tickets_can_be_turned_off(
    scripted: Any, tmp_path: Path, ca: trustme.CA, tickets: bool
) -> None:
    """tls.session_tickets: false, every handshake is a full one (the bench's set-up)."""
    script, origin = scripted
    script.set("/api/ping", body=b"ping")
    server, _ = await start_tls_edge(url(origin, "/"), tmp_path, ca, session_tickets=tickets)
    try:
        ctx = client_context(ca, ["http/1.1"])
        session, first, _ = await asyncio.to_thread(resumed_get, server.tls_port, ctx, None)
        _, second, answer = await asyncio.to_thread(resumed_get, server.tls_port, ctx, session)
        assert answer.startswith(b"HTTP/1.1 200")
        assert (first, second) == (False, tickets)
        assert server.engine is not None
        expected = {"full": 1 if tickets else 2, "resumed": 1 if tickets else 0, "failed": 0}
        assert server.engine.guard.tls_handshakes == expected
    finally:
        await server.stop()


def copy_cert(src: CertFiles, dst: CertFiles) -> None:
    Path(dst.cert).write_bytes(Path(src.cert).read_bytes())
    Path(dst.key).write_bytes(Path(src.key).read_bytes())


def test_serve_refuses_to_start_with_a_missing_or_mismatched_key(
    tmp_path: Path, ca: trustme.CA, capsys: pytest.CaptureFixture[str]
) -> None:
    from dataclasses import replace as dc_replace

    from edge.config.settings import EdgeConfig
    from edge.config.tls import TlsSettings
    from edge.server import serve

    good = write_cert(ca, tmp_path, "a", "localhost")
    other = write_cert(ca, tmp_path, "b", "localhost")
    for files, says in (
        (CertFiles(str(tmp_path / "none.pem"), good.key), "none.pem: no such file"),
        (CertFiles(good.cert, other.key), "cannot load the certificate and key"),
    ):
        cfg = dc_replace(EdgeConfig(), tls=TlsSettings(port=1, certificates=(files,)))
        assert serve(cfg) == 2
        assert says in capsys.readouterr().err


# -- configuration -----------------------------------------------------------------------

SRC = "cfg/edge.yaml"


def fails(doc: Any, where: str, fragment: str = "") -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(doc, SRC)
    assert f"{SRC}: {where}:" in str(info.value)
    assert fragment in str(info.value)


def test_tls_config_values() -> None:
    cfg = parse_config(
        {
            "tls": {
                "port": 8443,
                "certificates": [{"cert": "/c.pem", "key": "/k.pem", "names": ["Shop.Example"]}],
                "min_version": "1.3",
                "redirect": ["shop.example"],
                "hsts": "max-age=600",
                "session_tickets": False,
                "http2": {"max_concurrent_streams": 64, "max_header_list_size": "32k"},
            }
        },
        SRC,
    )
    tls = cfg.tls
    assert tls is not None and tls.port == 8443 and tls.min_version == "1.3"
    assert tls.certificates == (CertFiles("/c.pem", "/k.pem", ("shop.example",)),)
    assert tls.http2.max_concurrent_streams == 64 and tls.http2.max_header_list_size == 32768
    assert tls.redirects("SHOP.example:80") and not tls.redirects("other.example")
    assert tls.session_tickets is False
    assert parse_config({}, SRC).tls is None


def test_tls_config_errors_name_the_key() -> None:
    cert = [{"cert": "/c", "key": "/k"}]
    fails({"tls": {"certificates": cert}}, "tls.port")
    fails({"tls": {"port": 8443}}, "tls.certificates")
    fails({"tls": {"port": 8443, "certificates": [{"cert": "/c"}]}}, "tls.certificates[0].key")
    fails({"tls": {"port": 8443, "certificates": cert, "min_version": "1.1"}}, "tls.min_version")
    fails({"tls": {"port": 8443, "certificates": cert, "ciphers": "x"}}, "tls.ciphers", "unknown")
    fails({"tls": {"port": 8443, "certificates": cert, "hsts": "1 year"}}, "tls.hsts")
    fails(
        {"tls": {"port": 8443, "certificates": cert, "session_tickets": "no"}},
        "tls.session_tickets",
    )
    fails(
        {"tls": {"port": 8443, "certificates": cert, "http2": {"max_concurrent_streams": 0}}},
        "tls.http2.max_concurrent_streams",
    )


def test_tls_from_environment_and_flags() -> None:
    cfg = parse_config({}, SRC)
    env = {"EDGE_TLS_PORT": "9443", "EDGE_TLS_CERT": "/c", "EDGE_TLS_KEY": "/k"}
    out = apply_overrides(cfg, env)
    assert out.tls is not None and out.tls.port == 9443
    assert out.tls.certificates[0] == CertFiles("/c", "/k")
    out = apply_overrides(cfg, {}, tls_port=8443, cert="/c2", key="/k2")
    assert out.tls is not None and out.tls.certificates[0].cert == "/c2"
    with pytest.raises(ConfigError, match="EDGE_TLS_KEY"):
        apply_overrides(cfg, {"EDGE_TLS_PORT": "9443", "EDGE_TLS_CERT": "/c"})
    with pytest.raises(ConfigError, match="--cert"):
        apply_overrides(cfg, {}, tls_port=8443)
