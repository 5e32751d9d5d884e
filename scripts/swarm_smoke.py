"""Build the Swarm stack from the project's Dockerfiles, deploy it on a one-node swarm, and measure
the lab through it (scripts/swarm-smoke is the command; docs/deploy.md explains the results).

Needs root and Debian's packages only: it installs docker.io, debootstrap and curl with apt when
they are missing, starts dockerd when none runs (and stops it at the end), makes a local Debian
base image with debootstrap (cached as an image), a wheelhouse with pip on the host (cached under
/var/cache/woody-swarm), builds every image, `docker swarm init`s when there is no swarm, deploys
stack.yml with deploy/swarm/local.yml, waits for every service to be healthy, then measures:

- the lab's table (page with every asset, heavy, DB; cold then warm) through the edge (port 80)
  and through the lab's nginx proxy (port 8081);
- the edge's headers as `curl -sI` shows them, and /_edge/health;
- a purge through the stack, and adding a product invalidating /api/products/last;
- `docker kill` of the edge task, `docker service update --force` of the edge, and the API scaled
  5 -> 1 -> 5, each under a steady bounded load: failed requests and time until answered again.

Every request goes to 127.0.0.1 (the ports the stack publishes); every load is bounded in count
and time. Results: a Markdown table on stdout and bench/results/swarm-<timestamp>.{md,json}. Exit
status 1 when a service never became healthy or a check failed; 2 on bad usage.

Standard library only: it runs before any virtual environment exists.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import hashlib
import html.parser
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("WOODY_SWARM_CACHE", "/var/cache/woody-swarm"))
STATE_FILE = CACHE / "state.json"
BASE_IMAGE = "woody-local/debian:bookworm"
DEBIAN_MIRROR = os.environ.get("WOODY_DEBIAN_MIRROR", "http://deb.debian.org/debian")
REGISTRY = "local"
IMAGE_PREFIX = "woodytoys"
TAG = "smoke"
OVERRIDE = "deploy/swarm/local.yml"
NOT_RUN_HERE = ("prometheus", "grafana")  # no registry: their images cannot be pulled
SECRETS = ("woody_db_password", "woody_purge_token", "woody_tls_cert", "woody_tls_key")
APT_PACKAGES = {  # command (or test) -> Debian package
    "dockerd": "docker.io",
    "debootstrap": "debootstrap",
    "curl": "curl",
    "iptables": "iptables",
}
STARTED = time.monotonic()


class SmokeError(Exception):
    """A step that cannot go on; the message says why."""


def log(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:7.1f}s] {message}", flush=True)


# --- commands ------------------------------------------------------------------------------------


def docker_cli() -> str:
    """The docker client: the one of Debian's docker.io (its BuildKit needs no buildx plugin)."""
    chosen = os.environ.get("WOODY_DOCKER")
    if chosen:
        return chosen
    if Path("/usr/bin/docker").exists():
        return "/usr/bin/docker"
    found = shutil.which("docker")
    if not found:
        raise SmokeError("no docker client (apt-get install docker.io)")
    return found


