"""Model-aware consensus on out-of-sample probabilities (issue 11, defect 2), and the min_votes rule (defect 5b).

A model graded on the labels it was trained on looks right everywhere (a 1-NN is, by construction), so its
weight saturates and the consensus follows it. The classifier keeps the chosen candidate's out-of-fold
probabilities for its training rows, the trainer stores them with the run, and the model-aware fit uses them.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer

from core.errors import ValidationError
from core.io.ingest import import_manifest
from core.labels import engine as consensus_engine
from core.models.classifier.faiss_knn import SmoothedKNeighborsClassifier
from core.models.classifier.model import ClassifierConfig, FeatureClassifier
from core.store.project_store import Store
from tests.helpers import open_page


def test_classifier_keeps_the_winners_out_of_fold_probabilities():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5)).astype(np.float32)
    y = np.array(["a", "b", "c"])[rng.integers(0, 3, 60)]  # labels unrelated to X: 1-NN is right by chance only
    # grid="full" keeps the 5 folds; k = 1 votes with 3 smoothed neighbours since issue 12
    clf = FeatureClassifier(ClassifierConfig(families=("knn",), knn_k=(1,), n_folds=5, grid="full")).fit(X, y)
    assert clf.oof_proba_.shape == (60, 3)
    # the same folds by hand: each row predicted by the 1-NN that did not see it
    ref = np.full((60, 3), np.nan)
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y):
        m = make_pipeline(Normalizer(), SmoothedKNeighborsClassifier(3, weights="distance", smoothing=1.0))
        m.fit(X[train], y[train])
        ref[test] = m.predict_proba(X[test])
    np.testing.assert_allclose(clf.oof_proba_, ref, atol=1e-6)
    in_sample = (clf.predict_proba(X).argmax(1) == np.searchsorted(clf.classes_, y)).mean()
    out_of_fold = (clf.oof_proba_.argmax(1) == np.searchsorted(clf.classes_, y)).mean()
    assert in_sample == 1.0 and out_of_fold < 0.6


def _truth(item_id: int) -> str:
    return "pos" if item_id % 2 == 0 else "neg"


@pytest.fixture
def crowd(tmp_path) -> Store:
    """40 text items whose features say nothing about the label; two right annotators on every item."""
    store = Store.create(tmp_path / "p", modality="text", labels=["pos", "neg"], min_votes=2, extractor="tfidf_svd")
    man = tmp_path / "m.csv"
    rng = np.random.default_rng(0)
    words = [f"word{chr(97 + a)}{chr(97 + b)}" for a in range(6) for b in range(6)]
    man.write_text("text\n" + "\n".join(" ".join(rng.choice(words, 6, replace=False)) for _ in range(40)) + "\n")
    import_manifest(store, man)
    ids = sorted(it.id for it in store.items())
    store.annotate_many([(i, _truth(i)) for i in ids], annotator="good")
    store.annotate_many([(i, _truth(i)) for i in ids], annotator="also_good")
    return store


def test_a_one_nn_model_does_not_saturate_the_model_aware_weight(crowd):
    from core.models.training import train_model

    crowd.set_setting("consensus_method", "model_aware")
    rid = train_model(crowd, "classifier", params={"families": ["knn"], "knn_k": [1]}, project_map=False)
    # in-sample, the 1-NN is right on every training item
    ids = np.array(sorted(it.id for it in crowd.items()))
    in_sample = crowd.run_proba(rid, ids, 2)
    assert (in_sample.argmax(1) == np.array([0 if _truth(i) == "pos" else 1 for i in ids])).all()
    out = consensus_engine.refit(crowd, "model_aware")
    params = consensus_engine.settings(crowd)["params"]
    assert params.run_id == rid and params.proba_source == "out_of_fold"
    # out of fold the 1-NN is a coin: neither its estimated accuracy nor its weight saturates
    assert out["summary"]["model_accuracy"] < 0.8
    assert params.model_weight < 0.5  # beta 1 takes the model at face value; in-sample it climbs past 2
    assert out["summary"]["proba_source"] == "out_of_fold"
    # graded in-sample instead (what the fit did before), the 1-NN is right on every item and outweighs the votes
    from core.labels.matrix import label_matrix
    from core.labels.params import fit_params

    lm = label_matrix(crowd)
    _, in_fit = fit_params("model_aware", lm.L, lm.annotators, lm.classes, proba=crowd.run_proba(rid, lm.item_ids, 2))
    assert in_fit.summary["model_accuracy"] > 0.99 and in_fit.model_weight > 1
    # the page says what the product did
    report = consensus_engine.fit_report(crowd)
    assert "out-of-fold" in report["model"] and f"run {rid}" in report["model"]
    assert {r["annotator"] for r in report["annotators"]} == {"good", "also_good"}
    # and the votes still decide: every item gets its (unanimous) label
    rows = {r["item_id"]: r for r in crowd.consensus_rows()}
    assert all(rows[i]["label"] == _truth(i) for i in ids)


def test_a_vote_after_the_fit_uses_the_same_out_of_sample_row(crowd):
    """The per-vote update applies the fitted parameters to the item's out-of-fold row, not its in-sample one."""
    from core.labels.params import item_posterior
    from core.models.training import train_model

    crowd.set_setting("consensus_method", "model_aware")
    train_model(crowd, "classifier", params={"families": ["knn"], "knn_k": [1]}, project_map=False)
    consensus_engine.refit(crowd, "model_aware")
    params = consensus_engine.settings(crowd)["params"]
    item = min(it.id for it in crowd.items())
    proba = consensus_engine.model_proba(crowd, params.run_id, [item], 2)
    crowd.annotate(item, "newcomer", _truth(item))
    row = {r["item_id"]: r for r in crowd.consensus_rows()}[item]
    post = item_posterior(params, {"good": 0 if _truth(item) == "pos" else 1,
                                   "also_good": 0 if _truth(item) == "pos" else 1,
                                   "newcomer": 0 if _truth(item) == "pos" else 1}, proba[0])
    assert row["confidence"] == pytest.approx(float(post.max()), abs=1e-9)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_min_votes_below_one_is_refused_and_nothing_changes(crowd, bad):
    with pytest.raises(ValidationError, match=f"min_votes.*an int >= 1. Got {re.escape(repr(bad))}"):
        crowd.set_setting("min_votes", bad)
    assert consensus_engine.settings(crowd)["min_votes"] == 2


