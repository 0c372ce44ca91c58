"""The job queue, kept in the project's ``jobs`` table.

"Retrain now" calls :func:`request_job`; a worker process claims the job with :func:`claim_next` inside a
write transaction, heartbeats, reports progress, and finishes it. One training job per project runs at a
time. A request identical to a queued one (same kind, same parameters) is coalesced into it (its
``requests`` count grows); any other request is queued after it, with a message naming the job it waits
behind. A job whose worker died (kill -9, power cut) keeps a stale heartbeat: :func:`recover_stale` marks
it failed, and the previous run stays in service because a run is only published at the very end. The
worker runs it periodically, and :func:`request_job` runs it before queueing, so a ``core train`` killed
with no worker up does not block the project's training for good.

A claim carries a random token (``jobs.claim``). Heartbeat, progress, publish (through
:func:`claim_checker`, called by training inside the publish transaction) and finish are conditional on
the job still being ``running`` under this token: a worker whose job was declared dead by another worker
gets :class:`ClaimLost` (a :class:`~core.errors.JobCancelled`), stops the job, publishes nothing and leaves
the job row as the other worker wrote it. A job counts as dead after :func:`stale_after_s` without a
heartbeat, a rule derived from the store's busy timeout: a live worker's heartbeat may wait that long for
the write lock.

This module and :mod:`core.store.project_store` are the only ones that write SQL.
"""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from typing import Any, Callable

from core.errors import JobCancelled, ValidationError, check_choice
from core.store import project_store
from core.store.project_store import Store, now

JOB_KINDS = ("train", "features", "import")
#: the permission (core.auth.roles) that asking for a job of each kind needs
JOB_PERMISSIONS = {"train": "retrain", "features": "extract_features", "import": "import"}
HEARTBEAT_EVERY_S = 2.0


class ClaimLost(JobCancelled):
    """This worker no longer holds the job (another worker declared it dead); stop it and write nothing."""


def stale_after_s(busy_timeout_s: float | None = None) -> float:
    """Seconds without a heartbeat after which a running job counts as dead: the one rule for it.

    A live worker's heartbeat is due every :data:`HEARTBEAT_EVERY_S` and may then wait up to the store's
    busy timeout for the write lock (``busy_timeout_s``, default the store's ``BUSY_TIMEOUT_S`` as it is now),
    so a job is only declared dead after that wait plus two heartbeat intervals.
    """
    busy = project_store.BUSY_TIMEOUT_S if busy_timeout_s is None else busy_timeout_s
    return float(busy) + 3 * HEARTBEAT_EVERY_S


STALE_AFTER_S = stale_after_s()


def request_job(store: Store, kind: str, params: dict | None = None, *, requested_by: str | None = None) -> tuple[int, bool]:
    """Queue a job, or join the queued one of the same kind with the same parameters.

    A request with other parameters is a job of its own, queued after the others; its message names the
    job it waits behind, so the queue is visible in the job list. Jobs left running by a process that is gone
    are first marked failed (:func:`recover_stale`), in the same transaction: a killed ``core train`` or worker
    does not block the project until a worker starts.

    Returns
    -------
    (job_id, coalesced) : the id of the queued job and whether it already existed.
    """
    check_choice("job", "kind", kind, JOB_KINDS)
    params_json = json.dumps(params or {}, sort_keys=True)
    actor = store.actor(requested_by)
    with store.transaction() as conn:
        role = store.authorize(actor, JOB_PERMISSIONS[kind], conn)
        recover_stale(store)
        row = conn.execute(
            "SELECT id FROM jobs WHERE kind = ? AND status = 'queued' AND params = ? ORDER BY id LIMIT 1",
            (kind, params_json),
        ).fetchone()
        if row is not None:
            conn.execute(
                "UPDATE jobs SET requests = requests + 1, requested_by = COALESCE(?, requested_by) WHERE id = ?",
                (requested_by, row[0]),
            )
            store.audit(conn, actor, f"request_{kind}", role=role, job=int(row[0]), joined=True, params=params or {})
            return row[0], True
        ahead = conn.execute(
            "SELECT id, status FROM jobs WHERE kind = ? AND status IN ('queued', 'running') ORDER BY id DESC LIMIT 1",
            (kind,),
        ).fetchone()
        message = None if ahead is None else f"queued after {ahead['status']} {kind} job {ahead['id']} (other parameters)"
        cur = conn.execute(
            "INSERT INTO jobs (kind, params, status, message, requested_by, created_at) "
            "VALUES (?, ?, 'queued', ?, ?, ?)",
            (kind, params_json, message, requested_by, now()),
        )
        store.audit(conn, actor, f"request_{kind}", role=role, job=int(cur.lastrowid), joined=False,
                    params=params or {})
        return cur.lastrowid, False


