"""core.evaluation.metrics against cases worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from core.errors import ValidationError
from core.evaluation.metrics import (
    accuracy,
    ari,
    classification_report_dict,
    cluster_acc,
    clustering_scores,
    contingency,
    hungarian_mapping,
    macro_f1,
    nmi,
    prediction_scores,
)


def test_accuracy_and_macro_f1_by_hand():
    y_true = [0, 0, 1, 1]
    y_pred = [0, 1, 1, 1]
    assert accuracy(y_true, y_pred) == 0.75
    # class 0: P = 1, R = 1/2, F1 = 2/3; class 1: P = 2/3, R = 1, F1 = 4/5
    assert macro_f1(y_true, y_pred) == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_string_labels():
    y_true = np.array(["cat", "cat", "dog", "bird"])
    y_pred = ["cat", "dog", "dog", "bird"]
    assert accuracy(y_true, y_pred) == 0.75
    # bird 1, cat: P 1 R 1/2 -> 2/3, dog: P 1/2 R 1 -> 2/3
    assert macro_f1(y_true, y_pred) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert prediction_scores(y_true, y_pred) == {"accuracy": 0.75, "macro_f1": pytest.approx(7 / 9), "n": 4}
    # strings mixed with numbers compare by their text
    assert accuracy(["a", 1], ["a", 2]) == 0.5


def test_classification_report_dict_uses_label_names():
    rep = classification_report_dict(["cat", "cat", "dog"], ["cat", "dog", "dog"])
    assert {"cat", "dog", "accuracy", "macro avg", "weighted avg"} <= set(rep)
    assert rep["cat"]["recall"] == 0.5
    assert rep["dog"]["precision"] == 0.5
    assert rep["accuracy"] == pytest.approx(2 / 3)
    assert classification_report_dict([], []) == {}


def test_cluster_acc_is_one_on_a_permuted_labelling():
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    perm = np.array([2, 0, 1])  # class c -> cluster perm[c]
    clusters = perm[y] + 10
    assert cluster_acc(y, clusters) == 1.0
    assert hungarian_mapping(y, clusters) == {12: 0, 10: 1, 11: 2}
    assert nmi(y, clusters) == pytest.approx(1.0)
    assert ari(y, clusters) == pytest.approx(1.0)


def _from_table(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label and cluster vectors whose contingency (clusters x classes) is ``table``."""
    y, c = [], []
    for i, row in enumerate(table):
        for j, count in enumerate(row):
            y += [j] * int(count)
            c += [i] * int(count)
    return np.array(y), np.array(c)


def test_cluster_acc_on_a_hand_computed_contingency():
    # rows = clusters, columns = classes. Row-wise argmax would send clusters 0 and 2 both to class 0.
    # The six one-to-one assignments score 5+2+1=8, 5+4+0=9, 1+0+1=2, 1+4+3=8, 0+0+0=0, 0+2+3=5:
    # the best is cluster 0 -> 0, 1 -> 2, 2 -> 1 with 9 of 16 items right.
    table = np.array([[5, 1, 0],
                      [0, 2, 4],
                      [3, 0, 1]])
    y, c = _from_table(table)
    got, cluster_ids, classes = contingency(y, c)
    assert got.tolist() == table.tolist()
    assert cluster_acc(y, c) == pytest.approx(9 / 16)
    assert hungarian_mapping(y, c) == {0: 0, 1: 2, 2: 1}


def test_more_clusters_than_classes_counts_unmatched_as_wrong():
    y = [0, 0, 1, 1]
    c = [0, 1, 2, 2]  # clusters 0 and 1 both hold class 0; only one can be matched
    assert cluster_acc(y, c) == 0.75
    m = hungarian_mapping(y, c)
    assert len(m) == 2 and m[2] == 1 and set(m.values()) == {0, 1}
    assert hungarian_mapping(y, c, fill_unmatched=True) == {0: 0, 1: 0, 2: 1}


def test_fewer_clusters_than_classes():
    assert cluster_acc([0, 1, 2], [7, 7, 7]) == pytest.approx(1 / 3)


def test_string_labels_in_clustering():
    y = ["cat", "cat", "dog", "dog", "emu"]
    c = [1, 1, 0, 0, 0]
    assert cluster_acc(y, c) == 0.8
    assert hungarian_mapping(y, c) == {1: "cat", 0: "dog"}
    scores = clustering_scores(y, c)
    assert set(scores) == {"acc", "nmi", "ari"} and scores["acc"] == 0.8


def test_nmi_ari_on_independent_partitions():
    y = [0, 0, 1, 1]
    c = [0, 1, 0, 1]
    assert nmi(y, c) == pytest.approx(0.0, abs=1e-12)
    # all pair counts in the table are 0; expected index = 2 * 2 / 6; max index = 2:
    # ARI = (0 - 2/3) / (2 - 2/3) = -1/2
    assert ari(y, c) == pytest.approx(-0.5)


def test_empty_input_gives_nan():
    assert math.isnan(accuracy([], []))
    assert math.isnan(cluster_acc([], []))
    s = prediction_scores([], [])
    assert s["n"] == 0 and math.isnan(s["accuracy"]) and math.isnan(s["macro_f1"])
    assert all(math.isnan(v) for v in clustering_scores([], []).values())
    assert hungarian_mapping([], []) == {}


def test_bad_inputs_are_named():
    with pytest.raises(ValidationError, match="'y_pred'"):
        accuracy([0, 1], [0])
    with pytest.raises(ValidationError, match="'clusters'"):
        cluster_acc([0, 1], [[0, 1]])
