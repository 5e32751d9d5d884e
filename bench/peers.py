"""nginx and Varnish stood up by the bench as peers of the edge, in front of the same origin.

nginx runs as a subprocess (`nginx -p PREFIX -c CONF -g 'daemon off;'`) with 2 workers,
`proxy_cache` with a keys_zone, `proxy_cache_lock on` and every temp path under PREFIX.
Varnish runs as `varnishd -F -a 127.0.0.1:PORT -f VCL -s malloc,256m -n DIR`; its small
VCL keeps the default behaviour, caches answers without caching headers for the test TTL,
passes the product writes, and says HIT/MISS in `X-Cache`. nginx also serves files as the
"fast origin" of the load test (`Cache-Control: public, max-age=3600`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from bench.procs import Child, ProcessGroup, free_port, port_probe


def nginx_binary() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )


def varnishd_binary() -> str | None:
    return shutil.which("varnishd") or (
        "/usr/sbin/varnishd" if os.access("/usr/sbin/varnishd", os.X_OK) else None
    )


def wrk_binary() -> str | None:
    return shutil.which("wrk")


@dataclass
class Server:
    """Something listening on loopback that the bench talks to."""

    name: str
    url: str
    managed: list[Child]
    kind: str = "cache"


def _nginx_common(prefix: Path) -> str:
    for sub in ("client_temp", "proxy_temp", "fastcgi_temp", "uwsgi_temp", "scgi_temp", "logs"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}pid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/logs/error.log warn;\n"
        "worker_processes 2;\n"
        "events { worker_connections 4096; }\n"
    )


def _nginx_http_common(prefix: Path) -> str:
    return (
        "  access_log off;\n"
        f"  client_body_temp_path {prefix}/client_temp;\n"
        f"  proxy_temp_path {prefix}/proxy_temp;\n"
        f"  fastcgi_temp_path {prefix}/fastcgi_temp;\n"
        f"  uwsgi_temp_path {prefix}/uwsgi_temp;\n"
        f"  scgi_temp_path {prefix}/scgi_temp;\n"
        "  keepalive_requests 100000;\n"
        "  sendfile on; tcp_nopush on; tcp_nodelay on;\n"
    )


def nginx_cache_conf(prefix: Path, port: int, origin_port: int, ttl: int = 30) -> str:
    """nginx proxy_cache in front of 127.0.0.1:origin_port (the issue 8 set-up)."""
    (prefix / "cache").mkdir(parents=True, exist_ok=True)
    return (
        _nginx_common(prefix)
        + "http {\n"
        + _nginx_http_common(prefix)
        + f"  proxy_cache_path {prefix}/cache levels=1:2 keys_zone=pc:16m max_size=2g "
        "inactive=10m use_temp_path=off;\n"
        f"  upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 64; }}\n"
        "  server {\n"
        f"    listen 127.0.0.1:{port} backlog=4096;\n"
        "    location / {\n"
        "      proxy_pass http://origin;\n"
        "      proxy_http_version 1.1;\n"
        '      proxy_set_header Connection "";\n'
        "      proxy_read_timeout 120s;\n"
        "      proxy_cache pc;\n"
        "      proxy_cache_lock on;\n"
        # The defaults (5 s) would let waiting requests through to the origin after 5 s;
        # a heavy call takes 5 s at lab settings, so collapsing needs a longer wait.
        "      proxy_cache_lock_timeout 120s;\n"
        "      proxy_cache_lock_age 120s;\n"
        # Only used when the origin sends no caching headers of its own.
        f"      proxy_cache_valid 200 {ttl}s;\n"
        "      proxy_no_cache $arg_product;\n"
        "      proxy_cache_bypass $arg_product;\n"
        "      add_header X-Cache $upstream_cache_status always;\n"
        # Compression as the edge does it (gzip only: Debian's nginx has no brotli
        # module); nginx compresses every answer, hits included, as it goes out.
        "      gzip on;\n"
        "      gzip_proxied any;\n"
        "      gzip_vary on;\n"
        "      gzip_min_length 1024;\n"
        "      gzip_comp_level 6;\n"
        "      gzip_types text/css text/javascript application/javascript application/json "
        "image/svg+xml;\n"
        "    }\n"
        "  }\n"
        "}\n"
    )


def nginx_tls_cache_conf(
    prefix: Path, port: int, tls_port: int, origin_port: int, cert: Path, key: Path
) -> str:
    """The proxy_cache set-up, plus HTTPS (HTTP/1.1 and h2) on tls_port with cert and key:
    TLS 1.2 and 1.3, the ciphers the edge allows, no session cache and no tickets (every
    handshake full: h2load would resume)."""
    plain = f"    listen 127.0.0.1:{port} backlog=4096;\n"
    tls = (
        plain
        + f"    listen 127.0.0.1:{tls_port} ssl http2 backlog=4096;\n"
        + f"    ssl_certificate {cert};\n"
        + f"    ssl_certificate_key {key};\n"
        + "    ssl_protocols TLSv1.2 TLSv1.3;\n"
        + "    ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;\n"
        + "    ssl_prefer_server_ciphers on;\n"
        + "    ssl_session_tickets off;\n"
    )
    conf = nginx_cache_conf(prefix, port, origin_port)
    assert plain in conf
    return conf.replace(plain, tls, 1)


def nginx_tls_cache(
    group: ProcessGroup, origin_port: int, cert: Path, key: Path, name: str = "nginx"
) -> Server:
    """nginx proxy_cache serving HTTPS; the Server's url is the https one."""
    port, tls_port = free_port(), free_port()
    prefix = group.subdir(name)
    conf = nginx_tls_cache_conf(prefix, port, tls_port, origin_port, cert, key)
    managed = start_nginx(group, name, conf, tls_port)
    return Server(name, f"https://127.0.0.1:{tls_port}", [managed])


