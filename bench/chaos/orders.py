"""Lost and duplicated writes: the orders the edge answered 200 for, looked up at the origin."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def check_orders(db: Path, order_ids: list[str], products_prefix: str) -> tuple[int, int, int]:
    """(found, lost, duplicated): orders the edge answered 200 for, looked up at the origin;
    duplicated counts products ordered once but stored more than once (a replayed write)."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        found = 0
        for chunk in (order_ids[i : i + 500] for i in range(0, len(order_ids), 500)):
            marks = ",".join("?" * len(chunk))
            found += conn.execute(
                f'SELECT COUNT(*) FROM "order" WHERE order_id IN ({marks})', chunk
            ).fetchone()[0]
        dup = conn.execute(
            'SELECT COUNT(*) FROM (SELECT product FROM "order" WHERE product LIKE ? '
            "GROUP BY product HAVING COUNT(*) > 1)",
            (products_prefix + "%",),
        ).fetchone()[0]
    finally:
        conn.close()
    return found, len(order_ids) - found, dup
