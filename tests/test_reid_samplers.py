"""Re-identification batch samplers: batch composition, determinism per seed, coverage of an epoch, errors."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from core.errors import ValidationError
from core.models.reid.proxies import build_proxies
from core.models.reid.samplers import SAMPLERS, cluster_groups, make_sampler

torch.set_num_threads(1)


def toy_labels(seed=0):
    """Clusters of sizes 1..9 (some smaller than k), 2 cameras, outliers; proxies from build_proxies."""
    rng = np.random.default_rng(seed)
    sizes = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    pseudo = np.concatenate([np.full(s, c) for c, s in enumerate(sizes)] + [np.full(6, -1)])
    perm = rng.permutation(len(pseudo))
    pseudo = pseudo[perm]
    cams = rng.integers(0, 2, len(pseudo))
    item_proxy = build_proxies(np.ones((len(pseudo), 2)), pseudo, cams).item_proxy.numpy()
    return pseudo, item_proxy


def flat(batches):
    return np.concatenate(batches) if batches else np.zeros(0, int)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_outliers_are_never_sampled_and_batches_are_int_arrays(name):
    pseudo, proxy = toy_labels()
    for batch in make_sampler(name, pseudo, proxy, batch_size=8, k=4, seed=1):
        assert isinstance(batch, np.ndarray) and batch.dtype == np.int64 and batch.ndim == 1
        assert (pseudo[batch] >= 0).all()


def test_random_covers_every_inlier_once_per_epoch():
    pseudo, proxy = toy_labels()
    batches = list(make_sampler("random", pseudo, proxy, batch_size=8, k=4, seed=0))
    assert [len(b) for b in batches] == [8] * 5 + [5]  # 45 inliers
    assert sorted(flat(batches).tolist()) == np.flatnonzero(pseudo >= 0).tolist()
    dropped = list(make_sampler("random", pseudo, proxy, batch_size=8, k=4, seed=0, drop_last=True))
    assert [len(b) for b in dropped] == [8] * 5


@pytest.mark.parametrize("name, labels_of", [("pk_cluster", 0), ("pk_proxy", 1)])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_pk_batches_hold_p_classes_of_k_items(name, labels_of, k):
    pseudo, proxy = toy_labels()
    labels = (pseudo, proxy)[labels_of]
    batch_size = 4 * k  # P = 4
    sampler = make_sampler(name, pseudo, proxy, batch_size=batch_size, k=k, seed=3)
    batches = list(sampler)
    n_classes = len(set(labels[labels >= 0].tolist()))
    assert len(batches) == len(sampler) == -(-n_classes // 4)
    seen = Counter()
    for batch in batches:
        counts = Counter(labels[batch].tolist())
        assert set(counts.values()) == {k}                       # exactly k items of each class ...
        assert len(counts) == (4 if batch is not batches[-1] else len(batch) // k)  # ... of P classes
        # the k items of a class are consecutive in the batch
        assert all(len(set(labels[batch[i:i + k]].tolist())) == 1 for i in range(0, len(batch), k))
        for c, rows in ((c, batch[labels[batch] == c]) for c in counts):
            members = set(np.flatnonzero(labels == c).tolist())
            assert set(rows.tolist()) <= members
            if len(members) >= k:  # without replacement when the class is big enough (with it otherwise)
                assert len(set(rows.tolist())) == k
        seen.update(counts.keys())
    # every class exactly once per epoch
    assert sorted(seen) == sorted(set(labels[labels >= 0].tolist())) and set(seen.values()) == {1}


def test_pk_cluster_repeats_items_of_a_cluster_smaller_than_k():
    pseudo = np.array([0, 1, 1, 1, 1, 1, -1])
    batches = list(make_sampler("pk_cluster", pseudo, None, batch_size=8, k=4, seed=0))
    assert len(batches) == 1 and len(batches[0]) == 8
    assert Counter(batches[0].tolist())[0] == 4  # the single member of cluster 0, four times
    assert len(set(batches[0][pseudo[batches[0]] == 1].tolist())) == 4


@pytest.mark.parametrize("n", [1, 2, 3, 4, 16])
def test_group_sampling_groups_and_coverage(n):
    pseudo, proxy = toy_labels()
    groups = cluster_groups(pseudo, n, np.random.default_rng(0))
    sizes = Counter(pseudo.tolist())
    per_cluster = Counter()
    for g in groups:
        assert len(set(pseudo[g].tolist())) == 1 and 1 <= len(g) <= n  # one cluster per group, at most n items
        per_cluster[int(pseudo[g[0]])] += 1
    for c, size in sizes.items():
        if c >= 0:
            assert per_cluster[c] == -(-size // n)  # ceil(size / n): groups of n and one remainder group
            assert sorted(len(g) for g in groups if pseudo[g[0]] == c)[1:] == [n] * (per_cluster[c] - 1)
    assert sorted(flat(groups).tolist()) == np.flatnonzero(pseudo >= 0).tolist()
    # the batches are the shuffled groups, concatenated, cut into batch_size: every inlier exactly once
    sampler = make_sampler("group", pseudo, proxy, batch_size=8, k=n, seed=0)
    batches = sampler.batches(0)
    expected = cluster_groups(pseudo, n, np.random.default_rng((0, 0)))
    np.testing.assert_array_equal(flat(batches), flat(expected))
    assert all(len(b) == 8 for b in batches[:-1]) and len(batches[-1]) <= 8


def test_group_order_is_shuffled_across_clusters():
    pseudo = np.repeat(np.arange(10), 4)
    orders = {tuple(int(pseudo[g[0]]) for g in cluster_groups(pseudo, 2, np.random.default_rng(s))) for s in range(5)}
    assert len(orders) > 1 and all(list(o) != sorted(o) for o in orders)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_deterministic_per_seed_and_new_draw_per_epoch(name):
    pseudo, proxy = toy_labels()
    a = make_sampler(name, pseudo, proxy, batch_size=8, k=2, seed=7)
    b = make_sampler(name, pseudo, proxy, batch_size=8, k=2, seed=7)
    c = make_sampler(name, pseudo, proxy, batch_size=8, k=2, seed=8)
    a0, a1 = [x.tolist() for x in a], [x.tolist() for x in a]
    assert a0 == [x.tolist() for x in b] and a1 == [x.tolist() for x in b]
    assert a0 != a1                                            # epochs differ
    assert a0 != [x.tolist() for x in c]                       # seeds differ
    a.set_epoch(1)
    assert [x.tolist() for x in a] == a1                       # resume at an epoch


def test_item_proxy_as_a_tensor_is_accepted():
    pseudo, proxy = toy_labels()
    s1 = make_sampler("pk_proxy", pseudo, torch.as_tensor(proxy), batch_size=8, k=2, seed=0)
    s2 = make_sampler("pk_proxy", pseudo, proxy, batch_size=8, k=2, seed=0)
    assert [x.tolist() for x in s1] == [x.tolist() for x in s2]


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValidationError) as err:
        make_sampler("triplet", np.array([0, 1]), None, batch_size=2, k=1, seed=0)
    for name in SAMPLERS:
        assert repr(name) in str(err.value)


@pytest.mark.parametrize("name, kwargs, bad", [
    ("pk_cluster", {"batch_size": 6, "k": 4}, "batch_size"),
    ("pk_proxy", {"batch_size": 6, "k": 4}, "batch_size"),
    ("random", {"batch_size": 0}, "batch_size"),
    ("group", {"k": 0}, "k"),
    ("group", {"seed": -1}, "seed"),
    ("pk_proxy", {"item_proxy": None}, "item_proxy"),
    ("pk_proxy", {"item_proxy": np.array([0, 1, 2])}, "item_proxy"),
    ("pk_proxy", {"item_proxy": np.array([0, 1, 1, 2])}, "item_proxy"),  # proxy where pseudo says outlier
    ("random", {"pseudo": np.array([-1, -1, -1, -1])}, "pseudo"),
    ("random", {"pseudo": np.array([0.0, 1.0, 1.0, 2.0])}, "pseudo"),
])
def test_errors(name, kwargs, bad):
    args = {"pseudo": np.array([0, 1, 1, -1]), "item_proxy": np.array([0, 1, 1, -1]), "batch_size": 4, "k": 2,
            "seed": 0}
    args.update(kwargs)
    with pytest.raises(ValidationError, match=repr(bad)):
        make_sampler(name, args.pop("pseudo"), args.pop("item_proxy"), **args)
