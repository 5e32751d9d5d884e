"""config/nginx: `nginx -t` accepts both configs, and the proxy routes and throttles like the lab.

The configs name Swarm services (api, front) and fixed ports; the tests render a copy where those
become 127.0.0.1 and free ports, and /tmp becomes a temporary directory.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.procs import free_port
from tests.deploy.helpers import REPO, need_tool

NGINX_DIR = REPO / "config" / "nginx"


def render(name: str, tmp: Path, replacements: dict[str, str]) -> Path:
    text = (NGINX_DIR / name).read_text().replace("/tmp/", f"{tmp}/")
    for old, new in replacements.items():
        assert old in text, f"{name} no longer contains {old!r}"
        text = text.replace(old, new)
    if os.geteuid() == 0:
        # As root nginx would switch its workers to `nobody`, who cannot read pytest's tmp dir.
        # In the image nginx already runs as user nginx, and ignores `user`.
        text = "user root;\n" + text
    path = tmp / name
    path.write_text(text)
    return path


def nginx_test(conf: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    nginx = need_tool("nginx")
    return subprocess.run(
        [nginx, "-t", "-p", str(tmp), "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_proxy_conf_passes_nginx_t(tmp_path: Path) -> None:
    conf = render(
        "proxy.conf",
        tmp_path,
        {
            "server api:5000;": "server 127.0.0.1:5000;",
            "server front:8080;": "server 127.0.0.1:8080;",
        },
    )
    result = nginx_test(conf, tmp_path)
    assert result.returncode == 0, result.stderr


def test_front_conf_passes_nginx_t(tmp_path: Path) -> None:
    result = nginx_test(render("front.conf", tmp_path, {}), tmp_path)
    assert result.returncode == 0, result.stderr


def test_proxy_conf_keeps_the_lab_rules() -> None:
    text = (NGINX_DIR / "proxy.conf").read_text()
    assert "limit_rate 300k;" in text
    assert "location /api {\n            proxy_pass http://woody_api;" in text
    assert "listen 8080;" in text


class _Api(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ping" if self.path == "/api/ping" else f"api {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def running_proxy(tmp_path: Path) -> Iterator[tuple[int, int, bytes]]:
    """The proxy and the front as configured, with a stand-in API; yields (proxy, front, body)."""
    nginx = need_tool("nginx")
    api = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    api_port = api.server_address[1]
    front_port, proxy_port = free_port(), free_port()
    html = tmp_path / "html"
    html.mkdir()
    body = os.urandom(900 * 1024)
    (html / "big.jpg").write_bytes(body)
    (html / "index.html").write_text("<title>Woody stuff</title>")
    front = render(
        "front.conf",
        tmp_path,
        {"listen 8080;": f"listen 127.0.0.1:{front_port};", "/usr/share/nginx/html": str(html)},
    )
    proxy = render(
        "proxy.conf",
        tmp_path,
        {
            "listen 8080;": f"listen 127.0.0.1:{proxy_port};",
            "server api:5000;": f"server 127.0.0.1:{api_port};",
            "server front:8080;": f"server 127.0.0.1:{front_port};",
        },
    )
    procs = [
        subprocess.Popen(
            [nginx, "-p", str(tmp_path), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for conf in (front, proxy)
    ]
    try:
        for port in (front_port, proxy_port):
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                        errors = b"".join(p.stderr.read() for p in procs if p.stderr and p.poll())
                        pytest.fail(f"nginx did not start: {errors.decode()}")
                    time.sleep(0.05)
        yield proxy_port, front_port, body
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        api.shutdown()


def _get(url: str) -> tuple[bytes, float]:
    start = time.monotonic()
    with urllib.request.urlopen(url, timeout=30) as resp:
        data: bytes = resp.read()
    return data, time.monotonic() - start


def test_proxy_routes_api_and_throttles_static(running_proxy: tuple[int, int, bytes]) -> None:
    proxy_port, front_port, body = running_proxy
    data, took = _get(f"http://127.0.0.1:{proxy_port}/api/ping")
    assert data == b"ping" and took < 1
    data, _ = _get(f"http://127.0.0.1:{proxy_port}/api/misc/heavy?name=x")
    assert data == b"api /api/misc/heavy?name=x"
    data, took = _get(f"http://127.0.0.1:{proxy_port}/_proxy/health")
    assert data == b"ok\n"
    # 900 KB at 300 KB/s through the proxy, immediate from the front itself. nginx allows
    # limit_rate x (whole seconds since the start + 1): a request that starts just before a
    # second ticks over may send 600 KB at once, so 900 KB takes at least about 1 s (450 KB
    # could go out whole in 0.03 s: seen once in CI), at most about 2 s.
    data, direct = _get(f"http://127.0.0.1:{front_port}/big.jpg")
    assert data == body and direct < 0.5
    data, throttled = _get(f"http://127.0.0.1:{proxy_port}/big.jpg")
    assert data == body
    assert 0.7 < throttled < 5, f"limit_rate 300k: took {throttled:.2f} s"
    data, _ = _get(f"http://127.0.0.1:{proxy_port}/")
    assert b"Woody stuff" in data