def run(
    cmd: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 600,
    input_text: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output; on failure say which command and what it printed."""
    try:
        result = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input_text,
            env=env,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired as exc:
        raise SmokeError(f"{' '.join(cmd)}: no answer after {timeout:.0f} s") from exc
    if check and result.returncode != 0:
        output = (result.stderr or result.stdout).strip()[-2000:]
        raise SmokeError(f"{' '.join(cmd)}: exit {result.returncode}\n{output}")
    return result


def docker(*args: str, check: bool = True, timeout: float = 600, **kw: Any) -> str:
    return run([docker_cli(), *args], check=check, timeout=timeout, **kw).stdout


# --- 1. tools and the daemon ---------------------------------------------------------------------


def ensure_tools(more: dict[str, str] | None = None) -> None:
    """Root, and the commands of APT_PACKAGES (and `more`: command -> package), installed with
    apt when missing."""
    if os.geteuid() != 0:
        raise SmokeError("run as root (it installs packages and starts dockerd)")
    wanted = {**APT_PACKAGES, **(more or {})}
    missing = [pkg for cmd, pkg in wanted.items() if not shutil.which(cmd)]
    if (
        not Path("/usr/bin/python3").exists()
        or run(["/usr/bin/python3", "-c", "import ensurepip, venv"], check=False).returncode
    ):
        missing.append("python3-venv")
    if not Path("/usr/bin/docker").exists() and "docker.io" not in missing:
        missing.append("docker.io")
    if not missing:
        return
    if not shutil.which("apt-get"):
        raise SmokeError(f"missing {', '.join(missing)} and no apt-get to install them")
    log(f"installing with apt: {' '.join(sorted(set(missing)))}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], timeout=600, env=env)
    run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *sorted(set(missing))],
        timeout=900,
        env=env,
    )


def docker_answers() -> bool:
    return (
        run([docker_cli(), "info", "--format", "{{.ServerVersion}}"], check=False).returncode == 0
    )


def start_dockerd() -> int:
    """Start dockerd in the background; its pid. Published ports bind on 127.0.0.1 by default."""
    CACHE.mkdir(parents=True, exist_ok=True)
    logfile = (CACHE / "dockerd.log").open("ab")
    log("starting dockerd (log: /var/cache/woody-swarm/dockerd.log)")
    proc = subprocess.Popen(
        ["dockerd", "--ip", "127.0.0.1"],
        stdout=logfile,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SmokeError(f"dockerd exited ({proc.returncode}); see {CACHE / 'dockerd.log'}")
        if docker_answers():
            return proc.pid
        time.sleep(1)
    raise SmokeError("dockerd did not answer within 60 s")


def stop_dockerd(pid: int) -> None:
    log(f"stopping the dockerd this script started (pid {pid})")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # Reap it when it is our child (started by this process).
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        time.sleep(0.5)
    log(f"dockerd (pid {pid}) still runs after 60 s")


# --- 2. base image, wheelhouse, images -----------------------------------------------------------


def image_exists(name: str) -> bool:
    return run([docker_cli(), "image", "inspect", name], check=False).returncode == 0


def ensure_base_image() -> str:
    """A Debian bookworm with python3, venv, curl: debootstrap + docker import, once."""
    if image_exists(BASE_IMAGE):
        log(f"base image {BASE_IMAGE}: cached")
        return "cached"
    root = CACHE / f"rootfs-{os.getpid()}"
    shutil.rmtree(root, ignore_errors=True)
    log(f"base image {BASE_IMAGE}: debootstrap bookworm from {DEBIAN_MIRROR} (about a minute)")
    try:
        run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates,curl",
                "bookworm",
                str(root),
                DEBIAN_MIRROR,
            ],
            timeout=900,
        )
        # Services installed by later `apt-get install`s must not try to start at build time.
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (root / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [
                docker_cli(),
                "import",
                "-c",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "-c",
                "ENV LANG=C.UTF-8",
                "-c",
                'CMD ["/bin/bash"]',
                "-",
                BASE_IMAGE,
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if tar.stdout:
            tar.stdout.close()
        tar.wait()
        if imported.returncode or tar.returncode:
            raise SmokeError(f"docker import failed: {imported.stderr.strip()}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return "built"


def requirements() -> list[str]:
    out = run([sys.executable, "deploy/requirements_from_pyproject.py", "pyproject.toml"]).stdout
    # The project's own wheel is built in the images: its build backend comes from here too.
    return [*out.split(), "setuptools>=77", "wheel"]


def ensure_wheelhouse() -> str:
    """pip wheel on the host with Debian's python3 (the base's own Python, so markers match)."""
    reqs = requirements()
    host_python = run(
        ["/usr/bin/python3", "-c", "import platform; print(platform.python_version())"]
    )
    version = host_python.stdout.strip()
    base_python = docker(
        "run",
        "--rm",
        "--network",
        "none",
        BASE_IMAGE,
        "python3",
        "-c",
        "import platform; print(platform.python_version())",
    ).strip()
    if version != base_python:
        raise SmokeError(
            f"/usr/bin/python3 is {version} but the base image has {base_python}: the wheelhouse "
            "must be made by the Python the images run (Debian bookworm's)"
        )
    key = hashlib.sha256("\n".join([version, *reqs]).encode()).hexdigest()[:16]
    house = CACHE / "wheelhouse" / key
    status = "cached"
    if not (house / ".complete").exists():
        status = "built"
        log(f"wheelhouse: pip wheel of {len(reqs)} requirements with Python {version}")
        venv = CACHE / "pip-venv"
        if not (venv / "bin" / "pip").exists():
            run(["/usr/bin/python3", "-m", "venv", str(venv)], timeout=300)
        shutil.rmtree(house, ignore_errors=True)
        house.mkdir(parents=True)
        run(
            [
                str(venv / "bin" / "pip"),
                "wheel",
                "-q",
                "--disable-pip-version-check",
                "--wheel-dir",
                str(house),
                *reqs,
            ],
            timeout=900,
        )
        (house / ".complete").write_text("\n".join(reqs) + "\n")
    else:
        log(f"wheelhouse: cached ({house})")
    target = REPO / "deploy" / "wheelhouse"
    wanted = {p.name for p in house.glob("*.whl")}
    for old in target.glob("*.whl"):
        if old.name not in wanted:
            old.unlink()
    for wheel in house.glob("*.whl"):
        dest = target / wheel.name
        if not dest.exists() or dest.stat().st_size != wheel.stat().st_size:
            shutil.copy2(wheel, dest)
    return status


def image_builds() -> list[tuple[str, str, dict[str, str]]]:
    """(image name, Dockerfile, build args): the five of stack.yml and the two local stand-ins."""
    b = BASE_IMAGE
    return [
        ("woody-edge", "deploy/edge/Dockerfile", {"BASE": b}),
        ("woody-api", "deploy/origin/Dockerfile", {"BASE": b}),
        ("woody-front", "deploy/front/Dockerfile", {"PYTHON_BASE": b, "NGINX_BASE": b}),
        ("woody-proxy", "deploy/proxy/Dockerfile", {"BASE": b}),
        ("woody-database-mariadb", "deploy/database/Dockerfile.mariadb", {"BASE": b}),
        ("woody-redis", "deploy/redis/Dockerfile", {"BASE": b}),
    ]


def build_images() -> list[dict[str, Any]]:
    commit = run(["git", "rev-parse", "HEAD"], check=False).stdout.strip() or "unknown"
    logs = CACHE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    done = []
    for name, dockerfile, args in image_builds():
        tag = f"{REGISTRY}/{IMAGE_PREFIX}/{name}:{TAG}"
        cmd = [docker_cli(), "build", "--progress=plain", "-f", dockerfile, "-t", tag]
        for key, value in {**args, "GIT_COMMIT": commit, "VERSION": TAG}.items():
            cmd += ["--build-arg", f"{key}={value}"]
        cmd.append(".")
        log(f"building {tag} from {dockerfile}")
        began = time.monotonic()
        result = run(cmd, check=False, timeout=1800, env=env)
        seconds = time.monotonic() - began
        (logs / f"build-{name}.log").write_text(result.stdout + result.stderr)
        if result.returncode:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
            raise SmokeError(
                f"docker build of {name} failed (log {logs}/build-{name}.log):\n{tail}"
            )
        steps = re.findall(r"^#\d+ \[[^\]]*\] (?:RUN|COPY)", result.stderr, re.M)
        cached = len(re.findall(r"^#\d+ CACHED$", result.stderr, re.M))
        done.append(
            {"image": tag, "seconds": round(seconds, 1), "steps": len(steps), "cached": cached}
        )
        log(f"  {name}: {seconds:.1f} s ({cached} cached steps)")
    return done


# --- 3. swarm, secrets, stack --------------------------------------------------------------------


def ensure_swarm() -> bool:
    """True when this script made the swarm (and should leave it at the end)."""
    state = docker("info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}")
    node_state, _, manager = state.strip().partition(" ")
    if node_state == "active":
        if manager != "true":
            raise SmokeError("this node is in a swarm but not a manager: deploy from a manager")
        log("swarm: active (left as it is)")
        return False
    log("swarm: docker swarm init --advertise-addr 127.0.0.1")
    docker("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:2377")
    return True


def stack_containers(stack: str) -> list[str]:
    out = docker("ps", "-aq", "--filter", f"label=com.docker.stack.namespace={stack}")
    return out.split()


def remove_stack(stack: str) -> None:
    """Remove the stack, then its volumes and the secrets (so the next run starts clean)."""
    services = docker("stack", "services", "-q", stack, check=False).split()
    if services:
        log(f"removing stack {stack}")
        docker("stack", "rm", stack)
    deadline = time.monotonic() + 120
    while (
        stack_containers(stack)
        or docker(
            "network", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={stack}"
        ).strip()
    ):
        if time.monotonic() > deadline:
            raise SmokeError(f"stack {stack}: containers still there 120 s after docker stack rm")
        time.sleep(1)
    for volume in ("mysql-data", "edge-cache"):
        name = f"{stack}_{volume}"
        if run([docker_cli(), "volume", "inspect", name], check=False).returncode == 0:
            docker("volume", "rm", name)
    for secret in SECRETS:
        if run([docker_cli(), "secret", "inspect", secret], check=False).returncode == 0:
            docker("secret", "rm", secret)


def create_secrets() -> str:
    """Fresh secrets; the purge token is returned (and kept, mode 600, for --keep)."""
    docker("secret", "create", "woody_db_password", "-", input_text=secrets.token_hex(24))
    token = secrets.token_hex(24)
    docker("secret", "create", "woody_purge_token", "-", input_text=token)
    CACHE.mkdir(parents=True, exist_ok=True)
    # The edge's HTTPS listener needs a certificate: a self-signed one for localhost, made
    # with openssl for this run (a real deployment puts its own in these two secrets).
    cert, key = CACHE / "tls-cert.pem", CACHE / "tls-key.pem"
    run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ]
    )  # fmt: skip
    key.chmod(0o600)
    docker("secret", "create", "woody_tls_cert", str(cert))
    docker("secret", "create", "woody_tls_key", str(key))
    path = CACHE / "purge-token"
    path.write_text(token)
    path.chmod(0o600)
    return token


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def deploy_env(opts: argparse.Namespace, api_role: str = "manager") -> dict[str, str]:
    return {
        **os.environ,
        "REGISTRY": REGISTRY,
        "IMAGE_PREFIX": IMAGE_PREFIX,
        "TAG": TAG,
        "API_NODE_ROLE": api_role,
        "WOODY_HEAVY_SECONDS": str(opts.heavy_seconds),
        "WOODY_DB_SECONDS": str(opts.db_seconds),
        "WOODY_EDGE_PORT": str(opts.edge_port),
        "WOODY_PROXY_PORT": str(opts.proxy_port),
    }


def deploy(
    opts: argparse.Namespace, overrides: Sequence[str] = (OVERRIDE,), api_role: str = "manager"
) -> None:
    files = [arg for name in ("stack.yml", *overrides) for arg in ("-c", name)]
    log(f"docker stack deploy {' '.join(files)} {opts.stack}")
    docker(
        "stack",
        "deploy",
        "--resolve-image",
        "never",
        *files,
        opts.stack,
        env=deploy_env(opts, api_role),
    )
    # Their official images cannot be pulled here; an override cannot set replicas to 0
    # (docker's stack merge keeps a non-zero value), so they are scaled down once created.
    names = [f"{opts.stack}_{name}=0" for name in NOT_RUN_HERE]
    docker("service", "scale", "--detach", *names, check=False)


def service_health(stack: str, daemons: Sequence[str] = ()) -> dict[str, tuple[int, int, int]]:
    """service -> (desired, running, healthy containers); containers are counted on each of
    `daemons` (docker -H addresses) when given, else on the daemon the client talks to."""
    out = docker("stack", "services", stack, "--format", "{{.Name}}\t{{.Replicas}}")
    result: dict[str, tuple[int, int, int]] = {}
    containers = "".join(
        docker(
            *host,
            "ps",
            "--filter",
            f"label=com.docker.stack.namespace={stack}",
            "--format",
            '{{.Label "com.docker.swarm.service.name"}}\t{{.Status}}',
        )
        for host in ([("-H", d) for d in daemons] if daemons else [()])
    )
    healthy: dict[str, int] = {}
    for line in containers.splitlines():
        name, _, status = line.partition("\t")
        if "(healthy)" in status:
            healthy[name] = healthy.get(name, 0) + 1
    for line in out.splitlines():
        name, _, replicas = line.partition("\t")
        match = re.match(r"(\d+)/(\d+)", replicas)
        if match:
            running, desired = int(match.group(1)), int(match.group(2))
            result[name] = (desired, running, healthy.get(name, 0))
    return result


def wait_healthy(
    stack: str, timeout: float, what: str = "every service healthy", daemons: Sequence[str] = ()
) -> float:
    """Seconds until every service runs its desired count of healthy tasks; SmokeError if never."""
    began = time.monotonic()
    last_report = 0.0
    state: dict[str, tuple[int, int, int]] = {}
    while time.monotonic() - began < timeout:
        state = service_health(stack, daemons)
        waiting = {
            n: s
            for n, s in state.items()
            if not (s[0] > 0 and s[2] >= s[0]) and n.removeprefix(stack + "_") not in NOT_RUN_HERE
        }
        if state and not waiting:
            return time.monotonic() - began
        if time.monotonic() - last_report >= 10:
            last_report = time.monotonic()
            summary = ", ".join(
                f"{n.removeprefix(stack + '_')} {s[2]}/{s[0]} healthy" for n, s in waiting.items()
            )
            log(f"  waiting for {what}: {summary or 'services to appear'}")
        time.sleep(2)
    details = []
    for name, (desired, _, healthy_count) in state.items():
        if healthy_count < desired or desired == 0:
            errors = docker(
                "service",
                "ps",
                "--no-trunc",
                "--format",
                "{{.CurrentState}} {{.Error}}",
                name,
                check=False,
            ).splitlines()[:3]
            details.append(f"{name}: {healthy_count}/{desired} healthy; {' | '.join(errors)}")
    raise SmokeError(f"not healthy after {timeout:.0f} s:\n" + "\n".join(details))


# --- 4. HTTP on 127.0.0.1 ------------------------------------------------------------------------


@dataclasses.dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


def request(
    port: int,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 120,
    host: str = "127.0.0.1",
) -> Answer:
    """One request on a new connection to host:port; the whole body is read."""
    began = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        answer_headers = {k.lower(): v for k, v in resp.getheaders()}
        return Answer(resp.status, answer_headers, data, time.monotonic() - began)
    finally:
        conn.close()


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and (name == "src" or (name == "href" and tag in {"link", "a"})):
                self.links.append(value)
            if value and name == "style":
                self.links += css_urls(value)


def css_urls(text: str) -> list[str]:
    return [m.strip("'\" ") for m in re.findall(r"url\(([^)]*)\)", text)]


def page_assets(base: str, text: str, is_css: bool) -> list[str]:
    """Same-site paths an HTML page or a stylesheet refers to, as `wget -r -np` follows them."""
    links = css_urls(text) if is_css else []
    if not is_css:
        parser = _Links()
        parser.feed(text)
        links = parser.links
        for block in re.findall(r"<style[^>]*>(.*?)</style>", text, re.S | re.I):
            links += css_urls(block)
    paths = []
    for link in links:
        if not link or link.startswith(("#", "data:", "javascript:", "mailto:")):
            continue
        url = urllib.parse.urlsplit(urllib.parse.urljoin(base, link))
        if url.scheme or url.netloc:
            continue
        if url.path not in paths:
            paths.append(url.path)
    return paths


def load_page(port: int, host: str = "127.0.0.1") -> dict[str, Any]:
    """The page and every asset, one after the other, as the lab's `wget -r` did."""
    began = time.monotonic()
    first = request(port, "/", host=host)
    seen = ["/"]
    verdicts = [first.header("x-cache") or "-"]
    statuses = [first.status]
    size = len(first.body)
    queue = page_assets("/", first.body.decode("utf-8", "replace"), False)
    while queue:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.append(path)
        answer = request(port, path, host=host)
        verdicts.append(answer.header("x-cache") or "-")
        statuses.append(answer.status)
        size += len(answer.body)
        if path.endswith(".css") and answer.status == 200:
            queue += page_assets(path, answer.body.decode("utf-8", "replace"), True)
    return {
        "seconds": time.monotonic() - began,
        "files": seen,
        "bytes": size,
        "statuses": statuses,
        "x_cache": verdicts,
    }


