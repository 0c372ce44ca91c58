"""The labelling queue: which items an annotator should label next, by an active-learning strategy.

Glues the store (votes, consensus, the newest run's probabilities, cached features) to the pure query
strategies of :mod:`core.active.strategies`. An annotator is never offered an item they already voted on, nor an
item whose consensus is already confirmed (except by ``needs_another_vote``, which targets unsettled ones).
"""
from __future__ import annotations


import numpy as np

from core.labels import engine as consensus_engine
from core.active import strategies as active
from core.labels.votes import VOTE_KINDS, latest_per_item, ranked_counts
from core.store.project_store import Store


def vote_stats(store: Store, item_ids: np.ndarray, votes: list | None = None) -> active.VoteStats:
    """Per-item vote counts for ``item_ids`` (n,) from the active human and bulk votes (``votes`` when the
    caller already read them) and the consensus table."""
    pos = {int(i): k for k, i in enumerate(item_ids)}
    n = len(item_ids)
    n_votes, top, second = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    confirmed = np.zeros(n, bool)
    per_item = latest_per_item(votes if votes is not None else store.active_votes(kinds=VOTE_KINDS))
    for item_id, by_annotator in per_item.items():
        k = pos.get(item_id)
        if k is None:
            continue
        counts = [n for _, n in ranked_counts(by_annotator)]
        n_votes[k] = sum(counts)
        top[k] = counts[0]
        second[k] = counts[1] if len(counts) > 1 else 0
    for r in store.conn.execute("SELECT item_id FROM consensus WHERE confirmed = 1"):
        k = pos.get(r[0])
        if k is not None:
            confirmed[k] = True
    cfg = consensus_engine.settings(store)
    params = cfg["params"]
    posterior, accuracy = None, 0.7
    if cfg["method"] != "majority" and params is not None and params.method == cfg["method"]:
        posterior, accuracy = _posteriors(store, params, item_ids, per_item, confirmed, pos)
    return active.VoteStats(n_votes=n_votes, top_support=top, second_support=second,
                            min_votes=cfg["min_votes"], confirmed=confirmed, posterior=posterior,
                            min_confidence=cfg["min_confidence"], vote_accuracy=accuracy)


def _posteriors(store: Store, params, item_ids: np.ndarray, per_item: dict, confirmed: np.ndarray,
                pos: dict) -> tuple[np.ndarray, float]:
    """The fitted method's posterior (n, K) of the voted, unconfirmed items (zeros elsewhere) and the
    chance that a further vote is right."""
    from core.labels.params import item_posterior, vote_accuracy

    K = len(params.classes)
    index = {c: k for k, c in enumerate(params.classes)}
    post = np.zeros((len(item_ids), K))
    rows = [(item_id, pos[item_id]) for item_id in per_item if item_id in pos and not confirmed[pos[item_id]]]
    proba = None
    if params.method == "model_aware":
        proba = consensus_engine.model_proba(store, params.run_id, [i for i, _ in rows], K)
    for r, (item_id, k) in enumerate(rows):
        votes = {a: index[lab] for a, lab in per_item[item_id].items() if lab in index}
        post[k] = item_posterior(params, votes, None if proba is None else proba[r])
    accuracy = vote_accuracy(params)
    return post, float(np.clip(accuracy, 1.0 / K + 1e-3, 1 - 1e-3))


def aligned_proba(store: Store, item_ids: np.ndarray) -> np.ndarray | None:
    """The newest run's probabilities (n, k) for ``item_ids``; uniform rows for items it did not see or named no
    class for (an all-zero row: a reid run before identities are named); None without a run or a class."""
    run = store.run()
    if run is None:
        return None
    proba = store.run_proba(run["id"], item_ids)
    if proba is None:
        raise OSError(f"the probabilities of run {run['id']} are missing from {store.run_dir(run)}")
    if proba.shape[1] == 0:
        return None
    blank = np.isnan(proba).any(1) | (np.nan_to_num(proba).sum(1) <= 0)
    return np.where(blank[:, None], 1.0 / proba.shape[1], proba).astype(np.float32)


#: above this many items the queue does not load every item's features for near-duplicate suppression
DEDUP_MAX_ITEMS = 200_000


