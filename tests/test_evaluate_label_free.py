"""`python -m core evaluate` on a label-free run (issue 16): a run whose clusters carry no class names gets no
raw accuracy or macro-F1, but its clusters scored after the best one-to-one cluster -> class matching, with the
mapping, ``label_free: true`` and a plain sentence in the terminal; a run trained on labels is scored as before.

The Hungarian scores are checked against a plain-loop reference: every one-to-one matching tried, the best
kept, then accuracy and the mean per-class F1 counted item by item.
"""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.evaluation.metrics import hungarian_scores
from core.store.project_store import Store
from tests.helpers import digits_folder

ROOT = Path(__file__).resolve().parents[1]
DEC_PARAMS = {"dims": [32, 32, 4], "pretrain_epochs": 20, "batch_size": 32, "max_iter": 150,
              "update_interval": 50, "kmeans_n_init": 3}


def _cli_evaluate(project: Path, *extra: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "core", "evaluate", str(project), *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _reference_scores(truth: list, clusters: list) -> tuple[float, float, dict]:
    """Plain loops: try every one-to-one cluster -> class matching, keep the one with most items right."""
    classes, ids = sorted(set(truth)), sorted(set(clusters))
    m = max(len(classes), len(ids))
    best = (-1, None)
    for perm in itertools.permutations(range(m)):  # cluster i -> class perm[i]; indices past the end: unmatched
        mapping = {ids[i]: classes[perm[i]] for i in range(len(ids)) if perm[i] < len(classes)}
        right = sum(1 for t, c in zip(truth, clusters) if mapping.get(c) == t)
        if right > best[0]:
            best = (right, mapping)
    right, mapping = best
    pred = [mapping.get(c) for c in clusters]
    f1s = []
    for k in classes:
        tp = sum(1 for t, p in zip(truth, pred) if t == k and p == k)
        fp = sum(1 for t, p in zip(truth, pred) if t != k and p == k)
        fn = sum(1 for t, p in zip(truth, pred) if t == k and p != k)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return right / len(truth), sum(f1s) / len(f1s), mapping


def test_hungarian_scores_match_the_plain_loop_with_more_clusters_than_classes():
    truth = ["a"] * 5 + ["b"] * 4 + ["c"] * 3
    clusters = [2, 2, 2, 2, 0, 1, 1, 1, 1, 3, 3, 0]  # cluster 0 mixes a and c; 4 clusters for 3 classes
    got = hungarian_scores(truth, clusters)
    acc, f1, mapping = _reference_scores(truth, clusters)
    assert got["hungarian_accuracy"] == pytest.approx(acc) and got["hungarian_macro_f1"] == pytest.approx(f1)
    assert got["mapping"] == mapping == {2: "a", 1: "b", 3: "c"}
    # the unmatched cluster 0 (one a, one c) costs a and c: F1 8/9, 1 and 4/5
    assert acc == pytest.approx(10 / 12) and f1 == pytest.approx((8 / 9 + 1 + 0.8) / 3)


def _project(tmp_path: Path) -> Store:
    from core.io.ingest import import_folder

    store = Store.create(tmp_path / "proj", modality="image", extractor="pixels_pca", min_votes=1,
                         labels=["0", "1", "2"])
    import_folder(store, digits_folder(tmp_path / "src", per_class=12), labels_from_folders="reference",
                  annotator="ann")
    return store


def test_evaluate_label_free_run_reports_hungarian_scores_not_accuracy(tmp_path, torch_one_thread):
    from core.models.training import train_model

    store = _project(tmp_path)  # reference labels only: nothing confirmed
    rid = train_model(store, "dec", params=DEC_PARAMS, device="cpu", project_map=False)
    assert store.run(rid)["n_labelled"] == 0

    ev = json.loads(_cli_evaluate(store.dir, "--json"))
    assert ev["label_free"] is True and ev["run"] == rid
    reference = store.reference_labels()
    rows = store.predictions(rid)
    truth = [reference[r["item_id"]] for r in rows]
    clusters = [int(r["cluster"]) for r in rows]
    acc, f1, mapping = _reference_scores(truth, clusters)
    for subset in ("unlabelled", "all"):  # nothing annotated: both subsets hold every item
        scores = ev[subset]
        assert scores["n"] == 36
        assert "accuracy" not in scores and "macro_f1" not in scores
        assert scores["hungarian_accuracy"] == pytest.approx(acc)
        assert scores["hungarian_macro_f1"] == pytest.approx(f1)
        assert {int(k): v for k, v in scores["mapping"].items()} == mapping
        assert scores["clusters"]["acc"] == pytest.approx(acc) and set(scores["clusters"]) == {"acc", "nmi", "ari"}
    assert acc > 0.8  # digits 0/1/2 separate easily: the matching found is the real one

    text = _cli_evaluate(store.dir)
    assert "label-free" in text and "best one-to-one matching" in text
    assert "label_free: True" in text and '"hungarian_accuracy"' in text


def test_evaluate_labelled_run_still_reports_accuracy(tmp_path, torch_one_thread):
    from core.models.training import train_model

    store = _project(tmp_path)
    pairs = sorted(store.reference_labels().items())[::3]  # a third of the items confirmed, every class
    store.annotate_many(pairs, annotator="alice")
    rid = train_model(store, "classifier", params={"mlp_max_steps": 50}, device="cpu", project_map=False)

    ev = json.loads(_cli_evaluate(store.dir, "--json"))
    assert ev["run"] == rid and ev["label_free"] is False and ev["n_labelled"] == 12
    assert ev["all"]["n"] == 36 and ev["unlabelled"]["n"] == 24
    assert 0.6 < ev["unlabelled"]["accuracy"] <= 1 and "macro_f1" in ev["unlabelled"]
    assert "hungarian_accuracy" not in ev["unlabelled"] and "mapping" not in ev["all"]
    assert "label-free" not in _cli_evaluate(store.dir)
