"""The worker process: claims jobs from project stores and runs them off the UI thread.

``python -m core worker [PATH]`` serves one project (PATH holds project.db) or every project found in the
folder PATH (rescanned, so projects created later are served too). At start, and then periodically, jobs
left running by a dead worker are marked failed. While a job runs, a heartbeat thread refreshes the job
row every couple of seconds and notices cancel requests, and that the job is no longer this worker's
(another worker declared it dead): the job is then stopped and its result dropped (see
:mod:`core.jobs.queue`). Job kinds: ``train`` (publishes a run), ``features`` and ``import`` (a folder or a
manifest, with progress; it queues the features job when it added items). On each pass over a project
whose ``auto_retrain`` setting is on, the worker queues a light retrain after every N newly confirmed labels
(:func:`check_auto_retrain`, the rule in :mod:`core.jobs.auto_retrain`).

A project folder whose database is corrupt, not a project's, or of a newer schema is skipped and logged with
its path and the reason, and the other projects are served; :func:`scan_projects` gives the app the same
split (healthy, broken with reason) for its project list.
"""
from __future__ import annotations

import logging
import signal
import sqlite3
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from core.jobs import auto_retrain
from core.jobs import queue as jobs
from core.errors import JobCancelled, LabelToolError
from core.store.project_store import DB_NAME, Store
from core.store.schema import SCHEMA_VERSION

log = logging.getLogger("core.jobs.worker")


def discover_projects(path: Path) -> list[Path]:
    """``path`` itself when it is a project, else its sub-folders that are projects (hidden ones, such as a
    backup being written, left out). Healthy or not: see :func:`scan_projects`."""
    path = Path(path)
    if (path / DB_NAME).is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if not p.name.startswith(".") and (p / DB_NAME).is_file())


def project_problem(project: Path) -> str | None:
    """Why the project folder ``project`` cannot be opened (its database is not SQLite, not a project's, or of a
    newer schema than this program's), or None. Reads only: nothing is created, migrated or locked."""
    db = Path(project) / DB_NAME
    try:
        conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        return f"{DB_NAME} cannot be opened: {exc}"
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as exc:  # "file is not a database", "no such table: meta", a corrupt page
        return f"{DB_NAME} is not a readable project database ({exc})"
    finally:
        conn.close()
    try:
        version = int(row[0]) if row else 0
    except ValueError:
        return f"{DB_NAME} records the schema version {row[0]!r}, not a number"
    if version > SCHEMA_VERSION:
        return (f"schema version {version} is newer than this program's {SCHEMA_VERSION}; "
                "update the program before opening it")
    return None


