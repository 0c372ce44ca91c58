"""The store's consensus with the fitted methods: settings, refit, per-vote updates, adjudication, training."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.labels import engine as consensus_engine
from core.labels.params import ConsensusParams, item_consensus, item_posterior
from core.labels.methods import Vote
from core.errors import ValidationError
from core.io.ingest import import_manifest
from core.store.project_store import Store


def _truth(item_id: int) -> str:
    return "pos" if item_id % 2 == 0 else "neg"


def _flip(label: str) -> str:
    return "neg" if label == "pos" else "pos"


@pytest.fixture
def crowd(tmp_path) -> Store:
    """40 text items; 'good' and 'also_good' are right, 'flipper' always gives the other label.

    Items 1-20 have all three votes (majority is right there, which lets the fit learn who is who);
    items 21-40 have only 'good' and 'flipper': a 1-1 tie for majority vote.
    """
    store = Store.create(tmp_path / "p", modality="text", labels=["pos", "neg"], min_votes=2, extractor="tfidf_svd")
    man = tmp_path / "m.csv"
    man.write_text("text\n" + "\n".join(f"sentence number {i}" for i in range(40)) + "\n")
    import_manifest(store, man)
    ids = sorted(it.id for it in store.items())
    store.annotate_many([(i, _truth(i)) for i in ids], annotator="good")
    store.annotate_many([(i, _flip(_truth(i))) for i in ids], annotator="flipper")
    store.annotate_many([(i, _truth(i)) for i in ids[:20]], annotator="also_good")
    return store


def _rows(store: Store) -> dict[int, dict]:
    return {r["item_id"]: dict(r) for r in store.consensus_rows()}


def test_majority_leaves_ties_and_dawid_skene_resolves_them(crowd):
    ids = sorted(it.id for it in crowd.items())
    rows = _rows(crowd)
    assert all(rows[i]["label"] is None and rows[i]["confirmed"] == 0 for i in ids[20:])
    crowd.set_setting("consensus_method", "dawid_skene")
    rows = _rows(crowd)
    assert {rows[i]["method"] for i in ids} == {"dawid_skene"}
    assert all(rows[i]["label"] == _truth(i) for i in ids), "the flipper's votes carry information once learned"
    assert all(rows[i]["confidence"] >= 0.9 and rows[i]["confirmed"] == 1 for i in ids)
    params = consensus_engine.settings(crowd)["params"]
    assert params.method == "dawid_skene"
    assert np.asarray(params.confusions["flipper"])[0, 1] > 0.7  # says "neg" for a true "pos"
    conf_ids, labels = crowd.confirmed_labels()
    assert len(conf_ids) == 40


def test_a_new_vote_counts_at_once_with_the_fitted_parameters(crowd):
    crowd.set_setting("consensus_method", "dawid_skene")
    item = max(it.id for it in crowd.items()) + 0
    before = _rows(crowd)[item]
    # a newcomer the fit has not seen gets the prior confusion matrix: their vote shifts the posterior
    crowd.annotate(item, "newcomer", _flip(_truth(item)))
    after = _rows(crowd)[item]
    assert after["n_votes"] == before["n_votes"] + 1
    assert after["confidence"] < before["confidence"]
    # an adjudication overrides whatever the method says
    crowd.annotate(item, "reviewer", _flip(_truth(item)), kind="adjudication")
    row = _rows(crowd)[item]
    assert row["method"] == "adjudication" and row["label"] == _flip(_truth(item)) and row["confirmed"] == 1


def test_min_confidence_decides_what_is_confirmed(crowd):
    crowd.set_setting("consensus_method", "dawid_skene")
    crowd.set_setting("min_confidence", 1.0)
    assert len(crowd.confirmed_labels()[0]) == 0
    crowd.set_setting("min_confidence", 0.5)
    assert len(crowd.confirmed_labels()[0]) == 40
    with pytest.raises(ValidationError, match="min_confidence.*1.5"):
        crowd.set_setting("min_confidence", 1.5)
    assert consensus_engine.settings(crowd)["min_confidence"] == 0.5  # the bad value stored nothing


def test_unknown_method_is_refused_and_nothing_changes(crowd):
    with pytest.raises(ValidationError, match="consensus_method.*majority.*'crowdvote'"):
        crowd.set_setting("consensus_method", "crowdvote")
    assert consensus_engine.settings(crowd)["method"] == "majority"


def test_model_aware_uses_the_newest_runs_probabilities(crowd, tmp_path):
    ids = np.array(sorted(it.id for it in crowd.items()))
    run_dir = crowd.dir / "runs" / "fake"
    run_dir.mkdir(parents=True)
    # a model that is right and sure on every item
    proba = np.array([[0.95, 0.05] if _truth(i) == "pos" else [0.05, 0.95] for i in ids], dtype=np.float32)
    np.save(run_dir / "item_ids.npy", ids)
    np.save(run_dir / "proba.npy", proba)
    (run_dir / "classes.json").write_text(json.dumps(["pos", "neg"]))
    crowd.publish_run(model="classifier", config={}, metrics={}, artefact_dir=run_dir, classes=["pos", "neg"],
                      item_ids=ids, labels=[_truth(i) for i in ids], confidences=proba.max(1))
    out = consensus_engine.refit(crowd, "model_aware")
    assert out["method"] == "model_aware" and out["n_items"] == 40
    params = consensus_engine.settings(crowd)["params"]
    assert params.run_id == crowd.run()["id"]
    acc = params.summary["annotator_accuracy"]
    assert acc["good"] > 0.9 and acc["flipper"] < 0.1  # the flipper is known (and their votes used) as such
    assert params.proba_source == "predictions"  # a run without train_item_ids: in-sample rows unknown
    rows = _rows(crowd)
    assert all(rows[i]["label"] == _truth(i) for i in ids[20:])


def test_item_posterior_matches_the_dawid_skene_fit():
    from core.labels.methods import dawid_skene

    rng = np.random.default_rng(0)
    L = rng.integers(0, 3, size=(60, 4)).astype(float)
    L[rng.random(L.shape) < 0.3] = np.nan
    L[np.isnan(L).all(1), 0] = 1
    table, conf, prior = dawid_skene(L, n_classes=3, tol=1e-12, max_iter=500)
    params = ConsensusParams("dawid_skene", ["a", "b", "c"], confusions={str(m): conf[m].tolist() for m in range(4)},
                             prior=prior.tolist())
    for r in range(len(L)):
        votes = {str(m): int(L[r, m]) for m in range(4) if not np.isnan(L[r, m])}
        np.testing.assert_allclose(item_posterior(params, votes), table.posterior[r], atol=1e-6)


def test_item_consensus_keeps_majority_without_a_fit():
    votes = [Vote("a", "x", "human"), Vote("b", "x", "human")]
    res = item_consensus(None, votes, min_votes=2, min_confidence=0.9)
    assert res.method == "majority" and res.confirmed


def test_training_records_the_consensus_method_and_confidence_weights(crowd):
    from core.models.training import train_model

    crowd.set_setting("consensus_method", "dawid_skene")
    crowd.set_setting("weight_by_confidence", True)
    rid = train_model(crowd, "classifier", params={"families": ["linear_svm"], "svm_C": [1.0]}, project_map=False)
    m = crowd.run(rid)["metrics"]
    assert m["consensus"]["method"] == "dawid_skene" and m["weight_by_confidence"] is True
    assert m["sample_weighted"] is True and m["n_labelled"] == 40


def test_adjudication_queue_puts_what_the_model_cannot_decide_first(crowd):
    from core.views.consensus import disagreements

    ids = np.array(sorted(it.id for it in crowd.items()))
    tied = ids[20:]  # 1-1 ties: unconfirmed under majority vote
    run_dir = crowd.dir / "runs" / "fake"
    run_dir.mkdir(parents=True)
    proba = np.tile(np.array([[0.99, 0.01]], dtype=np.float32), (len(ids), 1))
    unsure = tied[[3, 7]]
    proba[np.isin(ids, unsure)] = [0.5, 0.5]
    np.save(run_dir / "item_ids.npy", ids)
    np.save(run_dir / "proba.npy", proba)
    crowd.publish_run(model="classifier", config={}, metrics={}, artefact_dir=run_dir, classes=["pos", "neg"],
                      item_ids=ids, labels=["pos"] * len(ids), confidences=proba.max(1))
    rows = disagreements(crowd, limit=5)
    assert [r["item_id"] for r in rows[:2]] == sorted(unsure.tolist())
    assert rows[0]["model_uncertainty"] == pytest.approx(1.0) and rows[2]["model_uncertainty"] < 0.1
    assert all(a["priority"] >= b["priority"] for a, b in zip(rows, rows[1:]))


def test_one_more_vote_effect_by_hand():
    from core.active.strategies import _one_more_vote_effect

    # two classes, next vote right with 0.8. Posterior (0.5, 0.5): a vote for class 0 gives (0.8, 0.2):
    # argmax stays 0 (argmax of a tie is 0), 0.8 < 0.9 does not settle -> no effect; a vote for class 1 gives
    # (0.2, 0.8): the label changes -> effect. P(vote 1) = 0.5. Posterior (0.7, 0.3): vote 0 -> 0.56/0.62 =
    # 0.903 settles (P = 0.62); vote 1 -> 0.14/0.38 = 0.368 changes (P = 0.38): certain effect.
    post = np.array([[0.5, 0.5], [0.7, 0.3], [0.0, 0.0]])
    np.testing.assert_allclose(_one_more_vote_effect(post, 0.9, 0.8), [0.5, 1.0, 0.0])


def test_needs_another_vote_follows_the_fitted_posterior(crowd):
    from core.active.strategies import needs_another_vote
    from core.active.queue import vote_stats

    crowd.set_setting("consensus_method", "dawid_skene")
    crowd.set_setting("min_confidence", 0.999)  # nothing is confirmed: every voted item is a candidate
    ids = np.array(sorted(it.id for it in crowd.items()))
    stats = vote_stats(crowd, ids)
    assert stats.posterior is not None and stats.posterior.shape == (40, 2)
    picked = needs_another_vote(None, batch_size=40, votes=stats)
    # items with two votes are less settled than those with three: one more vote matters more there
    assert set(ids[picked[:20]].tolist()) == set(ids[20:].tolist())


def test_cli_consensus_switches_method(crowd, capsys):
    from core.__main__ import main

    assert main(["consensus", str(crowd.dir), "--method", "dawid_skene", "--min-confidence", "0.8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "dawid_skene" and out["n_confirmed"] == 40
    assert consensus_engine.settings(crowd)["min_confidence"] == 0.8
    assert main(["consensus", str(crowd.dir), "--min-confidence", "7"]) == 1
    assert "min_confidence" in capsys.readouterr().err
