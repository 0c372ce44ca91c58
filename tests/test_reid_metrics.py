"""Re-identification mAP / CMC: a hand-computed case, a plain-loop reference (torchreid's eval_market1501), errors."""
from __future__ import annotations

import math

import numpy as np
import pytest

from core.errors import ValidationError
from core.evaluation.reid_metrics import average_precisions, reid_scores


def ref_market1501(dist, q_ids, g_ids, q_cams, g_cams, max_rank):
    """The protocol with Python loops, per query: sort, remove same id + same camera, AP and CMC."""
    aps, cmcs, skipped = [], [], 0
    for i in range(len(q_ids)):
        order = sorted(range(len(g_ids)), key=lambda j: (dist[i][j], j))
        kept = [j for j in order if not (g_ids[j] == q_ids[i] and g_cams[j] == q_cams[i])]
        correct = [g_ids[j] == q_ids[i] for j in kept]
        if not any(correct):
            skipped += 1
            continue
        hits, precisions = 0, []
        for rank, c in enumerate(correct, start=1):
            if c:
                hits += 1
                precisions.append(hits / rank)
        aps.append(sum(precisions) / len(precisions))
        first = correct.index(True) + 1
        cmcs.append([1.0 if first <= k else 0.0 for k in range(1, max_rank + 1)])
    cmc = [sum(c[k] for c in cmcs) / len(cmcs) for k in range(max_rank)]
    return sum(aps) / len(aps), cmc, skipped


# Gallery of six items (identity, camera):
#   g0 (1, 0)   g1 (2, 1)   g2 (1, 1)   g3 (3, 0)   g4 (1, 2)   g5 (2, 0)
G_IDS = [1, 2, 1, 3, 1, 2]
G_CAMS = [0, 1, 1, 0, 2, 0]
Q_IDS = [1, 2, 3, 2]
Q_CAMS = [0, 1, 0, 2]
DIST = np.array([
    [0.05, 0.1, 0.2, 0.3, 0.4, 0.5],   # qA (1, cam 0)
    [0.9, 0.3, 0.1, 0.8, 0.7, 0.2],    # qB (2, cam 1)
    [0.5, 0.4, 0.3, 0.2, 0.1, 0.6],    # qC (3, cam 0)
    [0.6, 0.1, 0.5, 0.4, 0.3, 0.2],    # qD (2, cam 2)
])


def test_hand_computed_case():
    # qA: ranking g0 g1 g2 g3 g4 g5; g0 is id 1 in cam 0 -> removed. Kept: g1 x, g2 v, g3 x, g4 v, g5 x.
    #     matches at kept ranks 2 and 4: AP = (1/2 + 2/4) / 2 = 0.5; first correct at rank 2.
    # qB: ranking g2 g5 g1 g4 g3 g0; g1 is id 2 in cam 1 -> removed. Kept: g2 x, g5 v, g4 x, g3 x, g0 x.
    #     one match at rank 2: AP = 1/2; first correct at rank 2.
    # qC: its only gallery item g3 is in its own camera -> removed: no valid match, skipped.
    # qD: ranking g1 g5 g4 g3 g2 g0 (nothing in cam 2 with id 2 to remove). Kept: g1 v, g5 v, rest x.
    #     AP = (1/1 + 2/2) / 2 = 1; first correct at rank 1.
    # mAP = (0.5 + 0.5 + 1) / 3 = 2/3; rank-1 = 1/3 (qD); rank-2 .. rank-5 = 3/3.
    s = reid_scores(DIST, Q_IDS, G_IDS, Q_CAMS, G_CAMS, ranks=(1, 2, 5))
    assert s["mAP"] == pytest.approx(2 / 3)
    assert s["rank1"] == pytest.approx(1 / 3)
    assert s["rank2"] == pytest.approx(1.0)
    assert s["rank5"] == pytest.approx(1.0)
    assert s["n_queries"] == 3 and s["n_skipped"] == 1
    ap, first = average_precisions(DIST, Q_IDS, G_IDS, Q_CAMS, G_CAMS)
    np.testing.assert_allclose(ap[[0, 1, 3]], [0.5, 0.5, 1.0])
    assert math.isnan(ap[2])
    assert first.tolist() == [2, 2, 0, 1]


def test_same_camera_exclusion_changes_the_result():
    # every query in a camera the gallery lacks: nothing is removed.
    # qA: g0 v, g1 x, g2 v, g3 x, g4 v -> AP = (1 + 2/3 + 3/5) / 3 = 34/45, first at rank 1.
    # qB: g2 x, g5 v, g1 v -> AP = (1/2 + 2/3) / 2 = 7/12.
    # qC: g4 x, g3 v -> AP = 1/2 (now valid).   qD: unchanged, AP = 1.
    s = reid_scores(DIST, Q_IDS, G_IDS, [9, 9, 9, 9], G_CAMS, ranks=(1,))
    assert s["n_skipped"] == 0 and s["n_queries"] == 4
    assert s["mAP"] == pytest.approx((34 / 45 + 7 / 12 + 1 / 2 + 1) / 4)
    assert s["rank1"] == pytest.approx(2 / 4)  # qA and qD
    # with the removal the same distances score 2/3 and skip qC (the hand-computed case)
    removed = reid_scores(DIST, Q_IDS, G_IDS, Q_CAMS, G_CAMS, ranks=(1,))
    assert removed["mAP"] == pytest.approx(2 / 3) and removed["mAP"] < s["mAP"]
    assert removed["n_skipped"] == 1 and removed["rank1"] == pytest.approx(1 / 3)


