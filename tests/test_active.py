"""Query strategies of core.active.strategies against small cases worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest

from core.active.strategies import STRATEGIES, VoteStats, get_strategy, list_strategies, query
from core.errors import ValidationError

# Four items, three classes; the three uncertainty orders all differ.
#   item  p                    1 - max p   p1 - p2   entropy (nats)
#   0     [0.50, 0.25, 0.25]   0.50        0.25      0.5 ln2 + 0.5 ln4       = 1.0397
#   1     [0.45, 0.45, 0.10]   0.55        0.00      0.9 ln(1/.45) + .1 ln10 = 0.9489
#   2     [0.55, 0.40, 0.05]   0.45        0.15                              = 0.8451
#   3     [0.90, 0.05, 0.05]   0.10        0.85                              = 0.3944
PROBA4 = np.array([
    [0.50, 0.25, 0.25],
    [0.45, 0.45, 0.10],
    [0.55, 0.40, 0.05],
    [0.90, 0.05, 0.05],
])


def test_registry_lists_every_strategy():
    assert list_strategies() == ["random", "least_confidence", "margin", "entropy", "cluster_diverse",
                                 "needs_another_vote"]
    assert set(STRATEGIES) == set(list_strategies())
    assert get_strategy("margin") is STRATEGIES["margin"]


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(ValidationError) as err:
        query("uncertainty", PROBA4, batch_size=2)
    msg = str(err.value)
    assert "'uncertainty'" in msg
    for name in list_strategies():
        assert repr(name) in msg


@pytest.mark.parametrize("name, expected", [
    ("least_confidence", [1, 0, 2, 3]),
    ("margin", [1, 2, 0, 3]),
    ("entropy", [0, 1, 2, 3]),
])
def test_uncertainty_orders_by_hand(name, expected):
    out = query(name, PROBA4, batch_size=4)
    assert out.dtype == np.int64
    assert out.tolist() == expected
    assert query(name, PROBA4, batch_size=2).tolist() == expected[:2]


def test_uncertainty_respects_candidates():
    cand = np.array([True, False, True, True])
    assert query("least_confidence", PROBA4, batch_size=4, candidates=cand).tolist() == [0, 2, 3]
    assert query("margin", PROBA4, batch_size=2, candidates=cand).tolist() == [2, 0]
    assert query("entropy", PROBA4, batch_size=3, candidates=np.zeros(4, bool)).tolist() == []


def test_ties_are_seeded_not_by_index():
    # a flat model (every row uniform) ranks nothing: a seeded random sample, not the first ids
    uniform = np.full((60, 3), 1 / 3)
    a = query("entropy", uniform, batch_size=3, rng=1)
    assert a.tolist() == query("entropy", uniform, batch_size=3, rng=1).tolist()
    assert a.tolist() != [0, 1, 2] and len(set(a.tolist())) == 3
    # needs_another_vote still orders equals by the lower row index
    v = VoteStats(np.ones(4, int), np.ones(4, int), np.zeros(4, int), 2, np.zeros(4, bool))
    assert query("needs_another_vote", None, batch_size=2, votes=v).tolist() == [0, 1]


def test_partition_path_matches_full_sort():
    rng = np.random.default_rng(3)
    proba = rng.dirichlet(np.ones(5), size=5000)
    h = -(proba * np.log(proba)).sum(axis=1)
    assert query("entropy", proba, batch_size=25).tolist() == np.argsort(-h, kind="stable")[:25].tolist()


def test_random_is_seeded_unique_and_within_candidates():
    cand = np.zeros(100, bool)
    cand[::3] = True
    a = query("random", None, batch_size=10, candidates=cand, rng=np.random.default_rng(7))
    b = query("random", None, batch_size=10, candidates=cand, rng=7)
    assert a.tolist() == b.tolist()
    assert len(set(a.tolist())) == 10 and all(i % 3 == 0 for i in a)
    assert sorted(query("random", None, batch_size=50, candidates=cand, rng=0).tolist()) == list(range(0, 100, 3))


def test_no_model_falls_back_to_random_over_candidates():
    cand = np.arange(40) % 2 == 1
    rnd = query("random", None, batch_size=5, candidates=cand, rng=11)
    for name in ("least_confidence", "margin", "entropy"):
        assert query(name, None, batch_size=5, candidates=cand, rng=11).tolist() == rnd.tolist()


def _three_clusters(per: int = 10, seed: int = 0) -> np.ndarray:
    """(3 * per, 3) embeddings: item i lies near axis e_{i // per} (cosine ~0.9 within, ~0 across)."""
    rng = np.random.default_rng(seed)
    centres = np.repeat(np.eye(3), per, axis=0)
    return centres + 0.15 * rng.standard_normal(centres.shape)


def _proba_cluster0_most_uncertain(per: int = 10) -> np.ndarray:
    """Cluster 0 holds the most uncertain items; within each cluster uncertainty falls with the index."""
    n = 3 * per
    top = np.empty(n)
    top[:per] = np.linspace(0.35, 0.45, per)        # cluster 0: the 10 most uncertain
    top[per:2 * per] = np.linspace(0.50, 0.60, per)  # cluster 1
    top[2 * per:] = np.linspace(0.65, 0.75, per)     # cluster 2
    rest = (1 - top) / 2
    return np.stack([top, rest, rest], axis=1)


def test_cluster_diverse_takes_one_item_per_cluster():
    emb = _three_clusters()
    proba = _proba_cluster0_most_uncertain()
    plain = query("entropy", proba, batch_size=3, embeddings=emb, dedup_threshold=1.5)
    assert plain.tolist() == [0, 1, 2]  # all from cluster 0
    out = query("cluster_diverse", proba, batch_size=3, embeddings=emb, rng=0)
    assert sorted(i // 10 for i in out) == [0, 1, 2]
    # the most uncertain member of each cluster, most uncertain first
    assert out.tolist() == [0, 10, 20]


def test_cluster_diverse_cold_start_and_needs_embeddings():
    emb = _three_clusters()
    out = query("cluster_diverse", None, batch_size=3, embeddings=emb, rng=0)
    assert sorted(i // 10 for i in out) == [0, 1, 2]
    with pytest.raises(ValidationError, match="'embeddings'"):
        query("cluster_diverse", PROBA4, batch_size=2)


def test_cluster_diverse_small_candidate_set_returns_all():
    emb = _three_clusters()
    cand = np.zeros(30, bool)
    cand[[4, 15, 25]] = True
    out = query("cluster_diverse", _proba_cluster0_most_uncertain(), batch_size=5, candidates=cand, embeddings=emb)
    assert out.tolist() == [4, 15, 25]


def test_near_duplicates_are_not_picked_twice():
    # items 0 and 1 are the same picture and the two most uncertain; item 2 differs
    emb = np.array([[1.0, 0.0], [1.0, 0.001], [0.0, 1.0], [0.7, 0.7]])
    assert query("entropy", PROBA4, batch_size=2).tolist() == [0, 1]
    assert query("entropy", PROBA4, batch_size=2, embeddings=emb).tolist() == [0, 2]
    assert query("entropy", PROBA4, batch_size=2, embeddings=emb, dedup_threshold=1.01).tolist() == [0, 1]
    # the threshold is on cosine similarity: item 3 is at cos 0.707 from both 0 and 2
    assert query("entropy", PROBA4, batch_size=4, embeddings=emb, dedup_threshold=0.7).tolist() == [0, 2]
    assert query("entropy", PROBA4, batch_size=4, embeddings=emb, dedup_threshold=0.8).tolist() == [0, 2, 3]


def test_dedup_looks_past_a_shortlist_of_duplicates():
    n = 300
    proba = np.column_stack([np.linspace(0.34, 0.99, n), np.zeros(n), np.zeros(n)])
    proba[:, 1] = proba[:, 2] = (1 - proba[:, 0]) / 2
    emb = np.tile([[1.0, 0.0]], (n, 1))
    emb[-1] = [0.0, 1.0]  # the only distinct item is the least uncertain one
    out = query("least_confidence", proba, batch_size=2, embeddings=emb)
    assert out.tolist() == [0, n - 1]
    # random with embeddings still returns a distinct pair
    out = query("random", None, batch_size=5, embeddings=emb, rng=0)
    assert sorted(out.tolist())[-1] == n - 1 and len(out) == 2


# needs_another_vote, min_votes = 3:
#   item  n_votes top second confirmed  needed = max(1, 3 - top)  lead = top - second
#   0     0       0   0      False      (no votes: never)
#   1     1       1   0      False      2                         1
#   2     2       2   0      False      1                         2
#   3     2       1   1      False      2                         0   (tie)
#   4     3       3   0      True       (confirmed: never)
#   5     4       2   2      False      1                         0   (tie)
#   6     3       3   0      False      1                         3   (unconfirmed by another rule)
VOTES = VoteStats(
    n_votes=np.array([0, 1, 2, 2, 3, 4, 3]),
    top_support=np.array([0, 1, 2, 1, 3, 2, 3]),
    second_support=np.array([0, 0, 0, 1, 0, 2, 0]),
    min_votes=3,
    confirmed=np.array([False, False, False, False, True, False, False]),
)


def test_needs_another_vote_without_model():
    # needed 1: 5 (lead 0), 2 (lead 2), 6 (lead 3); then needed 2: 3 (lead 0), 1 (lead 1)
    assert query("needs_another_vote", None, batch_size=10, votes=VOTES).tolist() == [5, 2, 6, 3, 1]
    assert query("needs_another_vote", None, batch_size=2, votes=VOTES).tolist() == [5, 2]
    cand = np.ones(7, bool)
    cand[[2, 3]] = False
    assert query("needs_another_vote", None, batch_size=10, votes=VOTES, candidates=cand).tolist() == [5, 6, 1]


def test_needs_another_vote_tie_broken_by_model_uncertainty():
    # within "needed 1" the model is least sure about 6, then 2, then 5; within "needed 2" about 1, then 3
    proba = np.array([
        [1 / 3, 1 / 3, 1 / 3],  # 0: most uncertain of all, but has no votes
        [0.40, 0.35, 0.25],
        [0.60, 0.30, 0.10],
        [0.90, 0.05, 0.05],
        [0.40, 0.30, 0.30],     # 4: confirmed
        [0.98, 0.01, 0.01],
        [0.40, 0.40, 0.20],
    ])
    assert query("needs_another_vote", proba, batch_size=10, votes=VOTES).tolist() == [6, 2, 5, 1, 3]


def test_needs_another_vote_requires_votes():
    with pytest.raises(ValidationError, match="'votes'"):
        query("needs_another_vote", PROBA4, batch_size=2)


def test_votestats_from_label_matrix():
    nan = np.nan
    labels = np.array([
        [nan, nan, nan],
        [0, nan, nan],
        [1, 1, nan],
        [0, 1, nan],
        [2, 2, 0],
    ])
    v = VoteStats.from_label_matrix(labels, min_votes=2)
    assert v.n_votes.tolist() == [0, 1, 2, 2, 3]
    assert v.top_support.tolist() == [0, 1, 2, 1, 2]
    assert v.second_support.tolist() == [0, 0, 0, 1, 1]
    assert v.confirmed.tolist() == [False, False, True, False, True]


def test_votestats_validation():
    with pytest.raises(ValidationError, match="'min_votes'"):
        VoteStats(np.array([1]), np.array([1]), np.array([0]), 0, np.array([False]))
    with pytest.raises(ValidationError, match="'top_support'"):
        VoteStats(np.array([1, 1]), np.array([1]), np.array([0]), 2, np.array([False]))
    with pytest.raises(ValidationError, match="'second_support'"):
        VoteStats(np.array([2]), np.array([1]), np.array([2]), 2, np.array([False]))


@pytest.mark.parametrize("kwargs, param", [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"batch_size": 2, "candidates": np.ones(3, bool)}, "candidates"),
    ({"batch_size": 2, "candidates": np.ones(4, int)}, "candidates"),
    ({"batch_size": 2, "embeddings": np.ones((5, 2))}, "embeddings"),
    ({"batch_size": 2, "dedup_threshold": 0.0}, "dedup_threshold"),
    ({"batch_size": 2, "rng": "seed"}, "rng"),
])
def test_bad_parameters_name_the_parameter(kwargs, param):
    with pytest.raises(ValidationError, match=f"'{param}'"):
        query("entropy", PROBA4, **kwargs)


def test_one_class_proba_does_not_crash():
    p = np.array([[1.0], [0.7], [0.9]])
    assert query("margin", p, batch_size=2).tolist() == [1, 2]
    assert query("entropy", p, batch_size=3).shape == (3,)
    v = VoteStats(np.array([1, 1, 1]), np.array([1, 1, 1]), np.zeros(3, int), 2, np.zeros(3, bool))
    assert sorted(query("needs_another_vote", p, batch_size=3, votes=v).tolist()) == [0, 1, 2]


def test_bad_proba_and_no_size():
    with pytest.raises(ValidationError, match="'proba'"):
        query("margin", np.array([0.2, 0.8]), batch_size=1)
    with pytest.raises(ValidationError, match="'proba'"):
        query("margin", np.array([[np.nan, 0.5]]), batch_size=1)
    with pytest.raises(ValidationError, match="how many items"):
        query("random", None, batch_size=1)


def test_float32_proba_large_batch_matches_brute_force():
    # Correctness of the float32 path at a size that needs the partition; its speed over 1M items is
    # measured by bench/bench_query_umap.py against a full sort in the same run (no timed test here).
    rng = np.random.default_rng(0)
    proba = rng.random((20_000, 10), dtype=np.float32)
    proba /= proba.sum(axis=1, keepdims=True)
    s = np.sort(proba, axis=1)
    scores = {"least_confidence": 1 - s[:, -1], "margin": -(s[:, -1] - s[:, -2])}
    for name in ("least_confidence", "margin", "entropy", "random"):
        out = query(name, proba, batch_size=100, rng=0)
        assert out.shape == (100,) and len(set(out.tolist())) == 100 and out.min() >= 0 and out.max() < 20_000
        if name in scores:
            assert set(out.tolist()) == set(np.argsort(-scores[name], kind="stable")[:100].tolist())
