"""Command line of the origin: `python -m origin serve|assets` (console script `woody-origin`)."""

from __future__ import annotations

import argparse
import logging
import sys

from origin.settings import DEFAULT_DB, DEFAULT_STATIC_RATE, OriginSettings, parse_db_url


def _db_url(value: str) -> str:
    try:
        parse_db_url(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--db: ")) from None
    return value


def _rate(value: str) -> int:
    """Bytes per second, nginx style: `307200`, `300k`, `1m`; 0 = no throttle."""
    text = value.strip().lower()
    factor = 1
    if text.endswith("k"):
        factor, text = 1024, text[:-1]
    elif text.endswith("m"):
        factor, text = 1024 * 1024, text[:-1]
    try:
        rate = int(float(text) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate in bytes/s: {value!r}") from None
    if rate < 0:
        raise argparse.ArgumentTypeError("must be >= 0 (0 = no throttle)")
    return rate


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if seconds < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return seconds


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m origin` (also used by the deploy tests)."""
    defaults = OriginSettings()
    parser = argparse.ArgumentParser(
        prog="woody-origin",
        description="The Woodytoys shop reproduced: API, front page and database.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve the shop (API, index.html, 5mo.jpg) on one port",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve.add_argument("--host", default=defaults.host, help="address to listen on")
    serve.add_argument("--port", type=int, default=defaults.port, help="port to listen on")
    serve.add_argument(
        "--db",
        type=_db_url,
        default=DEFAULT_DB,
        metavar="URL",
        help="SQLite file path (sqlite:///path, created and seeded) or "
        "mysql://user:pass@host:port/name (database created and seeded if empty)",
    )
    serve.add_argument(
        "--heavy-seconds",
        type=_seconds,
        default=defaults.heavy_seconds,
        help="duration of the heavy computation and of the order validation",
    )
    serve.add_argument(
        "--db-seconds",
        type=_seconds,
        default=defaults.db_seconds,
        help="how long /api/products/last holds the read lock on table product",
    )
    serve.add_argument(
        "--static-rate",
        type=_rate,
        default=DEFAULT_STATIC_RATE,
        metavar="BYTES_PER_S",
        help="per-response throttle of static files, like nginx limit_rate "
        "(300k = 307200; 0 = no throttle)",
    )
    serve.add_argument(
        "--page-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="the front page waits this long before answering (default 0: the lab's nginx)",
    )
    serve.add_argument(
        "--replicas",
        type=_positive,
        default=defaults.replicas,
        help="number of serving processes sharing the port (SO_REUSEPORT), "
        "each handling one API request at a time",
    )
    serve.add_argument(
        "--api-cache",
        metavar="REDIS_URL",
        default=None,
        help="the lab's in-API Redis cache (heavy 30 s, last 15 s), e.g. redis://127.0.0.1:6379/0",
    )
    serve.add_argument(
        "--api-cache-prefix",
        default=defaults.api_cache_prefix,
        help="key prefix (aiocache namespace) of the API cache in Redis",
    )
    serve.add_argument(
        "--no-access-log", action="store_true", help="do not log every request to stderr"
    )

    commands.add_parser(
        "assets", help=f"generate origin/static/5mo.jpg (deterministic, {5_000_000:,} bytes)"
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> OriginSettings:
    return OriginSettings(
        host=args.host,
        port=args.port,
        db=args.db,
        heavy_seconds=args.heavy_seconds,
        db_seconds=args.db_seconds,
        static_rate=args.static_rate,
        page_delay=args.page_delay,
        replicas=args.replicas,
        api_cache=args.api_cache,
        api_cache_prefix=args.api_cache_prefix,
        access_log=not args.no_access_log,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from origin.server import setup_logging

    setup_logging()
    if args.command == "assets":
        from origin.assets import ensure_image

        path, written = ensure_image()
        print(f"{path}: {'written' if written else 'up to date'}", file=sys.stderr)
        return 0
    if args.command == "serve":
        settings = settings_from_args(args)
        try:
            settings.validate()
        except ValueError as exc:
            parser.error(str(exc))
        from origin.server import serve

        return serve(settings)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main())
