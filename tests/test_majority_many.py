"""The vectorised majority vote of bulk writes equals the per-item rule, item by item (the reference loop)."""
from __future__ import annotations

import numpy as np
import pytest

from core.labels.methods import Vote, majority, majority_many


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("min_votes", [1, 2, 3])
def test_majority_many_equals_the_per_item_rule(seed, min_votes):
    rng = np.random.default_rng(seed)
    n = 400
    items = rng.integers(0, 60, n)
    annotators = rng.choice(["a", "b", "c", "d"], n)
    labels = rng.choice(["x", "y", "z"], n)
    kinds = rng.choice(["human", "bulk", "adjudication"], n, p=[0.6, 0.3, 0.1])
    got = majority_many(items, annotators, labels, kinds, min_votes=min_votes)
    assert list(got["item_id"]) == sorted(set(items.tolist()))
    for k, item in enumerate(got["item_id"]):
        rows = np.flatnonzero(items == item)  # oldest first, as the store gives them
        ref = majority([Vote(annotators[r], labels[r], kinds[r]) for r in rows], min_votes=min_votes)
        assert got["label"][k] == ref.label and got["method"][k] == ref.method
        assert (got["support"][k], got["n_votes"][k], bool(got["confirmed"][k])) == (ref.support, ref.n_votes,
                                                                                    ref.confirmed)
        for key, value in (("agreement", ref.agreement), ("confidence", ref.confidence)):
            assert (np.isnan(got[key][k]) and value is None) or got[key][k] == pytest.approx(value)


def test_no_votes_gives_empty_arrays():
    got = majority_many(np.empty(0, np.int64), np.empty(0, object), np.empty(0, object), np.empty(0, object))
    assert len(got["item_id"]) == 0 and len(got["confirmed"]) == 0
