"""The labelling queue (core.active.queue): near-duplicate suppression that cannot run says so."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from core.io.demo import create_demo


@pytest.fixture(scope="module")
def featured(tmp_path_factory):
    """A 60-digit demo project with its pixels_pca features cached."""
    from core.models.training import ensure_features

    store, _ = create_demo(tmp_path_factory.mktemp("queue") / "demo", n=60, queue_features=False)
    ensure_features(store)
    return store


def _chunk_files(store):
    return sorted((store.dir / "features").rglob("chunk-*.X.npy"))


def test_queue_uses_the_cached_features(featured):
    from core.active.queue import next_items

    batch = next_items(featured, strategy="random", n=5, seed=0)
    assert len(batch) == 5 and batch.dedup is True and batch.notes == []


def test_unreadable_feature_cache_is_logged_and_reported(featured, caplog):
    from core.active.queue import next_items

    path = _chunk_files(featured)[0]
    good = path.read_bytes()
    try:
        path.write_bytes(b"not a numpy file")
        with caplog.at_level(logging.WARNING):
            batch = next_items(featured, strategy="random", n=5, seed=0)
    finally:
        path.write_bytes(good)
    assert len(batch) == 5  # the queue still works, without the suppression ...
    assert batch.dedup is False
    assert any("near-duplicate suppression is off" in n and "could not be read" in n for n in batch.notes)
    assert any(r.levelno == logging.WARNING and "feature cache" in r.getMessage() for r in caplog.records)


def test_missing_features_are_reported_not_logged_as_errors(tmp_path, caplog):
    from core.active.queue import next_items

    store, _ = create_demo(tmp_path / "demo", n=20, queue_features=False)
    with caplog.at_level(logging.WARNING):
        batch = next_items(store, strategy="least_confidence", n=3)
    assert batch.dedup is False and any("no 'pixels_pca' features are cached yet" in n for n in batch.notes)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_bug_in_the_feature_reader_is_not_swallowed(featured, monkeypatch):
    import core.features as features
    from core.active.queue import next_items

    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not a missing cache")

    monkeypatch.setattr(features, "cached_features", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        next_items(featured, strategy="random", n=3)


def test_partial_features_are_reported(featured, monkeypatch):
    import core.features as features
    from core.active.queue import next_items

    real = features.cached_features

    def half(*args, item_ids=None, **kwargs):
        ids, X = real(*args, item_ids=item_ids, **kwargs)
        return ids[: len(ids) // 2], X[: len(ids) // 2]

    monkeypatch.setattr(features, "cached_features", half)
    batch = next_items(featured, strategy="random", n=3, seed=1)
    assert batch.dedup is False and any("30 of 60" in n for n in batch.notes)
    assert np.unique([r["item_id"] for r in batch]).size == 3
