"""The store's connection layer: one SQLite connection per thread (through sqlite-utils), WAL, a busy
timeout, explicit write transactions, and schema migrations.

Every write runs inside :meth:`StoreBase.transaction`, which takes SQLite's write lock up front
(``BEGIN IMMEDIATE``) so that concurrent writers wait on the busy timeout instead of failing with
"database is locked". sqlite-utils' own writes (``insert``, ``insert_all``, ``create``) run inside it as
savepoints (sqlite-utils >= 4 nests ``atomic()``), so they join the caller's transaction.
"""
from __future__ import annotations

import getpass
import os
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import sqlite_utils

from core.errors import ProjectNotFound, StoreError, check_choice
from core.store.schema import MIGRATIONS, SCHEMA_VERSION

DB_NAME = "project.db"
BUSY_TIMEOUT_S = 60.0


def now() -> float:
    """Seconds since the epoch; the store keeps every timestamp in this form."""
    return time.time()


def chunks(seq: Sequence, size: int = 900) -> Iterator[list]:
    """``seq`` in lists of at most ``size`` (SQLite's bound-parameter limit is 999)."""
    seq = list(seq)
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def placeholders(n: int) -> str:
    """``?,?,...`` for an ``IN (...)`` clause of ``n`` values."""
    return ",".join("?" * n)


class StoreBase:
    """Connection, transactions and migrations of one project database.

    Parameters
    ----------
    project_dir : path
        The project folder; it must hold ``project.db`` (use ``Store.create`` for a new project).
    memory_name : str, optional
        Open the named shared in-memory database instead (``Store.in_memory``, for fast tests); the
        project folder then only holds files (features, runs).
    origin : {"library", "app", "cli", "worker"}
        Who opened the store: recorded with every audit row. Writes from ``app`` and ``library`` are checked
        against the project's accounts and roles (:mod:`core.store.users`); the CLI's and the worker's are not.
    """

    def __init__(self, project_dir: str | os.PathLike, *, memory_name: str | None = None, origin: str = "library"):
        from core.store.audit import ORIGINS

        check_choice("Store", "origin", origin, ORIGINS)
        self.origin = origin
        self.default_actor: str | None = None  # who writes are recorded under when a call names nobody (CLI --user)
        self.dir = Path(project_dir).resolve()
        self.path = self.dir / DB_NAME
        self.memory_name = memory_name
        if memory_name is None and not self.path.is_file():
            raise ProjectNotFound(
                f"No project at {self.dir}: {DB_NAME} is missing. Create one with "
                f"'python -m core init {project_dir} --modality image'."
            )
        self._local = threading.local()
        self._keepalive: sqlite3.Connection | None = None
        if memory_name is not None:  # a shared in-memory database lives while one connection is open
            self._keepalive = self._connect()
        self._run_arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # one run's ids and memory-mapped proba
        try:
            self._migrate()
        except sqlite3.DatabaseError as exc:  # not a database at all, or a damaged one
            raise StoreError(f"{self.path} is not a readable project database ({exc}); restore it from a backup "
                             "('python -m core restore BACKUP PROJECT').") from exc

    def _connect(self) -> sqlite3.Connection:
        if self.memory_name is not None:
            conn = sqlite3.connect(f"file:{self.memory_name}?mode=memory&cache=shared", uri=True,
                                   timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        else:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys=ON")
        # REPLACE conflict resolution deletes the old row; without this it would bypass the DELETE triggers
        conn.execute("PRAGMA recursive_triggers=ON")
        return conn

    def actor(self, by: str | None) -> str:
        """Who a write is recorded under: ``by`` when given, else the worker (for the worker) or the OS user."""
        from core.store.settings import validate_annotator_name  # settings builds on this module

        if by is not None:
            return validate_annotator_name(by, "the store", "by")
        if self.default_actor is not None:
            return validate_annotator_name(self.default_actor, "the command line", "--user")
        if self.origin == "worker":
            return "worker"
        try:
            return getpass.getuser()
        except Exception:  # no user name in the environment (some containers)
            return "unknown"

    @staticmethod
    def new_memory_name() -> str:
        return f"labeltool-{uuid.uuid4().hex}"

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode; transactions are explicit)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            self._local.db = sqlite_utils.Database(conn)
        return conn

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's sqlite-utils view of the database (tables, inserts and lookups)."""
        self.conn  # noqa: B018 - opens the connection when needed
        return self._local.db

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block as one write transaction (``BEGIN IMMEDIATE``); roll back on any exception,
        including a failing ``COMMIT`` (the connection is then left with no open transaction).

        Nested use joins the outer transaction.
        """
        conn = self.conn
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _migrate(self) -> None:
        """Bring the database to :data:`SCHEMA_VERSION`, one migration per transaction; refuse a newer one."""
        conn = self.conn
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        version = self._schema_version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"The project at {self.dir} has schema version {version}, newer than this program's "
                f"{SCHEMA_VERSION}; update the program before opening it."
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            try:
                with self.transaction():
                    if self._schema_version() >= target:  # another process migrated meanwhile
                        continue
                    MIGRATIONS[target - 1](self.db)
                    self.db["meta"].upsert({"key": "schema_version", "value": str(target)}, pk="key")
            except sqlite3.Error:
                # another process may have migrated in the meantime: accept that, re-raise otherwise
                if self._schema_version() < target:
                    raise

    def _schema_version(self) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0
