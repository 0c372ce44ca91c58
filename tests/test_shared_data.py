"""End-to-end runs on the real shared data sets (skipped where ../shared/datasets is absent).

CIFAR-10: folders as reference labels, EfficientNet-Lite0 features, labels for part of the items as one
annotator, the classifier, evaluation against the reference. FSDD: spoken digits imported from a manifest
with the speaker as group, log-mel features, trained on some speakers and scored on the others.
"""
from __future__ import annotations

import csv
import shutil

import pytest

from bench.make_label_csv import label_rows
from core.evaluation.runs import evaluate_run
from core.io.ingest import import_folder, import_manifest
from core.store.project_store import Store
from core.models.training import train_model

pytestmark = [pytest.mark.shared, pytest.mark.slow]


def test_cifar_subset_flow(tmp_path, shared_datasets):
    src = tmp_path / "cifar"
    for cls_dir in sorted((shared_datasets / "cifar10_half").iterdir()):
        if cls_dir.is_dir():
            (src / cls_dir.name).mkdir(parents=True)
            for p in sorted(cls_dir.glob("*.jpg"))[:40]:
                shutil.copy(p, src / cls_dir.name / p.name)
    store = Store.create(tmp_path / "proj", modality="image", min_votes=1)
    report = import_folder(store, src, labels_from_folders="reference")
    assert report.added == 400 and report.skipped == 0
    rows = label_rows(store, 0.25, "alice")
    by_ann = [(int(i), lab) for i, _, lab in rows]
    store.annotate_many(by_ann, annotator="alice")
    run_id = train_model(store, "classifier", device="cpu", params={"mlp_max_steps": 200})
    ev = evaluate_run(store, run_id)
    assert ev["unlabelled"]["n"] == 300
    # 10 classes from 10 labels each on ImageNet features: far above chance (0.1); a broken path scores ~0.1
    assert ev["unlabelled"]["accuracy"] > 0.45, ev


def test_fsdd_speaker_independent(tmp_path, shared_datasets):
    rec = shared_datasets / "fsdd" / "recordings"
    files = sorted(rec.glob("*.wav"))
    chosen = [f for f in files if int(f.stem.split("_")[2]) < 8]  # 8 takes of each digit and speaker
    man = tmp_path / "fsdd.csv"
    with open(man, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "group", "reference_label"])
        for p in chosen:
            digit, speaker, _ = p.stem.split("_")
            w.writerow([p.name, speaker, digit])
    store = Store.create(tmp_path / "proj", modality="audio", min_votes=1)
    report = import_manifest(store, man, media_root=rec)
    assert report.added == len(chosen) and report.skipped == 0
    speakers = sorted({it.group for it in store.items()})
    train_speakers = set(speakers[: len(speakers) - 2])
    ref = store.reference_labels()
    pairs = [(it.id, ref[it.id]) for it in store.items() if it.group in train_speakers]
    store.annotate_many(pairs, annotator="alice")
    run_id = train_model(store, "classifier", device="cpu", params={"mlp_max_steps": 200})
    ev = evaluate_run(store, run_id)
    held_out = ev["unlabelled"]
    assert held_out["n"] == sum(1 for it in store.items() if it.group not in train_speakers)
    assert held_out["accuracy"] > 0.3, ev  # unseen speakers, summary log-mel features; chance is 0.1
