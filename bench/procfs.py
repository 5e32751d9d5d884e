"""What Linux's /proc says about a server's processes: CPU time of a process tree, VmRSS.

CPU per request is the figure that holds on a shared machine (docs/benchmark.md): utime +
stime of the server's process and all its descendants (`/proc/PID/stat`, fields 14 and 15, in
clock ticks), read before and after a measurement, divided by the requests it counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class CpuTimes:
    """CPU seconds spent in user and in system mode."""

    user: float = 0.0
    system: float = 0.0

    @property
    def total(self) -> float:
        return self.user + self.system

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user - other.user, self.system - other.system)

    def __add__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user + other.user, self.system + other.system)

    def per_request_us(self, requests: int) -> dict[str, float] | None:
        """µs of CPU per request, in all and split into user and system (None: no request)."""
        if requests <= 0:
            return None
        scale = 1e6 / requests
        return {
            "cpu_us": self.total * scale,
            "user_us": self.user * scale,
            "system_us": self.system * scale,
        }


def _stat(pid: int, proc: Path = PROC) -> tuple[int, CpuTimes] | None:
    """(parent pid, CPU times) of one process, or None when it is gone."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ")": split after
    # the last ")". What follows starts at field 3 (state), so field N is rest[N - 3].
    rest = text[text.rindex(")") + 2 :].split()
    return int(rest[1]), CpuTimes(int(rest[11]) / TICKS, int(rest[12]) / TICKS)


def descendants(pid: int, proc: Path = PROC) -> list[int]:
    """Every process below pid (children, grandchildren, ...), from one scan of /proc."""
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            got = _stat(int(entry.name), proc)
            if got is not None:
                children.setdefault(got[0], []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def tree_cpu(pid: int, proc: Path = PROC) -> CpuTimes:
    """utime + stime of pid and of every process below it, in seconds, right now."""
    total = CpuTimes()
    for one in (pid, *descendants(pid, proc)):
        got = _stat(one, proc)
        if got is not None:
            total += got[1]
    return total


def trees_cpu(pids: list[int]) -> CpuTimes:
    """tree_cpu summed over several roots (a server made of several process groups)."""
    total = CpuTimes()
    for pid in pids:
        total += tree_cpu(pid)
    return total


def vm_rss_kib(pid: int, proc: Path = PROC) -> int:
    """The resident set size of one process in KiB (0 when /proc does not say)."""
    for line in (proc / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tree_memory_kib(pid: int, proc: Path = PROC) -> tuple[int, int]:
    """(RSS summed, PSS summed) over pid and every process below it, in KiB. PSS counts a
    page shared by n processes (fork, a shared map) as 1/n in each: the honest total of a
    node whose workers share memory."""
    rss = pss = 0
    for one in (pid, *descendants(pid, proc)):
        try:
            rollup = (proc / str(one) / "smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        for line in rollup:
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss, pss
