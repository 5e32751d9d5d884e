"""Reload without restart: SIGHUP (and `woody-edge reload`) re-reads edge.yaml; a bad file
is refused with the key-naming error and the running config stays; a good one applies new
rules, origins and limits to new requests while what is stored stays."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from edge.config.settings import load_config
from edge.ops.reload import RESTART_ONLY, ConfigSource, changed, reloadable
from edge.server import EdgeServer
from tests.edge.conftest import EDGE_YAML, Scripted, url
from tests.edge.ops_helpers import ROOT, TOKEN, fetch, get_json, start_edge, wait_for
from tests.origin.conftest import free_port, start_origin

NEW_RULE = "rules:\n  - match: /api/misc/time\n    ttl: 30s\n    query: none\n"


IMAGE = Path(__file__).resolve().parents[2] / "origin" / "static" / "5mo.jpg"


def write_config(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_reloadable_keeps_what_needs_a_restart() -> None:
    old = load_config(EDGE_YAML)
    new = dataclasses.replace(old, port=9999, workers=4, max_connections=10, rules=())
    cfg, kept = reloadable(old, new)
    assert kept == ["port", "workers"]
    assert cfg.port == old.port and cfg.workers == old.workers
    assert cfg.max_connections == 10 and cfg.rules == ()
    assert changed(old, cfg) == ["max_connections", "rules"]
    assert set(RESTART_ONLY) <= {f.name for f in dataclasses.fields(old)}


def test_sighup_keeps_the_cache_refuses_a_bad_file_and_applies_a_good_one(
    tmp_path: Path,
) -> None:
    origin = start_origin(
        ["--static-rate", "0", "--db", f"sqlite:///{tmp_path}/w.sqlite3"], tmp_path / "o.log"
    )
    config = tmp_path / "edge.yaml"
    original = EDGE_YAML.read_text()
    write_config(config, original)
    edge = start_edge(tmp_path, origin.base_url, "--workers", "2", config=config)
    try:
        assert fetch(edge.url("/5mo.jpg"))[1]["X-Cache"] == "MISS"
        # stored once its body is complete (the other worker may ask a moment before)
        wait_for(lambda: fetch(edge.url("/5mo.jpg"))[1]["X-Cache"] == "HIT", timeout=5)
        for _ in range(2):  # no rule names it, the origin sends no caching headers
            assert fetch(edge.url("/api/misc/time"))[1]["X-Cache"] == "MISS"

        # A bad file: refused by the supervisor with the key named, nothing changes.
        write_config(config, original.replace("    ttl: 30s", "    ttl: thirty", 1))
        edge.hangup()
        log = edge.wait_log("reload refused")
        assert f"{config}: rules[2].ttl: expected a duration" in log
        assert fetch(edge.url("/5mo.jpg"))[1]["X-Cache"] == "HIT"

        # The same refusal through `woody-edge reload --edge` (the admin endpoint).
        done = subprocess.run(
            [sys.executable, "-m", "edge", "reload", "--edge", edge.base_url, "--token", TOKEN],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=30,
        )
        assert done.returncode == 1 and "rules[2].ttl" in done.stderr, done

        # A good file with a new rule: every worker applies it; the stored image stays.
        write_config(config, original.replace("rules:\n", NEW_RULE, 1))
        done = subprocess.run(
            [sys.executable, "-m", "edge", "reload", "--pid-file", str(edge.pid_file)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=30,
        )
        assert done.returncode == 0, done
        edge.wait_log("edge.ops.reload: reloaded", count=2)  # both workers
        for _ in range(4):  # new connections: both workers answer
            assert fetch(edge.url("/5mo.jpg"))[1]["X-Cache"] == "HIT"
        first = fetch(edge.url("/api/misc/time"))[1]
        assert first["X-Cache"] == "MISS" and "stored; ttl=30" in first["Cache-Status"], first
        headers = wait_for(
            lambda: (h := fetch(edge.url("/api/misc/time"))[1])["X-Cache"] == "HIT" and h,
            timeout=5,
        )
        assert "hit; ttl=" in headers["Cache-Status"], headers
        origin_paths = get_json(f"{origin.base_url}/_origin/stats")["paths"]
        # Fetched once, in its 128 KB slices (config/edge.yaml), never again.
        assert origin_paths["/5mo.jpg"] == -(-IMAGE.stat().st_size // (128 * 1024))
        stats = get_json(edge.url("/_edge/stats"))
        assert stats["config"]["rules"] == 9
        assert stats["config"]["reload"]["reloads"] == 1
    finally:
        assert edge.stop() == 0
        origin.stop()
    print(edge.log())


async def test_a_reload_switches_origins_limits_and_token_in_process(
    tmp_path: Path, scripted: tuple[Scripted, Any], aiohttp_server: Any
) -> None:
    from aiohttp import web

    script, first = scripted

    async def second_handler(request: web.Request) -> web.Response:
        return web.Response(body=b"second", headers={"Cache-Control": "max-age=60"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", second_handler)
    second = await aiohttp_server(app)
    script.set("/kept", body=b"first", Cache_Control="max-age=60")
    script.set("/new", body=b"first", Cache_Control="max-age=60")
    config = tmp_path / "edge.yaml"
    text = EDGE_YAML.read_text().replace("  token: null", f"  token: {TOKEN}")
    write_config(config, text.replace("http://127.0.0.1:8081", url(first, "").rstrip("/")))
    source = ConfigSource(str(config), {"port": free_port()})
    server = EdgeServer(source.load(), source=source)
    await server.start()
    seen: list[int] = []

    async def hook(cfg: Any) -> None:  # what edge/server.py runs after each applied reload
        seen.append(cfg.max_connections)

    assert server.reloader is not None
    server.reloader.hooks.append(hook)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(url(server_handle(server), "/kept")) as r:
                assert await r.read() == b"first"
            new_token = "another-token-0123456789"
            write_config(
                config,
                text.replace("http://127.0.0.1:8081", url(second, "").rstrip("/"))
                .replace(TOKEN, new_token)
                .replace("max_connections: 8192", "max_connections: 100"),
            )
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with s.post(url(server_handle(server), "/_edge/reload"), headers=headers) as r:
                answer = await r.json()
            assert r.status == 200, answer
            assert set(answer["changed"]) == {
                "origins",
                "purge_token (hidden)",
                "max_connections",
            }
            assert server.node.guard.max_connections == 100
            assert seen == [100]
            async with s.get(url(server_handle(server), "/kept")) as r:
                assert (await r.read(), r.headers["X-Cache"]) == (b"first", "HIT")
            async with s.get(url(server_handle(server), "/new")) as r:
                assert await r.read() == b"second"  # the new origin
            async with s.post(url(server_handle(server), "/_edge/reload"), headers=headers) as r:
                assert r.status == 403  # the old token is gone
    finally:
        await server.stop()


def server_handle(server: EdgeServer) -> Any:
    class Handle:
        def make_url(self, path: str) -> str:
            return f"http://127.0.0.1:{server.port}{path}"

    return Handle()


def test_a_tls_section_says_what_needs_a_restart() -> None:
    """Issue 27 item 8: a changed `tls:` was reported as applied while the redirect, HSTS and
    the plain listener kept the old values. Now what applies on reload is applied and what
    the listener was made with is reported as restart_needed."""
    from edge.config.tls import CertFiles, Http2Settings, TlsSettings

    old = dataclasses.replace(
        load_config(EDGE_YAML), tls=TlsSettings(port=8443, certificates=(CertFiles("a", "b"),))
    )
    new_tls = dataclasses.replace(
        old.tls,  # type: ignore[arg-type]
        port=9443,
        min_version="1.3",
        hsts="max-age=60",
        redirect=True,
        http2=Http2Settings(enabled=False, max_concurrent_streams=8),
    )
    cfg, kept = reloadable(old, dataclasses.replace(old, tls=new_tls))
    assert kept == ["tls.port", "tls.min_version", "tls.http2.enabled"]
    assert cfg.tls is not None and cfg.tls.port == 8443 and cfg.tls.min_version == "1.2"
    assert cfg.tls.hsts == "max-age=60" and cfg.tls.redirect is True
    assert cfg.tls.http2.enabled and cfg.tls.http2.max_concurrent_streams == 8
    _, kept = reloadable(old, dataclasses.replace(old, tls=None))
    assert kept == ["tls"]


async def test_a_reload_applies_redirect_and_hsts(
    tmp_path: Path, scripted: tuple[Scripted, Any]
) -> None:
    import trustme

    from tests.edge.tls_helpers import H2Client, write_cert

    script, origin = scripted
    script.set("/a", body=b"A", Cache_Control="max-age=60")
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    files = write_cert(ca, tmp_path, "edge", "127.0.0.1", "localhost")
    tls_port = free_port()
    base = (
        f"origins: [{url(origin, '').rstrip('/')}]\npurge: {{token: {TOKEN}}}\n"
        f"tls:\n  port: {tls_port}\n  certificates:\n"
        f"    - {{cert: {files.cert}, key: {files.key}}}\n"
    )
    config = tmp_path / "edge.yaml"
    write_config(config, base)
    source = ConfigSource(str(config), {"port": free_port()})
    server = EdgeServer(source.load(), source=source)
    await server.start()
    try:
        async with aiohttp.ClientSession() as s:
            plain = url(server_handle(server), "/a")
            async with s.get(plain, allow_redirects=False) as r:
                assert r.status == 200
            write_config(
                config,
                base + '  redirect: true\n  hsts: "max-age=60"\n  port_is_kept: no\n',
            )
            result = await server.reload()
            assert not result["ok"] and "tls.port_is_kept" in result["error"]
            write_config(
                config,
                base.replace(f"port: {tls_port}", f"port: {free_port()}")
                + '  redirect: true\n  hsts: "max-age=60"\n',
            )
            result = await server.reload()
            assert result["ok"] and result["restart_needed"] == ["tls.port"]
            assert "tls" in result["changed"]
        # From the next connection on (as nginx's reload: open connections keep theirs).
        async with aiohttp.ClientSession() as s:
            async with s.get(plain, allow_redirects=False) as r:
                assert r.status == 308  # the plain listener redirects from now on
                assert r.headers["Location"].startswith(f"https://127.0.0.1:{tls_port}/")
            # An empty Host cannot be redirected: refused, never served over plain HTTP.
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /a HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 400 ")
        client = await H2Client.open(tls_port, ca)
        try:
            headers, _ = await client.response(client.request("/a"))
            assert headers[b"strict-transport-security"] == b"max-age=60"
        finally:
            await client.close()
    finally:
        await server.stop()
