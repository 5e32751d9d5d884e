"""One request check for every door (edge/http/request.py): HTTP/1.1, HTTP/1.1 over TLS and h2
hand the engine the same checked request, so the same bytes get the same decision, the same
answer and the same request at the origin, whichever door they came in by.

The differential test at the end generates requests with hypothesis and sends each through the
three doors of one edge, from an empty cache each time, comparing what a client sees and what
the origin receives."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import h2.config
import h2.connection
import h2.events
import httptools
import pytest
import trustme
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.config.settings import parse_config
from edge.config.tls import TlsSettings
from edge.http.request import Refused, check_host, content_length, method_of, split_target
from edge.server import EdgeServer
from tests.edge.tls_helpers import H2Client, client_context, write_cert

TOKEN = "test-token-0123456789abcdef"
T = TypeVar("T")

# -- the check itself (pure) ----------------------------------------------------------------


def test_methods_are_exact_and_case_sensitive() -> None:
    assert method_of(b"GET") == "GET" and method_of(b"PURGE") == "PURGE"
    for raw, status in ((b"get", 501), (b"purge", 501), (b"PROPFIND", 501), (b"BREW", 501)):
        with pytest.raises(Refused) as err:
            method_of(raw)
        assert err.value.status == status
    for raw in (b"A B", b"G@T", b"", b"GET\x00", "GÉT".encode()):
        with pytest.raises(Refused) as err:
            method_of(raw)
        assert err.value.status == 400


@pytest.mark.parametrize(
    "host", ["", "localhost", "shop.example:8443", "127.0.0.1", "[::1]", "[::1]:8443", "a-b.c_d"]
)
def test_valid_hosts(host: str) -> None:
    check_host(host)


@pytest.mark.parametrize(
    "host", ["bad host", "a/b", "a@b", "[::1", "x:port", "a:123456", "évil", "a\tb", "[zz]"]
)
def test_invalid_hosts_are_400(host: str) -> None:
    with pytest.raises(Refused) as err:
        check_host(host)
    assert err.value.status == 400


def test_content_length_is_ascii_digits() -> None:
    assert content_length("12") == 12 and content_length("5, 5") == 5
    for value in ("²", "١٢", "-1", "1.0", "", "0x10", "5, 6", "9" * 40):
        with pytest.raises(Refused):
            content_length(value)


def test_targets() -> None:
    assert split_target("GET", "/a?b") == (None, "/a?b")
    assert split_target("OPTIONS", "*") == (None, "*")
    assert split_target("GET", "http://shop.example/x?y=1") == ("shop.example", "/x?y=1")
    for method, target in (("GET", "*"), ("GET", "a/b"), ("GET", "ftp://x/"), ("GET", "")):
        with pytest.raises(Refused):
            split_target(method, target)


# -- an edge with its three doors, in a loop of its own --------------------------------------


class Background:
    """An event loop in a thread: the edge, its origin and the clients run there, so that a
    plain (synchronous) hypothesis test can drive them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class Seen:
    method: str
    target: str
    fields: tuple[tuple[str, str], ...]
    body: bytes


