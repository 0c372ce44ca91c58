"""AppTest of the Embeddings page: its colours follow undo and consensus rewrites (no stale cached map)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.io.demo import create_demo
from core.labels import engine as consensus_engine
from tests.helpers import open_page

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def mapped(tmp_path, monkeypatch):
    """A 60-digit demo project with one published run that has map coordinates."""
    store, _ = create_demo(tmp_path / "projects" / "demo", n=60, queue_features=False)
    store.origin = "cli"  # the tests' own set-up writes, like the CLI's, are not role-checked; the page's are
    ids = store.item_ids()
    run_dir = store.dir / "runs" / "fake"
    run_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    store.publish_run(model="classifier", config={}, metrics={}, artefact_dir=run_dir, classes=store.labels(),
                      item_ids=ids, labels=["0"] * len(ids), confidences=np.full(len(ids), 0.5),
                      clusters=np.zeros(len(ids), int), coords=rng.normal(size=(len(ids), 2)))
    monkeypatch.setenv("LABELTOOL_PROJECTS", str(tmp_path / "projects"))
    monkeypatch.chdir(ROOT)
    return store


def _colours(at) -> set[str]:
    """The legend entries (one trace per colour) of the map."""
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    return {t.get("name") for t in spec["data"]}


def _page(annotator: str = "viewer") -> AppTest:
    return open_page("pages/embeddings.py", annotator=annotator)


def test_undo_recolours_the_map(mapped):
    at = _page()
    assert _colours(at) == {"(none)"}
    ids = [int(i) for i in mapped.item_ids()[:5]]
    mapped.annotate_many([(i, "3") for i in ids], annotator="alice", kind="bulk")
    at.run()
    assert _colours(at) == {"(none)", "3"}
    mapped.undo_last("alice")  # a retraction: the number of annotations does not change
    at.run()
    assert not at.exception
    assert _colours(at) == {"(none)"}, "the map still shows the undone labels"


def test_consensus_method_change_recolours_the_map(mapped):
    ids = [int(i) for i in mapped.item_ids()]
    ref = mapped.reference_labels()
    # alice and carol agree on 30 items, bob agrees with them on none: Dawid-Skene trusts alice over bob
    mapped.annotate_many([(i, ref[i]) for i in ids[:30]], annotator="alice", kind="bulk")
    mapped.annotate_many([(i, ref[i]) for i in ids[:30]], annotator="carol", kind="bulk")
    wrong = lambda lab: str((int(lab) + 1) % 10)  # noqa: E731
    mapped.annotate_many([(i, wrong(ref[i])) for i in ids[:30]], annotator="bob", kind="bulk")
    x = ids[40]
    mapped.annotate(x, "alice", ref[x])
    mapped.annotate(x, "bob", wrong(ref[x]))  # a tie: no majority label
    at = _page()
    before = json.loads(at.get("plotly_chart")[0].proto.spec)
    consensus_engine.refit(mapped, "dawid_skene")  # rewrites every consensus row; no annotation is added
    label = next(r["label"] for r in mapped.consensus_rows() if r["item_id"] == x)
    assert label == ref[x]
    at.run()
    after = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert before != after, "the map kept the majority-vote colours after the switch to Dawid-Skene"