def timed(port: int, path: str, host: str = "127.0.0.1") -> dict[str, Any]:
    answer = request(port, path, host=host)
    return {
        "seconds": answer.seconds,
        "statuses": [answer.status],
        "x_cache": [answer.header("x-cache") or "-"],
        "body": answer.body.decode("utf-8", "replace")[:200],
    }


# --- 5. load under failures ----------------------------------------------------------------------


@dataclasses.dataclass
class Sample:
    began: float
    ended: float
    ok: bool
    status: int
    served_by: str
    error: str
    cache: str = ""


class Load:
    """`threads` clients, each sending GET path in a loop (one new connection per request, a pause
    between requests), until stop() or max_seconds or max_requests: a bounded, steady load."""

    def __init__(
        self,
        port: int,
        path: str,
        threads: int = 2,
        pause: float = 0.05,
        max_seconds: float = 240,
        max_requests: int = 20000,
        timeout: float = 5,
        host: str = "127.0.0.1",
    ) -> None:
        self.port, self.path, self.pause, self.timeout = port, path, pause, timeout
        self.host = host
        self.max_seconds, self.max_requests = max_seconds, max_requests
        self.samples: list[Sample] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.t0 = time.monotonic()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Self:
        self.t0 = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=self.timeout + 5)

    def _loop(self) -> None:
        while not self.stopping.is_set() and self.now() < self.max_seconds:
            with self.lock:
                if len(self.samples) >= self.max_requests:
                    return
            sample = self.attempt()
            with self.lock:
                self.samples.append(sample)
            self.stopping.wait(self.pause)

    def attempt(self, host: str | None = None) -> Sample:
        """One request of the load (to `host`, else the load's own), as a Sample."""
        began = self.now()
        try:
            answer = request(self.port, self.path, timeout=self.timeout, host=host or self.host)
            return Sample(
                began,
                self.now(),
                answer.status < 500,
                answer.status,
                answer.header("x-served-by"),
                "",
                answer.header("x-cache"),
            )
        except (OSError, http.client.HTTPException) as exc:
            return Sample(began, self.now(), False, 0, "", error_name(exc))

    def snapshot(self) -> list[Sample]:
        with self.lock:
            return list(self.samples)

    def wait_for(self, predicate: Callable[[Sample], bool], timeout: float) -> Sample | None:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            samples = self.snapshot()
            for sample in samples[seen:]:
                if predicate(sample):
                    return sample
            seen = len(samples)
            time.sleep(0.1)
        return None


