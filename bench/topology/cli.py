"""`python -m bench topology up|down`: run the topology in the foreground, or detached."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench.procs import Child
from bench.topology.config import (
    DEFAULT_EDGE_PORT,
    DEFAULT_NODE_BASE_PORT,
    DEFAULT_ORIGIN_PORT,
    DEFAULT_TLS_PORT,
    LOOPBACK,
    TopologyConfig,
)
from bench.topology.core import Topology, TopologyError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench topology",
        description="Run the origin, Redis and N edge nodes locally (a stand-in for the stack).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start everything; foreground unless --detach")
    up.add_argument("--edges", type=int, default=1, help="edge nodes (default 1)")
    up.add_argument("--origin-replicas", type=int, default=1, help="API processes of the origin")
    up.add_argument(
        "--redis",
        metavar="URL",
        default=os.environ.get("EDGE_REDIS_URL") or None,
        help="Redis shared by the edges (default $EDGE_REDIS_URL; none: memory only); "
        "started here when it is on loopback and nothing listens",
    )
    up.add_argument("--edge-port", type=int, default=DEFAULT_EDGE_PORT)
    up.add_argument("--origin-port", type=int, default=DEFAULT_ORIGIN_PORT)
    up.add_argument(
        "--node-base-port",
        type=int,
        default=DEFAULT_NODE_BASE_PORT,
        help="with several edges, node i listens on this + i (default 8090)",
    )
    up.add_argument(
        "--tls-port",
        type=int,
        default=DEFAULT_TLS_PORT,
        help="HTTPS and h2 on this port with var/tls/'s certificate (default 8443; 0: off)",
    )
    up.add_argument("--host", default=LOOPBACK, help="address everything binds (127.0.0.1)")
    up.add_argument("--heavy-seconds", type=float, help="origin: the heavy call's delay")
    up.add_argument("--db-seconds", type=float, help="origin: the DB call's delay")
    up.add_argument("--static-rate", type=int, help="origin: static bytes/s (0 = no limit)")
    up.add_argument("--origin-db", metavar="URL", help="origin: --db (default its SQLite)")
    up.add_argument("--edge-config", metavar="PATH", help="edge: --config (default its own)")
    up.add_argument("--edge-workers", type=int, help="edge: --workers per node")
    up.add_argument(
        "--quick",
        action="store_true",
        help="short origin delays for tests: heavy 0.2 s, db 0.5 s, no static throttle "
        "(explicit values win)",
    )
    up.add_argument("--startup-timeout", type=float, default=30.0, metavar="SECONDS")
    up.add_argument("--log-dir", type=Path, help="children's logs (default var/topology/)")
    up.add_argument(
        "--detach",
        action="store_true",
        help="run in the background; pid in var/topology.pid; stop with `down`",
    )
    up.add_argument("--state-file", type=Path, help=argparse.SUPPRESS)
    down = sub.add_parser("down", help="stop a topology started with --detach")
    down.add_argument("--timeout", type=float, default=20.0)
    return parser


def config_from_args(args: argparse.Namespace) -> TopologyConfig:
    heavy, db, rate = args.heavy_seconds, args.db_seconds, args.static_rate
    if args.quick:
        heavy = 0.2 if heavy is None else heavy
        db = 0.5 if db is None else db
        rate = 0 if rate is None else rate
    return TopologyConfig(
        edges=args.edges,
        origin_replicas=args.origin_replicas,
        redis_url=args.redis,
        edge_port=args.edge_port,
        origin_port=args.origin_port,
        node_base_port=args.node_base_port,
        tls_port=args.tls_port or None,
        host=args.host,
        heavy_seconds=heavy,
        db_seconds=db,
        static_rate=rate,
        origin_db=args.origin_db,
        edge_config=args.edge_config,
        edge_workers=args.edge_workers,
        log_dir=args.log_dir,
        startup_timeout=args.startup_timeout,
    )


def _var_dir() -> Path:
    return Path.cwd() / "var"


def _pid_file() -> Path:
    return _var_dir() / "topology.pid"


def _state_file() -> Path:
    return _var_dir() / "topology.json"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


async def _run_up(config: TopologyConfig, state_file: Path) -> int:
    topo = Topology(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(topo.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        print("interrupted while starting; stopping", file=sys.stderr, flush=True)
        starting.cancel()
        with contextlib.suppress(BaseException):
            await starting
        await topo.stop()
        return 130
    stopping.cancel()
    try:
        starting.result()
    except TopologyError as exc:
        print(f"topology: {exc}", file=sys.stderr, flush=True)
        return 1
    try:
        _write_private(state_file, json.dumps(topo.state(), indent=2))
        print(topo.table())
        print()
        print(f"Edge:   {topo.edge_url}")
        print(f"Origin: {topo.origin_url}")
        if topo.tls_url:
            ca = _rel_path(topo.dev_cert().ca)
            print(f"HTTPS:  {topo.tls_url}  (HTTP/1.1 and h2; trust the local CA {ca})")
            print(f"  curl --http2 --cacert {ca} -I {topo.tls_url}/5mo.jpg")
        origin = "generated; set EDGE_PURGE_TOKEN to choose it" if topo.token_generated else ""
        print(f"Purge token: {topo.purge_token}" + (f"  ({origin})" if origin else ""))
        print(
            f'  curl -X POST -H "Authorization: Bearer {topo.purge_token}" '
            f"-d '{{\"all\": true}}' {topo.edge_url}/_edge/purge"
        )
        print("Ctrl-C stops everything.", flush=True)
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 1)
            for service in topo.exited():
                code = service.proc.returncode if service.proc else "?"
                print(
                    f"topology: {service.name} exited with status {code}; log "
                    f"{service.log_path}:\n{service.log_tail(10)}",
                    file=sys.stderr,
                    flush=True,
                )
        print("stopping...", flush=True)
        return 0
    finally:
        await topo.stop()
        await asyncio.to_thread(state_file.unlink, missing_ok=True)
        print("stopped.", flush=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _detach(argv: list[str], timeout: float) -> int:
    pid_file, state_file = _pid_file(), _state_file()
    if pid_file.exists():
        with contextlib.suppress(ValueError):
            old = int(pid_file.read_text().strip())
            if _pid_alive(old):
                print(f"a topology already runs (pid {old}); `down` stops it", file=sys.stderr)
                return 1
    with contextlib.suppress(FileNotFoundError):
        state_file.unlink()
    log_path = _var_dir() / "topology" / "up.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_argv = [a for a in argv if a != "--detach"]
    up = Child(
        "topology",
        [sys.executable, "-m", "bench.topology", *child_argv, "--state-file", str(state_file)],
        log_path,
        cwd=Path.cwd(),
        stop_at_exit=False,  # it outlives this command: `down` stops it
    ).spawn()
    proc = up.proc
    assert proc is not None
    _write_private(pid_file, f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pid_file.unlink(missing_ok=True)
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            print(f"topology failed to start (status {proc.returncode}):\n{tail}", file=sys.stderr)
            return 1
        if state_file.exists():
            state = json.loads(state_file.read_text())
            print(f"topology running in the background (pid {proc.pid}, log {log_path})")
            print(f"Edge:   {state['edge_url']}")
            print(f"Origin: {state['origin_url']}")
            print(f"Purge token: {state['purge_token']}")
            print("Stop it with: python -m bench topology down")
            return 0
        time.sleep(0.2)
    print(f"topology not ready after {timeout:g} s; stopping it (log {log_path})", file=sys.stderr)
    _down(20.0)
    return 1


def _down(timeout: float) -> int:
    pid_file = _pid_file()
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        print("no detached topology (var/topology.pid is missing)", file=sys.stderr)
        return 1
    if _pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if _pid_alive(pid):
            print(f"topology (pid {pid}) did not stop in {timeout:g} s; killing", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    _kill_leftovers()
    pid_file.unlink(missing_ok=True)
    print(f"topology (pid {pid}) stopped")
    return 0


def _kill_leftovers() -> None:
    """If the `up` process was killed before it could stop its children, stop their groups."""
    state_file = _state_file()
    try:
        state = json.loads(state_file.read_text())
    except (FileNotFoundError, ValueError):
        return
    for service in state.get("services", []):
        with contextlib.suppress(ValueError, TypeError, ProcessLookupError, PermissionError):
            pid = int(service["pid"])
            if pid != state.get("pid"):
                os.killpg(pid, signal.SIGKILL)
    state_file.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(raw)
    if args.command == "down":
        return _down(args.timeout)
    if args.edges < 1:
        print("--edges must be at least 1", file=sys.stderr)
        return 2
    if args.detach:
        return _detach(raw, args.startup_timeout * 2 + 10)
    config = config_from_args(args)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio works too
        runner = asyncio.run
    return int(runner(_run_up(config, args.state_file or _state_file())))


def _rel_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
