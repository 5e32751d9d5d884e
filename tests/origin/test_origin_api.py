"""Every API endpoint, on SQLite and on the real MariaDB (the `db_url` fixture runs both)."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime

import pymysql
import pytest

from tests.origin.conftest import ClientFactory

INJECTION = "O'Brien\"; DROP TABLE product;--"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def _parse_now(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_ping_and_time(origin_client: ClientFactory, db_url: str) -> None:
    client = await origin_client(db=db_url)
    resp = await client.get("/api/ping")
    assert resp.status == 200
    assert await resp.text() == "ping"
    assert resp.headers["Content-Type"].startswith("text/plain")
    resp = await client.get("/api/misc/time")
    body = await resp.text()
    assert resp.status == 200
    assert body.startswith("misc: ")
    assert abs((_parse_now(body.removeprefix("misc: ")) - datetime.now()).total_seconds()) < 5


async def test_heavy_sleeps_and_echoes_the_name(origin_client: ClientFactory, db_url: str) -> None:
    client = await origin_client(db=db_url, heavy_seconds=0.3)
    started = time.monotonic()
    resp = await client.get("/api/misc/heavy", params={"name": "benchmark"})
    elapsed = time.monotonic() - started
    body = await resp.text()
    assert resp.status == 200
    assert 0.28 <= elapsed < 2.0
    stamp, _, rest = body.partition(": ")
    _parse_now(stamp)
    assert rest == "Woody -benchmark- Woody"


async def test_missing_parameters_are_400(origin_client: ClientFactory, db_url: str) -> None:
    client = await origin_client(db=db_url)
    for path, name in [
        ("/api/misc/heavy", "name"),
        ("/api/products", "product"),
        ("/api/orders/do", "order"),
        ("/api/orders/", "order_id"),
    ]:
        resp = await client.get(path)
        assert resp.status == 400, path
        assert name in await resp.text()
    resp = await client.get("/api/products", params={"product": "  "})
    assert resp.status == 400
    resp = await client.get("/api/products", params={"product": "x" * 201})
    assert resp.status == 400


async def test_products_add_get_and_last(origin_client: ClientFactory, db_url: str) -> None:
    client = await origin_client(db=db_url, db_seconds=0.2)
    assert await (await client.get("/api/products/1")).text() == "Yoyo"
    assert await (await client.get("/api/products/2")).text() == "Joli train"
    for missing in ("3", "0", "99999999999999999999999"):
        resp = await client.get(f"/api/products/{missing}")
        assert resp.status == 404
        assert await resp.text() == f"product {int(missing)} not found"
    assert (await client.get("/api/products/abc")).status == 404  # not a route

    started = time.monotonic()
    resp = await client.get("/api/products/last")
    assert time.monotonic() - started >= 0.18
    body = await resp.text()
    assert re.fullmatch(r"db: .+ - 2 products \(last=Joli train\)", body), body

    resp = await client.get("/api/products", params={"product": "Toupie"})
    assert resp.status == 200
    assert await resp.text() == "Toupie"
    assert await (await client.get("/api/products/3")).text() == "Toupie"
    body = await (await client.get("/api/products/last")).text()
    assert body.endswith(" - 3 products (last=Toupie)")


async def test_injection_string_round_trips(origin_client: ClientFactory, db_url: str) -> None:
    client = await origin_client(db=db_url)
    resp = await client.get("/api/products", params={"product": INJECTION})
    assert await resp.text() == INJECTION
    assert await (await client.get("/api/products/3")).text() == INJECTION
    assert (await (await client.get("/api/products/last")).text()).endswith(f"(last={INJECTION})")
    assert await (await client.get("/api/products/1")).text() == "Yoyo"  # table still there
    resp = await client.get("/api/orders/do", params={"order": INJECTION})
    order_id = UUID_RE.search(await resp.text())
    assert order_id
    resp = await client.get("/api/orders/", params={"order_id": INJECTION})
    assert resp.status == 404
    assert await resp.text() == f'order "{INJECTION}": not found'


async def test_orders(origin_client: ClientFactory, db_url: str) -> None:
    client = await origin_client(db=db_url, heavy_seconds=0.2)
    started = time.monotonic()
    resp = await client.get("/api/orders/do", params={"order": "Yoyo"})
    assert time.monotonic() - started >= 0.18  # the heavy validation
    body = await resp.text()
    assert resp.status == 200
    match = UUID_RE.search(body)
    assert match, body
    assert body == f"order {match.group()} created for product: Yoyo"
    for path in ("/api/orders/", "/api/orders"):
        resp = await client.get(path, params={"order_id": match.group()})
        assert resp.status == 200
        assert await resp.text() == f'order "{match.group()}": Success'
    resp = await client.get("/api/orders/", params={"order_id": "no-such-order"})
    assert resp.status == 404
    assert await resp.text() == 'order "no-such-order": not found'


async def test_200_concurrent_orders_make_200_rows(
    origin_client: ClientFactory, db_url: str
) -> None:
    client = await origin_client(db=db_url, heavy_seconds=0)
    answers = await asyncio.gather(
        *(client.get("/api/orders/do", params={"order": f"toy {i}"}) for i in range(200))
    )
    ids = set()
    for resp in answers:
        assert resp.status == 200
        match = UUID_RE.search(await resp.text())
        assert match
        ids.add(match.group())
    assert len(ids) == 200
    from origin.api import DB_KEY

    assert await client.app[DB_KEY].count_orders() == 200
    resp = await client.get("/api/orders/", params={"order_id": ids.pop()})
    assert resp.status == 200


async def test_one_api_request_at_a_time(origin_client: ClientFactory, db_url: str) -> None:
    heavy_s = 0.6  # long enough that a stall of the machine is not mistaken for the lock
    client = await origin_client(db=db_url, heavy_seconds=heavy_s)
    started = time.monotonic()

    async def timed(path: str) -> float:
        resp = await client.get(path)
        assert resp.status == 200
        await resp.read()
        return time.monotonic() - started

    heavy = [asyncio.create_task(timed(f"/api/misc/heavy?name=n{i}")) for i in range(3)]
    await asyncio.sleep(0.05)
    # Static files are not behind the API lock (nginx served them in the lab) ...
    page = await timed("/")
    assert page < heavy_s - 0.1
    # ... but a ping waits for the heavy requests before it, like a single-threaded werkzeug.
    ping = await timed("/api/ping")
    done = sorted(await asyncio.gather(*heavy))
    assert done[-1] >= 3 * heavy_s - 0.05  # three heavy requests, one after the other
    assert ping >= 3 * heavy_s - 0.05
    assert done[0] < 1.5 * heavy_s and done[1] >= 1.5 * heavy_s


async def test_write_waits_behind_a_slow_last(origin_client: ClientFactory, db_url: str) -> None:
    """Two origin processes (apps) on one database: B's insert during A's `last` completes only
    after it, because `last` holds a read lock on table product."""
    reader = await origin_client(db=db_url, db_seconds=0.8)
    writer = await origin_client(db=db_url)
    started = time.monotonic()

    async def last() -> tuple[str, float]:
        body = await (await reader.get("/api/products/last")).text()
        return body, time.monotonic() - started

    async def add() -> tuple[str, float]:
        await asyncio.sleep(0.2)  # the read lock is held by then
        body = await (await writer.get("/api/products", params={"product": "Late"})).text()
        return body, time.monotonic() - started

    (last_body, last_done), (add_body, add_done) = await asyncio.gather(last(), add())
    assert add_body == "Late"
    assert last_body.endswith(" - 2 products (last=Joli train)")
    assert last_done >= 0.78
    assert add_done >= last_done - 0.05, (last_done, add_done)
    # Reads of other tables and of other processes are not blocked by it.
    assert await (await writer.get("/api/products/3")).text() == "Late"


async def test_stats_count_requests_per_path(origin_client: ClientFactory, db_url: str) -> None:
    client = await origin_client(db=db_url)
    for _ in range(3):
        await client.get("/api/ping")
    await client.get("/api/misc/heavy?name=a")
    await client.get("/index.html")
    stats = await (await client.get("/_origin/stats")).json()
    assert stats["paths"] == {"/api/ping": 3, "/api/misc/heavy": 1, "/index.html": 1}
    assert stats["targets"]["/api/misc/heavy?name=a"] == 1
    assert stats["total"] == 5
    assert stats["in_flight"] == 0
    assert isinstance(stats["pid"], int)
    stats = await (await client.delete("/_origin/stats")).json()
    assert stats["total"] == 0 and stats["paths"] == {}


async def test_mysql_database_is_created_and_seeded(
    origin_client: ClientFactory, mysql_url: str
) -> None:
    """`--db mysql://.../name` creates the database when it is missing."""
    name = mysql_url.rsplit("/", 1)[1] + "_new"
    url = mysql_url.rsplit("/", 1)[0] + "/" + name
    try:
        client = await origin_client(db=url)
        assert await (await client.get("/api/products/2")).text() == "Joli train"
    finally:
        conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="")
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.mark.parametrize(
    "bad",
    ["ftp://host/db", "mysql://127.0.0.1/", "mysql:///woody", "sqlite://", ""],
)
def test_bad_db_urls_name_the_option(bad: str) -> None:
    from origin.settings import parse_db_url

    with pytest.raises(ValueError, match="--db"):
        parse_db_url(bad)