def claim_next(store: Store, *, job_id: int | None = None) -> dict | None:
    """Claim the oldest queued job (or ``job_id``) for this process; None when there is nothing to run.

    A training job is not claimed while another training job of the project runs.
    """
    with store.transaction() as conn:
        if job_id is None:
            row = conn.execute(
                "SELECT * FROM jobs WHERE status = 'queued' AND NOT (kind = 'train' AND EXISTS "
                "(SELECT 1 FROM jobs r WHERE r.status = 'running' AND r.kind = 'train')) ORDER BY id LIMIT 1"
            ).fetchone()
        else:
            row = conn.execute("SELECT * FROM jobs WHERE id = ? AND status = 'queued'", (job_id,)).fetchone()
            if row is not None and row["kind"] == "train" and conn.execute(
                "SELECT 1 FROM jobs WHERE status = 'running' AND kind = 'train'"
            ).fetchone():
                return None
        if row is None:
            return None
        t = now()
        conn.execute(
            "UPDATE jobs SET status = 'running', pid = ?, host = ?, started_at = ?, heartbeat_at = ?, "
            "progress = ?, message = NULL, claim = ? WHERE id = ?",
            (os.getpid(), socket.gethostname(), t, t, json.dumps({"phase": "starting"}), uuid.uuid4().hex,
             row["id"]),
        )
    return get_job(store, row["id"])


def assert_claim(conn: sqlite3.Connection, job_id: int, claim: str) -> None:
    """Raise :class:`ClaimLost` unless the job is running under ``claim``; call it inside the transaction
    whose writes must only happen while this worker holds the job (it then holds the write lock, so the
    answer stays true until COMMIT)."""
    row = conn.execute("SELECT status, claim FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None or row["status"] != "running" or row["claim"] != claim:
        state = "gone" if row is None else f"{row['status']}" + ("" if row["claim"] == claim else ", claimed by another worker")
        raise ClaimLost(f"job {job_id} is no longer this worker's ({state}); its result is dropped")


def publisher(job_id: int, claim: str) -> Callable[[sqlite3.Connection, int], None]:
    """The hook training calls inside its publish transaction: :func:`assert_claim`, then the job is marked
    done with the run it published, in that same transaction (so a published run never sits on a job another
    worker marked failed, and :func:`finish` afterwards finds nothing to do)."""
    def on_publish(conn: sqlite3.Connection, run_id: int) -> None:
        assert_claim(conn, job_id, claim)
        t = now()
        conn.execute("UPDATE jobs SET status = 'done', message = ?, finished_at = ?, heartbeat_at = ? WHERE id = ?",
                     (f"published run {run_id}", t, t, job_id))
    return on_publish


def heartbeat(store: Store, job_id: int, claim: str) -> bool:
    """Refresh the job's heartbeat; returns whether cancellation was requested.

    Raises :class:`ClaimLost` when the job is no longer running under ``claim``.
    """
    with store.transaction() as conn:
        cur = conn.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND status = 'running' AND claim = ?",
                           (now(), job_id, claim))
        if cur.rowcount != 1:
            assert_claim(conn, job_id, claim)
        row = conn.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return bool(row and row[0])


