"""The consensus engine on the store: the project's method and thresholds, per-vote recomputation with the
fitted parameters, and refitting on all votes.

The store calls :func:`recompute` inside the write transaction of every vote, retraction and threshold change,
so an item's consensus row never lags its votes; :func:`refit` fits the chosen method (Dawid-Skene,
model-aware) on the whole label matrix and rewrites every row. The rule of which votes count is
:mod:`core.labels.votes`.
"""
from __future__ import annotations

import json
import sqlite3
import time
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from core.errors import ValidationError, check_choice, check_param
from core.jobs import auto_retrain
from core.labels import methods as cm
from core.labels import params as cparams
from core.labels.matrix import label_matrix_from_votes
from core.labels.votes import VOTE_KINDS

if TYPE_CHECKING:
    from core.store.project_store import Store

#: settings whose change rewrites every consensus row
RECOMPUTE_ON = ("min_votes", "min_confidence")


def _now() -> float:
    return time.time()


def check_setting(key: str, value: Any) -> None:
    """Refuse a bad consensus or automatic-retrain setting (naming the value and what is allowed); other
    keys pass. The automatic-retrain rule is :func:`core.jobs.auto_retrain.check_setting`."""
    auto_retrain.check_setting(key, value)
    if key == "consensus_method":
        check_choice("settings", "consensus_method", value, cparams.METHODS)
    if key == "min_votes":
        check_param("settings", "min_votes", value,
                    isinstance(value, int) and not isinstance(value, bool) and value >= 1, "an int >= 1")
    if key == "min_confidence":
        check_param("settings", "min_confidence", value,
                    isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1,
                    "a number in [0, 1]")


def settings(store: Store) -> dict[str, Any]:
    """The consensus method, its thresholds and the fitted parameters in force."""
    s = store.settings()
    # a project saved before min_votes >= 1 was enforced may hold 0: it confirms like 1
    return {"method": s.get("consensus_method", "majority"), "min_votes": max(1, int(s.get("min_votes", 2))),
            "min_confidence": float(s.get("min_confidence", 0.9)),
            "params": cparams.ConsensusParams.from_json(s.get("consensus_params"))}


def recompute(store: Store, conn: sqlite3.Connection, item_ids: Sequence[int] | None, *,
              votes: Sequence[tuple[int, str, str, str]] | None = None) -> None:
    """Recompute the consensus rows of ``item_ids`` (every item when None) inside ``conn``'s transaction.

    ``votes``: the active human, bulk and adjudication votes ``(item_id, annotator, label, kind)`` of (at least)
    ``item_ids``, oldest first, when the caller knows them as they are at commit time (a bulk write that read
    them before taking the lock and checked nothing changed since); majority vote then reads nothing.

    Majority vote needs no fit; Dawid-Skene and model-aware apply the parameters of their last fit
    (:func:`refit`) to each item's votes, so a new vote counts at once.
    """
    cfg = settings(store)
    params = cfg["params"] if cfg["method"] != "majority" else None
    if params is not None and params.method != cfg["method"]:
        params = None  # not fitted yet for this method: majority until the fit lands
    if params is None:  # majority vote: one vectorised pass over the touched items (bulk writes touch 10^6)
        _recompute_majority(store, conn, item_ids, cfg["min_votes"], votes)
        return
    votes = store.active_votes(item_ids)
    by_item: dict[int, list[cm.Vote]] = {}
    for v in votes:
        by_item.setdefault(v["item_id"], []).append(cm.Vote(v["annotator"], v["label"], v["kind"]))
    targets = list(by_item.keys() if item_ids is None else item_ids)
    proba = None
    if params is not None and params.method == "model_aware":
        proba = model_proba(store, params.run_id, targets, len(params.classes))
    if item_ids is None:
        conn.execute("DELETE FROM consensus")
    t = _now()
    rows = []
    for k, item_id in enumerate(targets):
        res = cparams.item_consensus(params, by_item.get(item_id, []), min_votes=cfg["min_votes"],
                                     min_confidence=cfg["min_confidence"],
                                     proba_row=None if proba is None else proba[k])
        if res.n_votes == 0 and res.method != "adjudication":
            conn.execute("DELETE FROM consensus WHERE item_id = ?", (item_id,))
            continue
        rows.append((item_id, res.label, res.method, res.support, res.n_votes, res.agreement, res.confidence,
                     int(res.confirmed), t))
    conn.executemany(
        "INSERT OR REPLACE INTO consensus (item_id, label, method, support, n_votes, agreement, confidence,"
        " confirmed, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows,
    )


