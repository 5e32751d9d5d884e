"""Fault and load suite: the edge keeps serving through faults, load and hostile input.

    python -m bench chaos            # the long run: 30 s outages, 1,000 connections for 60 s,
                                     # 2,000 fuzz cases, 10,000 x 1 MB objects through 64 MB
    python -m bench chaos --short    # the short run of `make test` (well under a minute)
    python -m bench chaos --memory   # only the bounded-memory run
    python -m bench chaos --hostile  # only the hostile-memory run (about 10 minutes)
    python -m bench chaos --json out.json

It starts real processes (bench.topology.Topology): the origin (`python -m origin serve`, its
own SQLite file), a redis-server of its own on a free port, and several edge nodes, then:

1. warms a cached page (`/`) and the 5 MB image on every node;
2. kills the origin (SIGKILL) under load for the outage time, then restarts it;
3. kills Redis under load for the outage time, then restarts it;
4. holds N concurrent keep-alive connections on the nodes for a while;
5. fuzzes request lines and headers over raw sockets (Hypothesis) against one node;
6. checks every order the edge answered 200 for exists exactly once at the origin;
7. (separately) the bounded-memory run: distinct 1 MB objects through a 64 MB node budget,
   reading the memory of the whole node (2 workers: PSS and RSS summed over its processes).

`--hostile` (`hostile`): what one client can make a node keep. A 2-worker node with default
limits against each pattern of issue 27 in turn (multi-range HEADs, huge Accept-Encoding
values, only-if-cached targets, Vary values, query strings, long cookies, HTTP/2 header
blocks held open, TLS handshakes begun and never finished), each answer checked, the node's
PSS before, at the peak and a minute after (`--settle`); target: peak <= before + 64 MiB,
after <= before + 16 MiB.

During 2-4 clients also place orders (`/api/orders/do`, a write behind GET) and ask for
uncached calls. It prints what it counts: requests, errors by kind (5xx by code, connection
errors), stale answers, origin requests, lost and duplicated orders, crashes.

Modules: `common` (paths, the edge's YAML, progress lines), `report` (what is counted, the
summary, the verdict), `clients` (the load clients and the raw-socket reader), `fuzz`,
`orders` (lost and duplicated writes, read from the origin's database), `memory` (the
bounded-memory run), `hostile` (the hostile-memory run), `phases` (one function per phase),
`suite` (the runs), `cli`.
"""

from __future__ import annotations

from bench.chaos.cli import main
from bench.chaos.report import LONG, SHORT, Profile, Report, Tally, summary, verdict
from bench.chaos.suite import run

__all__ = ["LONG", "SHORT", "Profile", "Report", "Tally", "main", "run", "summary", "verdict"]
