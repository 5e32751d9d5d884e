"""The shop's database: SQLite (default) or MySQL/MariaDB, one connection per process.

The lab's MySQL has `max_connections = 1`; here each origin process holds exactly one
connection and runs every query on one daemon thread, so queries of a process never overlap.
`last_product` holds a read lock on `product` for `sleep` seconds (the lab's
`LOCK TABLES product READ` + `SLEEP(15)`): writes from other processes wait behind it.
Every query is parameterized.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pymysql

from origin.settings import DbUrl

log = logging.getLogger("origin.db")

T = TypeVar("T")

SEED_PRODUCTS = ((1, "Yoyo"), (2, "Joli train"))
NAME_MAX = 200


class DatabaseError(RuntimeError):
    """The database could not be reached or answered with an error."""


class _Worker:
    """One daemon thread running submitted calls in order (daemon: never blocks exit)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, fut = job
            loop = fut.get_loop()
            try:
                result = fn()
            except BaseException as exc:  # handed to the awaiting coroutine
                loop.call_soon_threadsafe(_set_exception, fut, exc)
            else:
                loop.call_soon_threadsafe(_set_result, fut, result)

    async def call(self, fn: Callable[[], T]) -> T:
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((fn, fut))
        return await fut

    def stop(self) -> None:
        self._jobs.put(None)


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


