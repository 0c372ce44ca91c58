"""The Admin page's back end: the audit log as a table, filtered by user, action and day."""
from __future__ import annotations

import datetime as dt
import json

import pandas as pd

from core.store.project_store import Store

COLUMNS = ["id", "time", "user", "role", "origin", "action", "n", "details"]


def audit_frame(store: Store, *, user: str | None = None, action: str | None = None,
                day_from: dt.date | None = None, day_to: dt.date | None = None, limit: int = 1000) -> pd.DataFrame:
    """Audit rows, newest first, as a table with the time in local ISO form and the details as JSON text.

    ``day_from`` / ``day_to`` bound the local calendar days (both included).
    """
    since = None if day_from is None else dt.datetime.combine(day_from, dt.time.min).timestamp()
    until = None if day_to is None else dt.datetime.combine(day_to, dt.time.max).timestamp()
    rows = store.audit_log(user=user, action=action, since=since, until=until, limit=limit)
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.DataFrame(rows)
    df["time"] = [dt.datetime.fromtimestamp(t).isoformat(sep=" ", timespec="seconds") for t in df["created_at"]]
    df["details"] = [json.dumps(d, sort_keys=True, default=str) for d in df["details"]]
    df["n"] = df["n"].astype("Int64")
    return df[COLUMNS]


def audit_csv(frame: pd.DataFrame) -> str:
    """The audit table as CSV text, each cell neutralised against spreadsheet formulas (an account or label
    named ``=HYPERLINK(...)`` stays text: :func:`core.io.export.csv_safe`)."""
    from core.io.export import csv_safe

    return frame.astype(object).map(csv_safe).to_csv(index=False)


def audit_users(store: Store) -> list[str]:
    """Everyone the audit log names (accounts, CLI users, the worker), for the filter."""
    return [r[0] for r in store.conn.execute("SELECT DISTINCT user FROM audit_log ORDER BY user")]
