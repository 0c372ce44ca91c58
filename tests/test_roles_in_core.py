"""Every write in core checks the role of the user who makes it, whatever calls it (not only the pages)."""
from __future__ import annotations

import numpy as np
import pytest

from core.errors import PermissionDenied
from core.io.ingest import import_folder
from core.labels.pairs import merge_identities
from core.store.project_store import Store
from core.views.clusters import merge_clusters
from tests.helpers import digits_folder

PW = "a long password"


@pytest.fixture
def project(tmp_path):
    """An image project of 12 digits with a published run, and an admin, a reviewer and an annotator."""
    store = Store.create(tmp_path / "p", modality="image", labels=["0", "1", "2"], min_votes=1)
    import_folder(store, digits_folder(tmp_path / "src", per_class=4))
    ids = store.item_ids()
    run_dir = store.dir / "runs" / "r1"
    run_dir.mkdir(parents=True)
    store.publish_run(model="classifier", config={}, metrics={}, artefact_dir=run_dir, classes=store.labels(),
                      item_ids=ids, labels=["0"] * len(ids), confidences=np.full(len(ids), 0.5),
                      clusters=np.arange(len(ids)) % 3)
    store.add_user("boss", PW, "admin", by="boss")
    store.add_user("rev", PW, "reviewer", by="boss")
    store.add_user("ann", PW, "annotator", by="boss")
    return store


def _counts(store: Store) -> tuple:
    c = store.conn
    return tuple(c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                 for t in ("annotations", "retractions", "pair_votes", "cluster_merges", "labels", "runs", "meta"))


def test_an_annotator_labels_and_undoes_their_own_votes(project):
    item = int(project.item_ids()[0])
    assert project.annotate(item, "ann", "1") is not None
    assert project.undo_last("ann") == [item]
    assert project.vote_pairs([(item, item + 1)], "same", annotator="ann")


@pytest.mark.parametrize("action", [
    "adjudicate", "bulk", "settings", "labels", "consensus_method", "import_votes", "merge_clusters",
    "merge_identities", "retract_others", "publish_run", "add_user"])
def test_an_annotator_calling_core_directly_is_refused_and_nothing_is_written(project, action):
    ids = [int(i) for i in project.item_ids()[:4]]
    project.annotate(ids[0], "rev", "2")
    before = _counts(project)
    calls = {
        "adjudicate": lambda: project.annotate(ids[1], "ann", "1", kind="adjudication"),
        "bulk": lambda: project.annotate_many([(i, "1") for i in ids], annotator="ann", kind="bulk"),
        "settings": lambda: project.set_setting("min_votes", 3, by="ann"),
        "labels": lambda: project.add_labels(["3"], by="ann"),
        "consensus_method": lambda: __import__("core.labels.engine", fromlist=["refit"]).refit(
            project, "dawid_skene", by="ann"),
        "import_votes": lambda: project.annotate_many([(ids[1], "1")], annotator="someone", by="ann"),
        "merge_clusters": lambda: merge_clusters(project, project.run()["id"], [0, 1], merged_by="ann"),
        "merge_identities": lambda: merge_identities(project, ids[:2], ids[2:], annotator="ann"),
        "retract_others": lambda: project.retract([project.active_votes()[0]["id"]], by="ann"),
        "publish_run": lambda: project.publish_run(model="classifier", config={}, metrics={},
                                                   artefact_dir=project.dir / "runs" / "r1", classes=["0"],
                                                   item_ids=np.array(ids), labels=["0"] * 4,
                                                   confidences=np.full(4, 0.5), by="ann"),
        "add_user": lambda: project.add_user("eve", PW, "admin", by="ann"),
    }
    with pytest.raises(PermissionDenied, match="'ann' is an annotator"):
        calls[action]()
    assert _counts(project) == before


def test_a_reviewer_adjudicates_and_bulk_labels_but_changes_no_setting(project):
    ids = [int(i) for i in project.item_ids()[:3]]
    project.annotate(ids[0], "rev", "1", kind="adjudication")
    assert len(project.annotate_many([(i, "2") for i in ids[1:]], annotator="rev", kind="bulk")) == 2
    project.annotate(ids[0], "ann", "0")
    assert project.retract([v["id"] for v in project.active_votes() if v["annotator"] == "ann"], by="rev") == 1
    with pytest.raises(PermissionDenied, match="needs the admin role"):
        project.set_setting("min_votes", 2, by="rev")
    project.set_setting("min_votes", 2, by="boss")
    assert project.settings()["min_votes"] == 2


def test_unknown_and_disabled_users_are_refused(project):
    item = int(project.item_ids()[0])
    with pytest.raises(PermissionDenied, match="not an account"):
        project.annotate(item, "mallory", "1")
    project.set_disabled("ann", True, by="boss")
    with pytest.raises(PermissionDenied, match="disabled"):
        project.annotate(item, "ann", "1")


def test_the_cli_and_the_worker_are_not_role_checked_but_audited_under_their_user(project):
    cli = Store(project.dir, origin="cli")
    cli.default_actor = "ops"
    cli.set_setting("min_votes", 2)
    row = cli.audit_log(limit=1)[0]
    assert (row["user"], row["origin"], row["action"], row["details"]["new"]) == ("ops", "cli", "settings", 2)


def test_an_open_project_without_accounts_takes_any_name(tmp_path):
    store = Store.create(tmp_path / "open", modality="image", labels=["a"])
    store.set_setting("min_votes", 1, by="whoever")
    assert store.audit_log(limit=1)[0]["user"] == "whoever"
