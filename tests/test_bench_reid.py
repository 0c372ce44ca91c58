"""bench/bench_reid.py: the split, the scoring protocol, the camera centring, the tables, and a --quick run on a
tiny synthetic crop folder (every part writes its rows)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import bench_reid as br  # noqa: E402


def _crop_folder(root: Path, n_ids: int = 12, seed: int = 0) -> Path:
    """``n_ids`` identities x 2 cameras x 8 views of 48 x 128 crops: an identity is a top / bottom colour pair, a
    camera adds a strong colour cast, a view shifts the figure and adds noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    cast = np.array([[60, -40, -40], [-40, 0, 60]], np.int16)
    for i in range(n_ids):
        top, bottom = rng.integers(30, 225, size=(2, 3))
        folder = root / f"{i:03d}"
        folder.mkdir(parents=True)
        for cam in range(2):
            for view in range(1, 9):
                img = np.full((128, 48, 3), 128, np.int16)
                dx = int(rng.integers(-4, 5))
                img[10:64, 10 + dx:38 + dx] = top
                img[64:120, 10 + dx:38 + dx] = bottom
                img += cast[cam] + rng.integers(-15, 16, size=img.shape).astype(np.int16)
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{cam + 1:02d}_{view}.png")
    return root


def test_split_holds_out_a_third_of_the_identities_seeded():
    train, held = br.split_ids(62, 0, 1 / 3)
    assert len(held) == 21 and len(train) == 41
    assert np.intersect1d(train, held).size == 0 and np.union1d(train, held).tolist() == list(range(62))
    assert np.array_equal(held, br.split_ids(62, 0, 1 / 3)[1])
    assert not np.array_equal(held, br.split_ids(62, 1, 1 / 3)[1])
    with pytest.raises(SystemExit, match="at least 2"):
        br.split_ids(4, 0, 0.1)


def test_evaluate_removes_same_identity_same_camera_and_scores_a_perfect_embedding_one():
    ids = np.repeat(np.arange(3), 4)
    cams = np.tile([0, 0, 1, 1], 3)
    F = np.eye(3)[ids] + 0.01 * np.random.default_rng(0).normal(size=(12, 3))
    s = br.evaluate(F, ids, cams)
    assert s["mAP"] == 1.0 and s["rank1"] == 1.0 and s["n_query"] == 12
    # camera dominates: the other identities of the own camera come first, the same-camera twin is no hit
    G = np.hstack([np.eye(2)[cams], 0.3 * np.eye(3)[ids]])
    s = br.evaluate(G, ids, cams)
    assert s["rank1"] == 0.0 and s["mAP"] < 0.5


def test_camera_centred_with_the_training_means_applies_them_to_new_items():
    rng = np.random.default_rng(1)
    F, G = rng.normal(size=(6, 3)), rng.normal(size=(4, 3))
    cams_f, cams_g = np.array([0, 0, 0, 1, 1, 1]), np.array([0, 1, 1, 2])
    means = br.camera_means(F, cams_f)
    C = br.camera_centred(G, cams_g, means)
    assert np.allclose(C[0], G[0] - F[:3].mean(0)) and np.allclose(C[1], G[1] - F[3:].mean(0))
    assert np.allclose(C[3], 0)  # camera 2 is not in the training means: its own mean is used


def test_camera_centred_removes_each_cameras_mean():
    rng = np.random.default_rng(0)
    cams = np.array([0, 0, 0, 1, 1])
    F = rng.normal(size=(5, 4)).astype(np.float32) + np.array([[5, 0, 0, 0]] * 3 + [[0, 5, 0, 0]] * 2)
    C = br.camera_centred(F, cams)
    assert np.allclose(C[cams == 0].mean(0), 0, atol=1e-5) and np.allclose(C[cams == 1].mean(0), 0, atol=1e-5)
    assert np.allclose(C[0] - C[1], F[0] - F[1], atol=1e-5)


def test_confirmed_ids_draw_a_fifth_of_the_training_identities(tmp_path):
    crops = br.load_folder(_crop_folder(tmp_path / "d", n_ids=10))
    args = br.parse_args(["--data", str(tmp_path / "d")])
    split = br.Split(crops, np.zeros((len(crops.paths), 2), np.float32), 0, args)
    chosen = br.confirmed_ids(split, 0.2, 0)
    assert len(split.train_ids) == 7 and len(chosen) == 2 and np.isin(chosen, split.train_ids).all()
    assert crops.cams.tolist().count(1) == 80 and crops.names[0] == "000"


def test_load_folder_names_a_file_that_does_not_parse(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "front.png").write_bytes(b"")
    with pytest.raises(SystemExit, match="front.png"):
        br.load_folder(tmp_path)


def test_ks_must_divide_the_batch_size():
    with pytest.raises(SystemExit, match="divide"):
        br.parse_args(["--ks", "2,5"])
    args = br.parse_args(["--quick"])
    assert args.epochs == 2 and args.seeds == [0] and args.ks == [2, 16] and args.finetune_budget_s == 60
    assert args.finetune_iters == [None] and br.parse_args([]).finetune_iters == [None, 20]
    with pytest.raises(SystemExit, match="--finetune-iters"):
        br.parse_args(["--finetune-iters", "0"])


