"""Command line: `python -m edge serve` runs a node; `purge` purges nodes; `warm` fills them;
`top` watches them; `reload` makes a running node read its configuration again."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence

DEFAULT_CONFIG = "config/edge.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="woody-edge", description="Woodytoys Edge: a CDN edge node"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run an edge node in the foreground")
    serve.add_argument(
        "--config",
        default=None,
        help=f"YAML configuration (default: {DEFAULT_CONFIG} when it exists, else built-in)",
    )
    serve.add_argument("--host", default=None, help="address to listen on (EDGE_HOST)")
    serve.add_argument("--port", type=int, default=None, help="port to listen on (EDGE_PORT)")
    serve.add_argument(
        "--origin",
        action="append",
        default=None,
        help="origin URL; repeat or separate with commas for several (EDGE_ORIGIN)",
    )
    serve.add_argument(
        "--redis", default=None, help="Redis URL of the shared tier (EDGE_REDIS_URL)"
    )
    serve.add_argument("--node", default=None, help="this node's name in headers (EDGE_NODE)")
    serve.add_argument(
        "--workers", type=int, default=None, help="processes on the port (EDGE_WORKERS)"
    )
    serve.add_argument(
        "--tls-port", type=int, default=None, help="HTTPS listener port (EDGE_TLS_PORT)"
    )
    serve.add_argument("--cert", default=None, help="PEM certificate chain (EDGE_TLS_CERT)")
    serve.add_argument("--key", default=None, help="PEM private key (EDGE_TLS_KEY)")
    serve.add_argument(
        "--access-log",
        nargs="?",
        const="text",
        default=None,
        choices=("text", "json"),
        help="log every answer to stderr: text (the default) or json (one object a line)",
    )
    serve.add_argument(
        "--pid-file", default=None, help="write the node's pid here (for `woody-edge reload`)"
    )
    serve.add_argument("--check", action="store_true", help="validate the configuration and exit")

    purge = sub.add_parser("purge", help="purge URLs, prefixes or tags on edge nodes")
    purge.add_argument("urls", nargs="*", help="paths or full URLs to purge, e.g. /5mo.jpg")
    purge.add_argument(
        "--prefix", action="append", default=[], help="path prefix or glob (/api/misc/*)"
    )
    purge.add_argument(
        "--tag", action="append", default=[], help="purge every object with this tag"
    )
    purge.add_argument("--all", action="store_true", help="purge everything")
    purge.add_argument("--soft", action="store_true", help="mark stale instead of deleting")
    purge.add_argument(
        "--edge",
        action="append",
        default=None,
        help="edge node URL, repeatable (default: $EDGE_URLS, comma-separated, "
        "or http://127.0.0.1:8080)",
    )
    purge.add_argument(
        "--token",
        default=None,
        help="purge token (default: $EDGE_PURGE_TOKEN, or the file $EDGE_PURGE_TOKEN_FILE)",
    )
    purge.add_argument("--timeout", type=float, default=10.0, help="seconds per node")
    purge.add_argument(
        "--json", action="store_true", help="print each node's answer as one JSON line"
    )

    warm = sub.add_parser("warm", help="prefetch URLs through edge nodes so they are cached")
    warm.add_argument("paths", nargs="*", help="paths to fetch, e.g. / /5mo.jpg")
    warm.add_argument("--file", default=None, help="a file of paths, one a line ('-': stdin)")
    warm.add_argument(
        "--edge",
        action="append",
        default=None,
        help="edge node URL, repeatable (default: $EDGE_URLS or http://127.0.0.1:8080)",
    )
    warm.add_argument("--concurrency", type=int, default=8, help="requests at a time")
    warm.add_argument("--timeout", type=float, default=120.0, help="seconds per request")

    top = sub.add_parser("top", help="a live terminal view of edge nodes (rates, top URLs)")
    top.add_argument(
        "--edge",
        action="append",
        default=None,
        help="edge node URL, repeatable (default: $EDGE_URLS or http://127.0.0.1:8080)",
    )
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between frames")
    top.add_argument("--width", type=int, default=None, help="columns (default: the terminal's)")

    reload = sub.add_parser(
        "reload", help="make a running node read its configuration again (no restart)"
    )
    how = reload.add_mutually_exclusive_group(required=True)
    how.add_argument("--pid-file", default=None, help="send SIGHUP to the pid in this file")
    how.add_argument("--edge", default=None, help="POST /_edge/reload to this node's URL")
    reload.add_argument(
        "--token",
        default=None,
        help="purge token, for --edge (default: $EDGE_PURGE_TOKEN or $EDGE_PURGE_TOKEN_FILE)",
    )
    reload.add_argument("--timeout", type=float, default=10.0, help="seconds, for --edge")
    return parser


def _edges(given: list[str] | None) -> list[str]:
    if given:
        return given
    default = os.environ.get("EDGE_URLS", "http://127.0.0.1:8080")
    return [u.strip() for u in default.split(",") if u.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "top":
        from edge.ops import top

        if args.interval <= 0:
            print("woody-edge top: --interval must be positive", file=sys.stderr)
            return 2
        return top.main(_edges(args.edge), args.once, args.interval, args.width)
    if args.command == "reload":
        return _reload(args)
    if args.command == "warm":
        from edge.ops.warm import read_targets, warm

        try:
            targets = read_targets(args.paths, args.file)
        except (OSError, ValueError) as exc:
            print(f"woody-edge warm: {exc}", file=sys.stderr)
            return 2
        if not targets:
            print("woody-edge warm: give paths or --file", file=sys.stderr)
            return 2
        failed = asyncio.run(warm(_edges(args.edge), targets, args.concurrency, args.timeout))
        return 1 if failed else 0
    return asyncio.run(_purge(args))


def _serve(args: argparse.Namespace) -> int:
    from edge.config.settings import ConfigError
    from edge.ops.reload import ConfigSource
    from edge.server import serve

    path = args.config
    if path is None and os.path.exists(DEFAULT_CONFIG):
        path = DEFAULT_CONFIG
    source = ConfigSource(
        os.path.abspath(path) if path is not None else None,
        {
            "host": args.host,
            "port": args.port,
            "origins": args.origin,
            "redis_url": args.redis,
            "node": args.node,
            "workers": args.workers,
            "tls_port": args.tls_port,
            "cert": args.cert,
            "key": args.key,
        },
    )
    try:
        cfg = source.load()
    except ConfigError as exc:
        print(f"woody-edge: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{cfg.source}: OK ({len(cfg.rules)} rules, {len(cfg.invalidations)} invalidations)")
        return 0
    return serve(cfg, access_log=args.access_log or False, source=source, pid_file=args.pid_file)


def _reload(args: argparse.Namespace) -> int:
    """SIGHUP to the pid in --pid-file, or POST /_edge/reload to --edge with the token."""
    if args.pid_file:
        import signal

        try:
            with open(args.pid_file, encoding="utf-8") as f:
                pid = int(f.read().strip())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError) as exc:
            print(f"woody-edge reload: {args.pid_file}: {exc}", file=sys.stderr)
            return 1
        print(f"sent SIGHUP to {pid}: the node logs whether it reloaded or refused the file")
        return 0
    import urllib.error
    import urllib.request

    token = _purge_token(args)
    if not token:
        print("woody-edge reload: --edge needs the purge token (--token)", file=sys.stderr)
        return 2
    request = urllib.request.Request(
        args.edge.rstrip("/") + "/_edge/reload",
        method="POST",
        data=b"",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            answer = json.loads(exc.read())
        except ValueError:
            answer = {"ok": False, "error": f"HTTP {exc.code}"}
    except (OSError, ValueError) as exc:
        print(f"woody-edge reload: {args.edge}: {exc}", file=sys.stderr)
        return 1
    if answer.get("ok"):
        changes = ", ".join(answer["changed"]) or "nothing"
        line = f"reloaded {answer.get('source')}: changed {changes}"
        if answer.get("restart_needed"):
            line += f"; a restart is needed to change {', '.join(answer['restart_needed'])}"
        if answer.get("applied_by"):
            line += f" ({answer['applied_by']})"
        print(line)
        return 0
    print(f"woody-edge reload: refused: {answer.get('error')}", file=sys.stderr)
    return 1


def _purge_token(args: argparse.Namespace) -> str | None:
    if args.token:
        return str(args.token)
    if os.environ.get("EDGE_PURGE_TOKEN"):
        return os.environ["EDGE_PURGE_TOKEN"]
    path = os.environ.get("EDGE_PURGE_TOKEN_FILE")
    if path:
        try:
            return open(path, encoding="utf-8").read().strip() or None
        except OSError as exc:
            print(f"woody-edge purge: EDGE_PURGE_TOKEN_FILE: {exc}", file=sys.stderr)
    return None


def _purge_summary(answer: dict[str, object]) -> str:
    """One line from a node's purge answer: what went where, per node that acknowledged."""
    parts = [f"{answer.get('kind')} via {answer.get('node')}: memory {answer.get('memory')}"]
    shared = answer.get("shared")
    parts.append("shared tier off" if shared is None else f"shared tier {shared}")
    acks = answer.get("acks")
    if isinstance(acks, dict):
        parts.append(f"acks {acks.get('received')}/{acks.get('expected')}")
    nodes = answer.get("nodes")
    if isinstance(nodes, list):
        rows = [f"{n.get('node')}[{n.get('pid')}]={n.get('entries')}" for n in nodes]
        parts.append("nodes " + " ".join(rows))
    if "error" in answer:
        parts.append(f"error: {answer['error']}")
    return "; ".join(parts)