def test_perfect_ranking_gives_one():
    rng = np.random.default_rng(0)
    g_ids = np.repeat(np.arange(5), 4)
    g_cams = np.tile([1, 2, 1, 2], 5)
    q_ids = np.arange(5)
    q_cams = np.zeros(5, int)
    dist = np.where(q_ids[:, None] == g_ids[None, :], 0.0, 1.0) + 0.01 * rng.random((5, 20))
    s = reid_scores(dist, q_ids, g_ids, q_cams, g_cams)
    assert s["mAP"] == 1.0 and s["rank1"] == 1.0 and s["rank5"] == 1.0 and s["rank10"] == 1.0
    assert s["n_skipped"] == 0


def test_worst_ranking_and_string_labels():
    # the single correct item is ranked last of 4: AP = 1/4, rank-1 = rank-3 = 0, rank-4 = 1
    dist = np.array([[0.1, 0.2, 0.3, 0.9]])
    s = reid_scores(dist, ["ann"], ["bob", "cy", "dan", "ann"], ["c1"], ["c2", "c2", "c2", "c2"], ranks=(1, 3, 4))
    assert s["mAP"] == pytest.approx(0.25)
    assert (s["rank1"], s["rank3"], s["rank4"]) == (0.0, 0.0, 1.0)


def test_ties_are_broken_by_the_lower_gallery_index():
    # all distances equal: stable order g0, g1, g2 -> the match g1 is at rank 2
    s = reid_scores(np.zeros((1, 3)), [1], [0, 1, 2], [0], [1, 1, 1], ranks=(1, 2))
    assert s["mAP"] == pytest.approx(0.5) and s["rank1"] == 0.0 and s["rank2"] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_plain_loop_reference(seed):
    rng = np.random.default_rng(seed)
    q, g = 40, 300
    q_ids, g_ids = rng.integers(0, 12, q), rng.integers(0, 12, g)
    q_cams, g_cams = rng.integers(0, 3, q), rng.integers(0, 3, g)
    dist = rng.random((q, g)).round(2)  # rounding makes ties
    m, cmc, skipped = ref_market1501(dist.tolist(), q_ids.tolist(), g_ids.tolist(), q_cams.tolist(),
                                     g_cams.tolist(), max_rank=10)
    s = reid_scores(dist, q_ids, g_ids, q_cams, g_cams, ranks=range(1, 11))
    assert s["mAP"] == pytest.approx(m, rel=1e-12)
    assert [s[f"rank{k}"] for k in range(1, 11)] == pytest.approx(cmc, rel=1e-12)
    assert s["n_skipped"] == skipped


def test_query_chunks_give_the_same_scores(monkeypatch):
    import core.evaluation.reid_metrics as rm

    rng = np.random.default_rng(3)
    dist = rng.random((23, 50))
    args = (dist, rng.integers(0, 5, 23), rng.integers(0, 5, 50), rng.integers(0, 2, 23), rng.integers(0, 2, 50))
    whole = rm.reid_scores(*args)
    monkeypatch.setattr(rm, "_QUERY_CHUNK", 4)
    assert rm.reid_scores(*args) == pytest.approx(whole, nan_ok=True)


def test_no_valid_query_gives_nan():
    s = reid_scores(np.zeros((2, 2)), [1, 2], [1, 2], [0, 0], [0, 0])
    assert math.isnan(s["mAP"]) and math.isnan(s["rank1"]) and s["n_skipped"] == 2 and s["n_queries"] == 0


@pytest.mark.parametrize("kwargs, name", [
    ({"dist": np.zeros(3)}, "dist"),
    ({"dist": np.full((2, 3), np.nan)}, "dist"),
    ({"q_ids": [1, 2, 3]}, "q_ids"),
    ({"g_ids": [1, 2]}, "g_ids"),
    ({"q_cams": [[0], [0]]}, "q_cams"),
    ({"g_cams": [0, 0, 0, 0]}, "g_cams"),
    ({"ranks": (0,)}, "ranks"),
    ({"ranks": ()}, "ranks"),
])
def test_invalid_input_raises(kwargs, name):
    args = {"dist": np.zeros((2, 3)), "q_ids": [1, 2], "g_ids": [1, 2, 3], "q_cams": [0, 0], "g_cams": [1, 1, 1]}
    args.update(kwargs)
    with pytest.raises(ValidationError, match=repr(name)):
        reid_scores(**args)
