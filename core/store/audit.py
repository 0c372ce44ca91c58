"""The audit log: one append-only row per write (schema v5, table ``audit_log``).

Each write of the store records who did it (the signed-in user, the CLI's named or OS user, or the worker
acting for whoever requested the job), their role then, where from (``origin``: app, cli, worker, library),
the action and a few details, in the same transaction as the write itself, so a write without its audit row
cannot be committed. Passwords are never among the details.
"""
from __future__ import annotations

import json
import sqlite3
from typing import Any

from core.errors import check_param, is_int
from core.store.connection import StoreBase, now

#: origins whose writes are not checked against roles: the shell user owns the files anyway (CLI), and the
#: worker runs jobs whose request was checked (core.jobs.queue.request_job)
OPERATOR_ORIGINS = ("cli", "worker")
ORIGINS = ("app", "library", *OPERATOR_ORIGINS)


class AuditMixin(StoreBase):
    def audit(self, conn: sqlite3.Connection, user: str, action: str, *, role: str | None = None,
              n: int | None = None, **details: Any) -> None:
        """Append one audit row inside the caller's transaction ``conn`` (never outside one).

        Parameters
        ----------
        conn : sqlite3.Connection
            The connection of the write transaction the row belongs to.
        user : str
            Who acted.
        action : str
            What they did (``vote``, ``adjudicate``, ``bulk_label``, ``undo``, ``import``, ``settings``, ...).
        role : str, optional
            Their role then; looked up when not given.
        n : int, optional
            How many rows the action wrote, when it wrote many.
        **details
            JSON-serialisable details (item ids, the setting's key and value, the job id, ...).
        """
        if not conn.in_transaction:
            raise RuntimeError("audit rows are written inside the write they describe")
        if role is None:
            row = conn.execute("SELECT role FROM users WHERE name = ?", (user,)).fetchone()
            role = None if row is None else row[0]
        conn.execute(
            "INSERT INTO audit_log (created_at, user, role, origin, action, n, details) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (now(), user, role, self.origin, action, n, json.dumps(details, default=str, sort_keys=True)))

    def audit_log(self, *, user: str | None = None, action: str | None = None, since: float | None = None,
                  until: float | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """Audit rows, newest first, filtered by user, action and time (``created_at`` in epoch seconds).

        Returns
        -------
        list of dict
            ``id, created_at, user, role, origin, action, n, details`` (details decoded).
        """
        check_param("audit_log", "limit", limit, is_int(limit) and limit >= 1, "an int >= 1")
        where, args = [], []
        for clause, value in (("user = ?", user), ("action = ?", action), ("created_at >= ?", since),
                              ("created_at <= ?", until)):
            if value is not None:
                where.append(clause)
                args.append(value)
        q = "SELECT * FROM audit_log" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
        rows = self.conn.execute(q, [*args, int(limit)]).fetchall()
        return [{**dict(r), "details": json.loads(r["details"])} for r in rows]

    def audit_actions(self) -> list[str]:
        """The distinct actions the log holds (for a filter)."""
        return [r[0] for r in self.conn.execute("SELECT DISTINCT action FROM audit_log ORDER BY action")]
