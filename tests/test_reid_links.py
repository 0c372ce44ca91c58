"""Annotators' decisions as clustering links: confirmed identity labels, pair decisions, contradictions."""
from __future__ import annotations

import numpy as np

from core.models.reid.clustering import constrained_dbscan
from core.models.reid.links import combine_links, label_links, resolve_links


def _set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in pairs}


def test_label_links_star_within_a_label_and_one_cannot_link_per_pair_of_labels():
    labelled = np.array([7, 3, 9, 4, 5])
    y = np.array(["b", "a", "b", "a", "c"], dtype=object)
    must, cannot = label_links(labelled, y)
    # anchors: a -> 3 (first 'a' in order), b -> 7, c -> 5
    assert _set(must) == {(3, 4), (7, 9)}
    assert _set(cannot) == {(3, 7), (3, 5), (5, 7)}
    assert must.dtype == np.int64 and cannot.shape == (3, 2)


def test_label_links_of_nothing_are_empty():
    must, cannot = label_links(np.zeros(0, np.int64), np.zeros(0, dtype=object))
    assert must.shape == (0, 2) and cannot.shape == (0, 2)


def test_resolve_links_drops_cannot_links_that_a_must_link_chain_contradicts():
    must = np.array([[0, 1], [1, 2]])
    cannot = np.array([[2, 0], [0, 3], [3, 3]])  # (0, 2) is joined by 0-1-2; (3, 3) is no pair at all
    links = resolve_links(must, cannot, 5)
    assert _set(links.cannot) == {(0, 3)}
    assert _set(links.dropped) == {(0, 2)}
    rep = links.report()
    assert rep["n_must"] == 2 and rep["n_cannot"] == 1 and rep["n_dropped_cannot"] == 1
    assert rep["dropped_cannot"] == [[0, 2]]


def test_combined_links_are_respected_by_the_clustering_without_error():
    # two tight groups of 5 at distance ~0; labels say items 0 and 5 are one identity, a pair decision says 1 and
    # 2 are different (contradicting nothing), another says 6 is "same" as 0 and "different" from 5 (contradicts
    # the label chain 0 = 5 = 6 and is dropped)
    X = np.vstack([np.zeros((5, 2)), np.full((5, 2), 10.0)])
    D = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1)) / 20
    links = combine_links(10, np.array([0, 5]), np.array(["p", "p"], dtype=object),
                          (np.array([[0, 6]]), np.array([[1, 2], [5, 6]])))
    assert _set(links.dropped) == {(5, 6)}
    pseudo = constrained_dbscan(D, 0.1, 2, must_link=links.must, cannot_link=links.cannot)
    lab = pseudo.labels
    assert lab[0] == lab[5] == lab[6]
    assert lab[1] != lab[2]
