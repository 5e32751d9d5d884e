"""Settings of the origin: one dataclass shared by the command line and `create_app`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_DB = "var/woody.sqlite3"
DEFAULT_STATIC_RATE = 307_200  # 300 KB/s, the lab's nginx `limit_rate 300k`


@dataclass(frozen=True)
class DbUrl:
    """A parsed `--db` value: either a SQLite file (or `:memory:`) or a MySQL/MariaDB server."""

    kind: str  # "sqlite" or "mysql"
    path: str = ""  # sqlite: file path or ":memory:"
    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = ""
    database: str = "woody"

    def describe(self) -> str:
        """A printable form without the password."""
        if self.kind == "sqlite":
            return f"sqlite:{self.path}"
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.database}"


def parse_db_url(value: str) -> DbUrl:
    """Parse a `--db` value; raise ValueError with a message naming the option when it is bad.

    Accepted: `mysql://user:pass@host:port/name` (also `mariadb://` and `mysql+pymysql://`),
    `sqlite:///absolute/path`, `sqlite:relative/path`, `sqlite::memory:`, `:memory:`, or a bare
    file path (SQLite).
    """
    text = value.strip()
    if not text:
        raise ValueError("--db: empty value (give a SQLite path or mysql://user:pass@host/db)")
    scheme = text.split(":", 1)[0].lower() if "://" in text or text.startswith("sqlite:") else ""
    if scheme in ("mysql", "mariadb", "mysql+pymysql"):
        parts = urlsplit(text)
        name = unquote(parts.path.lstrip("/"))
        if not parts.hostname:
            raise ValueError(
                f"--db: no host in {value!r} (expected mysql://user:pass@host:port/db)"
            )
        if not name or "/" in name or "`" in name:
            raise ValueError(
                f"--db: bad database name in {value!r} (expected mysql://user:pass@host:port/db)"
            )
        try:
            port = parts.port or 3306
        except ValueError as exc:
            raise ValueError(f"--db: bad port in {value!r}") from exc
        return DbUrl(
            kind="mysql",
            host=parts.hostname,
            port=port,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            database=name,
        )
    if scheme == "sqlite":
        rest = text[len("sqlite:") :]
        if rest.startswith("//"):
            rest = rest[2:]
        if not rest:
            raise ValueError(f"--db: no file in {value!r} (expected sqlite:///path/to/file)")
        return DbUrl(kind="sqlite", path=rest)
    if scheme:
        raise ValueError(
            f"--db: unsupported scheme {scheme!r} in {value!r} "
            "(use a SQLite file path, sqlite:///path, or mysql://user:pass@host:port/db)"
        )
    return DbUrl(kind="sqlite", path=text)


@dataclass(frozen=True)
class OriginSettings:
    """Everything the origin can be told. Defaults reproduce the lab's timings."""

    host: str = "127.0.0.1"
    port: int = 8081
    db: str = DEFAULT_DB
    heavy_seconds: float = 5.0
    db_seconds: float = 15.0
    static_rate: int = DEFAULT_STATIC_RATE
    page_delay: float = 0.0
    """Seconds the front page takes before its answer starts (a page a real origin renders)."""
    replicas: int = 1
    api_cache: str | None = None
    api_cache_prefix: str = "woody-api"
    api_cache_heavy_ttl: float = 30.0
    api_cache_last_ttl: float = 15.0
    static_dir: Path = STATIC_DIR
    access_log: bool = True

    @property
    def db_url(self) -> DbUrl:
        return parse_db_url(self.db)

    def validate(self) -> None:
        """Raise ValueError, naming the option, for a value that cannot work."""
        self.db_url  # noqa: B018 - parsing is the check
        if self.heavy_seconds < 0:
            raise ValueError("--heavy-seconds must be >= 0")
        if self.db_seconds < 0:
            raise ValueError("--db-seconds must be >= 0")
        if self.static_rate < 0:
            raise ValueError("--static-rate must be >= 0 (0 = no throttle)")
        if self.page_delay < 0:
            raise ValueError("--page-delay must be >= 0")
        if self.replicas < 1:
            raise ValueError("--replicas must be >= 1")
        if not 0 < self.port < 65536 and self.port != 0:
            raise ValueError("--port must be between 1 and 65535")
        if self.api_cache is not None:
            parts = urlsplit(self.api_cache)
            if parts.scheme not in ("redis", "rediss") or not parts.hostname:
                raise ValueError(
                    f"--api-cache: expected redis://host:port/db, got {self.api_cache!r}"
                )
