"""Issue 11, defect 7 (part): pickling a CUDA-trained MLP, audio class weights per block, evaluating a run on
the labels it was trained with."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from core.evaluation.runs import evaluate_run  # noqa: E402
from core.models.classifier.mlp import TorchMLP  # noqa: E402
from core.models.pseudo_label import finetune as ft  # noqa: E402


def _blobs(n=40, d=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.normal(size=(n, d)).astype(np.float32) + 3 * y[:, None]
    return X, y.astype(str)


# ---------------------------------------------------------------------------------------------- MLP pickling
def test_pickling_the_mlp_leaves_the_live_model_where_it_is(monkeypatch):
    """``__getstate__`` used ``model_.to("cpu")``, which moves a module in place: pickling a CUDA-trained MLP
    moved the live model to the CPU while ``device`` still said "cuda". Simulated here without a GPU: every
    module records the device its ``.to`` (in place, as on CUDA) last moved it to."""
    X, y = _blobs()
    clf = TorchMLP(hidden=8, max_steps=10, batch_size=16).fit(X, y)
    before = clf.predict_proba(X)
    live = clf.model_
    params = [(id(p), p.data_ptr()) for p in live.parameters()]
    orig_to = torch.nn.Module.to

    def fake_to(self, *args, **kwargs):  # an in-place move, as Module.to is; remember where to
        out = orig_to(self, *args, **kwargs)
        for m in self.modules():
            m._fake_device = str(args[0]) if args else str(kwargs.get("device"))
        return out

    monkeypatch.setattr(torch.nn.Module, "to", fake_to)
    for m in live.modules():
        m._fake_device = "cuda"  # the live model "is on the GPU"
    clf.device = "cuda"
    blob = pickle.dumps(clf)
    assert clf.model_ is live and clf.device == "cuda"
    assert all(m._fake_device == "cuda" for m in live.modules()), "pickling moved the live model"
    assert [(id(p), p.data_ptr()) for p in live.parameters()] == params
    assert live.training is False
    monkeypatch.setattr(torch.nn.Module, "to", orig_to)
    clone = pickle.loads(blob)
    assert clone.device == "cpu" and clone.model_ is not live
    assert all(p.device.type == "cpu" for p in clone.model_.parameters())
    assert not any(p.data_ptr() == q.data_ptr() for p in clone.model_.parameters() for q in live.parameters())
    clf.device = "cpu"
    np.testing.assert_allclose(clone.predict_proba(X), before, rtol=1e-6)


@pytest.mark.gpu
def test_pickling_a_cuda_mlp_keeps_it_on_cuda():
    X, y = _blobs()
    clf = TorchMLP(hidden=8, max_steps=10, batch_size=16, device="cuda").fit(X, y)
    before = clf.predict_proba(X)
    clone = pickle.loads(pickle.dumps(clf))
    assert all(p.is_cuda for p in clf.model_.parameters()) and clf.device == "cuda"
    np.testing.assert_allclose(clf.predict_proba(X), before, rtol=1e-6)  # still predicts, on the GPU
    assert clone.device == "cpu" and all(p.device.type == "cpu" for p in clone.model_.parameters())
    np.testing.assert_allclose(clone.predict_proba(X), before, atol=1e-5)


# ---------------------------------------------------------------------------------------------- audio class weights
def _block_inputs():
    """8 clips as feature "blocks": class 0 clips have 3 blocks each, class 1 clips one each."""
    owner = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 5, 6, 7])
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(len(owner), 3)).astype(np.float32))
    data = ft.Inputs(x, torch.as_tensor(owner), 8, "features")
    return data, np.arange(8), np.array([0, 0, 0, 0, 1, 1, 1, 1])


def test_class_weights_balance_the_blocks_the_loss_sees(monkeypatch):
    """The loss is a mean over training rows (a clip's 1-second blocks); the seed paper weighs the weighted
    cross-entropy "between each sample and the corresponding labels" with rarer classes weighing more, its
    samples being the spectrogram images. Class weights counted over clips left the class with longer clips
    weighing 3x more in the loss here."""
    data, items, y = _block_inputs()
    seen = {}

    def spy(model, optimizer, data_, rows, targets, *, class_weight, **kw):
        seen["cw"], seen["targets"] = class_weight.clone(), targets.clone()
        return 0.0

    monkeypatch.setattr(ft, "train_one_epoch", spy)
    net = ft.build_head(3, 2, hidden=0)
    ft.fit_network(net, data, items, y, val_items=np.zeros(0, np.int64), val_y=np.zeros(0, np.int64), n_classes=2,
                   max_epochs=1, transform=ft.BatchTransform("features"), amp="none")
    cw, t = seen["cw"].numpy(), seen["targets"].numpy()
    assert np.bincount(t).tolist() == [12, 4]
    per_class = np.array([cw[t[t == c]].sum() for c in (0, 1)])
    np.testing.assert_allclose(per_class[0], per_class[1], rtol=1e-6)  # each class weighs the same in total
    np.testing.assert_allclose(cw, ft.class_weights(t, 2), rtol=1e-6)


# ---------------------------------------------------------------------------------------------- evaluate_run
def test_evaluate_run_scores_the_items_unlabelled_at_training_time(tmp_path):
    """Labels added or retracted after a run must not change which of its predictions count as held out."""
    from core.io.ingest import import_folder
    from core.models.training import train_model
    from core.store.project_store import Store
    from tests.helpers import digits_folder

    store = Store.create(tmp_path / "proj", modality="image", extractor="pixels_pca", min_votes=1)
    import_folder(store, digits_folder(tmp_path / "src", per_class=10), labels_from_folders="reference")
    ref = store.reference_labels()
    ids = sorted(ref)
    first = ids[::3]  # a third of the items labelled before training
    store.annotate_many([(i, ref[i]) for i in first], annotator="alice")
    rid = train_model(store, "classifier", device="cpu", project_map=False,
                      params={"families": ["linear_svm"], "svm_C": [1.0]})
    published = store.run(rid)["metrics"]["evaluation"]
    ev = evaluate_run(store, rid)
    assert ev["unlabelled"]["n"] == len(ids) - len(first) == published["unlabelled"]["n"]
    # later: many more labels, and one of the training labels retracted
    later = [i for i in ids if i not in set(first)][: len(ids) // 2]
    store.annotate_many([(i, ref[i]) for i in later], annotator="bob")
    vote = next(v for v in store.active_votes([first[0]]))
    store.retract([vote["id"]], by="alice")
    assert store.annotated_item_ids() != set(first)
    ev2 = evaluate_run(store, rid)
    assert ev2["unlabelled"] == ev["unlabelled"] == published["unlabelled"]
    assert ev2["annotated_source"] == "training"
    # a run written before the record existed falls back to today's annotations, and says so
    (store.run_dir(store.run(rid)) / "annotated_item_ids.npy").unlink()
    ev3 = evaluate_run(store, rid)
    assert ev3["annotated_source"] == "current" and ev3["unlabelled"]["n"] == len(ids) - len(store.annotated_item_ids())