def error_name(exc: Exception) -> str:
    """The exception's class, and for a bare OSError its errno's name (EHOSTUNREACH...)."""
    name = type(exc).__name__
    code = exc.errno if type(exc) is OSError else None
    if code is not None and code in errno.errorcode:
        name += f" {errno.errorcode[code]}"
    return name


def summarize(samples: list[Sample], since: float = 0.0) -> dict[str, Any]:
    """Counts, and the longest stretch without a successful answer, after `since`."""
    after = [s for s in samples if s.began >= since]
    failed = [s for s in after if not s.ok]
    gap, last_ok = 0.0, since
    for s in sorted((s for s in after if s.ok), key=lambda s: s.ended):
        gap = max(gap, s.ended - last_ok)
        last_ok = s.ended
    errors: dict[str, int] = {}
    for s in failed:
        key = s.error or f"HTTP {s.status}"
        errors[key] = errors.get(key, 0) + 1
    return {
        "requests": len(after),
        "failed": len(failed),
        "errors": errors,
        "longest_gap_s": round(gap, 2),
    }


def edge_task(stack: str) -> tuple[str, str]:
    """(container id, task name) of the running edge task."""
    out = docker(
        "ps",
        "--filter",
        f"label=com.docker.swarm.service.name={stack}_edge",
        "--format",
        '{{.ID}}\t{{.Label "com.docker.swarm.task.name"}}',
    )
    lines = [ln for ln in out.splitlines() if ln.strip()]
    if len(lines) != 1:
        raise SmokeError(f"expected one running edge task, found {len(lines)}")
    cid, _, name = lines[0].partition("\t")
    return cid, name


def replacement_test(
    opts: argparse.Namespace, title: str, action: Callable[[], subprocess.Popen[str] | None]
) -> dict[str, Any]:
    """Load on the edge; `action` replaces its task; count failures until the new one answers."""
    _, old = edge_task(opts.stack)
    with Load(opts.edge_port, "/", threads=opts.load_threads, max_seconds=240) as load:
        time.sleep(3)
        t_action = load.now()
        log(f"{title}: old task {old}")
        proc = action()
        new = load.wait_for(
            lambda s: s.ok and s.began >= t_action and s.served_by not in ("", old), timeout=180
        )
        if proc is not None:
            try:
                proc.wait(timeout=240)
            except subprocess.TimeoutExpired:
                proc.kill()
        time.sleep(3)
        load.stop()
        samples = load.snapshot()
    result = summarize(samples, since=t_action)
    result["before"] = summarize([s for s in samples if s.began < t_action])
    result["old_task"] = old
    result["new_task"] = new.served_by if new else None
    result["replacement_answered_s"] = round(new.ended - t_action, 2) if new else None
    # The node tier is on a volume: the new task's first answer comes from the old one's cache.
    result["first_answer_cache"] = new.cache if new else None
    first_fail = next((s for s in samples if s.began >= t_action and not s.ok), None)
    result["first_failure_s"] = round(first_fail.began - t_action, 2) if first_fail else None
    if proc is not None:
        result["command_exit"] = proc.returncode
    log(
        f"  {result['failed']} of {result['requests']} requests failed; "
        f"replacement answered after {result['replacement_answered_s']} s"
    )
    return result


