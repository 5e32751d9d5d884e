"""Command line of the bench: `python -m bench table|load|cost|topology|chaos|delivery`
(woody-bench)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="woody-bench",
        description="Reproduce the lab's table and load-test the edge against nginx and Varnish.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    from bench import load, table

    table_parser = sub.add_parser(
        "table",
        help="the lab's table 7.1: page load, heavy API, DB API, miss and hit, per configuration",
        description=table.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    table.add_arguments(table_parser)

    load_parser = sub.add_parser(
        "load",
        help="throughput and latency under concurrency: edge vs nginx vs Varnish",
        description=load.description(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    load.add_arguments(load_parser)

    from bench import cost

    cost_parser = sub.add_parser(
        "cost",
        help="instructions per request under callgrind: edge vs nginx, noise-free",
        description=cost.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cost.add_arguments(cost_parser)

    sub.add_parser(
        "topology",
        help="start origin replicas, Redis and N edge nodes (bench.topology)",
        add_help=False,
    )
    sub.add_parser("chaos", help="fault, load and fuzzing suite (bench.chaos)", add_help=False)
    sub.add_parser(
        "delivery",
        help="in headless Chromium: bytes, Early Hints, images; the edge's memory (bench.delivery)",
        add_help=False,
    )
    return parser


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # Unwind like Ctrl-C, so every `with ProcessGroup()` stops the servers it started.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if threading.current_thread() is not threading.main_thread():
        return _dispatch(argv)
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return _dispatch(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] == "topology":
        from bench import topology  # type: ignore[attr-defined,unused-ignore]

        result = topology.main(argv[1:])
        return int(result or 0)
    if argv and argv[0] == "chaos":
        from bench import chaos

        return chaos.main(argv[1:])
    if argv and argv[0] == "delivery":
        from bench.delivery.cli import main as delivery_main

        delivery_main(argv[1:])
        return 0
    args = build_parser().parse_args(argv)
    if args.command == "table":
        from bench import table

        return table.main(args)
    if args.command == "load":
        from bench import load

        return load.main(args)
    if args.command == "cost":
        from bench import cost

        return cost.main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
