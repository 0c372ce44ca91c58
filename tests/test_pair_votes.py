"""Identity pair decisions: schema v4 and its migration, append-only votes, undo, pair consensus, must/cannot
links, merge and split batches, and the decisions a page shows for a query."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import sqlite_utils

from core.errors import ValidationError
from core.labels import methods as cm
from core.labels.pairs import (PairLinks, confirmed_links, decisions_for, merge_identities, pair_consensus,
                               split_identity)
from core.store.project_store import Store
from core.store.schema import MIGRATIONS, SCHEMA_VERSION


def _with_items(store: Store, n: int = 6) -> Store:
    src = store.add_source(store.dir, kind="folder", spec="test")
    with store.transaction() as conn:
        store.insert_items(conn, [{"source_id": src, "uri": f"{i}.png", "modality": "image",
                                   "content_hash": f"h{i}"} for i in range(n)])
    return store


def _store(n: int = 6, min_votes: int = 1) -> Store:
    return _with_items(Store.in_memory(labels=["a", "b"], min_votes=min_votes), n)


def _by_pair(store: Store) -> dict[tuple[int, int], object]:
    return {(d.item_a, d.item_b): d for d in pair_consensus(store)}


def _pair_count(store: Store) -> int:
    return store.conn.execute("SELECT COUNT(*) FROM pair_votes").fetchone()[0]


# ------------------------------------------------------------------------------------------- schema
def test_a_v3_database_migrates_to_v4_and_keeps_its_votes(tmp_path):
    pdir = tmp_path / "old"
    pdir.mkdir()
    conn = sqlite3.connect(pdir / "project.db", isolation_level=None)
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("BEGIN")
    for migrate in MIGRATIONS[:3]:
        migrate(sqlite_utils.Database(conn))
    conn.execute("INSERT INTO meta VALUES ('schema_version', '3'), ('modality', '\"image\"'), ('min_votes', '1')")
    conn.execute("INSERT INTO sources (id, root, kind, spec, created_at) VALUES (1, '.', 'folder', 'x', 0)")
    conn.executemany("INSERT INTO items (id, source_id, uri, modality, content_hash, created_at) "
                     "VALUES (?, 1, ?, 'image', ?, 0)", [(i, f"{i}.png", f"h{i}") for i in (1, 2)])
    conn.execute("INSERT INTO labels VALUES ('a', 0, 0)")
    conn.execute("INSERT INTO annotators VALUES ('ann', 0)")
    conn.execute("INSERT INTO annotations (item_id, annotator, label, kind, created_at) VALUES (1, 'ann', 'a', "
                 "'human', 0)")
    conn.execute("COMMIT")
    conn.close()
    assert "pair_votes" not in sqlite_utils.Database(pdir / "project.db").table_names()

    store = Store(pdir)
    assert store._schema_version() == SCHEMA_VERSION >= 4
    assert {"pair_votes", "pair_retractions"} <= set(store.db.table_names())
    triggers = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    assert {"pair_votes_no_update", "pair_votes_no_delete", "pair_retractions_no_update",
            "pair_retractions_no_delete", "annotations_no_delete"} <= triggers
    indexes = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"pair_votes_pair", "pair_votes_annotator"} <= indexes
    assert store.annotation_count() == 1
    assert len(store.vote_pairs([(2, 1)], "same", annotator="ann")) == 1
    store.close()
    assert Store(pdir).active_pair_votes()[0]["item_a"] == 1  # reopening does not migrate again


def test_pair_votes_and_retractions_are_append_only():
    store = _store()
    (vid,) = store.vote_pairs([(1, 2)], "same", annotator="ann")
    store.retract_pair_votes([vid], by="ann")
    for sql in ("UPDATE pair_votes SET decision = 'different'", "DELETE FROM pair_votes"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            store.conn.execute(sql)
    for sql in ("UPDATE pair_retractions SET annotator = 'x'", "DELETE FROM pair_retractions"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            store.conn.execute(sql)
    for values in ((2, 1, "same"), (1, 2, "maybe")):  # the schema itself refuses an unnormalised pair or decision
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            store.conn.execute("INSERT INTO pair_votes (item_a, item_b, annotator, decision, created_at) "
                               "VALUES (?, ?, 'ann', ?, 0)", values)
    assert _pair_count(store) == 1 and store.active_pair_votes() == []


# ------------------------------------------------------------------------------------------- votes
def test_vote_pairs_normalises_dedupes_and_registers_the_annotator():
    store = _store()
    ids = store.vote_pairs([(3, 1), (1, 3), (2, 4)], "same", annotator=" new ", seconds=1.5)
    assert len(ids) == 2
    rows = store.active_pair_votes()
    assert [(r["item_a"], r["item_b"], r["decision"]) for r in rows] == [(1, 3, "same"), (2, 4, "same")]
    assert [r["id"] for r in rows] == ids
    assert "new" in store.annotators() and {r["annotator"] for r in rows} == {"new"}
    assert store.conn.execute("SELECT seconds FROM pair_votes WHERE id = ?", (ids[0],)).fetchone()[0] == 1.5
    assert store.vote_pairs(np.array([[5, 4]]), "different", annotator="new") == [ids[-1] + 1]
    assert store.vote_pairs([], "same", annotator="new") == []


@pytest.mark.parametrize("pairs, decision, annotator, match", [
    ([(2, 2)], "same", "ann", r"\(2, 2\)"),
    ([(1, 2), (1, 99)], "same", "ann", r"\[99\]"),
    ([(1, 2)], "maybe", "ann", r"'decision'.*'same', 'different'.*Got 'maybe'"),
    ([(1, 2)], "same", "  ", r"'annotator'"),
    ([(1, 2, 3)], "same", "ann", r"'pairs'.*\(item id, item id\)"),
    ([(1.5, 2)], "same", "ann", r"'pairs'.*integers"),
    ([(1, 2), (3,)], "same", "ann", r"'pairs'"),
])
def test_vote_pairs_refuses_bad_input_and_writes_nothing(pairs, decision, annotator, match):
    store = _store()
    with pytest.raises(ValidationError, match=match):
        store.vote_pairs(pairs, decision, annotator=annotator)
    assert _pair_count(store) == 0 and store.annotators() == []


def test_vote_pairs_refuses_negative_seconds():
    with pytest.raises(ValidationError, match="'seconds'.*Got -1"):
        _store().vote_pairs([(1, 2)], "same", annotator="ann", seconds=-1)


def test_undo_retracts_the_newest_vote_or_its_whole_batch():
    store = _store()
    (single,) = store.vote_pairs([(1, 2)], "same", annotator="ann")
    batch = store.vote_pairs([(3, 4), (3, 5)], "different", annotator="ann", batch="b1")
    (other,) = store.vote_pairs([(1, 6)], "same", annotator="bob")
    assert store.undo_last_pair_votes("ann") == batch
    assert [r["id"] for r in store.active_pair_votes()] == [single, other]
    assert store.undo_last_pair_votes("ann") == [single]
    assert store.undo_last_pair_votes("ann") == []
    assert [r["id"] for r in store.active_pair_votes()] == [other]  # another annotator's vote is untouched
    assert _pair_count(store) == 4  # nothing deleted: undo is a retraction


def test_retract_pair_votes_counts_new_retractions_and_refuses_unknown_ids():
    store = _store()
    ids = store.vote_pairs([(1, 2), (1, 3)], "same", annotator="ann")
    assert store.retract_pair_votes([ids[0]], by="ann") == 1
    assert store.retract_pair_votes(ids, by="lead") == 1  # the first was retracted already
    with pytest.raises(ValidationError, match=r"\[999\]"):
        store.retract_pair_votes([ids[0], 999], by="ann")
    assert store.retract_pair_votes([], by="ann") == 0


def test_active_pair_votes_of_items_touch_either_side_once():
    store = _store(n=1000)
    ids = store.vote_pairs([(1, 900), (2, 3), (4, 5)], "same", annotator="ann")
    assert [r["id"] for r in store.active_pair_votes([3, 5])] == ids[1:]
    # 1 and 900 fall in different chunks of the IN lists: the vote is still returned once
    assert [r["id"] for r in store.active_pair_votes(range(1, 1000))] == ids
    assert store.active_pair_votes([6]) == []


# ------------------------------------------------------------------------------------------- consensus
def test_one_annotator_min_votes_1_latest_vote_counts():
    store = _store(min_votes=1)
    store.vote_pairs([(1, 2)], "same", annotator="ann")
    d = _by_pair(store)[(1, 2)]
    assert (d.decision, d.support, d.n_votes, d.agreement, d.confirmed) == ("same", 1, 1, 1.0, True)
    store.vote_pairs([(2, 1)], "different", annotator="ann")  # replaces the earlier vote
    d = _by_pair(store)[(1, 2)]
    assert (d.decision, d.n_votes, d.confirmed) == ("different", 1, True)
    store.undo_last_pair_votes("ann")
    assert _by_pair(store)[(1, 2)].decision == "same"
    store.undo_last_pair_votes("ann")
    assert pair_consensus(store) == []


def test_three_annotators_min_votes_2_and_ties():
    store = _store(min_votes=2)
    for ann, dec in (("a", "same"), ("b", "same"), ("c", "different")):
        store.vote_pairs([(1, 2)], dec, annotator=ann)
    store.vote_pairs([(3, 4)], "different", annotator="a")
    store.vote_pairs([(5, 6)], "same", annotator="a")
    store.vote_pairs([(5, 6)], "different", annotator="b")
    d = _by_pair(store)
    assert (d[(1, 2)].decision, d[(1, 2)].support, d[(1, 2)].n_votes, d[(1, 2)].confirmed) == ("same", 2, 3, True)
    assert d[(1, 2)].agreement == pytest.approx(2 / 3)
    assert (d[(3, 4)].decision, d[(3, 4)].confirmed) == ("different", False)  # one vote < min_votes
    assert (d[(5, 6)].decision, d[(5, 6)].support, d[(5, 6)].agreement, d[(5, 6)].confirmed) == (None, 1, 0.5, False)
    store.set_setting("min_votes", 1)
    d = _by_pair(store)
    assert d[(3, 4)].confirmed and not d[(5, 6)].confirmed  # a tie is never confirmed
    assert [(p.item_a, p.item_b) for p in pair_consensus(store, [4])] == [(3, 4)]


def test_pair_consensus_is_the_item_majority_rule():
    """On random votes (repeats and retractions included), every pair's consensus is what the item rule
    (methods.majority on each annotator's latest vote) gives, for min_votes 1 to 3."""
    rng = np.random.default_rng(0)
    store = _store(n=8)
    annotators = ["a", "b", "c", "d"]
    pairs = np.array([(i, j) for i in range(1, 9) for j in range(i + 1, 9)])
    for _ in range(120):
        p = pairs[rng.integers(len(pairs))]
        ids = store.vote_pairs([tuple(p)], ["same", "different"][rng.integers(2)],
                               annotator=annotators[rng.integers(4)])
        if rng.random() < 0.1:
            store.retract_pair_votes(ids, by="lead")
    rows = store.active_pair_votes()
    for min_votes in (1, 2, 3):
        store.set_setting("min_votes", min_votes)
        got = pair_consensus(store)
        assert len(got) == len({(r["item_a"], r["item_b"]) for r in rows}) > 10
        for d in got:
            votes = [cm.Vote(r["annotator"], r["decision"], "human") for r in rows
                     if (r["item_a"], r["item_b"]) == (d.item_a, d.item_b)]
            ref = cm.majority(votes, min_votes=min_votes)
            assert (d.decision, d.support, d.n_votes, d.confirmed) == (ref.label, ref.support, ref.n_votes,
                                                                       ref.confirmed)
            assert d.agreement == pytest.approx(ref.agreement)


def test_pairs_use_majority_under_a_fitted_item_method():
    store = _store(min_votes=1)
    store.set_setting("consensus_method", "dawid_skene")
    store.vote_pairs([(1, 2)], "same", annotator="a")
    store.vote_pairs([(1, 2)], "different", annotator="b")
    store.vote_pairs([(1, 2)], "different", annotator="c")
    d = _by_pair(store)[(1, 2)]
    assert (d.decision, d.support, d.confirmed) == ("different", 2, True)


# ------------------------------------------------------------------------------------------- links
def test_confirmed_links_hold_only_confirmed_decisions():
    store = _store(min_votes=2)
    for ann in ("a", "b"):
        store.vote_pairs([(2, 1), (3, 4)], "same", annotator=ann)
        store.vote_pairs([(1, 5)], "different", annotator=ann)
    store.vote_pairs([(5, 6)], "same", annotator="a")  # one vote: not confirmed
    store.vote_pairs([(2, 3)], "same", annotator="a")
    store.vote_pairs([(2, 3)], "different", annotator="b")  # a tie
    links = confirmed_links(store)
    assert links.must.dtype == np.int64 and links.cannot.dtype == np.int64
    assert links.must.tolist() == [[1, 2], [3, 4]] and links.cannot.tolist() == [[1, 5]]
    assert (links.n_must, links.n_cannot) == (2, 1)
    empty = confirmed_links(_store())
    assert empty.must.shape == (0, 2) and empty.cannot.shape == (0, 2) and empty.n_must == 0


def test_links_rows_map_item_ids_to_rows_and_drop_missing_items():
    links = PairLinks(must=np.array([[1, 5], [2, 3]]), cannot=[[4, 9]])
    rows = links.rows(np.array([5, 3, 1, 2, 4]))
    assert rows.must.tolist() == [[0, 2], [1, 3]] and rows.must.dtype == np.int64
    assert rows.cannot.shape == (0, 2)  # item 9 is not among the rows
    assert links.rows(np.array([], dtype=np.int64)).n_must == 0
    with pytest.raises(ValidationError, match="distinct.*Got 3"):
        links.rows(np.array([3, 1, 3]))
    with pytest.raises(ValidationError, match="'item_ids'"):
        links.rows(np.array([[1, 2]]))
    with pytest.raises(ValidationError, match="'must'"):
        PairLinks(must=np.array([1, 2, 3]), cannot=[])


# ------------------------------------------------------------------------------------------- merge / split
def _active(store: Store) -> set[tuple[int, int, str]]:
    return {(r["item_a"], r["item_b"], r["decision"]) for r in store.active_pair_votes()}


def test_merge_writes_same_votes_from_the_anchor_in_one_batch_and_undoes_as_one():
    store = _store()
    store.vote_pairs([(5, 6)], "same", annotator="ann")
    batch = merge_identities(store, [2, 1], [3, 4, 1], annotator="ann")
    rows = [r for r in store.active_pair_votes() if r["batch"] == batch]
    assert {(r["item_a"], r["item_b"], r["decision"]) for r in rows} == {(1, 2, "same"), (2, 3, "same"),
                                                                          (2, 4, "same")}
    assert confirmed_links(store).must.tolist() == [[1, 2], [2, 3], [2, 4], [5, 6]]
    assert sorted(store.undo_last_pair_votes("ann")) == sorted(r["id"] for r in rows)
    assert _active(store) == {(5, 6, "same")}


def test_merge_overrides_the_annotators_own_contradicting_votes():
    store = _store()
    store.vote_pairs([(2, 3)], "different", annotator="ann")
    store.vote_pairs([(2, 4)], "different", annotator="bob")  # another annotator's opinion stays
    merge_identities(store, [1, 2], [3, 4], annotator="ann")
    mine = {(r["item_a"], r["item_b"]): r["decision"] for r in store.active_pair_votes() if r["annotator"] == "ann"}
    assert mine[(2, 3)] == "same"
    assert decisions_for(store, 2, "bob") == {4: "different"}


def test_merge_refuses_empty_or_anchor_only_parts():
    store = _store()
    with pytest.raises(ValidationError, match="'items_a'"):
        merge_identities(store, [], [1], annotator="ann")
    with pytest.raises(ValidationError, match="'items_b'"):
        merge_identities(store, [1], [1], annotator="ann")
    with pytest.raises(ValidationError, match="'annotator'"):
        merge_identities(store, [1], [2], annotator="")
    assert _pair_count(store) == 0


def test_split_writes_stars_and_one_different_vote_in_one_batch():
    store = _store()
    batch = split_identity(store, [1, 2, 3], [5, 4], annotator="ann")
    assert _active(store) == {(1, 2, "same"), (1, 3, "same"), (4, 5, "same"), (1, 5, "different")}
    assert {r["batch"] for r in store.active_pair_votes()} == {batch}
    links = confirmed_links(store)
    assert links.must.tolist() == [[1, 2], [1, 3], [4, 5]] and links.cannot.tolist() == [[1, 5]]
    assert len(store.undo_last_pair_votes("ann")) == 4 and store.active_pair_votes() == []


def test_split_after_a_merge_leaves_no_contradiction_and_undo_restores_the_merge():
    store = _store()
    merge_identities(store, [1, 2, 3], [4, 5], annotator="ann")
    merged = _active(store)
    split_identity(store, [1, 2, 3], [4, 5], annotator="ann")
    links = confirmed_links(store)
    must, cannot = {tuple(p) for p in links.must.tolist()}, {tuple(p) for p in links.cannot.tolist()}
    assert must == {(1, 2), (1, 3), (4, 5)} and cannot == {(1, 4), (1, 5)}
    store.undo_last_pair_votes("ann")
    assert _active(store) == merged


def test_split_refuses_overlapping_or_empty_parts():
    store = _store()
    with pytest.raises(ValidationError, match=r"\[2\]"):
        split_identity(store, [1, 2], [2, 3], annotator="ann")
    with pytest.raises(ValidationError, match="'split'"):
        split_identity(store, [1, 2], [], annotator="ann")
    with pytest.raises(ValidationError, match="'keep'"):
        split_identity(store, [], [1], annotator="ann")
    assert _pair_count(store) == 0


def test_split_of_single_items_is_one_different_vote():
    store = _store()
    split_identity(store, [3], [1], annotator="ann")
    assert _active(store) == {(1, 3, "different")}


# ------------------------------------------------------------------------------------------- decisions_for
def test_decisions_for_an_annotator_and_for_the_consensus():
    store = _store(min_votes=2)
    store.vote_pairs([(1, 2), (1, 3)], "same", annotator="a")
    store.vote_pairs([(1, 2)], "different", annotator="a")  # a's latest on (1, 2)
    store.vote_pairs([(2, 1), (3, 1)], "different", annotator="b")
    store.vote_pairs([(4, 1)], "same", annotator="b")
    store.vote_pairs([(5, 6)], "same", annotator="b")
    assert decisions_for(store, 1, "a") == {2: "different", 3: "same"}
    assert decisions_for(store, 1, "b") == {2: "different", 3: "different", 4: "same"}
    # consensus: (1, 2) different 2-0, (1, 3) a tie (left out), (1, 4) same with one vote (decided, unconfirmed)
    assert decisions_for(store, 1) == {2: "different", 4: "same"}
    assert decisions_for(store, 6) == {5: "same"}
    assert decisions_for(store, 1, "nobody") == {} and decisions_for(store, 99) == {}
    with pytest.raises(ValidationError, match="'query'"):
        decisions_for(store, "1")