def kill_test(opts: argparse.Namespace) -> dict[str, Any]:
    def action() -> None:
        cid, _ = edge_task(opts.stack)
        docker("kill", cid)

    return replacement_test(opts, "docker kill of the edge task", action)


def update_test(opts: argparse.Namespace) -> dict[str, Any]:
    def action() -> subprocess.Popen[str]:
        logfile = (CACHE / "logs" / "service-update.log").open("w")
        return subprocess.Popen(
            [docker_cli(), "service", "update", "--force", "--detach=false", f"{opts.stack}_edge"],
            stdout=logfile,
            stderr=subprocess.STDOUT,
            text=True,
        )

    result = replacement_test(opts, "docker service update --force of the edge", action)
    # --detach=false returns once the new task runs; the update completes after `monitor`.
    deadline = time.monotonic() + 90
    state = ""
    while time.monotonic() < deadline:
        state = docker(
            "service", "inspect", "--format", "{{.UpdateStatus.State}}", f"{opts.stack}_edge"
        ).strip()
        if state not in ("updating", ""):
            break
        time.sleep(2)
    result["update_state"] = state
    log(f"  update state: {state}")
    return result


def scale_test(opts: argparse.Namespace) -> dict[str, Any]:
    """The API scaled 5 -> 1 -> 5 under a load of uncached API calls through the edge."""
    service = f"{opts.stack}_api"
    phases: dict[str, Any] = {}
    with Load(opts.edge_port, "/api/misc/time", threads=opts.load_threads, max_seconds=300) as load:
        time.sleep(3)
        t_down = load.now()
        log("scaling the API 5 -> 1 under load")
        docker("service", "scale", "--detach=false", f"{service}=1", timeout=180)
        t_one = load.now()
        time.sleep(5)
        t_up = load.now()
        log("scaling the API 1 -> 5 under load")
        docker("service", "scale", "--detach=false", f"{service}=5", timeout=180)
        healthy_after = wait_healthy(opts.stack, 180, "the API's 5 tasks healthy")
        t_five = load.now()
        time.sleep(3)
        load.stop()
        samples = load.snapshot()
    bounds = [
        ("5 replicas", 0.0, t_down),
        ("scaling 5 -> 1", t_down, t_one),
        ("1 replica", t_one, t_up),
        ("scaling 1 -> 5 (until healthy)", t_up, t_five),
        ("5 replicas again", t_five, float("inf")),
    ]
    for name, start, end in bounds:
        part = [s for s in samples if start <= s.began < end]
        phases[name] = {
            **summarize(part, since=start),
            "seconds": round(min(end, load.now()) - start, 1),
        }
    total = summarize(samples)
    log(f"  {total['failed']} of {total['requests']} requests failed")
    return {
        **total,
        "phases": phases,
        "scale_down_s": round(t_one - t_down, 1),
        "scale_up_healthy_s": round(t_five - t_up, 1),
        "healthy_wait_s": round(healthy_after, 1),
    }


# --- 6. the measurements -------------------------------------------------------------------------


@dataclasses.dataclass
class Check:
    name: str
    ok: bool
    detail: str


class Checks:
    def __init__(self) -> None:
        self.items: list[Check] = []

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        self.items.append(Check(name, ok, detail))
        log(f"  {'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
        return ok

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.items if not c.ok]