class QueueBatch(list):
    """The next items to label (a list of dicts, best first) and what the queue could not do for them.

    Attributes
    ----------
    dedup : bool
        Whether near-duplicate suppression ran on this batch.
    notes : list of str
        Why it did not (no features cached yet, an unreadable cache, partial features, a project too large),
        in words for the page; empty when everything ran.
    """

    def __init__(self, rows: list[dict] = (), *, dedup: bool = False, notes: list[str] | None = None) -> None:
        super().__init__(rows)
        self.dedup = dedup
        self.notes = list(notes or [])


def _embeddings(store: Store, item_ids: np.ndarray, strategy: str) -> tuple[np.ndarray | None, str | None]:
    """Cached features (n, d) of every item of ``item_ids`` (n,), for near-duplicate suppression, or None and
    why (a note for the page; an unreadable cache is also logged by :func:`core.features.project.project_features`)."""
    from core.features.project import project_features

    off = "near-duplicate suppression is off: "
    if strategy != "cluster_diverse" and len(item_ids) > DEDUP_MAX_ITEMS:
        return None, off + f"the project has more than {DEDUP_MAX_ITEMS:,} items"
    feats = project_features(store, item_ids)
    if feats.problem is not None:
        return None, off + feats.problem
    if len(feats.ids) != len(item_ids):
        return None, off + f"features are cached for {len(feats.ids):,} of {len(item_ids):,} items so far"
    return feats.X, None


def next_items(store: Store, *, strategy: str = "least_confidence", n: int = 10, annotator: str | None = None,
               exclude: set[int] | None = None, seed: int | None = None) -> QueueBatch:
    """The next ``n`` items to label, best first: dicts with item_id, predicted label and confidence.

    The result is a :class:`QueueBatch` (a list) whose ``dedup`` and ``notes`` say whether near-duplicates
    were kept out of the batch and, if not, why.
    """
    active.get_strategy(strategy)  # unknown names fail here with the list of valid ones
    item_ids = store.item_ids()
    if len(item_ids) == 0:
        return QueueBatch()
    votes = store.active_votes(kinds=VOTE_KINDS)  # read once: counts and the annotator's own votes
    stats = vote_stats(store, item_ids, votes)
    candidates = np.ones(len(item_ids), bool)
    if strategy != "needs_another_vote":
        candidates &= ~stats.confirmed
    skip = set(exclude or ())
    if annotator:
        skip |= {v["item_id"] for v in votes if v["annotator"] == annotator}
    if skip:
        candidates &= ~np.isin(item_ids, np.fromiter(skip, np.int64))
    proba = aligned_proba(store, item_ids)
    emb, note = _embeddings(store, item_ids, strategy)
    picks = active.query(strategy, proba, batch_size=n, candidates=candidates, embeddings=emb, votes=stats,
                         rng=np.random.default_rng(seed))
    classes = store.labels()
    out = QueueBatch(dedup=emb is not None, notes=[note] if note else [])
    for k in picks:
        row = {"item_id": int(item_ids[k])}
        if proba is not None:
            j = int(proba[k].argmax())
            row.update(suggestion=classes[j] if j < len(classes) else None, confidence=float(proba[k, j]))
        out.append(row)
    return out


RESERVED_KEYS = {"C", "R"}  # Streamlit reserves these for its own menu


def shortcut_keys(labels: list[str]) -> dict[str, str]:
    """A keyboard key per label: the label itself when it is one digit or letter, else the next free key.

    Keys run 1-9, 0, then letters (C and R are reserved by Streamlit). Labels beyond the keys get none.

    Examples
    --------
    >>> shortcut_keys(["cat", "dog"])
    {'cat': '1', 'dog': '2'}
    >>> shortcut_keys(["0", "1"])
    {'0': '0', '1': '1'}
    """
    pool = [str(d) for d in range(1, 10)] + ["0"] + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    pool = [k for k in pool if k not in RESERVED_KEYS]
    out: dict[str, str] = {}
    for lab in labels:
        key = lab.upper()
        if len(lab) == 1 and key in pool and key not in out.values():
            out[lab] = key
    free = [k for k in pool if k not in out.values()]
    for lab in labels:
        if lab not in out and free:
            out[lab] = free.pop(0)
    return {lab: out[lab] for lab in labels if lab in out}
