"""Where the state database lives, as [state] says: a SQLite file (the default) or a PostgreSQL URL, checked
without importing a driver (every command loads the config)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from onguard.errors import ConfigError

PASSWORD_ENV = "ONGUARD_DATABASE_PASSWORD"  # else libpq's own PGPASSWORD or ~/.pgpass
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """Where the state lives, from [state]: a SQLite file, or a PostgreSQL URL without its password."""

    path: Path
    url: str | None = None
    config_file: str | None = None  # named in errors

    @property
    def field(self) -> str:
        return "state.database_url" if self.url else "state.database"


def check_database_url(url: str, *, file: str | None, field: str = "state.database_url") -> str:
    """The URL as given, when it names a PostgreSQL database and carries no password."""
    parts = urlsplit(url)
    if not url.startswith(POSTGRES_SCHEMES):
        raise ConfigError("is not a PostgreSQL URL", file=file, field=field,
                          hint="write postgresql://USER@HOST:PORT/DATABASE, or leave it out for the SQLite file")
    if parts.password is not None:
        raise ConfigError("the URL holds a password: passwords are never written in files or arguments", file=file,
                          field=field,
                          hint=f"write postgresql://USER@HOST:PORT/DATABASE and put the password in {PASSWORD_ENV} "
                               "(or PGPASSWORD) in the daemon's environment")
    if not parts.path.strip("/"):
        raise ConfigError("the URL names no database", file=file, field=field,
                          hint="write postgresql://USER@HOST:PORT/DATABASE")
    return url
