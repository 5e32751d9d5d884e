"""`python -m bench.delivery bytes|memory|hints|images`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.delivery.bytes import bytes_run, bytes_table
from bench.delivery.hints import hints_run, hints_table
from bench.delivery.images import images_run, images_table, write_results
from bench.delivery.memory import memory_run, memory_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.delivery")
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("bytes", help="bytes a browser downloads, compression on and off")
    h = sub.add_parser("hints", help="when the image request starts, Early Hints on and off")
    h.add_argument("--page-delay", type=float, default=0.5, help="seconds the origin's page takes")
    h.add_argument("--rounds", type=int, default=3)
    h.add_argument("--tls", action="store_true", help="over HTTPS, where Chromium speaks h2")
    m = sub.add_parser("memory", help="RSS of the edge during a cold 5 MB fill")
    m.add_argument("--static-rate", type=int, default=300 * 1024)
    i = sub.add_parser(
        "images", help="the page in Chromium with image conversion off and on: bytes, time, PSNR"
    )
    i.add_argument(
        "--static-rate", type=int, default=300 * 1024, help="origin bytes/s per response (0: none)"
    )
    i.add_argument("--rounds", type=int, default=3, help="fresh browsers per cold and warm")
    i.add_argument(
        "--no-files", action="store_true", help="do not write bench/results/delivery-images-*"
    )
    parser.add_argument("--json", type=Path, help="also write the raw entries here")
    args = parser.parse_args(argv)
    if args.what == "bytes":
        data = bytes_run()
        print(bytes_table(data))
    elif args.what == "images":
        data = images_run(args.static_rate, args.rounds)
        print(images_table(data))
        if not args.no_files:
            print(f"written: {write_results(data)}")
    elif args.what == "memory":
        data = memory_run(args.static_rate)
        print(memory_table(data))
    else:
        data = hints_run(args.page_delay, args.rounds, args.tls)
        print(hints_table(data))
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))
