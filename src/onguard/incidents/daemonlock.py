"""One daemon per SQLite state database: an exclusive OS lock on `<database>.lock`, held for the life of the
process. On PostgreSQL several daemons share one database on purpose (replicas): no lock is taken.

`flock` belongs to the open file, so the kernel releases it when the holder dies, however it dies: a lock left by a
killed daemon never blocks the next one. The holder's pid and host are written into the file for the error a second
daemon prints. (flock is only reliable on a local file system; keep the state database off NFS.)
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from onguard.errors import ConfigError, OnguardError
from onguard.store.records import now
from onguard.store.settings import DatabaseSettings


class DaemonAlreadyRunning(OnguardError):
    """Another daemon holds the database's lock: two would race to open and answer the same incidents."""

    exit_code = 2


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


@contextmanager
def daemon_lock(state: DatabaseSettings | Path) -> Iterator[Path | None]:
    """Holds the lock of the SQLite database for the duration; raises DaemonAlreadyRunning when another process
    holds it. Yields the lock file, or None on PostgreSQL (replicas coordinate through the database)."""
    if isinstance(state, DatabaseSettings):
        if state.url:
            yield None
            return
        state = state.path
    database = state
    path = lock_path(database)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot create the daemon lock file {path} ({exc.strerror})", field="state.database",
                          hint="the database's folder must be writable by the daemon") from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DaemonAlreadyRunning(
                f"{path}: another onguard daemon ({_holder(descriptor)}) is running on the database {database}",
                hint="one daemon per database: stop the other one first, or give this one its own "
                     "state.database") from None
        _write_holder(descriptor)
        yield path
        os.ftruncate(descriptor, 0)  # a clean exit leaves no holder named in the file
    finally:
        os.close(descriptor)  # releases the lock


def _write_holder(descriptor: int) -> None:
    holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": now()})
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, (holder + "\n").encode(), 0)


def _holder(descriptor: int) -> str:
    """'pid 123 on host h, since T' from the holder's file; it may not have written it yet."""
    try:
        holder = json.loads(os.pread(descriptor, 4096, 0).decode())
        return f"pid {int(holder['pid'])} on host {holder['host']}, since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder not yet named in the lock file"