def test_sampler_steps_default_to_one_pass_of_the_training_items():
    assert br.sampler_steps(br.parse_args([]), 656) == 20
    assert br.sampler_steps(br.parse_args(["--sampler-iters", "7"]), 656) == 7
    assert br.sampler_steps(br.parse_args(["--sampler-iters", "-1"]), 656) is None
    with pytest.raises(SystemExit, match="--sampler-camera-norm"):
        br.parse_args(["--sampler-camera-norm", "maybe"])
    assert br.parse_args([]).camera_norm == [True, False] and br.parse_args([]).sampler_camera_norm == [True]


def test_tables_give_mean_and_spread_and_a_sampler_by_k_grid():
    base = {"rank5": 0.5, "rank10": 0.6, "ari": 0.1, "n_clusters": 3, "n_outliers": 1, "epochs_run": 2,
            "seconds": 1.0, "budget_s": 60.0, "loadavg": [[1.0, 1, 1], [1.5, 1, 1]], "threads": 2}
    rows = [{**base, "part": "unsupervised", "condition": "head", "seed": s, "mAP": m, "rank1": 0.2,
             "sampler": "pk_proxy", "k": 4} for s, m in ((0, 0.3), (1, 0.5))]
    rows += [{**base, "part": "samplers", "condition": f"{name} K={k}", "seed": 0, "mAP": 0.1 * k, "rank1": 0.05,
              "sampler": name, "k": k} for name in ("pk_cluster", "group") for k in (2, 4)]
    rows += [{**base, "part": "samplers", "condition": "random", "seed": 0, "mAP": 0.11, "rank1": 0.0,
              "sampler": "random", "k": None}, {"part": "finetune", "condition": "ft", "seed": 0, "note": "skipped: x"}]
    text = br.tables(rows)
    assert "| unsupervised | head | 0,1 | 0.400 ± 0.100 | 0.200 ± 0.000 |" in text
    assert "| mAP | K=2 | K=4 |" in text and "| pk_cluster | 0.200 | 0.400 |" in text
    assert "| random (K unused) | 0.110 | |" in text and "skipped: x" in text
    assert "1.00-1.50" in text


@pytest.mark.slow
def test_quick_run_writes_a_row_per_configuration(tmp_path):
    data = _crop_folder(tmp_path / "crops")
    out = tmp_path / "out"
    args = ["--quick", "--data", str(data), "--cache", str(tmp_path / "cache"), "--out", str(out),
            "--extractor", "pixels_pca", "--finetune-backbone", "tiny", "--threads", "1"]
    rc = br.main(args)
    rows = [json.loads(line) for line in (out / "reid.jsonl").read_text().splitlines()]
    assert rc == 0 and not [r for r in rows if "error" in r]
    parts = [r["part"] for r in rows]
    assert parts.count("pretrained") == 3  # raw, camera-centred, camera-standardised
    assert parts.count("unsupervised") == parts.count("confirmed") == 2  # camera_norm on, off
    assert parts.count("samplers") == 7 and parts.count("finetune") == 1  # random + 3 samplers x K in {2, 16}
    for r in rows:
        assert r["n_train"] == 8 * 16 and r["n_query"] == 4 * 16 and r["n_held_ids"] == 4 and r["quick"] is True
        assert 0 <= r["mAP"] <= 1 and 0 <= r["rank1"] <= r["rank5"] <= r["rank10"] <= 1
        assert -1 <= r["ari"] <= 1 and r["n_clusters"] + r["n_outliers"] >= 1
    trained = [r for r in rows if r["part"] != "pretrained"]
    assert all(r["epochs_run"] == 2 and r["config"]["epochs"] == 2 for r in trained)
    confirmed = next(r for r in rows if r["part"] == "confirmed" and r["camera_norm"])
    assert confirmed["config"]["camera_norm"] is True
    assert len(confirmed["confirmed_ids"]) == 2 and confirmed["n_confirmed_items"] == 32
    assert confirmed["links"]["n_must"] == 30 and confirmed["links"]["n_cannot"] == 1
    raw, centred, standardised = (r for r in rows if r["part"] == "pretrained")
    assert (raw["inputs"], centred["inputs"], standardised["inputs"]) == br.INPUTS
    # the synthetic cameras' colour cast dominates the raw pixels
    assert centred["mAP"] > raw["mAP"] and standardised["mAP"] > raw["mAP"]
    text = br.tables(br.load_rows(out / "reid.jsonl", quick=True))
    assert "| samplers | group K=16, 4 steps/epoch |" in text  # 128 items / batch 32
    assert "### samplers (camera_norm on, 4 steps/epoch): mAP" in text
    # --resume skips what is recorded and reruns what failed or is missing
    kept = [line for line in (out / "reid.jsonl").read_text().splitlines() if '"part": "finetune"' not in line]
    (out / "reid.jsonl").write_text("\n".join(kept) + "\n")
    assert br.main(args + ["--resume"]) == 0
    again = [json.loads(line) for line in (out / "reid.jsonl").read_text().splitlines()]
    assert len(again) == len(rows) and again[-1]["part"] == "finetune"
