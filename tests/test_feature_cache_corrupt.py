"""A damaged feature cache (issue 15) is detected, named, and its damaged part recomputed.

Each kind of damage is made on a real cache; readers then get a FeatureError naming the folder (not a raw
ValueError / EOFError / BadZipFile), and the next computation repairs the folder and recomputes exactly what
was lost: the rows of a damaged chunk, or every row when a stateful extractor's state is gone.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

import core.features as F
from core.errors import FeatureError
from core.features.base import Extractor, ItemRef


@pytest.fixture(autouse=True)
def artefact_key(tmp_path, monkeypatch):
    """The retrain signs its classifier with a key of this test's own, not the user's ~/.config one."""
    monkeypatch.setenv("LABELTOOL_KEY_FILE", str(tmp_path / "keys" / "artefact.key"))


class Rows(Extractor):
    """A stateless extractor whose row of item i is [i, 2i, 3i]; it records the items it computes."""

    name = "rows"
    modality = "text"
    dim = 3
    cpu_batch_size = 4

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.computed: list[int] = []

    def num_workers(self, device: str) -> int:
        return 0

    def load(self, item: ItemRef) -> int:
        self.computed.append(item.id)
        return item.id

    def embed(self, batch, *, device):
        return np.array([[i, 2 * i, 3 * i] for i in batch], dtype=np.float32)


def refs(ids) -> list[ItemRef]:
    return [ItemRef(int(i), text=f"t{i}") for i in ids]


def expected(ids) -> np.ndarray:
    ids = np.asarray(ids, np.float32)
    return np.stack([ids, 2 * ids, 3 * ids], 1)


@pytest.fixture
def two_chunks(tmp_path):
    """A cache of items 1..10 in two chunks: 1..6, then 7..10 (the newest)."""
    ext = Rows()
    F.compute_features(refs(range(1, 7)), ext, tmp_path)
    F.compute_features(refs(range(1, 11)), ext, tmp_path)
    cache = F.FeatureCache(tmp_path, ext)
    names = cache._chunk_names()
    assert len(names) == 2 and ext.computed == list(range(1, 11))
    ext.computed.clear()
    return ext, cache, cache.dir / names[-1]


def _truncate_X(chunk: Path) -> None:
    p = Path(f"{chunk}.X.npy")
    p.write_bytes(p.read_bytes()[:100])


def _empty_ids_file(chunk: Path) -> None:
    Path(f"{chunk}.ids.npy").write_bytes(b"")


def _empty_ids_array(chunk: Path) -> None:
    np.save(f"{chunk}.ids.npy", np.zeros(0, np.int64))


def _lengths_differ(chunk: Path) -> None:
    np.save(f"{chunk}.ids.npy", np.array([7, 8, 9], np.int64))  # 3 ids for 4 rows


def _other_width(chunk: Path) -> None:
    np.save(f"{chunk}.X.npy", np.ones((4, 5), np.float32))


def _X_missing(chunk: Path) -> None:
    Path(f"{chunk}.X.npy").unlink()


def _not_numpy(chunk: Path) -> None:
    Path(f"{chunk}.X.npy").write_bytes(b"not a numpy file at all")


DAMAGE = {"truncated X.npy": (_truncate_X, "X.npy: unreadable"),
          "empty ids.npy file": (_empty_ids_file, "ids.npy: unreadable (EOFError"),
          "ids.npy of no ids": (_empty_ids_array, "ids.npy: is empty"),
          "ids and X of different lengths": (_lengths_differ, "holds 4 rows for the 3 ids"),
          "a chunk of another width": (_other_width, "5 columns where the cache has 3"),
          "X.npy missing": (_X_missing, "X.npy: missing"),
          "X.npy not a numpy file": (_not_numpy, "X.npy: unreadable")}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_chunk_is_named_and_only_its_rows_are_recomputed(two_chunks, kind, caplog):
    ext, cache, chunk = two_chunks
    damage, reason = DAMAGE[kind]
    damage(chunk)
    assert any(reason in p for p in cache.check()), cache.check()
    with pytest.raises(FeatureError) as err:  # a reader: named, not a raw numpy error
        cache.get(np.arange(1, 11))
    assert str(cache.dir) in str(err.value) and chunk.name in str(err.value) and "recomputes" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="core.features.cache"):
        ids, X = F.compute_features(refs(range(1, 11)), ext, cache.root)
    assert ext.computed == [7, 8, 9, 10]  # the damaged chunk's rows, nothing else
    np.testing.assert_array_equal(ids, np.arange(1, 11))
    np.testing.assert_array_equal(X, expected(range(1, 11)))
    assert cache.check() == [] and not Path(f"{chunk}.ids.npy").exists()  # the damaged chunk was replaced
    assert any(str(cache.dir) in r.getMessage() and "repaired" in r.getMessage() for r in caplog.records)


def test_a_broken_meta_json_is_logged_and_rewritten(two_chunks, caplog):
    ext, cache, _ = two_chunks
    (cache.dir / "meta.json").write_text('{"name": "rows", "dim": 3')  # cut short
    with caplog.at_level(logging.WARNING, logger="core.features.cache"):
        assert cache.read_meta() == {}
        ids, X = cache.get()  # rows do not need the meta
    assert len(ids) == 10 and any(str(cache.dir) in r.getMessage() for r in caplog.records)
    problems = cache.check()
    assert len(problems) == 1 and problems[0].startswith("meta.json: unreadable (JSONDecodeError")
    F.compute_features(refs(range(1, 11)), ext, cache.root)
    meta = json.loads((cache.dir / "meta.json").read_text())
    assert meta["dim"] == 3 and meta["name"] == "rows" and "repaired_at" in meta and ext.computed == []
    (cache.dir / "meta.json").write_text('{"dim": "three"}')
    assert cache.check() == ["meta.json: 'dim' is 'three', not an int >= 0"]


# ------------------------------------------------------------------------------------- stateful extractor
@pytest.fixture
def digit_pngs(tmp_path) -> list[ItemRef]:
    from tests.helpers import digits_folder

    root = digits_folder(tmp_path / "digits", per_class=8, size=8)
    return [ItemRef(100 + i, p) for i, p in enumerate(sorted(root.rglob("*.png")))]


def _break_zip(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:40])


def _flip_a_byte(path: Path) -> None:  # a bad CRC, seen only when an array is read
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 3] ^= 0xFF
    path.write_bytes(bytes(blob))


def _wrong_arrays(path: Path) -> None:
    np.savez(path, something=np.ones(3))


@pytest.mark.parametrize("damage", [_break_zip, _flip_a_byte, _wrong_arrays],
                         ids=["truncated", "bad CRC", "wrong keys"])
def test_a_broken_state_refits_the_extractor_and_recomputes_its_rows(tmp_path, digit_pngs, damage, caplog):
    opts = {"n_components": 4, "grayscale": True, "size": 8}
    ids1, X1 = F.compute_features(digit_pngs, "pixels_pca", tmp_path / "feats", options=opts)
    ext = F.get_extractor("pixels_pca", **opts)
    cache = F.FeatureCache(tmp_path / "feats", ext)
    damage(cache.dir / "state.npz")
    with pytest.raises(FeatureError, match=r"is damaged \(state.npz: "):
        cache.load_state()
    assert any(p.startswith("state.npz") for p in cache.check())
    with caplog.at_level(logging.WARNING, logger="core.features.cache"):
        ids2, X2 = F.compute_features(digit_pngs, "pixels_pca", tmp_path / "feats", options=opts)
    np.testing.assert_array_equal(ids2, ids1)
    np.testing.assert_allclose(np.abs(X2), np.abs(X1), atol=1e-4)  # the same data refits the same basis
    assert cache.check() == [] and set(cache.load_state()) == {"mean", "components"}
    assert any("refitted" in r.getMessage() and str(cache.dir) in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------ the retrain
def test_a_retrain_succeeds_on_a_damaged_project_cache_and_rewrites_it(tmp_path):
    from core.io.ingest import import_folder
    from core.models.training import ensure_features, train_model
    from core.store.project_store import Store
    from tests.helpers import digits_folder

    store = Store.create(tmp_path / "proj", modality="image", extractor="pixels_pca", min_votes=1,
                         labels=["0", "1", "2"])
    import_folder(store, digits_folder(tmp_path / "src", per_class=8), labels_from_folders="initial", annotator="ann")
    first = ensure_features(store)
    chunk = next((store.dir / "features").rglob("chunk-*.X.npy"))
    chunk.write_bytes(chunk.read_bytes()[:64])  # truncated
    rid = train_model(store, "classifier", device="cpu", project_map=False)
    assert store.run(rid)["metrics"]["n_items"] == 24
    again = ensure_features(store)  # the cache was rewritten: read back as it was first computed
    np.testing.assert_array_equal(again.ids, first.ids)
    np.testing.assert_allclose(again.X, first.X, atol=1e-6)