def lab_table(
    opts: argparse.Namespace,
    run_id: str,
    checks: Checks,
    targets: Sequence[tuple[str, str, int]] = (),
) -> list[dict[str, Any]]:
    """Rows of the lab's table; `targets` are (via, host, port), a via starting with "proxy" or
    "edge" (by default the proxy and the edge on 127.0.0.1)."""
    rows = []
    heavy = f"/api/misc/heavy?name=swarm-{run_id}"
    last = "/api/products/last"
    targets = targets or (
        ("proxy", "127.0.0.1", opts.proxy_port),
        ("edge", "127.0.0.1", opts.edge_port),
    )
    measures: tuple[tuple[str, Callable[[int, str], dict[str, Any]]], ...] = (
        ("page", load_page),
        ("heavy", lambda port, host: timed(port, heavy, host)),
        ("db", lambda port, host: timed(port, last, host)),
    )
    for label, measure in measures:
        for via, host, port in targets:
            log(f"table: {label} through the {via} ({host}:{port}), cold then warm")
            cold = measure(port, host)
            is_edge = via.startswith("edge")
            # The same request at once: on a node with several workers it can reach a worker
            # that has not heard of the answer yet (reported in the notes, not in the table).
            immediate = measure(port, host) if is_edge and label != "page" else None
            time.sleep(0.5)
            # The proxy caches nothing: one more request says as much as three (a page is 16 s).
            warms = [measure(port, host) for _ in range(3 if is_edge else 1)]
            warm = sorted(warms, key=lambda m: m["seconds"])[len(warms) // 2]  # the median
            warm = {
                **warm,
                "x_cache": [v for m in warms for v in m["x_cache"]],
                "statuses": [s for m in warms for s in m["statuses"]],
                "all_seconds": [m["seconds"] for m in warms],
            }
            row: dict[str, Any] = {
                "request": label,
                "via": via,
                "host": host,
                "port": port,
                "cold": cold,
                "warm": warm,
            }
            if immediate is not None:
                row["immediate"] = immediate
            rows.append(row)
            ok = all(s == 200 for s in cold["statuses"] + warm["statuses"])
            checks.add(f"table {label} via {via}: every answer 200", ok)
            if is_edge:
                checks.add(
                    f"table {label} via {via}: warm is all HIT",
                    all(v == "HIT" for v in warm["x_cache"]),
                    " ".join(warm["x_cache"]),
                )
    by = {(r["request"], r["via"]): r for r in rows}
    proxy = next(via for via, _, _ in targets if via.startswith("proxy"))
    page_proxy = by[("page", proxy)]["warm"]
    floor = page_proxy["bytes"] / (300 * 1024) * 0.8
    checks.add(
        "the proxy throttles the page like the lab (limit_rate 300k)",
        page_proxy["seconds"] >= floor,
        f"{page_proxy['bytes']} bytes in {page_proxy['seconds']:.1f} s",
    )
    checks.add(
        "the heavy call takes its delay without a cache",
        by[("heavy", proxy)]["warm"]["seconds"] >= opts.heavy_seconds * 0.9,
    )
    return rows


def headers_check(opts: argparse.Namespace, checks: Checks) -> dict[str, Any]:
    _, task = edge_task(opts.stack)
    url = f"http://127.0.0.1:{opts.edge_port}"
    shown = run(["curl", "-sI", f"{url}/5mo.jpg"], timeout=60).stdout.replace("\r", "")
    health_text = run(["curl", "-s", f"{url}/_edge/health"], timeout=30).stdout
    log("curl -sI /5mo.jpg:\n" + shown.rstrip())
    heads = {}
    for line in shown.splitlines()[1:]:
        name, _, value = line.partition(":")
        heads[name.strip().lower()] = value.strip()
    checks.add(
        "X-Served-By is the Swarm task's name",
        heads.get("x-served-by") == task,
        f"{heads.get('x-served-by')} (task {task})",
    )
    checks.add("5mo.jpg is a HIT with an Age", heads.get("x-cache") == "HIT" and "age" in heads)
    try:
        health = json.loads(health_text)
    except ValueError:
        health = {}
    checks.add(
        "/_edge/health: status ok, Redis up",
        health.get("status") == "ok" and health.get("redis") == "up",
        health_text.strip(),
    )
    return {"curl_I": shown, "health": health_text.strip(), "task": task}


def purge_checks(
    opts: argparse.Namespace, token: str, run_id: str, checks: Checks
) -> dict[str, Any]:
    port = opts.edge_port
    out: dict[str, Any] = {}
    request(port, "/")
    before = request(port, "/")
    body = json.dumps({"urls": ["/"]}).encode()
    kind = {"Content-Type": "application/json"}
    no_auth = request(port, "/_edge/purge", "POST", kind, body)
    wrong = request(port, "/_edge/purge", "POST", {**kind, "Authorization": "Bearer wrong"}, body)
    purged = request(
        port, "/_edge/purge", "POST", {**kind, "Authorization": f"Bearer {token}"}, body
    )
    after = request(port, "/")
    again = request(port, "/")
    out["purge"] = {
        "before": before.header("x-cache"),
        "no_token": no_auth.status,
        "wrong_token": wrong.status,
        "purge_status": purged.status,
        "purge_answer": purged.body.decode("utf-8", "replace").strip(),
        "after": after.header("x-cache"),
        "again": again.header("x-cache"),
    }
    checks.add(
        "purge: 401 without the token, 403 with a wrong one",
        (no_auth.status, wrong.status) == (401, 403),
    )
    checks.add(
        "purge of / through the stack: HIT, purged, then MISS, then HIT",
        (before.header("x-cache"), purged.status, after.header("x-cache"), again.header("x-cache"))
        == ("HIT", 200, "MISS", "HIT"),
        f"{before.header('x-cache')} -> {purged.status} {out['purge']['purge_answer']} -> "
        f"{after.header('x-cache')} -> {again.header('x-cache')}",
    )
    last = "/api/products/last"
    request(port, last)
    cached = request(port, last)
    product = f"swarm-{run_id}"
    added = request(port, f"/api/products?product={product}")
    fresh = request(port, last)
    out["invalidate"] = {
        "cached": cached.header("x-cache"),
        "cached_body": cached.body.decode("utf-8", "replace"),
        "add_status": added.status,
        "add_x_cache": added.header("x-cache"),
        "after": fresh.header("x-cache"),
        "after_body": fresh.body.decode("utf-8", "replace"),
        "after_seconds": round(fresh.seconds, 2),
    }
    checks.add(
        "adding a product invalidates last: HIT, BYPASS, then MISS naming the new product",
        cached.header("x-cache") == "HIT"
        and added.status == 200
        and added.header("x-cache") == "BYPASS"
        and fresh.header("x-cache") == "MISS"
        and f"last={product}" in fresh.body.decode("utf-8", "replace"),
        f"{cached.header('x-cache')} -> {added.header('x-cache')} -> {fresh.header('x-cache')}: "
        f"{fresh.body.decode('utf-8', 'replace').strip()}",
    )
    return out


# --- 7. the report -------------------------------------------------------------------------------


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def verdicts(values: list[str]) -> str:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return " ".join(f"{v}×{n}" if n > 1 else v for v, n in counts.items())


def purge_summary(answer: str) -> str:
    """What a purge answer says, short: entries dropped and acknowledgements."""
    try:
        data = json.loads(answer)
    except ValueError:
        return f"`{answer[:120]}`"
    acks = data.get("acks") or {}
    return (
        f"memory {data.get('memory')}, shared {data.get('shared')} entries; "
        f"{acks.get('received')}/{acks.get('expected')} workers acknowledged in {data.get('ms')} ms"
    )


def render_table(rows: list[dict[str, Any]]) -> list[str]:
    """The lab's table (rows of lab_table) as Markdown lines."""
    lines = [
        "| request | via | cold | warm | X-Cache cold / warm | notes |",
        "| :--- | :--- | ---: | ---: | :--- | :--- |",
    ]
    for row in rows:
        cold, warm = row["cold"], row["warm"]
        note = ""
        if row["request"] == "page":
            note = f"{len(cold['files'])} files, {cold['bytes'] / 1e6:.2f} MB"
        immediate = row.get("immediate")
        if immediate and immediate["x_cache"] != ["HIT"]:
            note += (
                f"the same request right after the miss: {immediate['x_cache'][0]} in "
                f"{fmt_s(immediate['seconds'])} (another worker, see the report)"
            )
        host = row.get("host", "127.0.0.1")
        via = f"{row['via']} {'' if host == '127.0.0.1' else host}:{row['port']}"
        lines.append(
            f"| {row['request']} | {via} | {fmt_s(cold['seconds'])} | {fmt_s(warm['seconds'])}"
            f" | {verdicts(cold['x_cache'])} / {verdicts(warm['x_cache'])} | {note} |"
        )
    lines.append("")
    return lines


def render(report: dict[str, Any]) -> str:
    lines = [f"## Swarm smoke run {report['started']} (code at {report['commit']})", ""]
    lines.append(report["setup"])
    lines.append("")
    if report.get("table"):
        lines += render_table(report["table"])
    if report.get("headers"):
        lines += ["`curl -sI http://127.0.0.1/5mo.jpg` and `/_edge/health`:", "", "```text"]
        lines += [report["headers"]["curl_I"].rstrip(), report["headers"]["health"], "```", ""]
    if report.get("purge"):
        p, inv = report["purge"]["purge"], report["purge"]["invalidate"]
        lines += [
            "| purge and invalidation | result |",
            "| :--- | :--- |",
            f'| `POST /_edge/purge {{"urls": ["/"]}}` | no token {p["no_token"]}, wrong token '
            f"{p['wrong_token']}, token {p['purge_status']}: {purge_summary(p['purge_answer'])} |",
            f"| `/` before / after / again | {p['before']} / {p['after']} / {p['again']} |",
            f"| `/api/products?product=...` then `last` | {inv['cached']} / {inv['add_x_cache']} "
            f"/ {inv['after']} in {inv['after_seconds']} s: `{inv['after_body'].strip()}` |",
            "",
        ]
    failures = report.get("failures", {})
    if failures:
        lines += [
            "| under load | requests | failed | errors | replacement answered | longest gap |",
            "| :--- | ---: | ---: | :--- | ---: | ---: |",
        ]
        for title, key in (
            ("`docker kill` of the edge task", "kill"),
            ("`docker service update --force` of the edge", "update"),
        ):
            r = failures.get(key)
            if r:
                errors = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "-"
                lines.append(
                    f"| {title} | {r['requests']} | {r['failed']} | {errors} | "
                    f"{fmt_s(r['replacement_answered_s'])} | {fmt_s(r['longest_gap_s'])} |"
                )
        scale = failures.get("scale")
        if scale:
            for phase, r in scale["phases"].items():
                errors = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "-"
                lines.append(
                    f"| API scale: {phase} ({r['seconds']} s) | {r['requests']} | {r['failed']} | "
                    f"{errors} | | {fmt_s(r['longest_gap_s'])} |"
                )
        lines.append("")
    lines += ["| step | time |", "| :--- | ---: |"]
    for step, seconds in report["steps"].items():
        lines.append(f"| {step} | {seconds:.1f} s |")
    lines.append("")
    checks = report["checks"]
    failed = [c for c in checks if not c["ok"]]
    lines.append(f"Smoke checks: {len(checks) - len(failed)} of {len(checks)} hold.")
    for c in failed:
        lines.append(f"- FAILED: {c['name']}: {c['detail']}")
    if report.get("error"):
        lines.append(f"- STOPPED: {report['error']}")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], results: Path) -> tuple[Path, Path]:
    results.mkdir(parents=True, exist_ok=True)
    stamp = report["stamp"]
    md = results / f"swarm-{stamp}.md"
    js = results / f"swarm-{stamp}.json"
    md.write_text(render(report))
    js.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return md, js


