"""What a load scenario is: an object with `start`, `measure`, `rows` and `metric`.

A scenario starts what it measures inside the run's `Context` (an origin and the caches, in
one `ProcessGroup`), measures each `Target` into an `Outcome`, and renders its outcomes as
table rows; its `metric` says which number of an outcome the edge ÷ peer ratio compares, and
`cpu` whether it reports CPU microseconds per request (of each server's process tree).
Scenarios are registered by letter in `bench.load.scenarios.REGISTRY`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.loadgen import LoadResult
from bench.peers import Server

if TYPE_CHECKING:
    from bench.load.context import Context
    from bench.load.options import Options


@dataclass
class Outcome:
    scenario: str
    server: str
    result: LoadResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "server": self.server,
            "result": self.result.as_json() if self.result else None,
            "extra": self.extra,
            "error": self.error,
        }

    @property
    def cpu_us(self) -> float | None:
        """CPU µs per request of the server's process tree (None when not measured)."""
        cpu = self.extra.get("cpu_per_request")
        return float(cpu["cpu_us"]) if cpu else None


@dataclass
class Target:
    """A server to measure: a cache, or the origin directly; `error` when it did not start."""

    name: str
    server: Server | None
    error: str | None = None


@dataclass(frozen=True)
class Metric:
    what: str
    value: Callable[[Outcome], float | None]
    higher_is_better: bool = True
    round_key: str | None = None
    """The field of `extra["rounds"]` to pair round by round (hit scenarios)."""


@dataclass
class Table:
    """A scenario's report: one line that says how it was measured, then a table."""

    intro: str
    headers: list[str]
    rows: list[list[str]]


CPU_METRIC = Metric("CPU µs per request", lambda oc: oc.cpu_us, False, "cpu_us")


class Scenario(ABC):
    letter: str
    title: str
    metric: Metric
    cpu: bool = False
    """Whether CPU per request is measured and its ratio printed."""
    latency_chart: bool = True
    """Whether its latency percentiles go into the chart."""
    errors_below_table: bool = True
    """Whether each server's error is listed under the table (else it is in a cell)."""

    @abstractmethod
    def expected_seconds(self, opts: Options, servers: int) -> float:
        """About how long it takes with `servers` caches (for the progress bar)."""

    @abstractmethod
    def start(self, ctx: Context) -> list[Target]:
        """Start the origin and the caches in ctx.group; the targets to measure."""

    @abstractmethod
    def measure(self, ctx: Context, targets: list[Target]) -> list[Outcome]:
        """One outcome per target, in order."""

    @abstractmethod
    def rows(self, opts: Options, outcomes: list[Outcome]) -> Table:
        """The report of its outcomes (those of this scenario, in order)."""
