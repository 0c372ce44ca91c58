"""The one vote rule (core.labels.votes): latest human/bulk vote per annotator, machine and adjudication left out."""
from core.labels.methods import Vote
from core.labels.votes import latest_by_annotator, latest_per_item, ranked_counts


def test_latest_vote_per_annotator_replaces_earlier_and_skips_machine_and_adjudication():
    votes = [Vote("a", "cat", "human"), Vote("b", "dog", "bulk"), Vote("a", "dog", "human"),
             Vote("m", "cat", "machine"), Vote("r", "cat", "adjudication")]
    assert latest_by_annotator(votes) == {"a": "dog", "b": "dog"}


def test_latest_per_item_groups_rows_and_accepts_mappings():
    rows = [{"item_id": 1, "annotator": "a", "label": "x", "kind": "human"},
            {"item_id": 2, "annotator": "a", "label": "y", "kind": "human"},
            {"item_id": 1, "annotator": "a", "label": "z", "kind": "bulk"},
            {"item_id": 2, "annotator": "b", "label": "y", "kind": "machine"}]
    assert latest_per_item(rows) == {1: {"a": "z"}, 2: {"a": "y"}}


def test_ranked_counts_most_votes_first():
    assert ranked_counts({"a": "x", "b": "y", "c": "y"}) == [("y", 2), ("x", 1)]
    assert ranked_counts({}) == []
