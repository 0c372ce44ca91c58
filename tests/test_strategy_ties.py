"""Query strategies when the model's confidence is flat or tied (core.active.strategies).

A model that is not yet informative (every item predicted with the same confidence: all 1.0, or all
uniform) must not turn margin / entropy / least-confidence / cluster-diverse into "the first ids"; ties are
broken by a seeded random key (and by embedding diversity when embeddings are given).
"""
from __future__ import annotations

import numpy as np
import pytest

from core.active.strategies import is_flat, query

UNCERTAINTY = ("least_confidence", "margin", "entropy")


def _blocks(per: int = 100, seed: int = 0) -> np.ndarray:
    """(3 * per, 3) embeddings in three tight clusters laid out in id blocks: 0..per-1 near e0, and so on."""
    rng = np.random.default_rng(seed)
    return np.repeat(np.eye(3), per, axis=0) + 0.05 * rng.standard_normal((3 * per, 3))


def _one_hot(n: int, k: int = 3) -> np.ndarray:
    p = np.zeros((n, k))
    p[:, 0] = 1.0
    return p


@pytest.mark.parametrize("name", UNCERTAINTY + ("cluster_diverse",))
@pytest.mark.parametrize("flat", ["one_hot", "uniform"])
def test_flat_confidence_gives_a_diverse_batch(name, flat):
    emb = _blocks()
    proba = _one_hot(300) if flat == "one_hot" else np.full((300, 3), 1 / 3)
    out = query(name, proba, batch_size=3, embeddings=emb, rng=0)
    assert sorted(int(i) // 100 for i in out) == [0, 1, 2], out.tolist()


@pytest.mark.parametrize("name", UNCERTAINTY)
def test_flat_confidence_without_embeddings_is_seeded_not_id_order(name):
    proba = _one_hot(1000)
    a = query(name, proba, batch_size=10, rng=5)
    b = query(name, proba, batch_size=10, rng=np.random.default_rng(5))
    assert a.tolist() == b.tolist()                       # deterministic for a seed
    assert a.tolist() != list(range(10))                  # not the first ids
    assert len(set(a.tolist())) == 10 and a.max() > 100   # spread over the items
    assert query(name, proba, batch_size=10, rng=6).tolist() != a.tolist()


def test_ties_at_the_top_are_broken_by_seed_not_by_id():
    # 50 items share the most uncertain score; the rest are confident: picks come from the tied 50,
    # not always the lowest 5 of them, and the same seed gives the same picks.
    proba = np.tile([0.98, 0.01, 0.01], (500, 1))
    tied = np.arange(100, 150)
    proba[tied] = [0.4, 0.3, 0.3]
    for name in UNCERTAINTY:
        picks = [tuple(query(name, proba, batch_size=5, rng=s).tolist()) for s in range(6)]
        assert all(set(p) <= set(tied.tolist()) for p in picks)
        assert picks[0] == tuple(query(name, proba, batch_size=5, rng=0).tolist())
        assert len(set(picks)) > 1
        assert picks[0] != tuple(range(100, 105))


def test_distinct_scores_keep_their_order():
    proba = np.array([[0.50, 0.25, 0.25], [0.45, 0.45, 0.10], [0.55, 0.40, 0.05], [0.90, 0.05, 0.05]])
    for seed in range(3):
        assert query("margin", proba, batch_size=4, rng=seed).tolist() == [1, 2, 0, 3]
        assert query("entropy", proba, batch_size=4, rng=seed).tolist() == [0, 1, 2, 3]


def test_is_flat():
    assert is_flat(_one_hot(5))
    assert is_flat(np.full((4, 2), 0.5))
    assert is_flat(np.zeros((0, 3)))
    assert not is_flat(np.array([[0.9, 0.1], [0.6, 0.4]]))


def test_tied_scores_past_a_shortlist_of_duplicates_stay_unique():
    # 200 tied most-uncertain items that are all one picture, then 300 distinct, less uncertain ones:
    # the near-duplicate pass must look past the short-list without repeating or losing items
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((500, 8))
    emb[:200] = emb[0]
    proba = np.tile([0.9, 0.05, 0.05], (500, 1))
    proba[:200] = [0.4, 0.3, 0.3]
    proba[200:, 0] = np.linspace(0.6, 0.9, 300)
    proba[200:, 1:] = ((1 - proba[200:, 0]) / 2)[:, None]
    out = query("margin", proba, batch_size=10, embeddings=emb, rng=0)
    assert len(out) == 10 and len(set(out.tolist())) == 10
    assert sum(int(i) < 200 for i in out) == 1
    assert [int(i) for i in out if i >= 200] == list(range(200, 209))
