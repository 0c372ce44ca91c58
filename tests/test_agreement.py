"""Tests of core.labels.agreement against hand-computed cases, published values, plain-loop references and sklearn."""
from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix

import core.labels.agreement as agreement
from core.labels.agreement import (
    annotator_stats,
    class_confusion,
    cohen_kappa_matrix,
    fleiss_kappa,
    krippendorff_alpha_nominal,
    pairwise_confusion,
)
from core.errors import ValidationError

nan = np.nan

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", reliability data with missing values:
# 4 observers (rows A..D) x 12 units (columns 1..12); values are category codes, nan is missing ("." there).
KRIPPENDORFF_TABLE = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],  # A
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],  # B
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],  # C
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],  # D
    ]
)


def random_label_matrix(rng: np.random.Generator, n: int, m: int, k: int, p_missing: float) -> np.ndarray:
    """Labels with some structure (a per-item truth copied with prob. 0.6) and missing votes."""
    truth = rng.integers(0, k, size=(n, 1))
    noise = rng.integers(0, k, size=(n, m))
    L = np.where(rng.random((n, m)) < 0.6, truth, noise).astype(float)
    L[rng.random((n, m)) < p_missing] = nan
    return L


# ---------------------------------------------------------------------------------------------------
# plain-loop references, written from the definitions
# ---------------------------------------------------------------------------------------------------
def alpha_nominal_reference(L: np.ndarray) -> tuple[float, float]:
    """Krippendorff's nominal alpha from the pairable-values definition; returns (alpha, n pairable values).

    For every unit with m_u >= 2 values, each ordered pair of values from different observers adds
    1 / (m_u - 1) to the coincidence o[c][k]; D_o = sum_{c != k} o_ck / n,
    D_e = sum_{c != k} n_c n_k / (n (n - 1)), alpha = 1 - D_o / D_e.
    """
    values = sorted({v for row in L.tolist() for v in row if v == v})
    o = {(c, k): 0.0 for c in values for k in values}
    for row in L.tolist():
        unit = [v for v in row if v == v]
        m_u = len(unit)
        if m_u < 2:
            continue
        for i in range(m_u):
            for j in range(m_u):
                if i != j:
                    o[(unit[i], unit[j])] += 1.0 / (m_u - 1)
    n_c = {c: sum(o[(c, k)] for k in values) for c in values}
    n = sum(n_c.values())
    d_o = sum(o[(c, k)] for c in values for k in values if c != k) / n
    d_e = sum(n_c[c] * n_c[k] for c in values for k in values if c != k) / (n * (n - 1))
    return 1.0 - d_o / d_e, n


def fleiss_reference(L: np.ndarray, k: int) -> float:
    """Generalised Fleiss' kappa with plain loops (items with >= 2 votes; per-item agreement averaged)."""
    p_items, totals, n_total = [], [0.0] * k, 0.0
    for row in L.tolist():
        votes = [int(v) for v in row if v == v]
        n_i = len(votes)
        if n_i < 2:
            continue
        counts = [votes.count(c) for c in range(k)]
        p_items.append(sum(c * (c - 1) for c in counts) / (n_i * (n_i - 1)))
        for c in range(k):
            totals[c] += counts[c]
        n_total += n_i
    p_bar = sum(p_items) / len(p_items)
    p_e = sum((t / n_total) ** 2 for t in totals)
    return (p_bar - p_e) / (1 - p_e)


def counts_to_label_matrix(counts: np.ndarray) -> np.ndarray:
    """(N, K) per-item counts with equal row sums -> (N, n) label matrix (rater order is irrelevant)."""
    return np.array([np.repeat(np.arange(counts.shape[1]), row) for row in counts], dtype=float)


# ---------------------------------------------------------------------------------------------------
# Krippendorff's alpha
# ---------------------------------------------------------------------------------------------------
def test_alpha_reproduces_krippendorffs_published_example():
    L = KRIPPENDORFF_TABLE.T  # units x observers
    alpha = krippendorff_alpha_nominal(L - 1)  # codes 1..5 -> class indices 0..4
    assert round(alpha, 3) == 0.743
    # the raw codes (class 0 unused) give the same value
    assert krippendorff_alpha_nominal(L) == pytest.approx(alpha, abs=1e-12)
    ref, n_pairable = alpha_nominal_reference(L)
    assert n_pairable == pytest.approx(40.0)  # unit 12 has a single value and is dropped
    assert alpha == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_alpha_matches_plain_loop_reference_on_random_data(seed):
    rng = np.random.default_rng(seed)
    L = random_label_matrix(rng, n=30, m=5, k=4, p_missing=0.35)
    ref, _ = alpha_nominal_reference(L)
    assert krippendorff_alpha_nominal(L, n_classes=4) == pytest.approx(ref, abs=1e-12)


