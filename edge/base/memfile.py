"""Big bodies kept in memory as files: a memfd, mapped, so that every reader has the bytes as a
memoryview and HTTP/1.1 can hand them to the kernel with `os.sendfile` (edge.protocol.file_out).

Why: a 5 MB hit written from user memory costs the kernel a copy of every byte into the
socket's buffer (bench scenario o: 795 of the edge's 855 µs of CPU per hit were system time),
where nginx's sendfile only references pages. The pages of a memfd (`memfd_create(2)`: an
anonymous file in memory) can be referenced the same way.

A `MemFile` is the mapping of its memfd (an `mmap.mmap` of its own: a memoryview of it names
it as `obj`, so whatever holds a view of the body holds the file). Its fd is closed when the
last user lets go of it, and not before: the stored entry, the answers built from it, a
sendfile under way (each holds a view or the MemFile). So an evicted or purged body is never
read through a closed fd (or a reused one), and no count is kept by hand. The pages live as
long as the mapping, as a bytes object's memory lives as long as its last reference: a body
here weighs `len(body)` in the memory tier's budget, as it did as bytes.
"""

from __future__ import annotations

import logging
import mmap
import os
import resource
import weakref

log = logging.getLogger("edge.base.memfile")

MIN_BYTES = 256 * 1024
"""Bodies this long or longer are kept in a memfd; shorter ones stay bytes: a memfd costs two
fds (its own and the mapping's duplicate) and a page-rounded size, and a short body's copy
into the socket costs little (HTTP/1.1 sends a file from 64 KiB on: `file_out.MIN_BYTES`).
Not measured: docs/performance.md says why."""

_open = [0]  # MemFiles whose fd is open in this process


def _fd_budget() -> int:
    """How many MemFiles a process may hold open: their fds (two each) take at most a
    quarter of its soft RLIMIT_NOFILE, the rest is for connections (an accept that finds no
    fd refuses a client; a body that finds none here stays in the heap)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return max(0, soft // 8)


class MemFile(mmap.mmap):
    """`data`'s bytes in a new memfd, mapped; `fd` is open while the object lives."""

    fd: int

    def __new__(cls, data: bytes | memoryview) -> MemFile:
        size = len(data)
        fd = os.memfd_create("edge-body", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            self = super().__new__(cls, fd, size)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        _open[0] += 1
        weakref.finalize(self, _close, fd)
        self[:] = data
        return self


def _close(fd: int) -> None:
    _open[0] -= 1
    os.close(fd)


def kept(body: bytes | memoryview) -> bytes | memoryview:
    """`body` as a view of a MemFile: the same view when it is one already; `body` itself
    when no memfd can be had (out of fds or memory: it is kept as it came, and written)."""
    if isinstance(body, memoryview) and isinstance(body.obj, MemFile):
        return body
    if _open[0] >= _fd_budget():
        return body  # the fds are the connections' (`_fd_budget`)
    try:
        return memoryview(MemFile(body))
    except OSError as exc:
        log.warning("a body of %d bytes stays in the heap: no memfd (%s)", len(body), exc)
        return body


def worth_keeping(body: bytes | memoryview) -> bool:
    """Whether a body kept in memory goes into a memfd (`MIN_BYTES`), not there yet."""
    return len(body) >= MIN_BYTES and not (
        isinstance(body, memoryview) and isinstance(body.obj, MemFile)
    )


def file_of(body: bytes | memoryview) -> MemFile | None:
    """The MemFile whose bytes `body` is a view of (whole or a part), if any."""
    if isinstance(body, memoryview):
        obj = body.obj
        if isinstance(obj, MemFile):
            return obj
    return None


def open_files() -> int:
    """How many MemFiles' fds are open in this process (the stats show it)."""
    return _open[0]
