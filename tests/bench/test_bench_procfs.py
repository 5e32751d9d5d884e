"""bench/procfs.py: CPU time of a process tree, checked against real busy processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.procfs import TICKS, CpuTimes, _stat, descendants, tree_cpu, vm_rss_kib

# A parent that starts a child; each burns CPU for BURN s, prints its own process_time(),
# then waits (alive, so /proc still has it) until its stdin closes.
BURNER = textwrap.dedent(
    """
    import subprocess, sys, time
    BURN = float(sys.argv[1])
    child = None
    if sys.argv[2] == "parent":
        child = subprocess.Popen(
            [sys.executable, __file__, sys.argv[1], "child"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
    end, x = time.process_time() + BURN, 0
    while time.process_time() < end:
        for i in range(20000):  # user time: few system calls between the clock readings
            x += i
    mine = time.process_time()
    theirs = float(child.stdout.readline()) if child else 0.0
    print(mine + theirs, flush=True)
    sys.stdin.read()
    if child:
        child.stdin.close()
        child.wait()
    """
)


def test_tree_cpu_matches_what_a_busy_parent_and_child_report(tmp_path: Path) -> None:
    script = tmp_path / "burn.py"
    script.write_text(BURNER)
    proc = subprocess.Popen(
        [sys.executable, str(script), "0.4", "parent"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        before = tree_cpu(proc.pid)
        assert proc.stdout is not None
        reported = float(proc.stdout.readline())  # both have burnt and are still alive
        below = descendants(proc.pid)
        spent = tree_cpu(proc.pid) - before
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
    assert len(below) == 1  # the child, found by its parent pid
    assert reported >= 0.8
    # /proc counts in clock ticks; what ran before the first reading (interpreter start-up)
    # is not in `spent`, so it may be a little below what the processes report.
    assert reported - 0.25 <= spent.total <= reported + 2 / TICKS
    assert spent.user > spent.system


def test_a_process_alone_and_a_gone_one() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    try:
        assert descendants(proc.pid) == []
        assert tree_cpu(proc.pid).total >= 0
        assert vm_rss_kib(proc.pid) > 1000  # a Python interpreter: a few MiB
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
    assert _stat(proc.pid) is None
    assert tree_cpu(proc.pid) == CpuTimes()


def test_stat_parsing_survives_odd_command_names(tmp_path: Path) -> None:
    """Field 2 is `(comm)`; a name with spaces and parentheses must not shift the fields."""
    (tmp_path / "42").mkdir()
    fields = ["S", "7"] + ["0"] * 9 + [str(3 * TICKS), str(TICKS)] + ["0"] * 39
    (tmp_path / "42" / "stat").write_text(f"42 (a (b) c) {' '.join(fields)}\n")
    assert _stat(42, tmp_path) == (7, CpuTimes(3.0, 1.0))
    (tmp_path / "43").mkdir()
    (tmp_path / "43" / "stat").write_text(f"43 (kid) S 42 {' '.join(['0'] * 9)} 5 0 0\n")
    assert descendants(42, tmp_path) == [43]
    assert tree_cpu(42, tmp_path) == CpuTimes(3.0 + 5 / TICKS, 1.0)


def test_per_request_split() -> None:
    cpu = CpuTimes(user=0.3, system=0.1)
    got = cpu.per_request_us(10_000)
    assert got is not None
    assert got["cpu_us"] == pytest.approx(40.0)
    assert got["user_us"] == pytest.approx(30.0) and got["system_us"] == pytest.approx(10.0)
    assert cpu.per_request_us(0) is None
