"""What a local topology is made of: ports, delays, the edge's configuration, where logs go."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_EDGE_PORT = 8080
DEFAULT_ORIGIN_PORT = 8081
DEFAULT_NODE_BASE_PORT = 8090
DEFAULT_TLS_PORT = 8443
LOOPBACK = "127.0.0.1"
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


@dataclass
class TopologyConfig:
    edges: int = 1
    origin_replicas: int = 1
    redis_url: str | None = None
    """Redis shared by the edge nodes; started here when it is on loopback and not listening."""
    edge_port: int = DEFAULT_EDGE_PORT
    origin_port: int = DEFAULT_ORIGIN_PORT
    node_base_port: int = DEFAULT_NODE_BASE_PORT
    """With several edges, node i (from 1) listens on node_base_port + i."""
    host: str = LOOPBACK
    heavy_seconds: float | None = None
    db_seconds: float | None = None
    static_rate: int | None = None
    origin_db: str | None = None
    tls_port: int | None = None
    """HTTPS (HTTP/1.1 and h2) on this port, with var/tls/ (bench.topology.certs); None: off
    (`topology up`, hence `make run`, turns it on at DEFAULT_TLS_PORT). With several edges,
    node i serves HTTPS on tls_port + i."""
    edge_config: str | None = None
    edge_workers: int | None = None
    purge_token: str | None = None
    """None: EDGE_PURGE_TOKEN from the environment, else a fresh secrets.token_urlsafe()."""
    log_dir: Path | None = None
    """Where each child's output goes (default var/topology/)."""
    startup_timeout: float = 30.0
    python: str = sys.executable
    cwd: Path = field(default_factory=Path.cwd)
    extra_env: dict[str, str] = field(default_factory=dict)
