"""Automatic light retrains: the project settings, and the pure rule of when the worker queues one.

Two project settings (``Store.set_setting``; validated by :func:`check_setting`, which
:func:`core.labels.engine.check_setting` calls): ``auto_retrain`` (bool, off in a new project, on in the
demo) and ``auto_retrain_every`` (N, an int >= 1). When on, the worker (:mod:`core.jobs.worker`) asks
:func:`decide` on every pass over a project and queues a light classifier retrain, requested by ``"auto"``,
once N items were confirmed since the baseline: the newest run's ``n_labelled``, or the confirmed count
recorded in the last automatic job's parameters (``auto.n_confirmed``), whichever is larger. The baseline
moves with every automatic request, whatever became of the job, so a retrain that fails (one class only,
say) is retried only after N more confirmed labels, not on every poll. Nothing is queued while a train job
is queued or running.

This module imports neither the store nor the queue, so the settings rule can be used by the store itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from core.errors import check_param

#: the settings and their values in a project that never set them
DEFAULTS: dict[str, Any] = {"auto_retrain": False, "auto_retrain_every": 20}
#: who the queued jobs are requested by
REQUESTED_BY = "auto"
#: the classifier parameters of a light retrain: the defaults with fewer cross-validation folds
LIGHT_PARAMS: dict[str, Any] = {"n_folds": 3}


def check_setting(key: str, value: Any) -> None:
    """Refuse a bad ``auto_retrain`` / ``auto_retrain_every`` value (naming it and what is allowed); other keys pass."""
    if key == "auto_retrain":
        check_param("settings", "auto_retrain", value, isinstance(value, bool), "a bool (true or false)")
    if key == "auto_retrain_every":
        check_param("settings", "auto_retrain_every", value,
                    isinstance(value, int) and not isinstance(value, bool) and value >= 1, "an int >= 1")


def read_settings(settings: Mapping[str, Any]) -> tuple[bool, int]:
    """``(enabled, every)`` from a project's settings dict, with the defaults for keys it lacks."""
    return (bool(settings.get("auto_retrain", DEFAULTS["auto_retrain"])),
            max(1, int(settings.get("auto_retrain_every", DEFAULTS["auto_retrain_every"]))))


def job_params(n_confirmed: int) -> dict[str, Any]:
    """The train job's parameters: the light classifier, and the confirmed count at request (the next baseline)."""
    return {"model": "classifier", "params": dict(LIGHT_PARAMS), "auto": {"n_confirmed": int(n_confirmed)}}


def requested_at(job: Mapping[str, Any] | None) -> int | None:
    """The confirmed count an automatic job was requested at; None for another job or none."""
    auto = (job or {}).get("params", {}).get("auto")
    return int(auto["n_confirmed"]) if isinstance(auto, dict) and "n_confirmed" in auto else None


@dataclass(frozen=True)
class Decision:
    """What :func:`decide` concluded: queue or not, why, and the counts it compared."""

    queue: bool
    reason: str
    n_confirmed: int = 0
    baseline: int = 0
    every: int = DEFAULTS["auto_retrain_every"]


def decide(settings: Mapping[str, Any], n_confirmed: int, newest_run: Mapping[str, Any] | None,
           active_jobs: Sequence[Mapping[str, Any]], last_auto_job: Mapping[str, Any] | None = None) -> Decision:
    """Whether to queue a light retrain now.

    Parameters
    ----------
    settings : the project's settings (``Store.settings()``).
    n_confirmed : how many items are confirmed now.
    newest_run : the newest published run (with ``n_labelled``), or None.
    active_jobs : the project's queued and running train jobs.
    last_auto_job : the newest train job requested automatically (any status), or None.
    """
    enabled, every = read_settings(settings)
    if not enabled:
        return Decision(False, "automatic retraining is off", n_confirmed, 0, every)
    baseline = max(int((newest_run or {}).get("n_labelled") or 0), requested_at(last_auto_job) or 0)
    new = int(n_confirmed) - baseline
    base = dict(n_confirmed=int(n_confirmed), baseline=baseline, every=every)
    if active_jobs:
        j = active_jobs[0]
        return Decision(False, f"train job {j['id']} is {j['status']}", **base)
    if new < every:
        return Decision(False, f"{max(new, 0)} of {every} new confirmed labels since the last model", **base)
    return Decision(True, f"{new} new confirmed labels since the last model (every {every})", **base)
