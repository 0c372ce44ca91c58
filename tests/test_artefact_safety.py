"""Artefacts of a received project never run code (issue 15): plain trees, signed pickles, refused payloads.

A "payload" here is a pickle whose ``__reduce__`` runs ``exec`` and writes a marker file; each test first
shows that a plain ``joblib.load`` of it does write the marker, then that the engine never lets it run.
"""
from __future__ import annotations

import json
import stat
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch

from core.errors import StoreError
from core.io import artefacts as A


@pytest.fixture(autouse=True)
def key_file(tmp_path, monkeypatch) -> Path:
    """A key of this test's own, outside the projects (never the user's ~/.config)."""
    path = tmp_path / "config" / "labeltool" / "artefact.key"
    monkeypatch.setenv(A.KEY_ENV, str(path))
    return path


class Payload:
    """Unpickling this runs ``exec``: it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('payload ran')",)


def write_payload(path: Path, marker: Path) -> Path:
    """A joblib pickle at ``path`` that writes ``marker`` when loaded; checked to really do so."""
    joblib.dump(Payload(marker), path)
    probe = path.with_name("probe-" + path.name)
    joblib.dump(Payload(marker.with_name("probe-marker")), probe)
    joblib.load(probe)  # the control: an unguarded load does run it
    assert marker.with_name("probe-marker").read_text() == "payload ran"
    probe.unlink()
    return path


# ------------------------------------------------------------------------------------------------ the key
def test_key_is_made_once_private_and_outside_the_project(key_file):
    key = A.artefact_key()
    assert len(key) == 32 and key_file.read_bytes() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert A.artefact_key() == key  # read back, not remade
    key_file.write_bytes(b"short")
    with pytest.raises(StoreError, match=r"holds 5 bytes, fewer than 32.*LABELTOOL_KEY_FILE"):
        A.artefact_key()


# ----------------------------------------------------------------------------------------- plain trees
def test_a_state_of_arrays_tensors_and_values_round_trips_without_pickle(tmp_path):
    import random

    state = {
        "format": "x-v1", "weights": {"enc.0.weight": np.arange(6, dtype=np.float32).reshape(2, 3)},
        "shift": [np.zeros(3), None], "dims": (32, 4), "classes": np.array(["a", "b"], dtype=object),
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"params": [0], "lr": 0.1}]},
        "half": torch.randn(2, 2).to(torch.bfloat16), "empty": torch.zeros(0, 4), "seed": np.int64(7),
        "python_rng": random.getstate(), "$odd": float("nan"), "raw": b"\x00\x01",
    }
    path = A.save_artefact(tmp_path, "state", state)
    assert path.name == "state.npz" and A.is_plain(state)
    back = A.load_artefact(tmp_path, "state")
    np.testing.assert_array_equal(back["weights"]["enc.0.weight"], state["weights"]["enc.0.weight"])
    assert back["shift"][1] is None and back["dims"] == (32, 4) and back["classes"].tolist() == ["a", "b"]
    assert back["optimizer"]["state"][0]["step"].item() == 3.0 and back["optimizer"]["param_groups"][0]["lr"] == 0.1
    assert back["half"].dtype == torch.bfloat16 and torch.equal(back["half"], state["half"])
    assert back["empty"].shape == (0, 4) and back["seed"] == 7 and back["seed"].dtype == np.int64
    assert back["python_rng"] == state["python_rng"] and np.isnan(back["$odd"]) and back["raw"] == b"\x00\x01"


def test_objects_that_are_not_plain_go_to_a_signed_pickle(tmp_path):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=0.5)
    assert not A.is_plain({"model": model})
    path = A.save_artefact(tmp_path, "model", model)
    assert path.name == "model.joblib" and path.read_bytes().startswith(A.MAGIC)
    assert A.load_artefact(tmp_path, "model").C == 0.5


def test_a_pickle_this_installation_did_not_sign_is_refused_unread(tmp_path, key_file, monkeypatch):
    marker = tmp_path / "marker"
    path = write_payload(tmp_path / "model.joblib", marker)
    with pytest.raises(A.UntrustedArtefact) as err:
        A.load_artefact(tmp_path, "model", remedy="retrain with warm_start=False")
    msg = str(err.value)
    assert str(path) in msg and "did not write it" in msg and "warm_start=False" in msg
    # signed with another installation's key, or changed after signing: refused as well
    A.write_signed_pickle(path, Payload(marker))
    monkeypatch.setenv(A.KEY_ENV, str(tmp_path / "other" / "artefact.key"))
    with pytest.raises(A.UntrustedArtefact, match="signed with another key"):
        A.read_signed_pickle(path)
    monkeypatch.setenv(A.KEY_ENV, str(key_file))
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(A.UntrustedArtefact, match="changed after it was written"):
        A.read_signed_pickle(path)
    assert not marker.exists()


def test_a_pickle_disguised_as_a_plain_tree_is_never_unpickled(tmp_path):
    marker = tmp_path / "marker"
    write_payload(tmp_path / "state.npz", marker)  # a pickle under the .npz name
    with pytest.raises(StoreError, match="state.npz is damaged or not one this tool writes"):
        A.load_artefact(tmp_path, "state")
    np.savez(tmp_path / "state.npz", a0=np.array([Payload(marker)], dtype=object))  # a pickled member
    with pytest.raises(StoreError, match="damaged or not one this tool writes"):
        A.read_tree(tmp_path / "state.npz")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ warm starts
def _ctx(previous_dir: Path):
    from core.models.context import TrainContext

    return TrainContext(X=np.zeros((1, 1), np.float32), item_ids=np.zeros(1, np.int64), labelled=np.zeros(0, np.int64),
                        y=np.zeros(0, object), classes=[], params={}, device="cpu", progress=lambda info: None,
                        should_cancel=lambda: False, previous={"id": 4}, previous_dir=previous_dir)


def test_warm_start_state_is_used_when_genuine_and_refused_when_replaced(tmp_path):
    from core.models.context import load_previous_state

    run = tmp_path / "run"
    A.save_artefact(run, "dec_state", {"weights": {"w": np.ones(2)}, "config": {"dims": [4]}})
    state, why = load_previous_state(_ctx(run), "dec_state", "DEC", True)
    assert why == "from run 4" and state["weights"]["w"].tolist() == [1.0, 1.0]
    marker = tmp_path / "marker"
    (run / "dec_state.npz").unlink()
    write_payload(run / "dec_state.joblib", marker)
    state, why = load_previous_state(_ctx(run), "dec_state", "DEC", True)
    assert state is None and "refused, fresh fit" in why and "did not write it" in why
    write_payload(run / "dec_state.npz", marker)  # also when it takes the plain tree's name
    state, why = load_previous_state(_ctx(run), "dec_state", "DEC", True)
    assert state is None and "unreadable, fresh fit" in why
    assert not marker.exists()


def _digits_project(tmp_path):
    from core.io.ingest import import_folder
    from core.store.project_store import Store
    from tests.helpers import digits_folder

    store = Store.create(tmp_path / "proj", modality="image", extractor="pixels_pca", min_votes=1,
                         labels=["0", "1", "2"])
    import_folder(store, digits_folder(tmp_path / "src", per_class=12), labels_from_folders="initial",
                  annotator="ann")
    return store


DEC_PARAMS = {"dims": [32, 32, 4], "pretrain_epochs": 10, "batch_size": 32, "max_iter": 60, "update_interval": 20,
              "oof_folds": 0}


def test_a_retrain_after_its_state_is_replaced_by_a_payload_starts_fresh_and_never_runs_it(tmp_path):
    from core.models.training import train_model

    torch.set_num_threads(1)
    store = _digits_project(tmp_path)
    rid = train_model(store, "dec", params=DEC_PARAMS, device="cpu", project_map=False)
    run_dir = store.run_dir(store.run(rid))
    assert (run_dir / "dec_state.npz").is_file() and not list(run_dir.glob("*.joblib"))  # no pickle at all
    rid2 = train_model(store, "dec", params=DEC_PARAMS, device="cpu", project_map=False)
    dec2 = store.run(rid2)["metrics"]["dec"]
    assert dec2["warm_start"] and dec2["warm_start_reason"] == f"from run {rid}"  # a genuine state warm-starts
    marker = tmp_path / "marker"
    run2_dir = store.run_dir(store.run(rid2))
    (run2_dir / "dec_state.npz").unlink()
    write_payload(run2_dir / "dec_state.joblib", marker)
    rid3 = train_model(store, "dec", params=DEC_PARAMS, device="cpu", project_map=False)
    dec3 = store.run(rid3)["metrics"]["dec"]
    assert not dec3["warm_start"] and "did not write it" in dec3["warm_start_reason"]
    assert dec3["pretrain_loss"] is not None  # a fresh fit
    assert not marker.exists()


# ------------------------------------------------------------------------------------------- projections
@pytest.fixture
def pca_maps(monkeypatch):
    """The projection cache with a PCA in place of UMAP (picklable, with fit_transform / transform): the cache's
    signing is under test here, not UMAP (tests/test_projection.py fits the real one)."""
    from sklearn.decomposition import PCA

    import core.views.projection as P

    monkeypatch.setattr(P, "_make_umap", lambda n, params, n_epochs, X: PCA(n_components=2, random_state=0))


def _blobs(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(c, 0.3, size=(n // 2 + 1, 6)) for c in (0.0, 3.0)])[:n].astype(np.float32)
    return np.arange(n, dtype=np.int64), X


def test_a_replaced_projection_model_is_refitted_and_never_unpickled(tmp_path, pca_maps):
    from core.views.projection import load_state, project

    ids, X = _blobs(44)
    kw = dict(key="features-test", n_neighbors=5, n_epochs=20, random_state=0)
    project(ids[:40], X[:40], tmp_path, **kw)
    state = load_state(tmp_path, "features-test")
    model_path = tmp_path / "features-test" / state.model_file
    assert model_path.read_bytes().startswith(A.MAGIC)
    # a genuine signed model places new items without a refit
    project(ids[:41], X[:41], tmp_path, **kw)
    assert load_state(tmp_path, "features-test").n_transforms == 1
    # the model replaced by a payload: the map is refitted, the reason recorded, the payload never runs
    marker = tmp_path / "marker"
    write_payload(model_path, marker)
    coords = project(ids[:43], X[:43], tmp_path, **kw)
    after = load_state(tmp_path, "features-test")
    assert coords.shape == (43, 2) and after.n_fits == 2
    assert "cached model refused" in after.extra["last_refit_reason"] and "did not write it" in after.extra[
        "last_refit_reason"]
    assert not model_path.exists() and not marker.exists()  # the refused file is superseded and removed


def test_a_projection_state_naming_files_outside_its_folder_is_ignored(tmp_path, pca_maps):
    from core.views.projection import load_state, project

    ids, X = _blobs(30)
    kw = dict(key="features-test", n_neighbors=5, n_epochs=20, random_state=0)
    project(ids, X, tmp_path, **kw)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    state_path = tmp_path / "features-test" / "state.json"
    meta = json.loads(state_path.read_text())
    meta["model_file"] = "../victim.txt"
    state_path.write_text(json.dumps(meta))
    assert load_state(tmp_path, "features-test") is None
    coords = project(ids, X, tmp_path, **kw)  # refits from scratch; the file outside stays
    assert coords.shape == (30, 2) and victim.read_text() == "keep me"
    # damaged coordinates: refitted too, instead of a raw BadZipFile
    st = load_state(tmp_path, "features-test")
    (tmp_path / "features-test" / st.coords_file).write_bytes(b"PK\x03\x04 broken")
    assert load_state(tmp_path, "features-test") is None
    assert project(ids, X, tmp_path, **kw).shape == (30, 2)


def test_a_retrain_never_runs_a_payload_put_in_the_projections_folder(tmp_path, pca_maps):
    """The finding of issue 15: a joblib file replaced inside projections/ ran when the project was retrained."""
    from core.io.ingest import import_folder
    from core.models.training import train_model
    from tests.helpers import digits_folder

    torch.set_num_threads(1)
    store = _digits_project(tmp_path)
    first = train_model(store, "classifier", device="cpu")
    assert (store.run_dir(store.run(first)) / "model.joblib").read_bytes().startswith(A.MAGIC)  # a signed pickle
    models = list((store.dir / "projections").rglob("model-*.joblib"))
    assert len(models) == 1 and models[0].read_bytes().startswith(A.MAGIC)
    marker = tmp_path / "marker"
    write_payload(models[0], marker)
    import_folder(store, digits_folder(tmp_path / "more", per_class=1, size=15), annotator="ann")  # 3 new items
    rid = train_model(store, "classifier", device="cpu")
    assert not marker.exists()
    coords = [(r["x"], r["y"]) for r in store.predictions(rid)]
    assert len(coords) == 39 and all(x is not None and y is not None for x, y in coords)
    state = json.loads(next((store.dir / "projections").rglob("state.json")).read_text())
    assert "cached model refused" in state["extra"]["last_refit_reason"]
