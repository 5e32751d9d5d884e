"""`python -m bench cost`: instructions per request, the edge against nginx, counted by callgrind.

Requests/s and CPU time on these shared machines move by 2x between days, and a 5 % change
of the edge is lost in that noise. The number of instructions a server executes for a
request is not: `valgrind --tool=callgrind` counts them, whatever else the machine is
doing. Each server runs under callgrind (the edge with one worker, nginx with
`master_process off`, the same proxy_cache and TLS set-up as `bench load`); per case:

    callgrind_control -z        counters to zero
    h2load -n N ...             N requests for a warmed 1 KB object
    callgrind_control -d        dump: instructions, by shared object
    ... again with 3N           (I(3N) - I(N)) / 2N = one request, connection set-up cancelled

What it does not say: user space only (callgrind does not see the kernel: the sends, the
accepts), and instructions are not time. Python's instructions run slower than OpenSSL's
(fewer per cycle, more cache misses), so a share of instructions is not a share of CPU time;
`bench load` measures the time, this says where the work is and whether a change removed
some. A server under callgrind runs about 50 times slower, so it batches more requests per
wake-up than at full speed, and how much depends on what ran before: two runs with the same
cases agree within about 1.5 %, a case run alone or after other cases can differ by more.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import report
from bench.load.context import SMALL
from bench.load.tls_hits import get_tls
from bench.peers import nginx_binary, nginx_files, nginx_tls_cache_conf, start_nginx
from bench.procs import REPO, ProcessGroup, free_port, run_tool
from bench.progress import Progress
from bench.servers import start_edge, tls_section
from bench.standin import deterministic_bytes
from bench.topology.certs import ensure_dev_cert

RESULTS = REPO / "bench" / "results"


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    tls: bool
    h2load: tuple[str, ...]  # options besides -n
    n: int  # the small run; the large one is 3n
    unit: str = "request"


CASES = (
    Case("plain", "1 KB hit, HTTP/1.1 keep-alive (16 connections)", False, ("--h1", "-c16"), 1000),
    Case("tls", "1 KB hit, HTTP/1.1 over TLS keep-alive (16)", True, ("--h1", "-c16"), 1000),
    Case("h2", "1 KB hit over h2 (8 connections x 8 streams)", True, ("-c8", "-m8"), 1000),
    Case(
        "handshake",
        "1 KB hit on a new TLS 1.3 connection (full handshake)",
        True,
        ("--h1", "-c16", "-H", "Connection: close"),
        100,
        "handshake",
    ),
)
GROUPS = ("OpenSSL", "interpreter", "libc", "own", "other")
GROUP_NAMES = {
    "OpenSSL": "OpenSSL",
    "interpreter": "CPython",
    "libc": "libc",
    "own": "own C code",
    "other": "other",
}
LEGEND = (
    "OpenSSL: libcrypto and libssl; CPython: libpython (the edge's Python code runs here); "
    "own C code: the nginx binary, the edge's C extensions (uvloop, httptools, _ssl)."
)


# -- callgrind's output ---------------------------------------------------------------------


@dataclass
class Dump:
    total: int
    by_object: dict[str, int] = field(default_factory=dict)


_NAMED = re.compile(r"\((\d+)\)(?: (.*))?")


def parse_dump(text: str) -> Dump:
    """The instructions of one callgrind dump, in all and by shared object (self cost: the
    inclusive cost line after each `calls=` is skipped)."""
    names: dict[str, str] = {}
    by_object: dict[str, int] = {}
    obj = "?"
    after_call = False

    def name(spec: str) -> str:
        m = _NAMED.match(spec)
        if m is None:
            return spec
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), spec)

    for line in text.splitlines():
        if not line:
            continue
        head = line[0]
        if head.isdigit() or head in "+-*":
            if after_call:
                after_call = False
                continue
            parts = line.split()
            if len(parts) >= 2:
                by_object[obj] = by_object.get(obj, 0) + int(parts[1])
        elif line.startswith("ob="):
            obj = name(line[3:])
        elif line.startswith("cob="):
            name(line[4:])  # defines the id for later `ob=(id)` lines
        elif line.startswith("calls="):
            after_call = True
    return Dump(sum(by_object.values()), by_object)


def group_of(obj: str, server: str) -> str:
    base = obj.rsplit("/", 1)[-1]
    if base.startswith(("libcrypto", "libssl")):
        return "OpenSSL"
    if base.startswith("libpython"):
        return "interpreter"
    if base.startswith("libc.so") or base.startswith("libc-"):
        return "libc"
    if server == "nginx" and base == "nginx":
        return "own"
    if server == "edge" and ("site-packages" in obj or "lib-dynload" in obj):
        return "own"
    return "other"


def per_unit(small: Dump, large: Dump, units: int, server: str) -> dict[str, float]:
    """Instructions of one request (or handshake): the difference of the two runs."""
    out = dict.fromkeys(GROUPS, 0.0)
    for obj in set(small.by_object) | set(large.by_object):
        diff = large.by_object.get(obj, 0) - small.by_object.get(obj, 0)
        out[group_of(obj, server)] += diff / units
    out["total"] = (large.total - small.total) / units
    return out


# -- running the servers under callgrind ----------------------------------------------------


@dataclass
class Counted:
    """A server running under callgrind."""

    name: str
    pid: int
    out_dir: Path
    plain_url: str
    tls_url: str

    def dump_after(self, work: Callable[[], None]) -> Dump:
        seen = set(self.out_dir.iterdir())
        _control("-z", self.pid)
        work()
        _control("-d", self.pid)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            new = [p for p in self.out_dir.iterdir() if p not in seen]
            if new:
                path = max(new, key=lambda p: p.stat().st_mtime)
                size = path.stat().st_size
                time.sleep(0.3)
                if size and path.stat().st_size == size:
                    text = path.read_text(errors="replace")
                    path.unlink()
                    return parse_dump(text)
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}: callgrind wrote no dump")


def _control(flag: str, pid: int) -> None:
    code, out, err = run_tool(["callgrind_control", flag, str(pid)], 180)
    if code != 0:
        raise RuntimeError(f"callgrind_control {flag} {pid} failed: {(err or out).strip()}")


def _callgrind(out_dir: Path, name: str) -> tuple[str, ...]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return (
        "valgrind",
        "--tool=callgrind",
        "--quiet",
        f"--callgrind-out-file={out_dir}/{name}.%p",
    )


def start_counted(group: ProcessGroup, kind: str, origin_port: int, cert: Any) -> Counted:
    out_dir = group.subdir(f"callgrind-{kind}")
    wrapper = _callgrind(out_dir, kind)
    if kind == "edge":
        tls_port = free_port()
        server = start_edge(
            group,
            f"http://127.0.0.1:{origin_port}",
            node="edge-cost",
            workers=1,
            sections={"tls": tls_section(tls_port, cert)},
            wrapper=wrapper,
            timeout=300,
        )
        pid = server.managed[0].pid
        assert pid is not None
        return Counted(kind, pid, out_dir, server.url, f"https://127.0.0.1:{tls_port}")
    port, tls_port = free_port(), free_port()
    prefix = group.subdir(kind)
    conf = "master_process off;\n" + nginx_tls_cache_conf(
        prefix, port, tls_port, origin_port, cert.cert, cert.key
    )
    child = start_nginx(group, kind, conf, tls_port, wrapper=wrapper, timeout=120)
    assert child.pid is not None
    return Counted(
        kind, child.pid, out_dir, f"http://127.0.0.1:{port}", f"https://127.0.0.1:{tls_port}"
    )


def warm(server: Counted, ca: str) -> None:
    """Two GETs each way: the first a miss, then a stored hit."""
    for _ in range(2):
        with urllib.request.urlopen(server.plain_url + SMALL, timeout=120) as resp:
            resp.read()
        get_tls(server.tls_url + SMALL, ca)


def h2load(url: str, case: Case, n: int) -> None:
    code, out, err = run_tool(["h2load", "-n", str(n), *case.h2load, url], 600)
    done = re.search(r"(\d+) succeeded", out)
    if code != 0 or done is None or int(done.group(1)) != n:
        raise RuntimeError(f"h2load {url}: {n} requests asked, {out.strip()[-300:] or err}")


def measure(server: Counted, case: Case) -> dict[str, float]:
    url = (server.tls_url if case.tls else server.plain_url) + SMALL
    small = server.dump_after(lambda: h2load(url, case, case.n))
    large = server.dump_after(lambda: h2load(url, case, 3 * case.n))
    return per_unit(small, large, 2 * case.n, server.name)


# -- the report -----------------------------------------------------------------------------


def render(results: dict[str, dict[str, dict[str, float]]], kinds: list[str]) -> str:
    lines = [
        "# Instructions per request, under callgrind",
        "",
        "User-space instructions of the server process per request (per handshake for the last",
        "case), from the difference of an N and a 3N run; the edge with 1 worker, nginx with",
        "`master_process off` (proxy_cache, same certificate). Not time: see bench/cost.py.",
        LEGEND,
        "",
    ]
    for case in CASES:
        rows = results.get(case.name)
        if not rows:
            continue
        lines += [f"### {case.name}: {case.title}", ""]
        header = ["server", f"instructions/{case.unit}", *(GROUP_NAMES[g] for g in GROUPS)]
        table = []
        for kind in kinds:
            r = rows.get(kind)
            if r is None:
                continue
            table.append(
                [kind, f"{r['total'] / 1000:.1f} k", *(f"{r[g] / 1000:.1f} k" for g in GROUPS)]
            )
        lines.append(report.markdown_table(header, table).rstrip("\n"))
        if "edge" in rows and "nginx" in rows and rows["nginx"]["total"] > 0:
            lines += ["", f"edge ÷ nginx: {rows['edge']['total'] / rows['nginx']['total']:.2f}×"]
        lines.append("")
    return "\n".join(lines)


def draw(results: dict[str, dict[str, dict[str, float]]], kinds: list[str], path: Path) -> Path:
    """Stacked bars by shared object: requests on the left, handshakes on the right (their
    scales differ fifty-fold)."""
    plt = report._pyplot()
    panels = [[c for c in CASES if c.unit == "request"], [c for c in CASES if c.unit != "request"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), gridspec_kw={"width_ratios": [3, 1]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, cases in zip(axes, panels, strict=True):
        labels: list[str] = []
        stacks: list[dict[str, float]] = []
        for case in cases:
            for kind in kinds:
                r = results.get(case.name, {}).get(kind)
                if r is not None:
                    labels.append(f"{case.name}\n{kind}")
                    stacks.append(r)
        bottoms = [0.0] * len(labels)
        for i, g in enumerate(GROUPS):
            values = [r[g] / 1000 for r in stacks]
            ax.bar(
                range(len(labels)), values, bottom=bottoms, label=GROUP_NAMES[g], color=colors[i]
            )
            bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize=8)
        unit = cases[0].unit if cases else "request"
        ax.set_ylabel(f"thousands of instructions per {unit}")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("User-space instructions under callgrind, by shared object", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- the command ----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cases",
        default=",".join(c.name for c in CASES),
        help="comma-separated, from: " + ", ".join(c.name for c in CASES),
    )
    parser.add_argument("--servers", default="edge,nginx", help="edge, nginx or both")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the results go")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--json", action="store_true", help="print the JSON, not the table")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def main(args: argparse.Namespace) -> int:
    known = {c.name: c for c in CASES}
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in known]
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    if unknown or not names:
        print(
            f"woody-bench cost: --cases: unknown {', '.join(unknown) or '(none)'}", file=sys.stderr
        )
        return 2
    if not kinds or any(k not in ("edge", "nginx") for k in kinds):
        print("woody-bench cost: --servers: edge and/or nginx", file=sys.stderr)
        return 2
    missing = [t for t in ("valgrind", "callgrind_control", "h2load") if shutil.which(t) is None]
    if nginx_binary() is None:
        missing.append("nginx")
    if missing:
        print(f"woody-bench cost: not installed: {', '.join(missing)}", file=sys.stderr)
        return 2
    cases = [known[n] for n in names]
    results: dict[str, dict[str, dict[str, float]]] = {}
    expected = len(kinds) * (
        40 + sum(4 * c.n * (0.3 if c.unit == "handshake" else 0.01) for c in cases)
    )
    with ProcessGroup() as group, Progress(expected, label="cost", enabled=not args.quiet) as bar:
        cert = ensure_dev_cert(group.workdir / "tls")
        origin = nginx_files(group, {SMALL: deterministic_bytes(1024)}, name="fast-origin")
        origin_port = int(origin.url.rsplit(":", 1)[1])
        for kind in kinds:
            with bar.step(f"{kind}: start under callgrind", 40):
                server = start_counted(group, kind, origin_port, cert)
                warm(server, str(cert.ca))
            for case in cases:
                spent = 4 * case.n * (0.3 if case.unit == "handshake" else 0.01)
                with bar.step(f"{kind}: {case.name}", spent):
                    results.setdefault(case.name, {})[kind] = measure(server, case)
    data = {
        "kind": "cost",
        "stamp": report.stamp(),
        "git": report.git_rev(),
        "machine": report.machine(),
        "cases": {c.name: {"title": c.title, "n": c.n, "unit": c.unit} for c in cases},
        "results": results,
    }
    report.publish(
        "cost",
        render(results, kinds),
        data,
        lambda path: draw(results, kinds, path),
        args.out,
        write_files=not args.no_write,
        as_json=args.json,
        print_fn=print,
    )
    return 0