def scan_projects(path: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The projects at ``path`` (as :func:`discover_projects` finds them), split into healthy ones and broken
    ones with the reason (:func:`project_problem`), so one bad folder does not hide the others.

    Returns
    -------
    (healthy, broken) : list of Path, list of (Path, str)
    """
    healthy, broken = [], []
    for project in discover_projects(path):
        problem = project_problem(project)
        if problem is None:
            healthy.append(project)
        else:
            broken.append((project, problem))
    return healthy, broken


class _Heartbeat(threading.Thread):
    """Refreshes a running job's heartbeat; turns a cancel request, or the loss of the job to another
    worker, into the ``cancel`` Event (``lost`` tells the two apart)."""

    def __init__(self, store: Store, job_id: int, claim: str, every: float | None = None):
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.store, self.job_id, self.claim = store, job_id, claim
        self.every = jobs.HEARTBEAT_EVERY_S if every is None else every
        self.stop = threading.Event()
        self.cancel = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                if jobs.heartbeat(self.store, self.job_id, self.claim):
                    self.cancel.set()
            except jobs.ClaimLost as exc:
                log.warning("%s: stopping it", exc)
                self.lost.set()
                self.cancel.set()
                return
            except Exception:  # a failed heartbeat must not kill the job; the next one retries
                log.exception("heartbeat of job %s failed", self.job_id)


def _run_kind(store: Store, job: dict, progress, should_cancel, on_publish) -> str:
    """Run the job's work; returns its message. Raises what the work raises."""
    params = dict(job["params"])
    if job["kind"] == "train":
        from core.models.training import train_model

        run_id = train_model(
            store, params.pop("model", "classifier"), params=params.pop("params", {}),
            device=params.pop("device", None), extractor=params.pop("extractor", None), job_id=job["id"],
            progress=progress, should_cancel=should_cancel, on_publish=on_publish, by=job.get("requested_by"),
            project_map=params.pop("project_map", True),
        )
        return f"published run {run_id}"
    if job["kind"] == "features":
        from core.device import resolve_device
        from core.models.training import ensure_features

        fm = ensure_features(store, extractor=params.get("extractor"), device=resolve_device(params.get("device")),
                             progress=progress, should_cancel=should_cancel)
        return f"features of {len(fm.ids)} items ({len(fm.failures)} failed)"
    if job["kind"] == "import":
        from core.io.ingest import run_import_job

        report = run_import_job(store, params, progress=progress, should_cancel=should_cancel,
                                by=job.get("requested_by"))
        if report.added:
            jobs.request_job(store, "features", {}, requested_by=job.get("requested_by"))
        return report.summary() + (". Features are being computed in the background." if report.added else "")
    raise LabelToolError(f"unknown job kind {job['kind']!r}; known: {', '.join(jobs.JOB_KINDS)}")


def _auto_inputs(store: Store) -> dict:
    n_confirmed = store.conn.execute("SELECT COUNT(*) FROM consensus WHERE confirmed = 1").fetchone()[0]
    return {"n_confirmed": int(n_confirmed), "newest_run": store.run(), "active_jobs": jobs.active_jobs(store, "train"),
            "last_auto_job": jobs.last_auto_job(store)}


def check_auto_retrain(store: Store) -> tuple[auto_retrain.Decision, int | None]:
    """Queue a light retrain of the project when its ``auto_retrain`` setting asks for one now.

    Returns the decision and the queued job's id (None when nothing was queued). The decision is taken again
    inside the write transaction that queues, so two workers serving the project queue one job.
    """
    settings = store.settings()
    if not auto_retrain.read_settings(settings)[0]:
        return auto_retrain.decide(settings, 0, None, []), None
    decision = auto_retrain.decide(settings, **_auto_inputs(store))
    if not decision.queue:
        return decision, None
    with store.transaction():
        decision = auto_retrain.decide(settings, **_auto_inputs(store))
        if not decision.queue:
            return decision, None
        job_id, _ = jobs.request_job(store, "train", auto_retrain.job_params(decision.n_confirmed),
                                     requested_by=auto_retrain.REQUESTED_BY)
    log.info("queued light retrain job %s of %s: %s", job_id, store.dir, decision.reason)
    return decision, job_id


def run_job(store: Store, job: dict, *, echo: Callable[[dict], None] | None = None) -> str:
    """Run one claimed job to its end; returns the final status (done, failed or cancelled), or ``lost``
    when another worker declared the job dead meanwhile (its row then keeps what that worker wrote).
    ``echo`` also receives every progress dict (the command line prints them)."""
    claim = job["claim"]
    hb = _Heartbeat(store, job["id"], claim)
    hb.start()

    def progress(info: dict) -> None:
        jobs.set_progress(store, job["id"], info, claim=claim)
        if echo is not None:
            echo(info)

    def should_cancel() -> bool:
        return hb.cancel.is_set() or jobs.is_cancel_requested(store, job["id"])

    try:
        message = _run_kind(store, job, progress, should_cancel, jobs.publisher(job["id"], claim))
        status = "done"
        if job["kind"] == "train":  # the publish transaction marked it done (jobs.publisher)
            return status
    except JobCancelled as exc:
        status = "cancelled"
        message = ("cancelled on request; the previous model stays in service"
                   if job["kind"] == "train" and not isinstance(exc, jobs.ClaimLost) else str(exc))
    except LabelToolError as exc:
        status, message = "failed", str(exc)
    except Exception as exc:  # report any crash in the job row instead of killing the worker
        log.error("job %s crashed:\n%s", job["id"], traceback.format_exc())
        status, message = "failed", f"{type(exc).__name__}: {exc}"
    finally:
        hb.stop.set()
        hb.join(timeout=5)
    if not jobs.finish(store, job["id"], status, message, claim=claim):
        log.warning("job %s was declared dead by another worker while it ran (%s); its result is dropped",
                    job["id"], message)
        return "lost"
    return status


class _Served:
    """The projects one worker serves: a store per healthy project, and the broken ones with their reason.

    A broken project (not SQLite, not a project's database, a newer schema, or one whose store fails while
    served) is logged with its path and reason once per reason, skipped, and looked at again on later passes,
    so it is served once repaired; the other projects are served meanwhile.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.stores: dict[Path, Store] = {}
        self.broken: dict[Path, str] = {}

    def refresh(self) -> None:
        """Open the projects found since the last pass (marking jobs a dead worker left running failed)."""
        found = discover_projects(self.path)
        for pdir in set(self.stores) - set(found):  # removed or renamed meanwhile
            self.stores.pop(pdir).close()
        for pdir in found:
            if pdir not in self.stores:
                self._open(pdir)

    def _open(self, pdir: Path) -> None:
        problem = project_problem(pdir)
        if problem is not None:
            self.mark_broken(pdir, problem)
            return
        try:
            store = Store(pdir, origin="worker")
            stale = jobs.recover_stale(store)
        except (LabelToolError, sqlite3.Error) as exc:
            self.mark_broken(pdir, f"{type(exc).__name__}: {exc}")
            return
        if self.broken.pop(pdir, None) is not None:
            log.info("project %s can be opened again: serving it", pdir)
        self.stores[pdir] = store
        for jid in stale:
            log.warning("job %s of %s was left running by a dead worker: marked failed", jid, pdir)

    def mark_broken(self, pdir: Path, reason: str) -> None:
        """Stop serving ``pdir`` until it can be opened again; log it when the reason is new."""
        if self.broken.get(pdir) != reason:
            log.error("skipping project %s: %s (the other projects are still served)", pdir, reason)
        self.broken[pdir] = reason
        store = self.stores.pop(pdir, None)
        if store is not None:
            store.close()


def _serve_one(store: Store) -> bool:
    """One pass over one project: the automatic retrain check, then at most one job; returns whether one ran."""
    try:
        check_auto_retrain(store)
    except Exception:  # a failed check must not stop the worker; the next pass retries
        log.exception("automatic retrain check of %s failed", store.dir)
    job = jobs.claim_next(store)
    if job is None:
        return False
    log.info("running job %s (%s) of %s", job["id"], job["kind"], store.dir)
    status = run_job(store, job)
    log.info("job %s: %s", job["id"], status)
    return True


def serve(path: Path, *, poll: float = 0.5, once: bool = False, stop: threading.Event | None = None) -> int:
    """Serve jobs of the project(s) at ``path`` until stopped; returns how many jobs ran.

    ``once`` returns after one pass in which there was nothing (more) to do (used by tests and scripts). A
    project that cannot be opened or fails while served is skipped and reported (see :class:`_Served`).
    """
    stop = stop or threading.Event()
    served = _Served(path)
    n_run = 0
    last_recover = time.monotonic()
    while not stop.is_set():
        served.refresh()
        recover = time.monotonic() - last_recover > jobs.stale_after_s()
        if recover:
            last_recover = time.monotonic()
        ran = False
        for pdir, store in list(served.stores.items()):
            try:
                if recover:
                    jobs.recover_stale(store)
                if _serve_one(store):
                    n_run += 1
                    ran = True
            except Exception as exc:  # this project's database failed: skip it, serve the others
                served.mark_broken(pdir, f"{type(exc).__name__}: {exc}")
        if once and not ran:
            break
        if not ran:
            stop.wait(poll)
    return n_run


def warm_up() -> None:
    """Compile UMAP's numba kernels once, in the background, so the first "Retrain now" does not pay for it."""
    try:
        import numpy as np
        import umap

        umap.UMAP(n_neighbors=5, n_epochs=20, random_state=0).fit(np.random.default_rng(0).normal(size=(64, 8)))
        log.info("UMAP kernels compiled")
    except Exception:  # warm-up is an optimisation only
        log.exception("UMAP warm-up failed")


def main(path: str | None) -> int:
    """Entry point of ``python -m core worker``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    target = Path(path or "projects")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    healthy, broken = scan_projects(target)
    log.info("serving %s (projects now: %d, %d of them broken)", target.resolve(), len(healthy) + len(broken),
             len(broken))
    threading.Thread(target=warm_up, daemon=True, name="warm-up").start()
    serve(target, stop=stop)
    return 0
