"""bench/bench_iic.py: the markdown tables from recorded rows, the label draw and the score helpers (no IIC fit)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import bench_iic as bi  # noqa: E402


def _row(method, seed, acc, *, part="cifar", labels=0.0, collapsed=False, seconds=10.0, date="2026-12-02 06:00:00"):
    return {"part": part, "data": "d", "method": method, "seed": seed, "labels": labels, "metric": "m",
            "acc": acc, "nmi": acc / 2, "ari": None, "collapsed": collapsed, "seconds": seconds, "budget_s": 600.0,
            "date": date}


def test_table_gives_mean_and_spread_over_seeds_and_counts_flagged_runs():
    rows = [_row("iic", 0, 0.6, collapsed=True), _row("iic", 1, 0.8), _row("k-means", 0, 0.45, seconds=2.0)]
    text = bi.tables(rows)
    iic = next(line for line in text.splitlines() if line.startswith("| d | iic |"))
    assert "| 0.700 ± 0.100 | 0.350 ± 0.050 | - |" in iic  # mean ± population std; no ARI -> "-"
    assert "| 1/2 |" in iic and "| 0,1 |" in iic and "| none |" in iic and "| 600 |" in iic
    km = next(line for line in text.splitlines() if line.startswith("| d | k-means |"))
    assert "| 0.450 |" in km and "| 2.0 |" in km


def test_table_keeps_label_fractions_apart_and_has_a_flickr_layout():
    rows = [_row("iic", 0, 0.7, labels=0.01), _row("iic", 0, 0.9, labels=0.1),
            {"part": "flickr", "data": "f", "method": "iic image view", "seed": 0, "nmi_vs": {"caption": 0.3},
             "largest_fraction": 0.2, "collapsed": False, "seconds": 1.0}]
    text = bi.tables(rows)
    assert "| 1% |" in text and "| 10% |" in text and "| 0.700 |" in text and "| 0.900 |" in text
    assert "### flickr" in text and "caption 0.300" in text


def test_load_rows_filters_by_date(tmp_path):
    path = tmp_path / "iic.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (_row("a", 0, 0.1, date="2026-12-01 10:00:00 UTC"),
                                                      _row("b", 0, 0.2, date="2026-12-02 06:30:00 UTC"))) + "\n")
    assert [r["method"] for r in bi.load_rows(path, "2026-12-02")] == ["b"]
    assert len(bi.load_rows(path)) == 2 and bi.load_rows(tmp_path / "none.jsonl") == []


def test_stratified_draws_the_fraction_of_each_class_and_at_least_two():
    y = np.array(["a"] * 100 + ["b"] * 10)
    lab = bi.stratified(y, 0.1, seed=3)
    assert len(np.unique(lab)) == len(lab) == 12
    assert (y[lab] == "a").sum() == 10 and (y[lab] == "b").sum() == 2
    assert not np.array_equal(lab, bi.stratified(y, 0.1, seed=4))


def test_cluster_scores_are_permutation_free_and_label_scores_are_not():
    y = np.array([0, 0, 1, 1, 2, 2])
    assert bi.cluster_scores(y, np.array([2, 2, 0, 0, 1, 1]))["acc"] == 1.0
    assert bi.label_scores(y, np.array([2, 2, 0, 0, 1, 1]))["acc"] == 0.0


def test_collapse_fields_carry_reasons_and_advice():
    from core.models.cluster_report import collapse_report

    rep = {**collapse_report(np.zeros(20, np.int64), 4), "advice": ["try x"]}
    out = bi.collapse_fields(rep)
    assert out["collapsed"] is True and out["largest_fraction"] == 1.0 and out["advice"] == ["try x"]
    assert any("holds 100%" in r for r in out["collapse_reasons"])
    assert bi.collapse_fields(None) == {"collapsed": None, "collapse_reasons": None}


def test_quick_arguments_shrink_the_run():
    args = bi.parse_args(["--quick", "--budget-s", "600"])
    assert args.seeds == [0] and args.budget_s == 30.0 and args.dec_max_iter == 50
    assert bi.parse_args(["--seeds", "2"]).seeds == [0, 1]


def test_seed_range_and_dec_seeds():
    args = bi.parse_args(["--seeds", "2", "--first-seed", "1", "--dec-seeds", "1"])
    assert args.seeds == [1, 2] and args.dec_seeds == [1]
    assert bi.parse_args(["--seeds", "3"]).dec_seeds == [0, 1, 2]


def test_iic_params_name_the_variant():
    assert bi._variant(bi.parse_args([])) == ""
    assert bi._variant(bi.parse_args(["--iic-params", '{"lamb": 1.5}'])) == " (lamb=1.5)"


def test_methods_and_failure_runs_are_checked():
    args = bi.parse_args(["--methods", "dec", "--failure-runs", "fixed_cnn"])
    assert args.methods == {"dec"} and args.failure_runs == ["fixed_cnn"]
    with pytest.raises(SystemExit, match="--methods"):
        bi.parse_args(["--methods", "iic,svm"])


def test_purity_table_has_one_column_per_k():
    rows = [{"part": "purity", "data": "d", "method": "p", "config": {"features": name}, "purity": {"1": a, "20": b}}
            for name, a, b in (("raw", 0.67, 0.573), ("centred", 0.681, 0.5864))]
    text = bi.tables(rows)
    assert "| data | features | k=1 | k=20 |" in text
    assert "| d | raw | 0.670 | 0.573 |" in text and "| d | centred | 0.681 | 0.586 |" in text
