"""A Topology driven from synchronous code: its event loop runs in a daemon thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from bench.topology.config import TopologyConfig
from bench.topology.core import Topology

T = TypeVar("T")


class BackgroundTopology:
    """A Topology in a daemon thread, for synchronous callers (`with ... as topo:`)."""

    def __init__(self, config: TopologyConfig | None = None) -> None:
        self.topology = Topology(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def start(self) -> Topology:
        self._thread.start()
        self._run(self.topology.start())
        return self.topology

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._run(self.topology.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> Topology:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
