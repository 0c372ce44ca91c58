"""Consensus among annotators, first version: majority vote with a minimum number of agreeing votes.

Rules (the HAR study in the seeds kept only posts on which enough annotators agreed):

- each annotator counts once per item: their latest active human or bulk vote;
- an active adjudication overrides the votes (the newest adjudication wins) and confirms the item;
- machine annotations (pseudo-labels) never count;
- an item is *confirmed* when its leading label has at least ``min_votes`` votes and no other label ties it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Vote:
    """One active annotation of an item, oldest first in the lists given to the methods."""

    annotator: str
    label: str
    kind: str  # human | bulk | adjudication


@dataclass(frozen=True)
class ConsensusResult:
    """Consensus of one item.

    ``support`` is the number of votes for ``label``, ``agreement`` the share of voting annotators who
    chose it, ``confidence`` the method's confidence in ``label`` (for majority vote, the agreement).
    """

    label: str | None
    support: int
    n_votes: int
    agreement: float | None
    confidence: float | None
    confirmed: bool
    method: str


def majority(votes: Sequence[Vote], *, min_votes: int = 2) -> ConsensusResult:
    """Majority vote of one item's votes.

    Examples
    --------
    >>> majority([Vote("a", "cat", "human"), Vote("b", "cat", "human"), Vote("c", "dog", "human")]).label
    'cat'
    """
    latest: dict[str, str] = {}
    adjudication: str | None = None
    for v in votes:
        if v.kind == "adjudication":
            adjudication = v.label
        elif v.kind in ("human", "bulk"):
            latest[v.annotator] = v.label
    counts = Counter(latest.values())
    n_votes = sum(counts.values())
    if adjudication is not None:
        support = counts.get(adjudication, 0)
        agreement = support / n_votes if n_votes else None
        return ConsensusResult(adjudication, support, n_votes, agreement, 1.0, True, "adjudication")
    if n_votes == 0:
        return ConsensusResult(None, 0, 0, None, None, False, "majority")
    ranked = counts.most_common()
    label, support = ranked[0]
    tie = len(ranked) > 1 and ranked[1][1] == support
    agreement = support / n_votes
    return ConsensusResult(
        None if tie else label,
        support,
        n_votes,
        agreement,
        agreement,
        (not tie) and support >= min_votes,
        "majority",
    )
