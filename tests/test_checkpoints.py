"""Resumable checkpoints of :func:`core.models.pseudo_label.finetune.fit_network` (issue 11).

A checkpoint holds the weights, the optimiser, the plateau schedule, the best epoch's weights, the history
and every random state of one and the same epoch; training k epochs, stopping, and resuming to N must give
the weights of an uninterrupted N-epoch run. The negative controls show the comparison would catch a
checkpoint that lost its optimiser, schedule or random state.
"""
from __future__ import annotations

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from core.errors import JobCancelled, ValidationError  # noqa: E402
from core.models.pseudo_label import finetune as ft  # noqa: E402

N_EPOCHS, K_EPOCHS = 7, 3


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _data(kind: str):
    """Two overlapping classes, 32 items: features (32, 6) or 16 px images (32, 3, 16, 16) uint8."""
    g = torch.Generator().manual_seed(0)
    y = np.arange(32) % 2
    if kind == "features":
        x = torch.randn(32, 6, generator=g) + 0.8 * torch.as_tensor(y, dtype=torch.float32)[:, None]
    else:
        x = torch.randint(0, 120, (32, 3, 16, 16), generator=g, dtype=torch.uint8)
        for i in np.flatnonzero(y):
            x[i, 0, 4:10, 4:10] = 200
    return ft.Inputs(x, torch.arange(32), 32, kind), y


def _net(kind: str, seed: int):
    torch.manual_seed(seed)
    return ft.build_head(6, 2, hidden=16, dropout=0.3) if kind == "features" else ft.build_network("tiny_cnn", 2)


def _fit(kind, net, data, y, transform, **kw):
    train, val = np.arange(24), np.arange(24, 32)
    return ft.fit_network(net, data, train, y[train], val_items=val, val_y=y[val], n_classes=2, lr=2e-2,
                          batch_size=8, min_steps=2, lr_patience=1, patience=50, max_epochs=N_EPOCHS,
                          transform=transform, amp="none", seed=5, **kw)


def _transform(kind):
    return ft.BatchTransform(kind, augment=True, flip=True, pad_fraction=0.125, seed=3)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _losses(history):
    return [(h["epoch"], h["loss"], h["val_loss"], h["lr"]) for h in history]


def _interrupted(kind, tmp_path):
    """k epochs written to a checkpoint, then a cancellation (the job stops, as if the worker died)."""
    data, y = _data(kind)
    path = tmp_path / "fit.pt"
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > K_EPOCHS

    with pytest.raises(JobCancelled):
        _fit(kind, _net(kind, 0), data, y, _transform(kind), checkpoint_path=path, should_cancel=cancel)
    assert not path.with_name(path.name + ".tmp").exists()
    return data, y, ft.load_checkpoint(path)


def _resume(kind, data, y, ckpt):
    torch.manual_seed(1234)  # another process: other global random states, other initial weights
    np.random.seed(99)
    random.seed(7)
    net = _net(kind, 77)
    return _fit(kind, net, data, y, _transform(kind), resume=ckpt)


@pytest.mark.parametrize("kind", ["features", "image"])
def test_resume_matches_an_uninterrupted_run(kind, tmp_path):
    data, y = _data(kind)
    full = _fit(kind, _net(kind, 0), data, y, _transform(kind))
    assert full.epochs == N_EPOCHS
    _, _, ck = _interrupted(kind, tmp_path)
    # one epoch's state: k epochs done, and the optimiser has taken exactly k epochs' steps
    assert ck["epoch"] == K_EPOCHS and len(ck["history"]) == K_EPOCHS and ck["scheduler"]["epoch"] == K_EPOCHS - 1
    steps = {int(s["step"]) for s in ck["optimizer"]["state"].values()}
    assert steps == {K_EPOCHS * 3}  # 24 rows / batch 8 = 3 steps per pass (>= min_steps)
    assert set(ck["rng"]) >= {"torch", "numpy", "python", "generators"}
    resumed = _resume(kind, data, y, ck)
    assert _losses(resumed.history) == _losses(full.history)
    assert resumed.best_epoch == full.best_epoch and resumed.final_lr == full.final_lr
    assert _same(resumed.model.state_dict(), full.model.state_dict())  # best epoch's weights, restored
    assert _same(resumed.checkpoint["model"], full.checkpoint["model"])  # last epoch's weights
    assert resumed.checkpoint["epoch"] == full.checkpoint["epoch"] == N_EPOCHS


def _fresh_optimizer(kind, ck):
    net = _net(kind, 0)
    return torch.optim.Adam(net.parameters(), lr=ck["optimizer"]["param_groups"][0]["lr"]).state_dict()


