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
"""
from __future__ import annotations

import logging
import signal
import threading
import time
import traceback
from pathlib import Path

from core.jobs import auto_retrain
from core.jobs import queue as jobs
from core.errors import JobCancelled, LabelToolError
from core.store.project_store import DB_NAME, Store

log = logging.getLogger("core.jobs.worker")


def discover_projects(path: Path) -> list[Path]:
    """``path`` itself when it is a project, else its sub-folders that are projects."""
    path = Path(path)
    if (path / DB_NAME).is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if (p / DB_NAME).is_file())


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
            progress=progress, should_cancel=should_cancel, on_publish=on_publish,
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

        report = run_import_job(store, params, progress=progress, should_cancel=should_cancel)
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


def run_job(store: Store, job: dict) -> str:
    """Run one claimed job to its end; returns the final status (done, failed or cancelled), or ``lost``
    when another worker declared the job dead meanwhile (its row then keeps what that worker wrote)."""
    claim = job["claim"]
    hb = _Heartbeat(store, job["id"], claim)
    hb.start()

    def progress(info: dict) -> None:
        jobs.set_progress(store, job["id"], info, claim=claim)

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


def serve(path: Path, *, poll: float = 0.5, once: bool = False, stop: threading.Event | None = None) -> int:
    """Serve jobs of the project(s) at ``path`` until stopped; returns how many jobs ran.

    ``once`` returns after one pass in which there was nothing (more) to do (used by tests and scripts).
    """
    stop = stop or threading.Event()
    stores: dict[Path, Store] = {}
    n_run = 0
    last_recover = 0.0
    while not stop.is_set():
        for pdir in discover_projects(path):
            if pdir not in stores:
                stores[pdir] = Store(pdir)
                for jid in jobs.recover_stale(stores[pdir]):
                    log.warning("job %s of %s was left running by a dead worker: marked failed", jid, pdir)
        if time.monotonic() - last_recover > jobs.stale_after_s():
            last_recover = time.monotonic()
            for store in stores.values():
                jobs.recover_stale(store)
        ran = False
        for pdir, store in list(stores.items()):
            try:
                check_auto_retrain(store)
            except Exception:  # a failed check must not stop the worker; the next pass retries
                log.exception("automatic retrain check of %s failed", pdir)
            job = jobs.claim_next(store)
            if job is None:
                continue
            log.info("running job %s (%s) of %s", job["id"], job["kind"], pdir)
            status = run_job(store, job)
            log.info("job %s: %s", job["id"], status)
            n_run += 1
            ran = True
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
    log.info("serving %s (projects now: %d)", target.resolve(), len(discover_projects(target)))
    threading.Thread(target=warm_up, daemon=True, name="warm-up").start()
    serve(target, stop=stop)
    return 0