def nginx_files_conf(prefix: Path, port: int, root: Path) -> str:
    """nginx serving files from root with `Cache-Control: public, max-age=3600`."""
    return (
        _nginx_common(prefix)
        + "http {\n"
        + _nginx_http_common(prefix)
        + "  types { text/html html; image/jpeg jpg; }\n"
        "  default_type application/octet-stream;\n"
        "  server {\n"
        f"    listen 127.0.0.1:{port} backlog=4096;\n"
        f"    root {root};\n"
        '    location / { add_header Cache-Control "public, max-age=3600"; }\n'
        "  }\n"
        "}\n"
    )


def start_nginx(
    group: ProcessGroup,
    name: str,
    conf_text: str,
    port: int,
    wrapper: tuple[str, ...] = (),
    timeout: float = 30,
) -> Child:
    """nginx in the foreground; `wrapper` runs it under another program (bench.cost)."""
    binary = nginx_binary()
    if binary is None:
        raise FileNotFoundError("nginx is not installed")
    prefix = group.subdir(name)
    conf = prefix / "nginx.conf"
    conf.write_text(conf_text)
    return group.start(
        name,
        [*wrapper, binary, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
        ready=port_probe(port),
        timeout=timeout,
    )


def nginx_cache(
    group: ProcessGroup, origin_port: int, name: str = "nginx", ttl: int = 30
) -> Server:
    port = free_port()
    prefix = group.subdir(name)
    managed = start_nginx(group, name, nginx_cache_conf(prefix, port, origin_port, ttl), port)
    return Server(name, f"http://127.0.0.1:{port}", [managed])


def nginx_files(group: ProcessGroup, files: dict[str, bytes], name: str = "files") -> Server:
    """A fast origin: nginx serving `files` (path -> body) with max-age=3600."""
    port = free_port()
    prefix = group.subdir(name)
    root = prefix / "root"
    for path, body in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
    managed = start_nginx(group, name, nginx_files_conf(prefix, port, root), port)
    return Server(name, f"http://127.0.0.1:{port}", [managed], kind="origin")


def varnish_vcl(origin_port: int, ttl: int = 30) -> str:
    return f"""vcl 4.1;

backend default {{
    .host = "127.0.0.1";
    .port = "{origin_port}";
    .first_byte_timeout = 120s;
    .between_bytes_timeout = 60s;
}}

sub vcl_recv {{
    # Writes behind a GET: never cache nor collapse them.
    if (req.url ~ "[?&]product=") {{
        return (pass);
    }}
}}

sub vcl_backend_response {{
    # Origins that send no caching headers are cached for the test TTL.
    if (!beresp.http.Cache-Control && !beresp.http.Expires) {{
        set beresp.ttl = {ttl}s;
    }}
}}

sub vcl_deliver {{
    if (obj.hits > 0) {{
        set resp.http.X-Cache = "HIT";
    }} else {{
        set resp.http.X-Cache = "MISS";
    }}
}}
"""


def varnish_cache(
    group: ProcessGroup, origin_port: int, name: str = "varnish", ttl: int = 30
) -> Server:
    binary = varnishd_binary()
    if binary is None:
        raise FileNotFoundError("varnishd is not installed")
    port = free_port()
    workdir = group.subdir(name)
    os.chmod(group.workdir, 0o755)
    os.chmod(workdir, 0o755)
    vcl = workdir / "bench.vcl"
    vcl.write_text(varnish_vcl(origin_port, ttl))
    os.chmod(vcl, 0o644)
    managed = group.start(
        name,
        [
            binary,
            "-F",
            "-a",
            f"127.0.0.1:{port}",
            "-f",
            str(vcl),
            "-s",
            "malloc,256m",
            "-n",
            str(workdir / "state"),
            "-T",
            "none",
            "-p",
            "thread_pool_min=50",
        ],
        ready=port_probe(port),
        timeout=60,
    )
    return Server(name, f"http://127.0.0.1:{port}", [managed])
