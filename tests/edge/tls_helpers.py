"""Certificates (trustme), an HTTPS edge in this process, and a raw HTTP/2 client that sends
whatever frames a test writes (h2 for the handshake and HPACK, hyperframe for the rest)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import replace
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import trustme

from edge.config.settings import load_config
from edge.config.tls import CertFiles, Http2Settings, TlsSettings
from edge.server import EdgeServer
from tests.edge.conftest import STANDARD_YAML


def write_cert(ca: trustme.CA, tmp: Path, stem: str, *names: str) -> CertFiles:
    cert = ca.issue_cert(*names, key_type=trustme.KeyType.ECDSA)
    cert_path, key_path = tmp / f"{stem}.pem", tmp / f"{stem}.key"
    cert_path.write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    key_path.write_bytes(cert.private_key_pem.bytes())
    return CertFiles(str(cert_path), str(key_path))


def client_context(ca: trustme.CA, alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.set_alpn_protocols(alpn)
    return ctx


async def open_https(
    port: int, ca: trustme.CA, sni: str = "localhost"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TLS connection to the edge that offers only HTTP/1.1 (ALPN)."""
    return await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context(ca, ["http/1.1"]), server_hostname=sni
    )


async def start_tls_edge(
    origin_url: str, tmp: Path, ca: trustme.CA, limits: dict[str, Any] | None = None, **tls: Any
) -> tuple[EdgeServer, CertFiles]:
    """`limits`: EdgeConfig fields over the standard configuration (header_timeout...)."""
    files = write_cert(ca, tmp, "edge", "127.0.0.1", "localhost")
    h2_settings = tls.pop("http2", Http2Settings())
    settings = TlsSettings(port=0, certificates=(files,), http2=h2_settings, **tls)
    cfg = replace(
        load_config(STANDARD_YAML),
        origins=(origin_url.rstrip("/"),),
        port=0,
        tls=settings,
        **(limits or {}),
    )
    server = EdgeServer(cfg)
    await server.start()
    return server, files


class H2Client:
    """One HTTP/2 connection over TLS, driven frame by frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.events: list[h2.events.Event] = []
        self.closed = False

    @classmethod
    async def open(
        cls, port: int, ca: trustme.CA, settings: dict[int, int] | None = None, init: bool = True
    ) -> H2Client:
        ctx = client_context(ca, ["h2"])
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
        )
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        client = cls(reader, writer)
        if not init:
            return client  # the test writes the preface itself (or not)
        client.h2.initiate_connection()
        if settings:
            client.h2.update_settings(settings)
        client.flush()
        return client

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.writer.write(data)

    def raw(self, data: bytes) -> None:
        """Bytes straight to the socket, past h2's state machine."""
        self.writer.write(data)

    def request(self, path: str, method: str = "GET", end: bool = True) -> int:
        sid = self.h2.get_next_available_stream_id()
        headers = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
            (b":path", path.encode()),
        ]
        self.h2.send_headers(sid, headers, end_stream=end)
        self.flush()
        return sid

    async def send_body(self, sid: int, data: bytes, timeout: float = 5.0) -> None:
        """DATA frames as the server's windows allow, then END_STREAM."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while data:
            n = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if n <= 0:
                if loop.time() > deadline:
                    raise TimeoutError("the server's window stayed closed")
                await self.pump(0.2)
                continue
            self.h2.send_data(sid, data[:n])
            data = data[n:]
            self.flush()
        self.h2.end_stream(sid)
        self.flush()

    async def pump(self, timeout: float = 2.0) -> bool:
        """Read once (at most `timeout`); False when the server closed."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except (TimeoutError, ConnectionError, ssl.SSLError):
            return not self.closed
        if not data:
            self.closed = True
            return False
        try:
            self.events += self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.closed = True
            return False
        self.flush()
        return True

    async def until(self, predicate: Any, timeout: float = 5.0) -> bool:
        """Read until an event satisfies `predicate` or the server closes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if any(predicate(e) for e in self.events):
                return True
            if not await self.pump(min(0.5, max(0.01, deadline - loop.time()))) and self.closed:
                return any(predicate(e) for e in self.events)
        return any(predicate(e) for e in self.events)

    async def response(
        self, sid: int, timeout: float = 5.0, ack: bool = True
    ) -> tuple[dict[bytes, bytes], bytes]:
        """The headers and body of stream `sid` (acknowledging DATA as it comes)."""
        body = b""
        headers: dict[bytes, bytes] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = 0
        while loop.time() < deadline:
            for e in self.events[seen:]:
                if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid:
                    headers = dict(e.headers or [])
                elif isinstance(e, h2.events.DataReceived) and e.stream_id == sid:
                    body += e.data or b""
                    if ack:
                        self.h2.acknowledge_received_data(e.flow_controlled_length or 0, sid)
                        self.flush()
                elif isinstance(e, h2.events.StreamEnded) and e.stream_id == sid:
                    return headers, body
                elif isinstance(e, h2.events.StreamReset) and e.stream_id == sid:
                    raise ConnectionResetError(f"stream {sid} reset: {e.error_code!r}")
            seen = len(self.events)
            if not await self.pump(0.5) and self.closed:
                break
        raise TimeoutError(f"no whole answer on stream {sid}")

    async def raw_frames(self, until_closed: float = 5.0) -> list[Any]:
        """Every frame the server sends from now on until it closes (parsed with hyperframe,
        past h2's state machine, which refuses frames after a GOAWAY)."""
        from hyperframe.frame import Frame

        buf = b""
        frames = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + until_closed
        while loop.time() < deadline:
            try:
                data = await asyncio.wait_for(self.reader.read(65536), 0.5)
            except TimeoutError:
                continue
            except (ConnectionError, ssl.SSLError):
                break
            if not data:
                break
            buf += data
            while len(buf) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
                if len(buf) < 9 + length:
                    break
                frame.parse_body(memoryview(buf[9 : 9 + length]))
                frames.append(frame)
                buf = buf[9 + length :]
        return frames

    def goaway(self) -> h2.events.ConnectionTerminated | None:
        for e in self.events:
            if isinstance(e, h2.events.ConnectionTerminated):
                return e
        return None

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(TimeoutError, ConnectionError, ssl.SSLError):
            await asyncio.wait_for(self.writer.wait_closed(), 2)
