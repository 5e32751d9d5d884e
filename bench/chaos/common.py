"""What every part of the chaos suite shares: the paths it asks for, the edge's YAML, `say`."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import yaml

from bench.procs import REPO

EDGE_YAML = REPO / "config" / "edge.yaml"
IMAGE = "/5mo.jpg"
PAGE = "/"
CACHED = (PAGE, IMAGE)
"""Paths warmed on every node first: they must be served through every fault."""


def say(text: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)


def edge_yaml(tmp: Path, **sections: dict[str, Any]) -> Path:
    """A copy of config/edge.yaml with `sections` merged in, under tmp."""
    doc = yaml.safe_load(EDGE_YAML.read_text())
    for key, value in sections.items():
        doc.setdefault(key, {}).update(value)
    path = tmp / f"edge-{os.getpid()}-{random.randint(0, 1 << 30)}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path