class Database(ABC):
    """The five queries of the shop, async on top of one blocking connection."""

    order_table: str  # the reserved word, quoted for this engine

    def __init__(self, url: DbUrl) -> None:
        self.url = url
        self._worker: _Worker | None = None
        self._stopping = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, create the schema and seed it when it is missing."""
        self._worker = _Worker(f"woody-db-{self.url.kind}")
        await self._call(self._connect_and_init)
        log.info("database ready: %s", self.url.describe())

    async def close(self) -> None:
        self._stopping.set()
        if self._worker is not None:
            worker, self._worker = self._worker, None
            # A slow query may still be running: give up waiting, the thread is a daemon.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker.call(self._disconnect), timeout=0.5)
            worker.stop()

    def init_sync(self) -> None:
        """Create and seed the schema from the calling thread, then disconnect (for supervisors)."""
        try:
            self._connect_and_init()
        except (sqlite3.Error, pymysql.MySQLError, OSError) as exc:
            raise DatabaseError(f"--db {self.url.describe()}: {exc}") from exc
        finally:
            self._disconnect()

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._worker is None:
            raise DatabaseError("database is not started")
        try:
            return await self._worker.call(fn)
        except (sqlite3.Error, pymysql.MySQLError, OSError) as exc:
            raise DatabaseError(f"--db {self.url.describe()}: {exc}") from exc

    # -- the queries -----------------------------------------------------------------------

    async def add_product(self, name: str) -> int:
        return await self._call(lambda: self._add_product(name))

    async def get_product(self, product_id: int) -> str | None:
        return await self._call(lambda: self._get_product(product_id))

    async def last_product(self, sleep: float) -> tuple[int, str | None]:
        """(number of products, name of the last one), holding a read lock for `sleep` s."""
        return await self._call(lambda: self._last_product(sleep))

    async def save_order(self, order_id: str, status: str, product: str) -> None:
        await self._call(lambda: self._save_order(order_id, status, product))

    async def get_order(self, order_id: str) -> str | None:
        return await self._call(lambda: self._get_order(order_id))

    async def count_orders(self) -> int:
        return await self._call(self._count_orders)

    # -- engine specifics (run on the worker thread) ---------------------------------------

    @abstractmethod
    def _connect_and_init(self) -> None: ...

    @abstractmethod
    def _disconnect(self) -> None: ...

    @abstractmethod
    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement written with %s placeholders; return its rows."""

    @abstractmethod
    def _insert(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run an INSERT; return the new row id."""

    @abstractmethod
    def _last_product(self, sleep: float) -> tuple[int, str | None]: ...

    def _add_product(self, name: str) -> int:
        return self._insert("INSERT INTO product (name) VALUES (%s)", (name,))

    def _get_product(self, product_id: int) -> str | None:
        rows = self._execute("SELECT name FROM product WHERE id = %s", (product_id,))
        return str(rows[0][0]) if rows else None

    def _save_order(self, order_id: str, status: str, product: str) -> None:
        self._insert(
            f"INSERT INTO {self.order_table} (order_id, status, product) VALUES (%s, %s, %s)",
            (order_id, status, product),
        )

    def _get_order(self, order_id: str) -> str | None:
        rows = self._execute(
            f"SELECT status FROM {self.order_table} WHERE order_id = %s", (order_id,)
        )
        return str(rows[0][0]) if rows else None

    def _count_orders(self) -> int:
        return int(self._execute(f"SELECT COUNT(*) FROM {self.order_table}")[0][0])

    def _read_last(self) -> tuple[int, str | None]:
        count = int(self._execute("SELECT COUNT(*) FROM product")[0][0])
        rows = self._execute("SELECT name FROM product ORDER BY id DESC LIMIT 1")
        return count, (str(rows[0][0]) if rows else None)


class SQLiteDatabase(Database):
    """SQLite in rollback-journal mode: a reader's transaction holds a SHARED lock that makes
    writers of other connections wait (busy timeout) until it ends."""

    order_table = '"order"'

    def __init__(self, url: DbUrl, busy_timeout: float = 60.0) -> None:
        super().__init__(url)
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None

    def _connect_and_init(self) -> None:
        path = self.url.path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        self._conn = conn
        conn.execute("PRAGMA journal_mode=DELETE")
        existed = bool(
            conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'product'"
            ).fetchall()
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS product "
            "(id INTEGER PRIMARY KEY AUTOINCREMENT, name VARCHAR(200))"
        )
        conn.execute(
            'CREATE TABLE IF NOT EXISTS "order" '
            "(order_id VARCHAR(200) PRIMARY KEY, status VARCHAR(200), product VARCHAR(200))"
        )
        if not existed:
            conn.executemany(
                "INSERT OR IGNORE INTO product (id, name) VALUES (?, ?)", SEED_PRODUCTS
            )
            log.info("created and seeded %s", self.url.describe())

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise DatabaseError("database is closed")
        return self._conn

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._connection().execute(sql.replace("%s", "?"), params).fetchall()

    def _insert(self, sql: str, params: tuple[Any, ...]) -> int:
        cur = self._connection().execute(sql.replace("%s", "?"), params)
        return int(cur.lastrowid or 0)

    def _last_product(self, sleep: float) -> tuple[int, str | None]:
        conn = self._connection()
        conn.execute("BEGIN")  # deferred: the first SELECT takes the SHARED lock ...
        try:
            result = self._read_last()
            if sleep > 0:
                self._stopping.wait(sleep)  # ... held until COMMIT, like LOCK TABLES ... READ
        finally:
            conn.execute("COMMIT")
        return result


class MySQLDatabase(Database):
    """MySQL/MariaDB through PyMySQL: one connection, autocommit, reconnected when lost."""

    order_table = "`order`"

    def __init__(self, url: DbUrl) -> None:
        super().__init__(url)
        self._conn: pymysql.connections.Connection[Any] | None = None

    def _connect_and_init(self) -> None:
        try:
            conn = pymysql.connect(
                host=self.url.host,
                port=self.url.port,
                user=self.url.user,
                password=self.url.password,
                charset="utf8mb4",
                autocommit=True,
                connect_timeout=10,
            )
        except pymysql.MySQLError as exc:
            raise DatabaseError(f"--db: cannot connect to {self.url.describe()}: {exc}") from exc
        self._conn = conn
        name = self.url.database
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
        conn.select_db(name)
        with conn.cursor() as cur:
            existed = bool(cur.execute("SHOW TABLES LIKE 'product'"))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS product "
                "(id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(200)) CHARACTER SET utf8mb4"
            )
            cur.execute(
                "CREATE TABLE IF NOT EXISTS `order` (order_id VARCHAR(200) PRIMARY KEY, "
                "status VARCHAR(200), product VARCHAR(200)) CHARACTER SET utf8mb4"
            )
            if not existed:
                cur.executemany(
                    "INSERT IGNORE INTO product (id, name) VALUES (%s, %s)", SEED_PRODUCTS
                )
                log.info("created and seeded %s", self.url.describe())

    def _disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(pymysql.MySQLError):
                self._conn.close()
            self._conn = None

    def _connection(self) -> pymysql.connections.Connection[Any]:
        if self._conn is not None:
            try:
                self._conn.ping(reconnect=False)
            except pymysql.MySQLError as exc:
                log.warning("lost %s (%s): reconnecting", self.url.describe(), exc)
                self._disconnect()
        if self._conn is None:
            self._connect_and_init()
        assert self._conn is not None
        return self._conn

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._connection().cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def _insert(self, sql: str, params: tuple[Any, ...]) -> int:
        with self._connection().cursor() as cur:
            cur.execute(sql, params)
            return int(cur.lastrowid or 0)

    def _last_product(self, sleep: float) -> tuple[int, str | None]:
        conn = self._connection()
        with conn.cursor() as cur:
            cur.execute("LOCK TABLES product READ")
            try:
                result = self._read_last()
                if sleep > 0:
                    cur.execute("SELECT SLEEP(%s)", (sleep,))
            finally:
                cur.execute("UNLOCK TABLES")
        return result


def open_database(url: DbUrl, busy_timeout: float = 60.0) -> Database:
    """The Database for a parsed `--db` URL (not started yet)."""
    if url.kind == "mysql":
        return MySQLDatabase(url)
    return SQLiteDatabase(url, busy_timeout=busy_timeout)
