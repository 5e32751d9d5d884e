"""Hypothesis-generated request lines and headers, sent over raw sockets to one edge node."""

from __future__ import annotations

import contextlib
import re
import socket
from collections import Counter
from collections.abc import Callable
from typing import Any


def fuzz(host: str, port: int, cases: int, alive: Callable[[], bool]) -> dict[str, Any]:
    """Hypothesis-generated request lines and headers over raw sockets. Counts statuses; a 500,
    a dead process or an edge that stops answering is a failure. Synchronous (Hypothesis)."""
    try:
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st
    except ImportError as exc:  # pragma: no cover - a dev dependency
        raise SystemExit(
            "bench chaos: the fuzzing pass needs hypothesis (pip install -e .[dev])"
        ) from exc

    counts: Counter[str] = Counter()
    five_hundreds: list[bytes] = []
    tchar = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-!#$%&'*+.^_`|~"
    token = st.text(
        alphabet=tchar,
        min_size=1,
        max_size=20,
    )
    junk = st.binary(min_size=0, max_size=64)
    method = st.one_of(
        st.sampled_from(
            [
                "GET",
                "HEAD",
                "POST",
                "PUT",
                "DELETE",
                "OPTIONS",
                "PURGE",
                "TRACE",
                "CONNECT",
                "PATCH",
            ]
        ),
        token,
    ).map(str.encode)
    path_piece = st.one_of(
        *[
            st.sampled_from(
                [
                    b"/",
                    b"/5mo.jpg",
                    b"/api/misc/heavy?name=f",
                    b"/api/products/last",
                    b"/_edge/health",
                    b"/_edge/purge",
                    b"/..",
                    b"/%2F",
                    b"/%00",
                    b"//",
                    b"*",
                    b"http://x/",
                    b"/?a=%ff",
                    b"/\xff",
                ]
            )
        ]
        * 3,
        junk,
    )
    target = st.lists(path_piece, min_size=1, max_size=4).map(b"".join)
    version = st.sampled_from(
        [
            b"HTTP/1.1",
            b"HTTP/1.0",
            b"HTTP/0.9",
            b"HTTP/2.0",
            b"HTTP/1.1 ",
            b"",
            b"HTTP/1.10",
            b"http/1.1",
        ]
    )
    header_name = st.one_of(
        *[
            st.sampled_from(
                [
                    b"Host",
                    b"Content-Length",
                    b"Transfer-Encoding",
                    b"Range",
                    b"Cache-Control",
                    b"If-None-Match",
                    b"If-Modified-Since",
                    b"Connection",
                    b"Expect",
                    b"Upgrade",
                    b"Authorization",
                    b"X-Forwarded-For",
                    b"Pragma",
                    b"Vary",
                    b"Accept-Encoding",
                ]
            )
        ]
        * 3,
        token.map(str.encode),
        junk,
    )
    header_value = st.one_of(
        *[
            st.sampled_from(
                [
                    b"chunked",
                    b"0",
                    b"-1",
                    b"5, 6",
                    b"bytes=0-0,-1",
                    b"bytes=9999999999999999999-",
                    b"max-age=99999999999999999999",
                    b"no-cache, only-if-cached",
                    b"100-continue",
                    b"close",
                    b"websocket",
                    b"gzip, chunked",
                    b"Bearer x",
                ]
            )
        ]
        * 3,
        junk,
    )
    header = st.tuples(
        header_name, st.sampled_from([b": ", b":", b" : ", b":\t"]), header_value
    ).map(b"".join)
    eol = st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\r", b"\r\n "])
    request = st.tuples(
        method,
        st.sampled_from([b" ", b"  ", b"\t"]),
        target,
        st.sampled_from([b" ", b""]),
        version,
        eol,
        st.lists(st.tuples(header, eol).map(b"".join), max_size=8).map(b"".join),
        st.sampled_from([b"\r\n", b"", b"\r\n0\r\n\r\n", b"\r\nabcdef"]),
    ).map(b"".join)

    def exchange(data: bytes) -> bytes:
        with socket.create_connection((host, port), 10) as sock:
            sock.settimeout(5)
            with contextlib.suppress(OSError):
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            out = b""
            with contextlib.suppress(OSError):
                while len(out) < 1 << 16:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    out += chunk
            return out

    @settings(
        max_examples=cases, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(request)
    def one(data: bytes) -> None:
        try:
            out = exchange(data)
        except OSError as exc:
            counts[f"connect:{type(exc).__name__}"] += 1
            return
        m = re.match(rb"HTTP/\d\.\d (\d{3})", out)
        key = m.group(1).decode() if m else ("closed" if not out else "other")
        counts[key] += 1
        if key == "500":
            five_hundreds.append(data)
        if key == "500" or not alive():
            raise AssertionError(f"edge answered {key} or died on {data!r}")

    failure = ""
    try:
        one()
    except AssertionError as exc:
        failure = str(exc)[:500]
    return {
        "cases": sum(counts.values()),
        "statuses": dict(sorted(counts.items())),
        "500s": len(five_hundreds),
        "failure": failure,
    }
