"""bench/procs.py: ports, readiness probes, and children stopped with their whole group."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from bench.procfs import descendants
from bench.procs import (
    PORT_RANGE,
    Child,
    ProcessGroup,
    StartError,
    free_block,
    free_port,
    port_open,
    port_probe,
)

# Listens on the port it is given, and starts a grandchild that sleeps: the group's members.
SERVER = (
    "import socket, subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); print('listening', flush=True)\n"
    "time.sleep(60)\n"
)


def _alive(pid: int, within: float = 3.0) -> bool:
    """Still there `within` s from now (a SIGKILL is delivered asynchronously)?"""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z":
                return False
        except OSError:
            return False
        time.sleep(0.05)
    return True


def test_ports_are_below_the_ephemeral_range() -> None:
    for _ in range(20):
        assert PORT_RANGE[0] <= free_port() < PORT_RANGE[1]
    base = free_block(3)
    assert PORT_RANGE[0] <= base + 1 and base + 3 < PORT_RANGE[1]
    for port in range(base + 1, base + 4):
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free: binds


def test_group_waits_for_readiness_and_stops_the_whole_process_group(tmp_path: Path) -> None:
    port = free_port()
    with ProcessGroup(workdir=tmp_path) as group:
        argv = [sys.executable, "-c", SERVER, str(port)]
        child = group.start("srv", argv, ready=port_probe(port))
        assert port_open(port)
        assert child.pid is not None
        for _ in range(50):
            below = descendants(child.pid)
            if below:
                break
            time.sleep(0.05)
        assert len(below) == 1
        assert "listening" in (tmp_path / "srv.log").read_text()
    assert not child.running
    assert not _alive(below[0])  # the grandchild went with the group
    assert not port_open(port)


def test_a_child_that_dies_while_starting_says_why(tmp_path: Path) -> None:
    with ProcessGroup(workdir=tmp_path) as group:
        argv = [sys.executable, "-c", "print('boom'); raise SystemExit(3)"]
        with pytest.raises(StartError, match=r"bad exited with status 3[\s\S]*boom"):
            group.start("bad", argv, ready=port_probe(free_port()))
        assert group.procs == []


def test_kill_is_a_crash_and_spawn_starts_it_again(tmp_path: Path) -> None:
    port = free_port()
    child = Child("srv", [sys.executable, "-c", SERVER, str(port)], tmp_path / "srv.log")
    try:
        child.spawn().wait_ready(port_probe(port), 20)
        first = child.pid
        child.kill()
        assert not child.running and child.returncode == -9
        child.spawn().wait_ready(port_probe(port), 20)
        assert child.running and child.pid != first
        assert (tmp_path / "srv.log").read_text().count("\nlistening\n") == 2  # appended
    finally:
        child.stop()
    assert not child.running
