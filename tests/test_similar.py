"""The "more like this" back end (core.views.similar): faiss neighbours on cached features and one bulk action."""
from __future__ import annotations

import numpy as np
import pytest

from core.errors import ValidationError
from core.io.demo import create_demo
from core.views.similar import item_index, label_similar, more_like_this


@pytest.fixture(scope="module")
def featured(tmp_path_factory):
    from core.models.training import ensure_features

    store, _ = create_demo(tmp_path_factory.mktemp("similar") / "demo", n=60, queue_features=False)
    ensure_features(store)
    return store


def test_neighbours_are_the_brute_force_cosine_neighbours(featured):
    from core.features import cached_features

    ids, X = cached_features("pixels_pca", featured.dir / "features")
    order = np.argsort(ids)
    ids, X = ids[order], X[order].astype(np.float64)
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    index = item_index(featured)
    q = int(ids[7])
    sims = U @ U[7]
    sims[7] = -np.inf
    expected = ids[np.argsort(-sims, kind="stable")[:5]]
    df = more_like_this(featured, index, q, k=5, annotator="ann")
    assert df["item_id"].tolist() == expected.tolist()
    assert q not in df["item_id"].tolist()
    np.testing.assert_allclose(df["similarity"], np.sort(sims)[::-1][:5], atol=1e-5)
    assert set(df.columns) == {"item_id", "similarity", "consensus", "confirmed", "mine"}


def test_label_similar_is_one_undoable_bulk_action(featured):
    index = item_index(featured)
    first = int(featured.item_ids()[0])
    chosen = more_like_this(featured, index, first, k=4)["item_id"].tolist()
    featured.annotate(chosen[0], "erin", "3")  # an item she already voted on is left alone
    done = label_similar(featured, chosen, "7", annotator="erin")
    assert done == sorted(chosen[1:])
    votes = [v for v in featured.active_votes(chosen) if v["annotator"] == "erin" and v["kind"] == "bulk"]
    assert sorted(v["item_id"] for v in votes) == sorted(chosen[1:]) and {v["label"] for v in votes} == {"7"}
    df = more_like_this(featured, index, first, k=4, annotator="erin")
    assert set(df["mine"]) == {"3", "7"}
    assert sorted(featured.undo_last("erin")) == sorted(chosen[1:])  # the whole batch at once
    assert [v["label"] for v in featured.active_votes(chosen) if v["annotator"] == "erin"] == ["3"]
    featured.undo_last("erin")


def test_bad_input_and_no_features(featured, tmp_path):
    index = item_index(featured)
    with pytest.raises(ValidationError, match="'k'"):
        more_like_this(featured, index, 1, k=0)
    with pytest.raises(ValidationError, match="'label'"):
        label_similar(featured, [1], "cat", annotator="x")
    bare, _ = create_demo(tmp_path / "bare", n=10, queue_features=False)
    empty = item_index(bare)
    assert empty.index is None and "no 'pixels_pca' features are cached yet" in empty.problem
    assert more_like_this(bare, empty, int(bare.item_ids()[0])).empty