def active_votes_of(store: Store, item_ids: Sequence[int] | None) -> list[tuple[int, str, str, str]]:
    """Active human, bulk and adjudication votes ``(item_id, annotator, label, kind)`` of ``item_ids`` (every
    item when None), oldest first; past 50,000 items one scan of all votes filtered in memory beats 900-id
    ``IN`` queries."""
    if item_ids is None or len(item_ids) <= 50_000:
        rows = store.active_votes(item_ids)
    else:
        wanted = set(int(i) for i in item_ids)
        rows = [v for v in store.active_votes(None) if v["item_id"] in wanted]
    return [(v["item_id"], v["annotator"], v["label"], v["kind"]) for v in rows]


def _recompute_majority(store: Store, conn: sqlite3.Connection, item_ids: Sequence[int] | None,
                        min_votes: int, votes: Sequence[tuple[int, str, str, str]] | None = None) -> None:
    """:func:`recompute` for majority vote, with :func:`core.labels.methods.majority_many`."""
    if votes is None:
        votes = active_votes_of(store, item_ids)
    elif item_ids is not None:
        wanted = set(int(i) for i in item_ids)
        votes = [v for v in votes if v[0] in wanted]
    if item_ids is None:
        conn.execute("DELETE FROM consensus")
    cols = list(zip(*votes)) or [(), (), (), ()]
    res = cm.majority_many(*(np.asarray(c, dtype=object if k else np.int64) for k, c in enumerate(cols)),
                           min_votes=min_votes)
    keep = (res["n_votes"] > 0) | (res["method"] == "adjudication")
    gone = set() if item_ids is None else set(int(i) for i in item_ids) - set(res["item_id"][keep].tolist())
    conn.executemany("DELETE FROM consensus WHERE item_id = ?", [(i,) for i in sorted(gone)])
    t = _now()
    nan = lambda x: None if x != x else float(x)  # noqa: E731 - NaN -> NULL
    conn.executemany(
        "INSERT OR REPLACE INTO consensus (item_id, label, method, support, n_votes, agreement, confidence,"
        " confirmed, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(int(i), lab, m, int(sup), int(n), nan(ag), nan(cf), int(c), t) for i, lab, m, sup, n, ag, cf, c, k in zip(
            res["item_id"], res["label"], res["method"], res["support"], res["n_votes"], res["agreement"],
            res["confidence"], res["confirmed"], keep) if k])


#: the last run's out-of-fold arrays read: {(project dir, run id): (train item ids (m,), oof proba (m, K) | None)}
_OOF: dict[tuple[str, int], tuple[np.ndarray | None, np.ndarray | None]] = {}


