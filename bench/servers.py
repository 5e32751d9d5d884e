"""Start the origin (the project's own, or the bench's stand-in) and edge nodes on loopback.

`python -m origin serve` is used when it exists (its `--help` exits 0); otherwise the
bench's stand-in (`python -m bench.standin serve`, same flags) takes its place, and the
results say which one ran. Edge nodes are `python -m edge serve` subprocesses; they are
only available once the edge has landed (`edge_available()`).
"""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.peers import Server
from bench.procs import REPO, ProcessGroup, free_port, help_text, http_probe

if TYPE_CHECKING:
    from bench.topology.certs import DevCert


@functools.cache
def origin_help() -> str:
    return help_text("origin", "serve")


@functools.cache
def edge_help() -> str:
    return help_text("edge", "serve")


def real_origin_available() -> bool:
    return "--heavy-seconds" in origin_help()


def edge_available() -> bool:
    return "--origin" in edge_help()


def _has_flag(help_out: str, flag: str) -> bool:
    return re.search(rf"(^|[\s,\[]){re.escape(flag)}\b", help_out) is not None


@dataclass
class OriginSpec:
    heavy_seconds: float = 5.0
    db_seconds: float = 15.0
    static_rate: int = 300 * 1024
    replicas: int = 1
    api_cache: str | None = None
    key_prefix: str = "woody-bench"
    impl: str = "auto"
    """'auto' (the project's origin when present), 'real' or 'standin'."""
    extra: tuple[str, ...] = ()
    """More `origin serve` flags (the real origin only)."""


def resolve_impl(impl: str) -> str:
    if impl == "auto":
        return "real" if real_origin_available() else "standin"
    if impl == "real" and not real_origin_available():
        raise RuntimeError("`python -m origin serve` is not available yet; use --origin standin")
    return impl


def start_origin(group: ProcessGroup, spec: OriginSpec, name: str = "origin") -> Server:
    port = free_port()
    impl = resolve_impl(spec.impl)
    module = "origin" if impl == "real" else "bench.standin"
    argv = [
        sys.executable,
        "-m",
        module,
        "serve",
        "--port",
        str(port),
        "--heavy-seconds",
        str(spec.heavy_seconds),
        "--db-seconds",
        str(spec.db_seconds),
        "--static-rate",
        str(spec.static_rate),
    ]
    if spec.replicas != 1:
        argv += ["--replicas", str(spec.replicas)]
    help_out = origin_help() if impl == "real" else "--api-cache-prefix"
    if spec.api_cache:
        argv += ["--api-cache", spec.api_cache]
        for flag in ("--api-cache-prefix", "--key-prefix", "--redis-prefix"):
            if _has_flag(help_out, flag):
                argv += [flag, f"{spec.key_prefix}-api"]
                break
    if impl == "real" and _has_flag(help_out, "--db"):
        db = group.subdir(name) / "origin.sqlite3"
        argv += ["--db", f"sqlite://{db}"]
    if impl == "real" and _has_flag(help_out, "--no-access-log"):
        argv.append("--no-access-log")
    if impl == "real":
        argv += list(spec.extra)
    managed = group.start(
        name,
        argv,
        ready=http_probe(f"http://127.0.0.1:{port}/api/ping"),
        timeout=60,
        env={"ORIGIN_API_CACHE_PREFIX": f"{spec.key_prefix}-api"},
    )
    return Server(f"{name} ({impl})", f"http://127.0.0.1:{port}", [managed], kind="origin")


def tls_section(tls_port: int, cert: DevCert) -> dict[str, object]:
    """The `tls:` section for HTTPS on tls_port with a DevCert, without session tickets:
    h2load resumes the session of its last connection when it reconnects, and the bench
    measures full handshakes (nginx's side: `ssl_session_tickets off`, bench.peers)."""
    return {
        "port": tls_port,
        "certificates": [{"cert": str(cert.cert), "key": str(cert.key)}],
        "session_tickets": False,
    }


def start_edge(
    group: ProcessGroup,
    origin_url: str,
    *,
    node: str = "edge-1",
    workers: int = 1,
    redis_url: str | None = None,
    key_prefix: str = "woody-bench",
    config: Path | None = None,
    sections: dict[str, dict[str, object]] | None = None,
    extra_args: tuple[str, ...] = (),
    wrapper: tuple[str, ...] = (),
    timeout: float = 60,
) -> Server:
    """An edge node; `sections`: configuration sections over the file's (`tls:` from
    `tls_section`); `wrapper` runs it under another program (bench.cost: valgrind)."""
    if not edge_available():
        raise RuntimeError("`python -m edge serve` is not available yet")
    port = free_port()
    help_out = edge_help()
    argv = [
        *wrapper,
        sys.executable,
        "-m",
        "edge",
        "serve",
        "--port",
        str(port),
        "--origin",
        origin_url,
        "--node",
        node,
        "--workers",
        str(workers),
        *extra_args,
    ]
    config = config or REPO / "config" / "edge.yaml"
    sections = dict(sections or {})
    if redis_url:
        # the key prefix lives in the YAML (redis.prefix): a copy with a unique one
        sections["redis"] = {**sections.get("redis", {}), "prefix": key_prefix}
    if sections:
        config = _config_with(group, config, node, sections)
    if config.exists():
        argv += ["--config", str(config)]
    env = {"EDGE_NODE": node, "EDGE_PORT": str(port), "EDGE_ORIGIN": origin_url}
    if redis_url:
        argv += ["--redis", redis_url]
        env["EDGE_REDIS_URL"] = redis_url
        for flag in ("--redis-prefix", "--key-prefix", "--prefix"):
            if _has_flag(help_out, flag):
                argv += [flag, key_prefix]
                break
    managed = group.start(
        node,
        argv,
        ready=http_probe(f"http://127.0.0.1:{port}/_edge/health"),
        timeout=timeout,
        env=env,
        drop_env=("EDGE_",),  # the bench says what each edge gets, the shell's EDGE_* do not
    )
    return Server(node, f"http://127.0.0.1:{port}", [managed])


def start_floor(
    group: ProcessGroup,
    workers: int,
    cert: DevCert | None = None,
    name: str = "floor",
    hit: bool = False,
    proxy: str = "",
) -> Server:
    """`bench.floor` (the stack's floor: a constant answer, no cache; `hit`: the least a
    cache does for a hit; `proxy`, an origin's URL: the least a proxy does for a miss); with
    `cert`, the Server's url is its HTTPS one."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.floor", "--port", str(port), "--workers", str(workers)]
    if hit:
        argv.append("--hit")
    if proxy:
        argv += ["--proxy", proxy]
    url = f"http://127.0.0.1:{port}"
    if cert is not None:
        tls_port = free_port()
        argv += ["--tls-port", str(tls_port), "--cert", str(cert.cert), "--key", str(cert.key)]
    managed = group.start(name, argv, ready=http_probe(url + "/"), timeout=30)
    if cert is not None:
        url = f"https://127.0.0.1:{tls_port}"
    return Server(name, url, [managed])


def _config_with(
    group: ProcessGroup, config: Path, node: str, sections: dict[str, dict[str, object]]
) -> Path:
    """A copy of `config` whose sections are updated with `sections`' keys."""
    import yaml

    raw: dict[str, object] = {}
    if config.exists():
        loaded = yaml.safe_load(config.read_text())
        if isinstance(loaded, dict):
            raw = loaded
    for name, values in sections.items():
        section = raw.get(name)
        raw[name] = {**(section if isinstance(section, dict) else {}), **values}
    path = group.subdir(node) / "edge.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
