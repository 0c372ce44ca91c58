"""The one rule for which votes count, and the one way they are counted.

- A rater's vote is an active (not retracted) annotation of kind ``human`` or ``bulk``
  (:data:`VOTE_KINDS`); adjudications override the consensus but are not a rater's vote, and machine
  annotations (pseudo-labels) never count.
- Each annotator counts once per item: their latest such vote (votes are given oldest first, so a later
  vote replaces an earlier one).

Every consumer (consensus methods, fitted-parameter updates, the label matrix, the labelling queue, the
adjudication queue) goes through :func:`latest_by_annotator` / :func:`latest_per_item` and
:func:`ranked_counts`, so the rule cannot drift between them.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping

VOTE_KINDS: tuple[str, ...] = ("human", "bulk")


def _field(v: Any, name: str) -> Any:
    return v[name] if isinstance(v, Mapping) or hasattr(v, "keys") else getattr(v, name)


def latest_by_annotator(votes: Iterable[Any]) -> dict[str, str]:
    """One item's counting votes: {annotator: label} of each annotator's latest human or bulk vote.

    ``votes`` are oldest first; each has ``annotator``, ``label`` and ``kind`` (attributes or keys).
    """
    latest: dict[str, str] = {}
    for v in votes:
        if _field(v, "kind") in VOTE_KINDS:
            latest[_field(v, "annotator")] = _field(v, "label")
    return latest


def latest_per_item(rows: Iterable[Any]) -> dict[int, dict[str, str]]:
    """Vote rows of many items (oldest first; ``item_id``, ``annotator``, ``label``, ``kind``) grouped as
    {item_id: {annotator: label}} under the same rule as :func:`latest_by_annotator`."""
    out: dict[int, dict[str, str]] = {}
    for v in rows:
        if _field(v, "kind") in VOTE_KINDS:
            out.setdefault(int(_field(v, "item_id")), {})[_field(v, "annotator")] = _field(v, "label")
    return out


def ranked_counts(by_annotator: Mapping[str, str]) -> list[tuple[str, int]]:
    """Votes per label of one item, most votes first (ties in first-seen order): [(label, n), ...]."""
    return Counter(by_annotator.values()).most_common()
