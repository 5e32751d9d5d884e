"""A local stand-in for the Swarm stack: origin, optional Redis and N edge nodes as processes.

    python -m bench topology up --edges 1                 # what `make run` starts
    python -m bench topology up --edges 3 --redis redis://127.0.0.1:6379/0
    python -m bench topology up --edges 3 --detach        # then: python -m bench topology down

`up` starts `python -m origin serve` on the origin port (8081), a `redis-server` when `--redis`
names a loopback URL where nothing listens yet, and the edge nodes. One edge listens on the edge
port (8080) itself; with several, node i listens on 8090+i and a small round-robin TCP balancer
in this process listens on the edge port, standing in for the Swarm routing mesh. Every child
runs in its own process group and is stopped, group and all, on Ctrl-C or SIGTERM.

From Python (the bench and the chaos tests):

    async with Topology(TopologyConfig(edges=3, redis_url=url)) as topo:
        ... topo.edge_url, topo.origin_url, topo.node_urls, topo.purge_token ...
        await topo.kill("origin"); await topo.restart("origin")
        await topo.stop_node(1); await topo.start_node(1)

or, from synchronous code, `with BackgroundTopology(config) as topo: ...`.

Modules: `config` (TopologyConfig), `core` (Topology and its services, built on
`bench.procs.Child`), `balancer` (the routing-mesh stand-in), `background` (the thread
adapter), `cli` (`up`, `down`, `--detach`).
"""

from __future__ import annotations

from bench.topology.background import BackgroundTopology
from bench.topology.balancer import RoundRobinBalancer
from bench.topology.cli import build_parser, config_from_args, main
from bench.topology.config import TopologyConfig
from bench.topology.core import Service, Topology, TopologyError

__all__ = [
    "BackgroundTopology",
    "RoundRobinBalancer",
    "Service",
    "Topology",
    "TopologyConfig",
    "TopologyError",
    "build_parser",
    "config_from_args",
    "main",
]