# --- 8. main -------------------------------------------------------------------------------------


def positive(kind: type[float] | type[int]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
        return value

    return parse


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/swarm-smoke",
        description="Build the stack's images, deploy it on a one-node swarm, measure the lab "
        "through it, and remove it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--keep", action="store_true", help="leave the stack running at the end")
    mode.add_argument(
        "--down",
        action="store_true",
        help="only remove the stack (and what a --keep run left: its swarm, its dockerd)",
    )
    add_stack_options(parser, healthy_timeout=300, results="swarm")
    return parser


def add_stack_options(
    parser: argparse.ArgumentParser, healthy_timeout: float, results: str
) -> None:
    """The options of a run that deploys and measures the stack (swarm-smoke, swarm-cluster)."""
    parser.add_argument("--stack", default="woodytoys", help="stack name")
    parser.add_argument(
        "--heavy-seconds",
        type=positive(float),
        default=2.0,
        help="the API's heavy call (the lab: 5)",
    )
    parser.add_argument(
        "--db-seconds", type=positive(float), default=3.0, help="the API's DB call (the lab: 15)"
    )
    parser.add_argument("--edge-port", type=port_number, default=80)
    parser.add_argument("--proxy-port", type=port_number, default=8081)
    parser.add_argument(
        "--healthy-timeout",
        type=positive(float),
        default=healthy_timeout,
        help="seconds for every service to become healthy",
    )
    parser.add_argument(
        "--load-threads",
        type=positive(int),
        default=2,
        help="clients of the steady load (each pauses 50 ms between requests)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=REPO / "bench" / "results",
        help=f"where {results}-<timestamp>.md and .json go",
    )


def read_state() -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(STATE_FILE.read_text())
        return data
    except (OSError, ValueError):
        return {}


def teardown(stack: str, created_swarm: bool, dockerd_pid: int | None) -> None:
    remove_stack(stack)
    if created_swarm:
        log("leaving the swarm this script made")
        docker("swarm", "leave", "--force")
    if dockerd_pid:
        stop_dockerd(dockerd_pid)
    STATE_FILE.unlink(missing_ok=True)


def down(opts: argparse.Namespace) -> int:
    ensure_tools()
    state = read_state()
    if not docker_answers():
        log("no docker daemon answers: nothing to remove")
        return 0
    teardown(opts.stack, bool(state.get("created_swarm")), state.get("dockerd_pid"))
    log("stack removed")
    return 0


# What stops a run (then its report says why): a step that cannot go on, Ctrl-C or a signal, a
# request that failed outright, or an answer that was not what a check could read.
STOPS = (SmokeError, KeyboardInterrupt, OSError, http.client.HTTPException, ValueError, KeyError)


def stop_reason(exc: BaseException) -> tuple[str, int]:
    """The report's `error` for what stopped a run, and the exit status."""
    if isinstance(exc, KeyboardInterrupt):
        return (f"interrupted ({exc})" if str(exc) else "interrupted"), 130
    if isinstance(exc, SmokeError):
        return str(exc), 1
    return f"{type(exc).__name__}: {exc}", 1


def new_report() -> dict[str, Any]:
    """A run's report as it starts: when (and its file stamp), the commit, no steps yet."""
    now = time.gmtime()
    return {
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", now),
        "stamp": time.strftime("%Y-%m-%d-%H%M%S", now),
        "commit": run(["git", "rev-parse", "--short", "HEAD"], check=False).stdout.strip()
        or "unknown",
        "steps": {},
        "checks": [],
    }