def set_progress(store: Store, job_id: int, progress: dict[str, Any], message: str | None = None, *,
                 claim: str) -> None:
    """Record progress (step, total, loss, phase, eta_s); without an ETA from the caller one is derived
    from the time since the job started. Raises :class:`ClaimLost` when the job is no longer ours."""
    prog = dict(progress)
    with store.transaction() as conn:
        assert_claim(conn, job_id, claim)
        row = conn.execute("SELECT started_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
        t = now()
        step, total = prog.get("step"), prog.get("total")
        if row and row[0] and step and total and step > 0:
            elapsed = t - row[0]
            prog["elapsed_s"] = round(elapsed, 2)
            # training reports per-phase steps with its own per-phase ETA (training.PhaseProgress): keep it
            prog.setdefault("eta_s", round(elapsed / step * max(total - step, 0), 1))
        conn.execute(
            "UPDATE jobs SET progress = ?, heartbeat_at = ?, message = COALESCE(?, message) WHERE id = ?",
            (json.dumps(prog), t, message, job_id),
        )


def finish(store: Store, job_id: int, status: str, message: str | None = None, *, claim: str) -> bool:
    """Mark a job done, failed or cancelled, if it is still running under ``claim``.

    Returns whether it was: False means another worker had declared the job dead, and the row keeps what
    that worker wrote.
    """
    check_choice("job", "status", status, ("done", "failed", "cancelled"))
    with store.transaction() as conn:
        t = now()
        cur = conn.execute(
            "UPDATE jobs SET status = ?, message = ?, finished_at = ?, heartbeat_at = ? "
            "WHERE id = ? AND status = 'running' AND claim = ?",
            (status, message, t, t, job_id, claim),
        )
        return cur.rowcount == 1


def request_cancel(store: Store, job_id: int, *, by: str | None = None) -> str:
    """Cancel a queued job at once, or ask a running one to stop; returns the job's status afterwards.
    ``by`` needs the ``cancel_job`` permission (a reviewer); audited."""
    actor = store.actor(by)
    with store.transaction() as conn:
        role = store.authorize(actor, "cancel_job", conn)
        row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise ValidationError(f"The 'job_id' parameter must name a job of this project. Got {job_id!r}.")
        store.audit(conn, actor, "cancel_job", role=role, job=int(job_id), status=row[0])
        if row[0] == "queued":
            conn.execute("UPDATE jobs SET status = 'cancelled', message = 'cancelled before it started', "
                         "finished_at = ? WHERE id = ?", (now(), job_id))
            return "cancelled"
        if row[0] == "running":
            conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
        return row[0]


def is_cancel_requested(store: Store, job_id: int) -> bool:
    row = store.conn.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return bool(row and row[0])


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (killed child not yet reaped) is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def recover_stale(store: Store, *, stale_after: float | None = None) -> list[int]:
    """Mark failed every running job whose worker is gone; returns their ids.

    A worker is gone when its process no longer exists on this host, or when its heartbeat is older than
    ``stale_after`` seconds (default :func:`stale_after_s`: a worker on another host, or a hung one).
    """
    stale_after = stale_after_s() if stale_after is None else stale_after
    failed = []
    host = socket.gethostname()
    with store.transaction() as conn:
        rows = conn.execute("SELECT id, pid, host, heartbeat_at FROM jobs WHERE status = 'running'").fetchall()
        t = now()
        for r in rows:
            same_host_dead = r["host"] == host and r["pid"] != os.getpid() and not _pid_alive(r["pid"])
            stale = r["heartbeat_at"] is None or t - r["heartbeat_at"] > stale_after
            if same_host_dead or stale:
                why = f"process {r['pid']} is gone" if same_host_dead else f"no heartbeat for {t - (r['heartbeat_at'] or t):.0f} s"
                conn.execute(
                    "UPDATE jobs SET status = 'failed', finished_at = ?, message = ? WHERE id = ?",
                    (t, f"the worker died while running this job ({why}); the previous model stays in service", r["id"]),
                )
                failed.append(r["id"])
    return failed


def get_job(store: Store, job_id: int) -> dict:
    row = store.conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise ValidationError(f"The 'job_id' parameter must name a job of this project. Got {job_id!r}.")
    return _job_dict(row)


def list_jobs(store: Store, *, limit: int = 20, status: str | None = None) -> list[dict]:
    q = "SELECT * FROM jobs" + (" WHERE status = ?" if status else "") + " ORDER BY id DESC LIMIT ?"
    args = (status, limit) if status else (limit,)
    return [_job_dict(r) for r in store.conn.execute(q, args)]


def queued_jobs(store: Store, kind: str = "train") -> list[dict]:
    """The queued jobs of ``kind``, in the order the worker will claim them (oldest first)."""
    rows = store.conn.execute("SELECT * FROM jobs WHERE kind = ? AND status = 'queued' ORDER BY id", (kind,))
    return [_job_dict(r) for r in rows]


def active_job(store: Store, kind: str = "train") -> dict | None:
    """The running job of ``kind``, else the queued one, else None."""
    row = store.conn.execute(
        "SELECT * FROM jobs WHERE kind = ? AND status IN ('running', 'queued') "
        "ORDER BY CASE status WHEN 'running' THEN 0 ELSE 1 END, id LIMIT 1",
        (kind,),
    ).fetchone()
    return None if row is None else _job_dict(row)


def active_jobs(store: Store, kind: str = "train") -> list[dict]:
    """The running jobs of ``kind``, then the queued ones (oldest first)."""
    rows = store.conn.execute(
        "SELECT * FROM jobs WHERE kind = ? AND status IN ('running', 'queued') "
        "ORDER BY CASE status WHEN 'running' THEN 0 ELSE 1 END, id", (kind,))
    return [_job_dict(r) for r in rows]


def last_auto_job(store: Store) -> dict | None:
    """The newest train job queued by automatic retraining (any status), or None
    (see :mod:`core.jobs.auto_retrain`: its parameters carry ``auto``)."""
    row = store.conn.execute("SELECT * FROM jobs WHERE kind = 'train' AND json_extract(params, '$.auto') IS NOT NULL "
                             "ORDER BY id DESC LIMIT 1").fetchone()
    return None if row is None else _job_dict(row)


def _job_dict(row) -> dict:
    d = dict(row)
    d["params"] = json.loads(d["params"] or "{}")
    d["progress"] = json.loads(d["progress"] or "{}")
    return d


def wait_for(store: Store, job_id: int, *, timeout: float = 600.0, poll: float = 0.2) -> dict:
    """Block until the job ends (for scripts and tests); returns the job row."""
    deadline = time.monotonic() + timeout
    while True:
        job = get_job(store, job_id)
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
        time.sleep(poll)
