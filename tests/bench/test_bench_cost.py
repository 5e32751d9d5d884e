"""`bench cost`: a real callgrind dump read back (in all, by shared object), and the
difference of two runs as the cost of one request."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.cost import Dump, group_of, parse_dump, per_unit
from tests.bench.helpers import require_tool


def test_a_callgrind_dump_is_read_in_all_and_by_object(tmp_path: Path) -> None:
    require_tool("valgrind")
    out = tmp_path / "cg.out"
    subprocess.run(
        ["valgrind", "--tool=callgrind", "--quiet", f"--callgrind-out-file={out}", "ls", "/"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    text = out.read_text()
    totals = next(int(line.split()[1]) for line in text.splitlines() if line.startswith("totals:"))
    dump = parse_dump(text)
    # Every instruction is someone's: the split adds up to callgrind's own total.
    assert dump.total == totals
    assert sum(dump.by_object.values()) == totals
    libc = [o for o in dump.by_object if o.rsplit("/", 1)[-1].startswith("libc.so")]
    assert libc and dump.by_object[libc[0]] > 0
    assert any(o.endswith("/ls") for o in dump.by_object)


def test_one_request_is_the_difference_of_two_runs() -> None:
    lib = "/usr/lib/x86_64-linux-gnu/"
    small = Dump(1_300, {lib + "libcrypto.so.3": 1_000, "/usr/sbin/nginx": 300})
    large = Dump(3_500, {lib + "libcrypto.so.3": 3_000, "/usr/sbin/nginx": 500})
    cost = per_unit(small, large, 200, "nginx")
    assert cost["total"] == 11.0
    assert cost["OpenSSL"] == 10.0 and cost["own"] == 1.0


def test_shared_objects_are_grouped_by_who_wrote_them() -> None:
    site = "/w/.venv/lib/python3.11/site-packages/uvloop/loop.cpython-311-x86_64-linux-gnu.so"
    assert group_of(site, "edge") == "own"
    assert group_of("/usr/lib/libpython3.11.so.1.0", "edge") == "interpreter"
    assert group_of("/usr/lib/x86_64-linux-gnu/libssl.so.3", "nginx") == "OpenSSL"
    assert group_of("/usr/lib/x86_64-linux-gnu/libc.so.6", "edge") == "libc"
    assert group_of("/usr/sbin/nginx", "nginx") == "own"
    assert group_of("/usr/lib/x86_64-linux-gnu/libz.so.1", "nginx") == "other"
