"""Active-learning query strategies: a registry of pure functions.

Every strategy has the same signature::

    strategy(proba, *, batch_size, candidates=None, embeddings=None, votes=None,
             rng=None, dedup_threshold=0.98) -> np.ndarray (<= batch_size,) int64

and returns indices into the ``n`` rows, the most useful item first. Strategies never touch the
store: the caller passes the model's class probabilities, a mask of the items that may be asked
(typically "not yet confirmed"), the item embeddings and the per-item vote counts.

Strategies (see :func:`list_strategies`):

``random``
    Uniformly random candidates.
``least_confidence``
    Largest ``1 - max_k p_k`` first.
``margin``
    Smallest gap between the two most probable classes first.
``entropy``
    Largest ``-sum_k p_k log p_k`` first.
``cluster_diverse``
    Short-list the ``~10 * batch_size`` most uncertain candidates by entropy, k-means them into
    ``batch_size`` clusters in (cosine-normalised) embedding space, pick the most uncertain item of
    each cluster. Needs ``embeddings``.
``needs_another_vote``
    Items that already have votes but no confirmed consensus, those closest to settling first
    (see :func:`needs_another_vote`). Needs ``votes``.

No model yet
    When ``proba`` is ``None`` the uncertainty strategies (``least_confidence``, ``margin``,
    ``entropy``) fall back to ``random`` over the candidates (a flat model: see below).
    ``cluster_diverse`` without ``proba`` becomes a cold-start diversity sample: k-means on a random short-list and the item nearest each
    centroid, largest clusters first.

Near-duplicates
    When ``embeddings`` are given, every strategy runs a greedy pass over its ranked short-list that
    skips any item whose cosine similarity to an item already picked is ``>= dedup_threshold``, so a
    batch is not filled with copies of one image. A ``dedup_threshold`` above 1 turns the pass off.
    The pass runs on faiss (:mod:`core.features.neighbours`) per chunk of the short-list; it never compares
    all ``n`` items.

Ties and flat confidence
    The uncertainty strategies (``least_confidence``, ``margin``, ``entropy``, and the short-list of
    ``cluster_diverse``) break exact ties in their score by a random key drawn from ``rng``, not by the
    row index, so a block of equally uncertain items is sampled, not taken in id order. When the model
    is not yet informative (its score is the same for every candidate within :data:`FLAT_TOL`, as when
    all predictions are at confidence 1.0 or all uniform: :func:`is_flat`) the score says nothing: they
    fall back to the cold-start diversity sample of ``cluster_diverse`` when
    ``embeddings`` are given, else to ``random``. Pass calibrated probabilities (the run's ``proba``
    after temperature scaling) so that the scores compare like with like. ``needs_another_vote`` keeps
    ties by the lower row index. Results are deterministic for a given ``rng``.

Selection over all ``n`` rows uses :func:`numpy.argpartition` (linear time); only the short-list is sorted.

Examples
--------
>>> import numpy as np
>>> from core.active.strategies import query
>>> proba = np.array([[0.9, 0.1], [0.5, 0.5], [0.7, 0.3]])
>>> query("margin", proba, batch_size=2).tolist()
[1, 2]
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from core.errors import ValidationError, check_choice, check_param
from core.labels.methods import majority_confirmed

__all__ = [
    "VoteStats",
    "Strategy",
    "STRATEGIES",
    "list_strategies",
    "get_strategy",
    "query",
    "random",
    "least_confidence",
    "margin",
    "entropy",
    "cluster_diverse",
    "needs_another_vote",
    "is_flat",
    "FLAT_TOL",
]

_OWNER = "query strategy"
#: short-list size of ``cluster_diverse`` as a multiple of the batch size
CLUSTER_SHORTLIST_FACTOR = 10
#: chunk of the ranked short-list that the near-duplicate pass compares at once
_DEDUP_CHUNK = 1024
#: spread of the sorted class probabilities over the candidates below which a model counts as flat
FLAT_TOL = 1e-6


# --------------------------------------------------------------------------------------------- votes
@dataclass(frozen=True, eq=False)
class VoteStats:
    """Per-item vote counts the ``needs_another_vote`` strategy reads.

    Parameters
    ----------
    n_votes : np.ndarray, shape (n,), int
        Number of live (not retracted) votes on each item.
    top_support : np.ndarray, shape (n,), int
        Votes for the leading label (0 when the item has no votes).
    second_support : np.ndarray, shape (n,), int
        Votes for the runner-up label (0 when there is none); equal to ``top_support`` on a tie.
    min_votes : int
        Votes for one label that a consensus needs to be confirmed (>= 1).
    confirmed : np.ndarray, shape (n,), bool
        Whether the item's consensus is confirmed (what training treats as labelled).
    posterior : np.ndarray, shape (n, k), optional
        The consensus method's class posterior per item (Dawid-Skene, model-aware); rows of zeros where
        there is none. When given, ``needs_another_vote`` ranks by what one more vote would do to it.
    min_confidence : float
        Posterior that confirms an item under such a method.
    vote_accuracy : float
        Chance that a further vote is right (the fitted annotators' mean accuracy).
    """

    n_votes: np.ndarray
    top_support: np.ndarray
    second_support: np.ndarray
    min_votes: int
    confirmed: np.ndarray
    posterior: np.ndarray | None = None
    min_confidence: float = 0.9
    vote_accuracy: float = 0.7

    def __post_init__(self) -> None:
        owner = "VoteStats"
        if self.posterior is not None:
            post = np.asarray(self.posterior, dtype=np.float64)
            check_param(owner, "posterior", f"array of shape {post.shape}",
                        post.ndim == 2 and post.shape[0] == np.asarray(self.n_votes).shape[0],
                        "an (n, k) array with one row per item")
            object.__setattr__(self, "posterior", post)
        check_param(owner, "vote_accuracy", self.vote_accuracy, 0 < self.vote_accuracy < 1, "a float in (0, 1)")
        check_param(owner, "min_votes", self.min_votes,
                    isinstance(self.min_votes, (int, np.integer)) and not isinstance(self.min_votes, bool)
                    and self.min_votes >= 1, "an int >= 1")
        n = None
        for name in ("n_votes", "top_support", "second_support", "confirmed"):
            arr = np.asarray(getattr(self, name))
            check_param(owner, name, f"array of shape {arr.shape}", arr.ndim == 1, "a 1-D array")
            if name == "confirmed":
                arr = arr.astype(bool, copy=False)
            else:
                check_param(owner, name, f"array of dtype {arr.dtype}",
                            np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)
                            or arr.size == 0, "an integer array")
                arr = arr.astype(np.int64, copy=False)
                check_param(owner, name, f"array with minimum {arr.min() if arr.size else 0}",
                            arr.size == 0 or arr.min() >= 0, "non-negative")
            if n is None:
                n = arr.shape[0]
            check_param(owner, name, f"array of length {arr.shape[0]}", arr.shape[0] == n,
                        f"of the same length as 'n_votes' ({n})")
            object.__setattr__(self, name, arr)
        check_param(owner, "top_support", "an item whose top support exceeds its votes",
                    bool(np.all(self.top_support <= self.n_votes)), "<= n_votes on every item")
        check_param(owner, "second_support", "an item whose second support exceeds its top support",
                    bool(np.all(self.second_support <= self.top_support)), "<= top_support on every item")

    @property
    def n(self) -> int:
        """Number of items."""
        return int(self.n_votes.shape[0])

    @classmethod
    def from_label_matrix(cls, labels: np.ndarray, *, min_votes: int,
                          confirmed: np.ndarray | None = None) -> "VoteStats":
        """Count votes from an (N items, M annotators) label matrix with NaN for missing votes.

        Parameters
        ----------
        labels : np.ndarray, shape (n, m), float
            Integer class codes, NaN where an annotator did not vote.
        min_votes : int
            See the class docstring.
        confirmed : np.ndarray, shape (n,), bool, optional
            The store's confirmed flags. Default: ``top_support >= min_votes`` and no tie.

        Returns
        -------
        VoteStats
        """
        lab = np.asarray(labels, dtype=float)
        check_param("VoteStats", "labels", f"array of shape {lab.shape}", lab.ndim == 2, "a 2-D (n, m) array")
        n = lab.shape[0]
        present = ~np.isnan(lab)
        n_votes = present.sum(axis=1).astype(np.int64)
        if n == 0 or not present.any():
            top = np.zeros(n, np.int64)
            second = np.zeros(n, np.int64)
        else:
            codes = np.where(present, lab, 0).astype(np.int64)
            check_param("VoteStats", "labels", "a negative class code", codes.min() >= 0,
                        "non-negative integer class codes or NaN")
            k = int(codes.max()) + 1
            counts = np.zeros((n, k), np.int64)
            rows = np.broadcast_to(np.arange(n)[:, None], lab.shape)
            np.add.at(counts, (rows[present], codes[present]), 1)
            if k == 1:
                top, second = counts[:, 0], np.zeros(n, np.int64)
            else:
                part = np.partition(counts, k - 2, axis=1)
                top, second = part[:, -1], part[:, -2]
        if confirmed is None:
            confirmed = majority_confirmed(top, second, min_votes)
        return cls(n_votes=n_votes, top_support=top, second_support=second, min_votes=min_votes,
                   confirmed=np.asarray(confirmed, bool))


# ------------------------------------------------------------------------------------------ registry
class Strategy(Protocol):
    """The call signature every registered strategy has."""

    def __call__(self, proba: np.ndarray | None, *, batch_size: int, candidates: np.ndarray | None = None,
                 embeddings: np.ndarray | None = None, votes: VoteStats | None = None,
                 rng: np.random.Generator | int | None = None,
                 dedup_threshold: float = 0.98) -> np.ndarray: ...


STRATEGIES: dict[str, Strategy] = {}


def _register(name: str) -> Callable[[Callable[..., np.ndarray]], Callable[..., np.ndarray]]:
    def deco(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        STRATEGIES[name] = fn  # type: ignore[assignment]
        return fn

    return deco


def list_strategies() -> list[str]:
    """Names of the registered strategies, in registration order."""
    return list(STRATEGIES)


def get_strategy(name: str) -> Strategy:
    """Return the strategy registered under ``name``.

    Raises
    ------
    ValidationError
        When ``name`` is unknown; the message lists the valid names.
    """
    check_choice(_OWNER, "name", name, STRATEGIES)
    return STRATEGIES[name]


def query(name: str, proba: np.ndarray | None, **kwargs: Any) -> np.ndarray:
    """Run the strategy ``name``: ``query("entropy", proba, batch_size=10)``.

    Parameters
    ----------
    name : str
        One of :func:`list_strategies`.
    proba : np.ndarray, shape (n, k), or None
        Class probabilities of the current model; ``None`` when there is no model yet.
    **kwargs
        The strategy's keyword arguments (``batch_size`` is required).

    Returns
    -------
    np.ndarray, shape (<= batch_size,), int64
        Row indices, best first.
    """
    return get_strategy(name)(proba, **kwargs)


# ------------------------------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class _Inputs:
    n: int
    proba: np.ndarray | None
    cand_idx: np.ndarray  # (n_c,) int64, increasing
    embeddings: np.ndarray | None
    votes: VoteStats | None
    rng: np.random.Generator
    batch_size: int
    dedup_threshold: float


def _prepare(strategy: str, proba: np.ndarray | None, batch_size: int, candidates: np.ndarray | None,
             embeddings: np.ndarray | None, votes: VoteStats | None,
             rng: np.random.Generator | int | None, dedup_threshold: float) -> _Inputs:
    owner = f"the {strategy!r} {_OWNER}"
    check_param(owner, "batch_size", batch_size,
                isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool) and batch_size >= 1,
                "an int >= 1")
    check_param(owner, "dedup_threshold", dedup_threshold,
                isinstance(dedup_threshold, (int, float, np.floating)) and not isinstance(dedup_threshold, bool)
                and np.isfinite(dedup_threshold) and dedup_threshold > 0,
                "a float > 0 (values above 1 turn near-duplicate suppression off)")
    n: int | None = None
    source = ""

    def _agree(length: int, what: str) -> None:
        nonlocal n, source
        if n is None:
            n, source = length, what
        check_param(owner, what, f"{length} rows", length == n, f"of the same length as {source!r} ({n} rows)")

    if proba is not None:
        proba = np.asarray(proba)
        check_param(owner, "proba", f"array of shape {proba.shape}", proba.ndim == 2 and proba.shape[1] >= 1,
                    "a 2-D (n, k) array of class probabilities, or None")
        if not np.issubdtype(proba.dtype, np.floating):
            proba = proba.astype(np.float64)
        if proba.size:
            lo, hi = float(proba.min()), float(proba.max())
            check_param(owner, "proba", f"array with values in [{lo}, {hi}]",
                        np.isfinite(lo) and np.isfinite(hi) and lo >= 0.0 and hi <= 1.0 + 1e-6,
                        "finite probabilities in [0, 1]")
        _agree(proba.shape[0], "proba")
    if embeddings is not None:
        embeddings = np.asarray(embeddings)
        check_param(owner, "embeddings", f"array of shape {embeddings.shape}",
                    embeddings.ndim == 2 and embeddings.shape[1] >= 1, "a 2-D (n, d) array, or None")
        _agree(embeddings.shape[0], "embeddings")
    if votes is not None:
        check_param(owner, "votes", type(votes).__name__, isinstance(votes, VoteStats), "a VoteStats or None")
        _agree(votes.n, "votes")
    if candidates is not None:
        candidates = np.asarray(candidates)
        check_param(owner, "candidates", f"array of shape {candidates.shape} and dtype {candidates.dtype}",
                    candidates.ndim == 1 and candidates.dtype == np.bool_, "a 1-D boolean mask of length n, or None")
        _agree(candidates.shape[0], "candidates")
    if n is None:
        raise ValidationError(
            f"The {strategy!r} {_OWNER} needs at least one of 'proba', 'embeddings', 'votes' or 'candidates' "
            "to know how many items there are. Got none of them."
        )
    cand_idx = np.arange(n, dtype=np.int64) if candidates is None else np.flatnonzero(candidates).astype(np.int64)
    if not isinstance(rng, np.random.Generator):
        check_param(owner, "rng", rng, rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)),
                    "a numpy.random.Generator, an int seed or None")
        rng = np.random.default_rng(rng)
    return _Inputs(n=n, proba=proba, cand_idx=cand_idx, embeddings=embeddings, votes=votes, rng=rng,
                   batch_size=int(batch_size), dedup_threshold=float(dedup_threshold))


def _rows(a: np.ndarray, idx: np.ndarray, n: int) -> np.ndarray:
    """``a[idx]`` without a copy when ``idx`` is every row."""
    return a if idx.shape[0] == n else a[idx]


def _entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of ``p`` (n, k) -> (n,)."""
    q = np.clip(p, np.finfo(p.dtype).tiny, None)
    return -np.einsum("ij,ij->i", p, np.log(q))


def _top_order(score: np.ndarray, m: int, tiebreak: np.random.Generator | None = None) -> np.ndarray:
    """Positions of the ``m`` largest scores, best first.

    Parameters
    ----------
    score : np.ndarray, shape (n,)
    m : int
    tiebreak : numpy.random.Generator, optional
        Exact ties in ``score`` are ordered by random keys drawn from it (only for the items that can reach
        the top ``m``); default: the lower position.

    Returns
    -------
    np.ndarray, shape (min(m, n),), int64
    """
    n = score.shape[0]
    if m <= 0 or n == 0:
        return np.zeros(0, np.int64)
    if m >= n:
        sel = np.arange(n)
    else:
        part = np.argpartition(-score, m - 1)[:m]
        thr = score[part].min()
        sel = np.flatnonzero(score >= thr)  # every item tied with the m-th best, in index order
    if tiebreak is None:
        return sel[np.argsort(-score[sel], kind="stable")][:m].astype(np.int64)
    return sel[np.lexsort((tiebreak.random(sel.shape[0]), -score[sel]))][:m].astype(np.int64)


def is_flat(proba: np.ndarray, tol: float = FLAT_TOL) -> bool:
    """Whether a model is not (yet) informative on these rows: every row has the same sorted probabilities.

    Parameters
    ----------
    proba : np.ndarray, shape (n, k)
        Class probabilities of the candidates.
    tol : float
        Largest spread (max - min over rows) of each sorted probability that still counts as equal.

    Returns
    -------
    bool
        True when all rows are the same up to a permutation of the classes within ``tol`` (all at
        confidence 1.0, all uniform, ...), so that margin, entropy and least confidence tie everywhere;
        True for zero rows.
    """
    p = np.asarray(proba)
    if p.ndim != 2 or p.shape[0] <= 1:
        return True
    top = p.max(axis=1)
    if float(top.max()) - float(top.min()) > tol:  # the usual case, decided in one pass
        return False
    s = np.sort(p, axis=1)
    return bool((s.max(axis=0) - s.min(axis=0)).max() <= tol)


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (m, d) scaled to unit L2 norm (zero rows stay zero), float32."""
    from core.features.neighbours import unit_rows

    return unit_rows(x)


def _dedup(order: np.ndarray, embeddings: np.ndarray | None, batch_size: int, threshold: float,
           more: Callable[[], np.ndarray] | None = None) -> np.ndarray:
    """Greedy near-duplicate suppression over a ranked list of row indices, on faiss.

    Walks ``order`` best first and keeps an item unless its cosine similarity to an item already kept
    is ``>= threshold``. Works chunk by chunk: the chunk's items are looked up in a faiss index of the
    items kept so far (nearest one), and the chunk's own near-duplicate pairs come from one faiss range
    search over the chunk; the Python loop runs only over the chunk's items not already suppressed.

    Parameters
    ----------
    order : np.ndarray, shape (m,), int64
        Ranked row indices.
    embeddings : np.ndarray, shape (n, d), or None
        ``None`` (or ``threshold > 1``) returns ``order[:batch_size]``.
    more : callable, optional
        Returns the rest of the ranking (rows after ``order``), asked for once when the short-list
        runs out before the batch is full.

    Returns
    -------
    np.ndarray, shape (<= batch_size,), int64
    """
    if embeddings is None or threshold > 1.0:
        return order[:batch_size]
    from core.features.neighbours import NeighbourIndex

    kept: list[int] = []
    kept_index = NeighbourIndex(np.zeros((0, embeddings.shape[1]), np.float32), metric="cosine", fp16=False)
    pending = [order]
    asked_more = more is None
    while pending and len(kept) < batch_size:
        seq = pending.pop(0)
        for start in range(0, seq.shape[0], _DEDUP_CHUNK):
            chunk = seq[start:start + _DEDUP_CHUNK]
            vecs = _unit(embeddings[chunk])
            suppressed = kept_index.max_similarity(vecs) >= threshold
            near = NeighbourIndex(vecs, metric="cosine", fp16=False).range(vecs, threshold)
            new_rows: list[int] = []
            for i in np.flatnonzero(~suppressed):
                if suppressed[i]:
                    continue
                new_rows.append(int(i))
                suppressed[near[i]] = True
                if len(kept) + len(new_rows) >= batch_size:
                    break
            kept.extend(int(r) for r in chunk[new_rows])
            kept_index.add(vecs[new_rows])
            if len(kept) >= batch_size:
                break
        if not pending and len(kept) < batch_size and not asked_more:
            asked_more = True
            rest = more()  # type: ignore[misc]
            if rest.shape[0]:
                pending.append(rest)
    return np.asarray(kept, dtype=np.int64)


def _rank_and_pick(score: np.ndarray, inp: _Inputs, tiebreak: np.random.Generator | None = None) -> np.ndarray:
    """Rank candidates by ``score`` (n_c,) (higher = asked first; exact ties in random order drawn from
    ``tiebreak``, else by the lower index), then drop near-duplicates."""
    b = inp.batch_size
    n_c = score.shape[0]
    if inp.embeddings is None or inp.dedup_threshold > 1.0:
        return inp.cand_idx[_top_order(score, b, tiebreak)]
    m = min(n_c, max(2 * b, b + 64))
    first = _top_order(score, m, tiebreak)

    def more() -> np.ndarray:
        # rare: the short-list was mostly near-duplicates; rank the rest of the candidates in full
        full = _top_order(score, n_c, tiebreak)
        return inp.cand_idx[full[~np.isin(full, first)]]

    return _dedup(inp.cand_idx[first], inp.embeddings, b, inp.dedup_threshold, more if m < n_c else None)


def _random_scores(inp: _Inputs) -> np.ndarray:
    return inp.rng.random(inp.cand_idx.shape[0])


# ------------------------------------------------------------------------------------------ strategies
_DOC_PARAMS = """
    Parameters
    ----------
    proba : np.ndarray, shape (n, k), or None
        Class probabilities of the current model (rows sum to 1); ``None`` when there is no model.
    batch_size : int
        Most items to return (>= 1).
    candidates : np.ndarray, shape (n,), bool, optional
        Items that may be returned (e.g. not yet confirmed). Default: all.
    embeddings : np.ndarray, shape (n, d), optional
        Item features; when given, near-duplicates (cosine >= ``dedup_threshold``) are kept out of
        one batch.
    votes : VoteStats, optional
        Per-item vote counts (used by ``needs_another_vote``; ignored by the others).
    rng : numpy.random.Generator or int, optional
        Randomness (random strategy, fallbacks, k-means); ``None`` draws fresh entropy.
    dedup_threshold : float
        Cosine similarity at or above which an item counts as a near-duplicate of one already
        picked; above 1 turns the suppression off.

    Returns
    -------
    np.ndarray, shape (<= batch_size,), int64
        Row indices into the ``n`` rows, most useful first. Fewer than ``batch_size`` when there are
        fewer eligible candidates.
"""


def _with_params_doc(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    fn.__doc__ = (fn.__doc__ or "").rstrip() + "\n" + _DOC_PARAMS
    return fn


@_register("random")
@_with_params_doc
def random(proba: np.ndarray | None, *, batch_size: int, candidates: np.ndarray | None = None,
           embeddings: np.ndarray | None = None, votes: VoteStats | None = None,
           rng: np.random.Generator | int | None = None, dedup_threshold: float = 0.98) -> np.ndarray:
    """Uniformly random candidates (``proba`` is only used to know ``n``)."""
    inp = _prepare("random", proba, batch_size, candidates, embeddings, votes, rng, dedup_threshold)
    return _rank_and_pick(_random_scores(inp), inp)


def _uncertainty(name: str, score_fn: Callable[[np.ndarray], np.ndarray], proba: np.ndarray | None,
                 batch_size: int, candidates: np.ndarray | None, embeddings: np.ndarray | None,
                 votes: VoteStats | None, rng: np.random.Generator | int | None,
                 dedup_threshold: float) -> np.ndarray:
    inp = _prepare(name, proba, batch_size, candidates, embeddings, votes, rng, dedup_threshold)
    if inp.proba is None:
        return _rank_and_pick(_random_scores(inp), inp)
    score = score_fn(_rows(inp.proba, inp.cand_idx, inp.n))
    if _flat_score(score):  # the model says nothing yet: a diverse (or random) sample, not the first ids
        return _uninformative(inp)
    return _rank_and_pick(score, inp, tiebreak=inp.rng)


def _flat_score(score: np.ndarray) -> bool:
    """Whether a score (n_c,) is the same for every candidate within :data:`FLAT_TOL` (ranks nothing)."""
    return score.shape[0] <= 1 or float(score.max()) - float(score.min()) <= FLAT_TOL


def _uninformative(inp: _Inputs) -> np.ndarray:
    """The batch when there is no informative model: cold-start diversity with embeddings, else random."""
    if inp.embeddings is None or inp.cand_idx.shape[0] == 0:
        return _rank_and_pick(_random_scores(inp), inp)
    return _cold_start(inp)


def _least_confidence_score(p: np.ndarray) -> np.ndarray:
    return 1.0 - p.max(axis=1)


def _margin_score(p: np.ndarray) -> np.ndarray:
    k = p.shape[1]
    if k == 1:  # a one-class model: the margin to a missing runner-up is p itself
        return -p[:, 0]
    top2 = np.partition(p, k - 2, axis=1)[:, -2:]
    return -(top2[:, 1] - top2[:, 0])


@_register("least_confidence")
@_with_params_doc
def least_confidence(proba: np.ndarray | None, *, batch_size: int, candidates: np.ndarray | None = None,
                     embeddings: np.ndarray | None = None, votes: VoteStats | None = None,
                     rng: np.random.Generator | int | None = None, dedup_threshold: float = 0.98) -> np.ndarray:
    """Largest ``1 - max_k p_k`` first; random over the candidates when ``proba`` is None."""
    return _uncertainty("least_confidence", _least_confidence_score, proba, batch_size, candidates,
                        embeddings, votes, rng, dedup_threshold)


@_register("margin")
@_with_params_doc
def margin(proba: np.ndarray | None, *, batch_size: int, candidates: np.ndarray | None = None,
           embeddings: np.ndarray | None = None, votes: VoteStats | None = None,
           rng: np.random.Generator | int | None = None, dedup_threshold: float = 0.98) -> np.ndarray:
    """Smallest ``p_(1) - p_(2)`` (top two classes) first; random when ``proba`` is None."""
    return _uncertainty("margin", _margin_score, proba, batch_size, candidates, embeddings, votes, rng,
                        dedup_threshold)


@_register("entropy")
@_with_params_doc
def entropy(proba: np.ndarray | None, *, batch_size: int, candidates: np.ndarray | None = None,
            embeddings: np.ndarray | None = None, votes: VoteStats | None = None,
            rng: np.random.Generator | int | None = None, dedup_threshold: float = 0.98) -> np.ndarray:
    """Largest ``-sum_k p_k log p_k`` first; random when ``proba`` is None."""
    return _uncertainty("entropy", _entropy, proba, batch_size, candidates, embeddings, votes, rng,
                        dedup_threshold)


@_register("cluster_diverse")
@_with_params_doc
def cluster_diverse(proba: np.ndarray | None, *, batch_size: int, candidates: np.ndarray | None = None,
                    embeddings: np.ndarray | None = None, votes: VoteStats | None = None,
                    rng: np.random.Generator | int | None = None, dedup_threshold: float = 0.98) -> np.ndarray:
    """Uncertain and diverse: the most uncertain item of each k-means cluster of a short-list.

    Takes the ``CLUSTER_SHORTLIST_FACTOR * batch_size`` candidates of highest entropy, runs k-means
    with ``batch_size`` clusters on their unit-normalised embeddings (so Euclidean k-means works in
    cosine geometry) and returns the highest-entropy member of each cluster, most uncertain first.
    When near-duplicate suppression removes a pick (or a cluster is empty), the next most uncertain
    short-listed items fill the batch.

    Without ``proba`` (no model yet), or when the entropy is flat (:func:`is_flat`), the short-list is a
    random sample and each cluster contributes the member nearest its centroid, largest clusters first: a cold-start sample that covers the
    embedding space. ``embeddings`` are required.

    Cost: one k-means of ``10 * batch_size`` points into ``batch_size`` clusters (about 0.2 s at
    batch 100 over 1M items, see ``bench/``); it grows with ``batch_size ** 2``, so it is meant
    for batches of up to a few hundred.
    """
    inp = _prepare("cluster_diverse", proba, batch_size, candidates, embeddings, votes, rng, dedup_threshold)
    if inp.embeddings is None:
        raise ValidationError(
            "The 'embeddings' parameter of the 'cluster_diverse' query strategy must be an (n, d) array. "
            "Got None; extract features first or use 'entropy'."
        )
    if inp.cand_idx.shape[0] == 0:
        return np.zeros(0, np.int64)
    if inp.proba is None:
        return _cold_start(inp)
    score = _entropy(_rows(inp.proba, inp.cand_idx, inp.n))
    if _flat_score(score):
        return _cold_start(inp)
    return _cluster_pick(inp, score, uncertain=True)


def _cold_start(inp: _Inputs) -> np.ndarray:
    """Cold-start diversity sample: k-means on a random short-list, the member nearest each centroid."""
    return _cluster_pick(inp, _random_scores(inp), uncertain=False)


def _cluster_pick(inp: _Inputs, score: np.ndarray, *, uncertain: bool) -> np.ndarray:
    """Short-list the ``CLUSTER_SHORTLIST_FACTOR * b`` candidates of highest ``score`` (n_c,), k-means them.

    ``uncertain``: pick each cluster's highest-scoring member, most uncertain first; otherwise the member
    nearest each centroid, largest clusters first. Exact ties in ``score`` are broken by a random key.
    """
    b = inp.batch_size
    n_c = inp.cand_idx.shape[0]
    short_pos = _top_order(score, min(n_c, CLUSTER_SHORTLIST_FACTOR * b), inp.rng if uncertain else None)
    short = inp.cand_idx[short_pos]  # rows, most uncertain first
    if short.shape[0] <= b:
        return _dedup(short, inp.embeddings, b, inp.dedup_threshold)

    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    vecs = _unit(inp.embeddings[short])
    seed = int(inp.rng.integers(0, 2**31 - 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # fewer distinct points than clusters
        km = KMeans(n_clusters=b, n_init=1, random_state=seed).fit(vecs)
    labels = km.labels_
    if uncertain:
        # short-list is sorted by entropy: the first member of each cluster is its most uncertain
        _, first = np.unique(labels, return_index=True)
        picks = np.sort(first)  # most uncertain pick first
    else:
        dist = np.linalg.norm(vecs - km.cluster_centers_[labels], axis=1)
        by_cluster_then_dist = np.lexsort((dist, labels))
        _, first = np.unique(labels[by_cluster_then_dist], return_index=True)
        picks = by_cluster_then_dist[first]
        sizes = np.bincount(labels, minlength=b)[labels[picks]]
        picks = picks[np.lexsort((picks, -sizes))]
    rest = np.setdiff1d(np.arange(short.shape[0]), picks, assume_unique=True)  # stays in rank order
    ranked = short[np.concatenate([picks, rest])]
    return _dedup(ranked, inp.embeddings, b, inp.dedup_threshold)


def _one_more_vote_effect(post: np.ndarray, min_confidence: float, accuracy: float) -> np.ndarray:
    """Probability (r,) that one more vote settles or changes each item's consensus.

    The next vote ``l`` has probability ``sum_k post[k] * A[k, l]`` with ``A`` = ``accuracy`` on the diagonal
    and the rest spread evenly; the posterior after it is ``post * A[:, l]`` renormalised. An outcome counts
    when that posterior's maximum reaches ``min_confidence`` or its argmax differs from the current one.
    Rows without a posterior (all zeros) get 0.
    """
    r, k = post.shape
    if r == 0:
        return np.zeros(0)
    A = np.full((k, k), (1 - accuracy) / max(k - 1, 1))
    np.fill_diagonal(A, accuracy)
    has = post.sum(1) > 0
    now = post.argmax(1)
    p_vote = post @ A                                    # (r, k): probability of the next vote being l
    new = post[:, :, None] * A[None, :, :]               # (r, k true, k vote)
    new = new / np.maximum(new.sum(1, keepdims=True), 1e-300)
    settles = new.max(1) >= min_confidence               # (r, k vote)
    changes = new.argmax(1) != now[:, None]
    return np.where(has, (p_vote * (settles | changes)).sum(1), 0.0)


@_register("needs_another_vote")
@_with_params_doc
def needs_another_vote(proba: np.ndarray | None, *, batch_size: int, candidates: np.ndarray | None = None,
                       embeddings: np.ndarray | None = None, votes: VoteStats | None = None,
                       rng: np.random.Generator | int | None = None,
                       dedup_threshold: float = 0.98) -> np.ndarray:
    """Voted but unconfirmed items, those that fewest further votes would settle first.

    Eligible: ``n_votes >= 1`` and not ``confirmed`` (and in ``candidates``). For each, the votes
    still needed in the best case are ``needed = max(1, min_votes - top_support)``: an item with
    ``top_support == min_votes - 1``, a tie (one vote breaks it), or one that has enough votes but
    is unconfirmed for another reason (e.g. an agreement rule) needs one. Order:

    1. ``needed`` ascending (closest to settling first);
    2. with ``proba``: model uncertainty (normalised entropy) descending, where one more human vote
       is worth most; without it: the smallest lead ``top_support - second_support`` first (ties
       first, since the next vote changes the consensus);
    3. lower row index.

    Items without votes are never returned; use another strategy for those. ``votes`` is required.

    With a fitted consensus method (``votes.posterior`` given) the order is instead the probability that
    one more vote, right with probability ``vote_accuracy``, settles the item (its posterior reaches
    ``min_confidence``) or changes its consensus label (see :func:`_one_more_vote_effect`).
    """
    inp = _prepare("needs_another_vote", proba, batch_size, candidates, embeddings, votes, rng, dedup_threshold)
    if inp.votes is None:
        raise ValidationError(
            "The 'votes' parameter of the 'needs_another_vote' query strategy must be a VoteStats. Got None."
        )
    v = inp.votes
    nv = _rows(v.n_votes, inp.cand_idx, inp.n)
    conf = _rows(v.confirmed, inp.cand_idx, inp.n)
    pos = np.flatnonzero((nv >= 1) & ~conf)
    if pos.shape[0] == 0:
        return np.zeros(0, np.int64)
    rows = inp.cand_idx[pos]
    if v.posterior is not None:
        score = _one_more_vote_effect(v.posterior[rows], v.min_confidence, v.vote_accuracy)
        if inp.proba is not None:  # among equals, where the model is least sure
            k = inp.proba.shape[1]
            score = score + 1e-3 * _entropy(inp.proba[rows]) / max(np.log(k), 1e-12)
        sub = _Inputs(n=inp.n, proba=None, cand_idx=rows, embeddings=inp.embeddings, votes=None, rng=inp.rng,
                      batch_size=inp.batch_size, dedup_threshold=inp.dedup_threshold)
        return _rank_and_pick(score, sub)
    top = v.top_support[rows]
    needed = np.maximum(1, v.min_votes - top).astype(np.float64)
    if inp.proba is not None:
        k = inp.proba.shape[1]
        secondary = _entropy(inp.proba[rows]).astype(np.float64) / max(np.log(k), 1e-12)
    else:
        lead = (top - v.second_support[rows]).astype(np.float64)
        secondary = 1.0 / (1.0 + lead)
    # needed is an integer >= 1 and 0.5 * secondary lies in [0, 0.5): one float key orders both exactly
    score = -needed + 0.5 * np.clip(secondary, 0.0, 0.999)
    sub = _Inputs(n=inp.n, proba=None, cand_idx=rows, embeddings=inp.embeddings, votes=None, rng=inp.rng,
                  batch_size=inp.batch_size, dedup_threshold=inp.dedup_threshold)
    return _rank_and_pick(score, sub)
