"""Waiting for another process's fill, with one poller per key shared by every waiter of
this process (the node tier and the Redis tier both wait this way)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine
from typing import Any

from edge.cache.entry import Entry

Ident = tuple[str, float | None]
Poll = Callable[[float], Coroutine[Any, Any, list[Entry] | None]]
"""Polls for at most the given seconds: entries or [] (final answers), None (budget spent)."""


class SharedPollers:
    def __init__(self) -> None:
        self.tasks: dict[Ident, asyncio.Task[list[Entry] | None]] = {}

    async def wait(self, ident: Ident, timeout: float, poll: Poll) -> list[Entry]:
        """The poll's answer for `ident` within `timeout` seconds ([] when none came)."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            task = self.tasks.get(ident)
            if task is None or task.done():
                task = asyncio.create_task(poll(remaining))
                self.tasks[ident] = task
                task.add_done_callback(functools.partial(self._done, ident))
            try:
                async with asyncio.timeout(remaining):
                    result = await asyncio.shield(task)
            except TimeoutError:
                return []
            if result is not None:
                return result
            await asyncio.sleep(0)  # that poller had a shorter budget: start another
        return []

    def _done(self, ident: Ident, task: asyncio.Task[list[Entry] | None]) -> None:
        if self.tasks.get(ident) is task:
            del self.tasks[ident]

    def cancel(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()