def test_min_votes_zero_from_the_cli_and_the_page_is_refused(crowd, capsys):
    from core.__main__ import main
    from core.views.consensus import consensus_apply

    assert main(["consensus", str(crowd.dir), "--min-votes", "0"]) == 1
    assert "min_votes" in capsys.readouterr().err
    with pytest.raises(ValidationError, match="min_votes"):
        consensus_apply(crowd, method="majority", min_votes=0, min_confidence=0.9, weight_by_confidence=False)
    assert consensus_engine.settings(crowd)["min_votes"] == 2


def test_a_stored_min_votes_of_zero_reads_as_one(crowd):
    """A project saved before the rule (min_votes 0 in its settings) still opens: the rule reads it as 1."""
    import json

    with crowd.transaction() as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'min_votes'", (json.dumps(0),))
    assert consensus_engine.settings(crowd)["min_votes"] == 1


def test_the_labelling_queue_reads_a_model_aware_fit(crowd):
    """'Needs another vote' under model-aware: the fitted posterior on out-of-sample rows, the vote accuracy
    from the fitted confusion matrices."""
    from core.active.queue import vote_stats
    from core.models.training import train_model

    crowd.set_setting("consensus_method", "model_aware")
    train_model(crowd, "classifier", params={"families": ["knn"], "knn_k": [1]}, project_map=False)
    consensus_engine.refit(crowd, "model_aware")
    crowd.set_setting("min_confidence", 1.0)  # nothing is confirmed: every voted item gets a posterior
    ids = np.array(sorted(it.id for it in crowd.items()))
    stats = vote_stats(crowd, ids)
    assert stats.posterior.shape == (40, 2)
    np.testing.assert_allclose(stats.posterior.sum(1), 1.0)
    assert 0.9 < stats.vote_accuracy < 1.0  # two annotators who agree on everything


def test_the_consensus_page_says_what_the_model_was_graded_on(crowd, tmp_path, monkeypatch):
    from pathlib import Path

    from core.models.training import train_model

    crowd.set_setting("consensus_method", "model_aware")
    train_model(crowd, "classifier", params={"families": ["knn"], "knn_k": [1]}, project_map=False)
    consensus_engine.refit(crowd, "model_aware")
    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("LABELTOOL_PROJECTS", str(tmp_path))
    monkeypatch.chdir(root)
    at = open_page("pages/consensus.py", annotator="rev")
    assert any("out-of-fold" in c.value for c in at.caption)