class Origin:
    """Records every request; /c/ answers are cacheable, /p/ ones are not."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fields = tuple(
            (k.lower(), v)
            for k, v in request.headers.items()
            if k.lower() not in ("via", "x-forwarded-for", "x-request-id", "host", "connection")
        )
        self.seen.append(Seen(request.method, request.path_qs, fields, body))
        if request.path.startswith("/c/"):
            text = (request.path * 40).encode()
            return web.Response(
                body=text,
                headers={"Cache-Control": "max-age=60", "ETag": '"v1"', "Content-Type": "text/css"},
            )
        return web.Response(
            body=f"{request.method} {request.path_qs} {len(body)}".encode(),
            headers={"Cache-Control": "no-store"},
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class Doors:
    bg: Background
    origin: Origin
    edge: EdgeServer
    ca: trustme.CA


@pytest.fixture(scope="module")
def doors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Doors]:
    bg = Background()
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    tmp: Path = tmp_path_factory.mktemp("doors")
    origin = Origin()
    bg.run(origin.start())
    files = write_cert(ca, tmp, "edge", "127.0.0.1", "localhost")
    cfg = parse_config(
        {
            "origins": [f"http://127.0.0.1:{origin.port}"],
            "rules": [{"match": "/c/*", "ttl": "60s"}],
            "purge": {"token": TOKEN},
            "node_cache": {"enabled": False},
        },
        "<test>",
    )
    cfg = replace(cfg, port=0, tls=TlsSettings(port=0, certificates=(files,)))
    edge = EdgeServer(cfg)
    bg.run(edge.start())
    yield Doors(bg, origin, edge, ca)
    bg.run(edge.stop())
    bg.run(origin.stop())
    bg.close()


@dataclass(frozen=True)
class Sent:
    method: bytes
    target: bytes
    host: bytes
    fields: tuple[tuple[bytes, bytes], ...]
    body: bytes


@dataclass
class Answer:
    status: int
    fields: dict[str, str]
    body: bytes


async def _h1(port: int, sent: Sent, ctx: ssl.SSLContext | None) -> Answer:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost" if ctx else None
    )
    lines = [sent.method + b" " + sent.target + b" HTTP/1.1", b"Host: " + sent.host]
    lines += [k + b": " + v for k, v in sent.fields]
    if sent.body:
        lines.append(b"Content-Length: %d" % len(sent.body))
    lines.append(b"Connection: close")
    writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + sent.body)
    data = b""
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while chunk := await asyncio.wait_for(reader.read(65536), 30):
            data += chunk
    writer.close()
    return _parse_h1(data, head=sent.method == b"HEAD")


def _parse_h1(data: bytes, head: bool) -> Answer:
    out = Answer(0, {}, b"")

    class Collect:
        def on_header(self, name: bytes, value: bytes) -> None:
            out.fields[name.decode("latin-1").lower()] = value.decode("latin-1")

        def on_body(self, body: bytes) -> None:
            out.body += body

    parser = httptools.HttpResponseParser(Collect())
    if head:
        data = data.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"  # no body follows a HEAD's head
    with contextlib.suppress(httptools.HttpParserError):
        parser.feed_data(data)
    out.status = parser.get_status_code()
    return out


async def _h2(port: int, ca: trustme.CA, sent: Sent) -> Answer:
    client = await H2Client.open(port, ca, init=False)
    client.h2 = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )
    client.h2.initiate_connection()
    client.flush()
    try:
        sid = client.h2.get_next_available_stream_id()
        headers = [
            (b":method", sent.method),
            (b":scheme", b"https"),
            (b":authority", sent.host),
            (b":path", sent.target),
            *sent.fields,
        ]
        if sent.body:
            headers.append((b"content-length", str(len(sent.body)).encode()))
        client.h2.send_headers(sid, headers, end_stream=not sent.body)
        client.flush()
        if sent.body:
            await client.send_body(sid, sent.body)
        try:
            fields, body = await client.response(sid, timeout=30)
        except ConnectionResetError:
            return Answer(-1, {}, b"")  # reset: a malformed request (RFC 9113 section 8.1.1)
        status = int(fields.pop(b":status", b"0"))
        return Answer(
            status, {k.decode().lower(): v.decode("latin-1") for k, v in fields.items()}, body
        )
    finally:
        await client.close()


async def through(doors: Doors, door: str, sent: Sent) -> tuple[Answer, list[Seen]]:
    """One request through one door, from an empty cache: the answer and what the origin
    received for it."""
    await doors.edge.node.purger.purge(all=True)
    doors.origin.seen.clear()
    port, tls_port = doors.edge.port, doors.edge.tls_port
    assert tls_port is not None
    if door == "h1":
        answer = await _h1(port, sent, None)
    elif door == "h1-tls":
        answer = await _h1(tls_port, sent, client_context(doors.ca, ["http/1.1"]))
    else:
        answer = await _h2(tls_port, doors.ca, sent)
    await asyncio.sleep(0)  # an origin fetch of a HEAD fill finishes after the answer
    return answer, list(doors.origin.seen)


# -- the doors agree on refusals a client can use to reach the origin -------------------------


def test_lower_case_get_over_h2_is_refused_and_purges_nothing(doors: Doors) -> None:
    """Issue item 1: `:method: get` was not a GET to the flow core, reached the origin as
    GET, and invalidated the URL on its 200 (with Redis, on every node)."""
    plain = Sent(b"GET", b"/c/kept", b"localhost", (), b"")
    first, _ = doors.bg.run(through(doors, "h2", plain))
    assert first.status == 200
    for method in (b"get", b"purge", b"Purge", b"PROPFIND"):
        sent = Sent(method, b"/c/kept", b"localhost", (), b"")
        for door in ("h1", "h2"):
            doors.bg.run(doors.edge.node.purger.purge(all=True))
            doors.origin.seen.clear()
            answer = doors.bg.run(_answer_after_fill(doors, door, sent))
            assert answer.status == 501, (door, method)
            assert b"not implemented" in answer.body
            assert doors.origin.seen == [], (door, method)  # never reached the origin


async def _answer_after_fill(doors: Doors, door: str, sent: Sent) -> Answer:
    """Store /c/kept, send `sent`, and check the stored copy is still served (no purge)."""
    fill = Sent(b"GET", sent.target, b"localhost", (), b"")
    await _h1(doors.edge.port, fill, None)
    doors.origin.seen.clear()
    if door == "h1":
        answer = await _h1(doors.edge.port, sent, None)
    else:
        assert doors.edge.tls_port is not None
        answer = await _h2(doors.edge.tls_port, doors.ca, sent)
    after = await _h1(doors.edge.port, fill, None)
    assert after.fields.get("x-cache") == "HIT", "the stored copy was invalidated"
    return answer


def test_upper_case_purge_without_token_over_h2_is_401(doors: Doors) -> None:
    sent = Sent(b"PURGE", b"/c/kept", b"localhost", (), b"")
    for door in ("h1", "h2"):
        answer, seen = doors.bg.run(through(doors, door, sent))
        assert answer.status == 401 and seen == []


@pytest.mark.parametrize(
    ("method", "fields"),
    [
        (b"A B", ()),  # a method that is not a token
        (b"GET", ((b"content-length", "²".encode()),)),  # a digit to str.isdigit, not to HTTP
        (b"POST", ((b"content-length", "١".encode()),)),
    ],
)
def test_h2_oddities_get_a_400_not_a_traceback(
    doors: Doors, method: bytes, fields: tuple[tuple[bytes, bytes], ...], caplog: Any
) -> None:
    """Issue item 10: these ended in a traceback per request (500, GOAWAY INTERNAL_ERROR or
    a closed connection); now a 400 with a message, and the connection goes on."""
    sent = Sent(method, b"/c/x", b"localhost", fields, b"")
    answer, seen = doors.bg.run(through(doors, "h2", sent))
    assert answer.status == 400 and seen == []
    assert not [r for r in caplog.records if r.exc_info]


def test_an_invalid_host_is_400_at_every_door(doors: Doors) -> None:
    sent = Sent(b"GET", b"/c/x", b"bad host", (), b"")
    for door in ("h1", "h1-tls", "h2"):
        answer, seen = doors.bg.run(through(doors, door, sent))
        assert answer.status == 400 and b"Host" in answer.body and seen == [], door


def test_the_origin_is_not_told_the_scheme_of_a_shared_fetch(doors: Doors) -> None:
    """Issue item 7: the key holds neither the scheme nor (with several hosts) the host, so
    a fetch whose answer is shared carries neither; a request passed through does."""
    get = Sent(b"GET", b"/c/scheme", b"localhost", (), b"")
    post = Sent(b"POST", b"/p/scheme", b"localhost", (), b"x=1")
    for door, scheme in (("h1", "http"), ("h2", "https")):
        _, seen = doors.bg.run(through(doors, door, get))
        assert [dict(s.fields).get("x-forwarded-proto") for s in seen] == [None]
        _, seen = doors.bg.run(through(doors, door, post))
        assert [dict(s.fields).get("x-forwarded-proto") for s in seen] == [scheme]


# -- the differential test ---------------------------------------------------------------------

METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"]
METHODS += [b"get", b"Get", b"post", b"PROPFIND", b"TRACE", b"BREW", b"G@T", b"PURGE"]
TARGETS = [b"/c/a", b"/c/b?x=1&a=2", b"/p/w", b"/p/w?q=%41", b"*", b"/c/%2e%2e/a"]
HOSTS = [b"localhost", b"127.0.0.1", b"localhost:8443", b"[::1]", b"", b"bad host", b"a@b"]
FIELDS = st.sampled_from(
    [
        (b"range", b"bytes=0-3"),
        (b"range", b"bytes=5-"),
        (b"range", b"bytes=0-0,2-3"),
        (b"range", b"bytes=x"),
        (b"if-none-match", b'"v1"'),
        (b"if-none-match", b'"v2"'),
        (b"accept-encoding", b"gzip"),
        (b"accept-encoding", b"br;q=0, gzip;q=0.5"),
        (b"cache-control", b"no-cache"),
        (b"cache-control", b"only-if-cached"),
        (b"x-custom", b"hello"),
        (b"x-forwarded-host", b"evil.example"),
        (b"cookie", b"a=1"),
    ]
)
REQUESTS = st.builds(
    Sent,
    method=st.sampled_from(METHODS),
    target=st.sampled_from(TARGETS),
    host=st.sampled_from(HOSTS),
    fields=st.lists(FIELDS, max_size=3, unique_by=lambda f: f[0]).map(tuple),
    body=st.sampled_from([b"", b"", b"k=v"]),
)
# What may differ between doors by design: the date, the age and ttl a second apart, the
# framing of each protocol.
PER_PROTOCOL = {"date", "age", "cache-status", "content-length", "transfer-encoding", "connection"}
PER_PROTOCOL |= {"keep-alive", "strict-transport-security", "x-request-id", "server-timing"}
COUNT = {"requests": 0}


def _comparable(answer: Answer) -> tuple[int, dict[str, str], bytes]:
    fields = {k: v for k, v in answer.fields.items() if k not in PER_PROTOCOL}
    body = answer.body
    if "multipart/byteranges" in fields.get("content-type", ""):
        fields.pop("content-type")
        body = b""  # each answer has a boundary of its own
    return answer.status, fields, body


def _refusal(answer: Answer) -> bool:
    return answer.status == -1 or answer.status == 400


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sent=REQUESTS)
def test_every_door_decides_answers_and_forwards_the_same(doors: Doors, sent: Sent) -> None:
    if sent.method in (b"GET", b"HEAD") and sent.body:
        sent = replace(sent, body=b"")  # a GET's body is its own question (not compared)
    outcomes = {door: doors.bg.run(through(doors, door, sent)) for door in ("h1", "h1-tls", "h2")}
    COUNT["requests"] += 1
    (a1, seen1), (a2, seen2), (a3, seen3) = outcomes.values()
    if _refusal(a1) or _refusal(a3):
        # h2 may reset a malformed request where HTTP/1.1 answers 400 (RFC 9113 8.1.1).
        assert _refusal(a1) and _refusal(a2) and _refusal(a3), (sent, a1, a3)
        assert seen1 == seen2 == seen3 == [], sent
        return
    assert _comparable(a1) == _comparable(a2) == _comparable(a3), sent
    # The order of fields of different names carries no meaning (RFC 9110 section 5.3; h2
    # sends cookies last, RFC 9113 section 8.2.3), and the scheme reaches the origin only on
    # requests passed through (the test above).
    received = [
        [
            (s.method, s.target, sorted(f for f in s.fields if f[0] != "x-forwarded-proto"), s.body)
            for s in seen
        ]
        for seen in (seen1, seen2, seen3)
    ]
    assert received[0] == received[1] == received[2], sent


async def test_with_several_hosts_a_shared_fetch_is_not_told_the_host(
    scripted: Any, make_edge: Any
) -> None:
    """Issue 27 item 7, the host: with several `hosts:`, one host's answer would be stored
    under a key that holds no host and served to the other; a write still names its host."""
    import aiohttp

    from tests.edge.conftest import url

    script, origin = scripted
    script.set("/shared", body=b"same for every host", Cache_Control="max-age=60")
    script.set("/write", body=b"ok")
    edge = await make_edge(url(origin, "/"), hosts=("a.example", "b.example"))
    async with aiohttp.ClientSession() as s:
        for host in ("a.example", "b.example"):
            async with s.get(url(edge, "/shared"), headers={"Host": host}) as r:
                assert r.status == 200
            async with s.post(url(edge, "/write"), headers={"Host": host}, data=b"x") as r:
                assert r.status == 200
    by_path = {(r.path, r.headers.get("X-Forwarded-Host")) for r in script.seen}
    assert ("/shared", None) in by_path and len([p for p, _ in by_path if p == "/shared"]) == 1
    assert {("/write", "a.example"), ("/write", "b.example")} <= by_path