LOSSES = {
    "optimizer": lambda kind, ck: {**ck, "optimizer": _fresh_optimizer(kind, ck)},
    "scheduler": lambda kind, ck: {**ck, "scheduler": ft.PlateauSchedule(2e-2, lr_patience=1, patience=50).state_dict()},
    "rng": lambda kind, ck: {**ck, "rng": {**ck["rng"], "generators": {k: torch.Generator().manual_seed(0).get_state()
                                                                        for k in ck["rng"]["generators"]}}},
    "torch_rng": lambda kind, ck: {**ck, "rng": {**ck["rng"], "torch": torch.Generator().manual_seed(0).get_state()}},
}


@pytest.mark.parametrize("lost", sorted(LOSSES))
def test_a_checkpoint_missing_a_state_would_not_match(lost, tmp_path):
    """Negative control: the comparison above fails when the checkpoint loses any part of its state."""
    kind = "image" if lost == "rng" else "features"  # the image run draws its augmentation from a generator;
    # the features run's dropout draws from the global torch generator
    data, y = _data(kind)
    full = _fit(kind, _net(kind, 0), data, y, _transform(kind))
    _, _, ck = _interrupted(kind, tmp_path)
    resumed = _resume(kind, data, y, LOSSES[lost](kind, ck))
    assert not (_same(resumed.checkpoint["model"], full.checkpoint["model"])
                and _losses(resumed.history) == _losses(full.history))


def test_resume_refuses_a_checkpoint_of_another_training(tmp_path):
    data, y, ck = _interrupted("features", tmp_path)
    train, val = np.arange(24), np.arange(24, 32)
    with pytest.raises(ValidationError, match="batch_size"):
        ft.fit_network(_net("features", 0), data, train, y[train], val_items=val, val_y=y[val], n_classes=2,
                       batch_size=4, transform=_transform("features"), amp="none", resume=ck)
    with pytest.raises(ValidationError, match="resume"):
        ft.fit_network(_net("features", 0), data, train, y[train], val_items=val, val_y=y[val], n_classes=2,
                       transform=_transform("features"), amp="none", resume={"model": ck["model"]})
    with pytest.raises(ValidationError, match="No checkpoint"):
        ft.load_checkpoint(tmp_path / "missing.pt")


def test_pseudo_labeler_artefact_holds_a_resumable_last_round(tmp_path):
    from core.models.pseudo_label.model import PseudoLabelConfig, PseudoLabeler

    data, y = _data("features")
    cfg = PseudoLabelConfig(variant="head", rounds=1, max_epochs=4, head_hidden=8, batch_size=8)
    est = PseudoLabeler(cfg).fit(data, np.arange(20), y[:20])
    ck = est.checkpoint_
    assert _same(ck["model"], {k: v.cpu() for k, v in est.model_.state_dict().items()})  # served: best epoch
    assert ck["epoch"] == est.rounds_[-1]["best_epoch"]
    res = ck["resume"]
    assert res["epoch"] == est.rounds_[-1]["epochs"] and res["optimizer"]["state"]
    ft.save_checkpoint(tmp_path / "ck.pt", ck)
    back = ft.load_checkpoint(tmp_path / "ck.pt")
    assert _same(back["resume"]["model"], res["model"]) and back["classes"] == ck["classes"]


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["features", "image"])
def test_resume_on_cuda_matches(kind, tmp_path):
    """On CUDA dropout and augmentation draw from CUDA generators; the checkpoint carries those too.
    (Scatter-adds on CUDA are not bit-reproducible, so the weights are compared within a tolerance.)"""
    data, y = _data(kind)
    data = data.to("cuda")

    def fit(net, **kw):
        return _fit(kind, net.to("cuda"), data, y, _transform(kind), **kw)

    full = fit(_net(kind, 0))
    calls = []
    with pytest.raises(JobCancelled):
        fit(_net(kind, 0), checkpoint_path=tmp_path / "c.pt", should_cancel=lambda: calls.append(1) or len(calls) > K_EPOCHS)
    ck = ft.load_checkpoint(tmp_path / "c.pt")
    assert ck["rng"]["cuda"] and any(k.startswith("transform:cuda") for k in ck["rng"]["generators"]) == (kind == "image")
    torch.manual_seed(1234)
    torch.cuda.manual_seed_all(1234)
    resumed = fit(_net(kind, 77), resume=ck)
    assert resumed.best_epoch == full.best_epoch
    for k, v in full.checkpoint["model"].items():
        torch.testing.assert_close(resumed.checkpoint["model"][k], v, atol=1e-5, rtol=1e-4)