def smoke(opts: argparse.Namespace) -> int:
    report = new_report()
    dirty = run(
        [
            "git",
            "status",
            "--porcelain",
            "--",
            "edge",
            "origin",
            "deploy",
            "config",
            "stack.yml",
            "pyproject.toml",
        ],
        check=False,
    ).stdout.strip()
    if dirty:
        report["commit"] += "+dirty"
    run_id = report["stamp"].replace("-", "")
    checks = Checks()
    state = read_state()
    dockerd_pid: int | None = state.get("dockerd_pid")
    created_swarm = bool(state.get("created_swarm"))
    deployed = False
    status = 0

    def step(name: str, began: float) -> None:
        report["steps"][name] = time.monotonic() - began

    try:
        began = time.monotonic()
        ensure_tools()
        if not docker_answers():
            dockerd_pid = start_dockerd()
        version = docker("version", "--format", "{{.Server.Version}}").strip()
        step("tools and dockerd", began)

        began = time.monotonic()
        report["base_image"] = ensure_base_image()
        step(f"base image ({report['base_image']})", began)
        began = time.monotonic()
        report["wheelhouse"] = ensure_wheelhouse()
        step(f"wheelhouse ({report['wheelhouse']})", began)
        began = time.monotonic()
        report["images"] = build_images()
        step(f"{len(report['images'])} image builds", began)

        began = time.monotonic()
        created_swarm = ensure_swarm() or created_swarm
        CACHE.mkdir(parents=True, exist_ok=True)
        STATE_FILE.write_text(
            json.dumps({"created_swarm": created_swarm, "dockerd_pid": dockerd_pid})
        )
        remove_stack(opts.stack)
        for port in (opts.edge_port, opts.proxy_port):
            if not port_free(port):
                raise SmokeError(
                    f"127.0.0.1:{port} is taken by another program: free it, or "
                    "pick another port (--edge-port, --proxy-port)"
                )
        token = create_secrets()
        deploy(opts)
        deployed = True
        healthy = wait_healthy(opts.stack, opts.healthy_timeout)
        checks.add("every service healthy", True, f"after {healthy:.0f} s")
        for path, port, want in (
            ("/_edge/health", opts.edge_port, b'"redis": "up"'),
            ("/_proxy/health", opts.proxy_port, b"ok"),
        ):
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(OSError, http.client.HTTPException):
                    if want in request(port, path, timeout=5).body:
                        break
                if time.monotonic() > deadline:
                    raise SmokeError(f"127.0.0.1:{port}{path} never answered {want!r}")
                time.sleep(1)
        step("swarm, secrets, deploy, healthy", began)
        made = "swarm made by this run" if created_swarm else "existing swarm"
        report["setup"] = (
            f"One-node swarm (docker {version}, {made}); "
            f"images built here from deploy/ on {BASE_IMAGE} (debootstrap), deployed with "
            f"stack.yml + {OVERRIDE} (dnsrr, host-mode ports). Delays: heavy "
            f"{opts.heavy_seconds:g} s, DB {opts.db_seconds:g} s (the lab: 5 s and 15 s), static "
            f"300 KB/s per response at the proxy (the lab's limit_rate 300k). Cold = the first "
            "request after the deploy; warm = 0.5 s later, the median of 3 requests through "
            "the edge, one through the proxy. Loads: "
            f"{opts.load_threads} clients, "
            "a new connection per request, 50 ms pause; a request fails on a connection error, "
            "a 5 s timeout or a 5xx."
        )

        began = time.monotonic()
        report["table"] = lab_table(opts, run_id, checks)
        step("lab table", began)
        began = time.monotonic()
        report["headers"] = headers_check(opts, checks)
        report["purge"] = purge_checks(opts, token, run_id, checks)
        step("headers, purge, invalidation", began)

        failures: dict[str, Any] = {}
        report["failures"] = failures
        # The rolling update first: right after a kill, while the restart policy's window
        # runs, a stop-first update of a global service with a host-mode port raced Swarm's
        # own restart here (a second task for the node, stuck on the port, then a rollback).
        began = time.monotonic()
        failures["update"] = update_test(opts)
        upd = failures["update"]
        checks.add(
            "service update --force: completed, and the new task answered",
            upd["new_task"] is not None
            and upd.get("command_exit") == 0
            and upd.get("update_state") == "completed",
            f"{upd['new_task']} after {upd['replacement_answered_s']} s, update "
            f"{upd.get('update_state')}",
        )
        checks.add(
            "after the rolling update the new task's first answer is a HIT (the disk tier)",
            upd.get("first_answer_cache") == "HIT",
            f"X-Cache: {upd.get('first_answer_cache')}",
        )
        wait_healthy(opts.stack, 120, "the edge healthy again")
        step("service update --force of the edge", began)
        began = time.monotonic()
        failures["kill"] = kill_test(opts)
        checks.add(
            "after docker kill, Swarm's replacement task answered",
            failures["kill"]["new_task"] is not None,
            f"{failures['kill']['new_task']} after {failures['kill']['replacement_answered_s']} s",
        )
        checks.add(
            "after docker kill the replacement's first answer is a HIT (the disk tier)",
            failures["kill"].get("first_answer_cache") == "HIT",
            f"X-Cache: {failures['kill'].get('first_answer_cache')}",
        )
        wait_healthy(opts.stack, 120, "the edge healthy again")
        step("docker kill of the edge", began)
        began = time.monotonic()
        failures["scale"] = scale_test(opts)
        api = service_health(opts.stack).get(f"{opts.stack}_api", (0, 0, 0))
        checks.add(
            "the API scaled 5 -> 1 -> 5 and has 5 healthy tasks again",
            api[0] == api[2] == 5,
            f"{failures['scale']['failed']} of {failures['scale']['requests']} requests "
            "failed meanwhile",
        )
        step("API scale 5 -> 1 -> 5", began)
    except STOPS as exc:
        report["error"], status = stop_reason(exc)
        log(f"ERROR: {report['error']}")
    finally:
        kept = opts.keep and deployed and status == 0
        if not kept:
            began = time.monotonic()
            try:
                teardown(opts.stack, created_swarm, dockerd_pid)
            except SmokeError as exc:
                log(f"ERROR while removing the stack: {exc}")
                status = status or 1
            report["steps"]["teardown"] = time.monotonic() - began
    report["steps"]["total"] = time.monotonic() - STARTED
    report["checks"] = [dataclasses.asdict(c) for c in checks.items]
    report.setdefault("setup", "The run stopped before the stack was measured.")
    if checks.failed:
        status = status or 1
    if report.get("images") or report.get("table"):
        md, js = write_report(report, opts.results)
        print()
        print(render(report), end="", flush=True)
        log(f"written: {md.relative_to(REPO) if md.is_relative_to(REPO) else md}, {js.name}")
    if kept:
        log(
            f"--keep: the stack runs. Edge http://127.0.0.1:{opts.edge_port}/ , proxy "
            f"http://127.0.0.1:{opts.proxy_port}/ , purge token in {CACHE / 'purge-token'}; "
            "scripts/swarm-smoke --down removes it"
        )
    return status


def main(argv: Sequence[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    if opts.edge_port == opts.proxy_port:
        build_parser().error("--edge-port and --proxy-port must differ")
    try:
        return down(opts) if opts.down else smoke(opts)
    except SmokeError as exc:
        log(f"ERROR: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
