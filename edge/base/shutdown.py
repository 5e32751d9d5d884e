"""Bounded steps for stopping a worker: a stop never waits forever on one part.

redis-py's asyncio close can stall in `wait_closed()` (redis/redis-py#3941, open), and a
task that does not end on cancellation would hold the stop for ever; each step here gives up
after `CLOSE_SECONDS`, says so in the log, and lets the stop go on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

log = logging.getLogger("edge.base.shutdown")

CLOSE_SECONDS = 2.0


async def cancel_all(
    tasks: Iterable[asyncio.Task[Any] | None], what: str, seconds: float = CLOSE_SECONDS
) -> None:
    """Cancel the tasks and wait for them to end, at most `seconds`."""
    live = [t for t in tasks if t is not None]
    for task in live:
        task.cancel()
    if not live:
        return
    _, pending = await asyncio.wait(live, timeout=seconds)
    if pending:
        names = ", ".join(sorted(t.get_name() for t in pending))
        log.warning(
            "%s: %d task(s) still running after %.0f s: %s", what, len(pending), seconds, names
        )


async def close_within(aw: Awaitable[Any], what: str, seconds: float = CLOSE_SECONDS) -> bool:
    """Await a close; False if it failed or took longer than `seconds` (it is dropped)."""
    try:
        async with asyncio.timeout(seconds):
            await aw
    except TimeoutError:
        log.warning("%s did not close within %.0f s; dropped", what, seconds)
        return False
    except Exception as exc:  # closing something already broken: nothing left to do
        log.debug("%s: close failed: %r", what, exc)
        return False
    return True