def _oof_arrays(store: Store, run_id: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    key = (str(store.dir), int(run_id))
    cached = _OOF.get(key)
    if cached is not None:
        return cached
    try:
        d = store.run_dir(store.run(run_id))
        ids = np.load(d / "train_item_ids.npy") if (d / "train_item_ids.npy").exists() else None
        oof = np.load(d / "oof_proba.npy") if (d / "oof_proba.npy").exists() else None
    except (OSError, ValueError, ValidationError):  # gone or unreadable: no out-of-fold data
        return None, None
    _OOF.clear()  # keep the last run read only (pages of several threads may race: the worst is a re-read)
    _OOF[key] = (ids, oof)
    return ids, oof


def _model_proba(store: Store, run_id: int | None, item_ids: Sequence[int] | np.ndarray,
                 n_classes: int | None = None) -> tuple[np.ndarray | None, str]:
    """:func:`model_proba` and where its rows come from: "out_of_fold", "untrained_only", "predictions" or ""."""
    proba = store.run_proba(run_id, item_ids, n_classes)
    if proba is None or run_id is None:
        return None, ""
    train_ids, oof = _oof_arrays(store, run_id)
    if train_ids is None:  # a run from before train_item_ids were kept: which rows are in-sample is unknown
        return proba, "predictions"
    item_ids = np.asarray(item_ids, dtype=np.int64)
    order = np.argsort(train_ids, kind="stable")
    sorted_ids = train_ids[order]
    pos = np.clip(np.searchsorted(sorted_ids, item_ids), 0, max(len(sorted_ids) - 1, 0))
    hit = (sorted_ids[pos] == item_ids) if len(sorted_ids) else np.zeros(len(item_ids), dtype=bool)
    if oof is not None and oof.shape == (len(train_ids), proba.shape[1]):
        proba[hit] = oof[order[pos[hit]]]
        return proba, "out_of_fold"
    proba[hit] = np.nan  # trained on, no out-of-fold rows (a family without them): not used there
    return proba, "untrained_only"


def model_proba(store: Store, run_id: int | None, item_ids: Sequence[int] | np.ndarray,
                n_classes: int | None = None) -> np.ndarray | None:
    """The run's out-of-sample class probabilities (n, K) for ``item_ids``, what model-aware consensus uses.

    For the items the run trained on, its out-of-fold probabilities (``oof_proba.npy``: each row from the
    cross-validation fold model that did not see the item); for the others, its predictions, which are
    out-of-sample already. A run of a family without out-of-fold rows gives NaN rows for its training items
    (the model is not used there); a run older than ``train_item_ids.npy`` gives its predictions. NaN rows
    for items the run did not predict; None without a run (see ``Store.run_proba``).
    """
    return _model_proba(store, run_id, item_ids, n_classes)[0]


_SOURCES = {"out_of_fold": "its out-of-fold probabilities for the items it trained on, its predictions elsewhere",
            "untrained_only": "its predictions for the items it did not train on (it has no out-of-fold rows)",
            "predictions": "its predictions (a run from before out-of-fold rows were kept: retrain to grade it "
                           "out of sample)",
            "": "no model (no run yet): the votes alone"}


def fit_report(store: Store) -> dict[str, Any] | None:
    """What the fit in force estimated, for the Consensus page; None under majority vote or before a fit.

    Returns ``{"fitted_at": float, "annotators": [{"annotator", "estimated accuracy", "confusion"}],
    "model": str | None}``: per annotator the expected share of right votes and whether the fit kept a
    full confusion matrix or a one-coin one; for model-aware, one line on the model's estimated accuracy,
    its weight and which probabilities it was graded on.
    """
    cfg = settings(store)
    params = cfg["params"]
    if params is None or params.method != cfg["method"] or not params.summary.get("annotator_accuracy"):
        return None
    full = params.summary.get("full_confusion", {})
    rows = [{"annotator": a, "estimated accuracy": acc,
             "confusion": ("full" if full[a] else "one-coin") if a in full else ""}
            for a, acc in params.summary["annotator_accuracy"].items()]
    model = None
    if params.method == "model_aware" and params.confusions:
        acc = params.summary.get("model_accuracy")
        model = (f"Model (run {params.run_id}): estimated accuracy "
                 + ("-" if acc is None else f"{acc:.1%}") + f", weight {params.model_weight:.2f} on its "
                 "log-probabilities (1 takes them as they are); graded on "
                 + _SOURCES.get(params.proba_source, params.proba_source))
    return {"fitted_at": params.fitted_at, "annotators": rows, "model": model}


def recompute_all(store: Store) -> None:
    """Recompute the consensus of every item (after a change of min_votes, say)."""
    with store.transaction() as conn:
        recompute(store, conn, None)


def refit(store: Store, method: str | None = None, *, by: str | None = None) -> dict[str, Any]:
    """Fit the project's consensus method (or ``method``, which becomes the project's method) on all votes
    and rewrite every consensus row.

    The fit reads the votes outside the write lock; the rows are then recomputed from the votes as they
    are at commit time, so a vote that arrived meanwhile is not lost. Model-aware uses the newest run's
    out-of-sample probabilities (:func:`model_proba`).
    Returns ``{"method", "seconds", "n_items", "n_confirmed", "summary"}``.
    Choosing ``method`` is a settings change: ``by`` needs the ``settings`` permission and it is audited.
    """
    chosen = method is not None
    old_method = settings(store)["method"]
    method = method or old_method
    check_choice("consensus", "method", method, cparams.METHODS)
    t0 = time.perf_counter()
    lm = label_matrix_from_votes(store.active_votes(kinds=VOTE_KINDS), store.labels())
    run = store.run()
    proba, source = None, ""
    if method == "model_aware" and run is not None:
        proba, source = _model_proba(store, run["id"], lm.item_ids, len(lm.classes))
    if len(lm.item_ids) == 0 or not lm.classes:
        params = cparams.ConsensusParams(method, list(lm.classes), fitted_at=_now())
    else:
        _, params = cparams.fit_params(method, lm.L, lm.annotators, lm.classes, proba=proba,
                                       run_id=None if run is None else run["id"], fitted_at=_now(),
                                       proba_source=source)
    with store.transaction() as conn:
        if chosen:
            actor = store.actor(by)
            role = store.authorize(actor, "settings", conn)
            store.audit(conn, actor, "consensus_method", role=role, old=old_method, new=method)
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                     ("consensus_method", json.dumps(method)))
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                     ("consensus_params", json.dumps(params.to_json())))
        recompute(store, conn, None)
    n_conf = store.conn.execute("SELECT COUNT(*) FROM consensus WHERE confirmed = 1").fetchone()[0]
    return {"method": method, "seconds": round(time.perf_counter() - t0, 3), "n_items": int(len(lm.item_ids)),
            "n_confirmed": int(n_conf), "summary": params.summary}