def test_alpha_hand_example():
    # units (0,0,0), (1,1,0), (1,1,1): coincidences o = [[3, 1], [1, 4]], n_c = (4, 5), n = 9;
    # alpha = (8 * 7 - (4*3 + 5*4)) / (9 * 8 - 32) = 24 / 40 = 0.6
    L = np.array([[0, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=float)
    assert krippendorff_alpha_nominal(L) == pytest.approx(0.6)


# ---------------------------------------------------------------------------------------------------
# Fleiss' kappa
# ---------------------------------------------------------------------------------------------------
def test_fleiss_hand_example():
    # 3 items x 3 raters, 2 classes: (0,0,0), (1,1,0), (1,1,1)
    # P_i = 6/6, (2*1 + 1*0)/6 = 1/3, 6/6  ->  P_bar = (1 + 1/3 + 1) / 3 = 7/9
    # p_0 = 4/9, p_1 = 5/9  ->  P_e = 16/81 + 25/81 = 41/81
    # kappa = (63/81 - 41/81) / (1 - 41/81) = 22/40 = 0.55
    L = np.array([[0, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=float)
    assert fleiss_kappa(L) == pytest.approx(0.55)


def test_fleiss_classic_wikipedia_example():
    # Fleiss (1971) style example (Wikipedia "Fleiss' kappa"): 10 subjects, 14 raters, 5 categories, kappa 0.210
    counts = np.array(
        [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ]
    )
    assert round(fleiss_kappa(counts_to_label_matrix(counts)), 3) == 0.210


def test_fleiss_equal_raters_with_missing_columns_equals_classic():
    # every item has exactly 3 votes, but spread over 5 annotator columns: the generalisation is the classic one
    rng = np.random.default_rng(1)
    L_full = random_label_matrix(rng, n=40, m=3, k=4, p_missing=0.0)
    L = np.full((40, 5), nan)
    for i in range(40):  # scatter each item's 3 votes over random columns (test set-up only)
        L[i, rng.choice(5, size=3, replace=False)] = L_full[i]
    assert fleiss_kappa(L, n_classes=4) == pytest.approx(fleiss_kappa(L_full, n_classes=4), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_fleiss_varying_raters_matches_plain_loop_reference(seed):
    rng = np.random.default_rng(100 + seed)
    L = random_label_matrix(rng, n=25, m=6, k=3, p_missing=0.4)
    assert fleiss_kappa(L, n_classes=3) == pytest.approx(fleiss_reference(L, 3), abs=1e-12)


def test_unused_classes_do_not_change_fleiss_or_alpha():
    L = random_label_matrix(np.random.default_rng(7), n=20, m=4, k=3, p_missing=0.2)
    assert fleiss_kappa(L, n_classes=10) == pytest.approx(fleiss_kappa(L), abs=1e-12)
    assert krippendorff_alpha_nominal(L, n_classes=10) == pytest.approx(krippendorff_alpha_nominal(L), abs=1e-12)


# ---------------------------------------------------------------------------------------------------
# degenerate inputs: nan, not a crash
# ---------------------------------------------------------------------------------------------------
def test_perfect_agreement_is_one():
    L = np.array([[0, 0, nan], [1, 1, 1], [2, nan, 2], [0, 0, 0]], dtype=float)
    assert fleiss_kappa(L) == pytest.approx(1.0)
    assert krippendorff_alpha_nominal(L) == pytest.approx(1.0)
    np.testing.assert_allclose(cohen_kappa_matrix(L), np.ones((3, 3)))


def test_single_vote_per_item_gives_nan():
    L = np.array([[0, nan, nan], [nan, 1, nan], [nan, nan, 2], [1, nan, nan]], dtype=float)
    assert np.isnan(fleiss_kappa(L))
    assert np.isnan(krippendorff_alpha_nominal(L))
    K = cohen_kappa_matrix(L)
    assert np.isnan(K[~np.eye(3, dtype=bool)]).all()
    np.testing.assert_array_equal(np.diag(K), 1.0)


def test_all_votes_in_one_class_gives_nan():
    L = np.array([[1, 1], [1, 1], [1, nan]], dtype=float)
    assert np.isnan(fleiss_kappa(L))
    assert np.isnan(krippendorff_alpha_nominal(L))
    assert np.isnan(cohen_kappa_matrix(L)[0, 1])


def test_all_missing_and_empty_give_nan():
    assert np.isnan(fleiss_kappa(np.full((3, 2), nan)))
    assert np.isnan(krippendorff_alpha_nominal(np.full((3, 2), nan)))
    assert np.isnan(fleiss_kappa(np.empty((0, 3))))
    assert cohen_kappa_matrix(np.empty((0, 2))).shape == (2, 2)


# ---------------------------------------------------------------------------------------------------
# Cohen's kappa matrix
# ---------------------------------------------------------------------------------------------------
def test_cohen_two_annotators_equals_sklearn():
    a = [0, 1, 2, 2, 1, 0, 0, 1, 2, 1]
    b = [0, 1, 1, 2, 1, 0, 2, 1, 2, 0]
    K = cohen_kappa_matrix(np.array([a, b], dtype=float).T)
    assert K.shape == (2, 2)
    assert K[0, 1] == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    assert K[1, 0] == K[0, 1]
    np.testing.assert_array_equal(np.diag(K), 1.0)


@pytest.mark.parametrize("seed", range(3))
def test_cohen_matrix_entries_equal_sklearn_on_shared_items(seed):
    rng = np.random.default_rng(200 + seed)
    L = random_label_matrix(rng, n=40, m=5, k=4, p_missing=0.3)
    K = cohen_kappa_matrix(L, n_classes=4)
    assert K.shape == (5, 5)
    np.testing.assert_allclose(K, K.T)
    for a, b in itertools.combinations(range(5), 2):
        shared = ~np.isnan(L[:, a]) & ~np.isnan(L[:, b])
        expected = cohen_kappa_score(L[shared, a].astype(int), L[shared, b].astype(int))
        assert K[a, b] == pytest.approx(expected, abs=1e-12), (a, b)


def test_cohen_min_overlap():
    # pairs (0, 1) and (0, 2) share 3 items, (1, 2) shares 2 (items 0 and 1)
    L = np.array([[0, 0, 1], [1, 1, 1], [0, 1, nan], [1, nan, 0]], dtype=float)
    K3 = cohen_kappa_matrix(L, min_overlap=3)
    assert not np.isnan(K3[0, 1]) and not np.isnan(K3[0, 2])
    assert np.isnan(K3[1, 2])
    K4 = cohen_kappa_matrix(L, min_overlap=4)
    assert np.isnan(K4[~np.eye(3, dtype=bool)]).all()
    np.testing.assert_array_equal(np.diag(K4), 1.0)


# ---------------------------------------------------------------------------------------------------
# confusion
# ---------------------------------------------------------------------------------------------------
def test_pairwise_confusion_equals_sklearn_confusion_matrix():
    L = random_label_matrix(np.random.default_rng(3), n=30, m=4, k=3, p_missing=0.3)
    C = pairwise_confusion(L, 0, 2, n_classes=3)
    shared = ~np.isnan(L[:, 0]) & ~np.isnan(L[:, 2])
    expected = confusion_matrix(L[shared, 0].astype(int), L[shared, 2].astype(int), labels=[0, 1, 2])
    np.testing.assert_array_equal(C, expected)
    np.testing.assert_array_equal(pairwise_confusion(L, 2, 0, 3), expected.T)


def test_pairwise_confusion_hand_example():
    L = np.array([[0, 1], [0, 0], [2, nan], [1, 1]], dtype=float)
    np.testing.assert_array_equal(pairwise_confusion(L, 0, 1, 3), [[1, 1, 0], [0, 1, 0], [0, 0, 0]])


def test_class_confusion_is_sum_of_pairwise_and_symmetric():
    L = random_label_matrix(np.random.default_rng(4), n=30, m=4, k=3, p_missing=0.3)
    C = class_confusion(L, 3)
    expected = sum(pairwise_confusion(L, a, b, 3) for a in range(4) for b in range(4) if a != b)
    np.testing.assert_array_equal(C, expected)
    np.testing.assert_array_equal(C, C.T)
    m = (~np.isnan(L)).sum(axis=1)
    assert C.sum() == (m * (m - 1)).sum()


def test_class_confusion_hand_example():
    # one item voted (0, 0, 1): ordered pairs (0,0) x2, (0,1) x2, (1,0) x2
    np.testing.assert_array_equal(class_confusion(np.array([[0, 0, 1]], dtype=float), 2), [[2, 2], [2, 0]])


# ---------------------------------------------------------------------------------------------------
# annotator_stats
# ---------------------------------------------------------------------------------------------------
def test_annotator_stats_hand_example():
    L = np.array(
        [
            [0, 0, nan],
            [1, 0, 1],
            [2, nan, nan],
            [1, 1, 1],
        ]
    )
    consensus = np.array([0, 1, nan, 1])
    seconds = np.array(
        [
            [2.0, 4.0, 9.0],  # annotator 2 did not vote here: its 9 s is ignored
            [4.0, nan, 5.0],
            [6.0, nan, nan],
            [8.0, 1.0, nan],
        ]
    )
    df = annotator_stats(L, consensus, seconds=seconds)
    assert list(df.index) == [0, 1, 2]
    assert df.index.name == "annotator"
    assert list(df["n_votes"]) == [4, 3, 2]
    assert list(df["n_scored"]) == [3, 3, 2]
    np.testing.assert_allclose(df["accuracy"], [1.0, 2 / 3, 1.0])
    np.testing.assert_allclose(df["median_seconds"], [5.0, 2.5, 5.0])


def test_annotator_stats_without_seconds_and_without_consensus():
    L = np.array([[0, nan], [1, nan]])
    df = annotator_stats(L, np.array([nan, nan]))
    assert "median_seconds" not in df.columns
    assert list(df["n_votes"]) == [2, 0]
    assert df["accuracy"].isna().all()
    df = annotator_stats(L, np.array([0.0, nan]), seconds=np.full((2, 2), nan))
    assert df["median_seconds"].isna().all()
    assert df.loc[0, "accuracy"] == 1.0 and np.isnan(df.loc[1, "accuracy"])


# ---------------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "func",
    [fleiss_kappa, krippendorff_alpha_nominal, cohen_kappa_matrix, lambda L: class_confusion(L, 3)],
)
def test_wrong_ndim_is_rejected_naming_it(func):
    with pytest.raises(ValidationError, match=r"'L.ndim'.*Got 1\."):
        func(np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValidationError, match=r"Got 3\."):
        func(np.zeros((2, 2, 2)))


@pytest.mark.parametrize(
    "func",
    [
        lambda L: fleiss_kappa(L, n_classes=3),
        lambda L: krippendorff_alpha_nominal(L, n_classes=3),
        lambda L: cohen_kappa_matrix(L, n_classes=3),
        lambda L: class_confusion(L, 3),
        lambda L: pairwise_confusion(L, 0, 1, 3),
    ],
)
def test_label_not_below_n_classes_is_rejected_naming_it(func):
    L = np.array([[0, 1], [2, 3]], dtype=float)
    with pytest.raises(ValidationError, match=r"0\.\.2 \(n_classes=3\).*Got 3\.0 at item 1, annotator 1\."):
        func(L)


@pytest.mark.parametrize("func", [fleiss_kappa, krippendorff_alpha_nominal, cohen_kappa_matrix])
def test_negative_or_fractional_or_infinite_label_is_rejected(func):
    with pytest.raises(ValidationError, match=r"Got -1\.0 at item 0, annotator 1\."):
        func(np.array([[0, -1], [1, 1]], dtype=float))
    with pytest.raises(ValidationError, match=r"Got 0\.5 at item 1, annotator 0\."):
        func(np.array([[0, 1], [0.5, 1]], dtype=float))
    with pytest.raises(ValidationError, match=r"Got inf"):
        func(np.array([[0, 1], [np.inf, 1]], dtype=float))


def test_bad_parameters_are_rejected_naming_them():
    L = np.array([[0, 1], [1, 1]], dtype=float)
    with pytest.raises(ValidationError, match=r"'n_classes'.*Got 0\."):
        fleiss_kappa(L, n_classes=0)
    with pytest.raises(ValidationError, match=r"'n_classes'.*Got None\."):
        class_confusion(L, None)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"'min_overlap'.*Got 0\."):
        cohen_kappa_matrix(L, min_overlap=0)
    with pytest.raises(ValidationError, match=r"'b'.*0\.\.1.*Got 2\."):
        pairwise_confusion(L, 0, 2, 2)
    with pytest.raises(ValidationError, match=r"'L'.*Got str"):
        fleiss_kappa("abc")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"'consensus.shape'.*Got \(3,\)\."):
        annotator_stats(L, np.array([0.0, 1.0, 1.0]))
    with pytest.raises(ValidationError, match=r"'consensus'.*Got -2\.0 at index 1\."):
        annotator_stats(L, np.array([0.0, -2.0]))
    with pytest.raises(ValidationError, match=r"'seconds.shape'.*Got \(2, 3\)\."):
        annotator_stats(L, np.array([0.0, 1.0]), seconds=np.ones((2, 3)))
    with pytest.raises(ValidationError, match=r"'seconds'.*Got -1\.0 at item 1, annotator 0\."):
        annotator_stats(L, np.array([0.0, 1.0]), seconds=np.array([[1.0, 2.0], [-1.0, nan]]))


def test_module_doctests():
    result = doctest.testmod(agreement, raise_on_error=False)
    assert result.failed == 0 and result.attempted > 0
