"""`python -m bench table`: the lab's table 7.1, reproduced on loopback.

For each configuration it measures the lab's three columns, each as a miss (the first call)
and a hit (the second call, or the median of `--hits` calls):

- the recursive page load (`/` and every asset it references, fetched as `wget -r -np`),
- the heavy API call `/api/misc/heavy?name=bench`,
- the DB API call `/api/products/last`.

Rows: the baseline origin, 5 API replicas, the in-API Redis cache, our edge (memory only),
our edge with Redis on 3 nodes (miss on node 1, hit on node 3 which never fetched), nginx
and Varnish as peers, any `--target NAME=URL`, and the lab's Gcore figures, quoted.

Modules: `model` (columns, rows, samples, the lab's figures), `setups` (what each row
starts), `measure` (the run), `render` (Markdown and chart), `cli` (options and `main`).
"""

from __future__ import annotations

from bench.table.cli import add_arguments, main

__all__ = ["add_arguments", "main"]
