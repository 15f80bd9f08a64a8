"""A SQLite tracking store shared by several processes: writers wait their turn, they never fail.

SQLite lets one process write at a time; the others wait as long as the connection's busy
timeout, then fail with ``sqlite3.OperationalError: database is locked``. MLflow opens its
connections with Python's default (five seconds) and sets twenty at the start of each session
(``PRAGMA busy_timeout = 20000``), which a busy writer can outlast: SQLite's waiting is not
fair, and four training processes of a sweep on a loaded machine can each hold the lock
between another's tries. :func:`configure` (run when :mod:`dsc.tracking` is imported) gives
every SQLite connection of the process :data:`BUSY_TIMEOUT_MS` instead, on connecting and in
place of MLflow's per-session value, through SQLAlchemy's event API (no MLflow code is
replaced). The journal stays as MLflow leaves it: write-ahead logging would let readers and
the writer overlap, but not on a network filesystem (a Ray sweep's shared store), and a copy
of the database file alone would then miss what its ``-wal`` file holds.

Public API: :data:`BUSY_TIMEOUT_MS`, :func:`configure`.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

BUSY_TIMEOUT_MS = 300_000  # 5 minutes: a writer stuck longer than that has hung, not queued
_PRAGMA = "PRAGMA busy_timeout"
_configured = False


def _on_connect(dbapi_connection, connection_record) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.execute(f"{_PRAGMA} = {BUSY_TIMEOUT_MS}")


def _longer_wait(conn, cursor, statement: str, parameters, context, executemany):
    """MLflow's per-session ``PRAGMA busy_timeout = N`` with :data:`BUSY_TIMEOUT_MS` instead."""
    if statement.startswith(_PRAGMA) and "=" in statement and conn.dialect.name == "sqlite":
        return f"{_PRAGMA} = {BUSY_TIMEOUT_MS};", parameters
    return statement, parameters


def configure() -> None:
    """Give every SQLite connection of this process the busy timeout :data:`BUSY_TIMEOUT_MS` (once)."""
    global _configured
    if _configured:
        return
    event.listen(Pool, "connect", _on_connect)
    event.listen(Engine, "before_cursor_execute", _longer_wait, retval=True)
    _configured = True


__all__ = ["BUSY_TIMEOUT_MS", "configure"]