async def _purge(args: argparse.Namespace) -> int:
    import aiohttp

    token = _purge_token(args)
    if not token:
        print(
            "woody-edge purge: a token is needed (--token, EDGE_PURGE_TOKEN or "
            "EDGE_PURGE_TOKEN_FILE)",
            file=sys.stderr,
        )
        return 2
    edges = _edges(args.edge)
    body = {
        "urls": args.urls,
        "prefixes": args.prefix,
        "tags": args.tag,
        "all": args.all,
        "soft": args.soft,
    }
    if not (args.urls or args.prefix or args.tag or args.all):
        print(
            "woody-edge purge: say what to purge (URLs, --prefix, --tag or --all)", file=sys.stderr
        )
        return 2
    failures = 0
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for edge in edges:
            url = edge.rstrip("/") + "/_edge/purge"
            answer: object = None
            try:
                async with session.post(
                    url, json=body, headers={"Authorization": f"Bearer {token}"}
                ) as resp:
                    text = await resp.text()
                    ok = resp.status == 200
                    status = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                text, ok, status = "", False, f"unreachable: {exc.__class__.__name__}: {exc}"
            try:
                answer = json.loads(text)
            except ValueError:
                answer = None
            if args.json:
                print(json.dumps({"edge": edge, "ok": ok, "status": status, "answer": answer}))
            elif isinstance(answer, dict) and "kind" in answer:
                print(f"{edge}: {'ok' if ok else 'FAILED ' + status} {_purge_summary(answer)}")
            elif isinstance(answer, dict):
                print(f"{edge}: FAILED {status}: {answer.get('error', answer)}")
            else:
                print(f"{edge}: FAILED {status} {text.strip()[:200]}".rstrip())
            failures += 0 if ok else 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
