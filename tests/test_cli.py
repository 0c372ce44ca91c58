"""The command line end to end on a small image folder: init, import, features, annotate, train, evaluate,
export, status; exit codes and messages fit for scripts."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import digits_folder

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "core", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


@pytest.mark.slow
def test_cli_workflow(tmp_path):
    src = digits_folder(tmp_path / "src", per_class=15, classes=(0, 1, 2, 3))
    proj = tmp_path / "proj"
    out = json.loads(cli("init", proj, "--modality", "image", "--extractor", "pixels_pca", "--min-votes", "1",
                         "--json").stdout)
    assert out["modality"] == "image"
    rep = json.loads(cli("import", proj, src, "--reference-from-folders", "--json").stdout)
    assert rep["added"] == 60 and rep["skipped"] == 0
    feats = json.loads(cli("features", proj, "--json").stdout)
    assert feats["items"] == 60 and feats["extractors"] == ["pixels_pca"]
    # label a third of the items, one annotator
    rows = [("path", "annotator", "label")]
    for d in range(4):
        for p in sorted((src / str(d)).glob("*.png"))[:5]:
            rows.append((f"{d}/{p.name}", "alice", str(d)))
    rows.append(("0/nope.png", "alice", "0"))
    rows.append((rows[1][0], "alice", "seven"))
    labels_csv = tmp_path / "labels.csv"
    with open(labels_csv, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    ann = json.loads(cli("annotate", proj, labels_csv, "--json").stdout)
    assert ann["annotations"] == 20 and ann["skipped"] == 2 and ann["confirmed_items"] == 20
    assert cli("annotate", proj, labels_csv, "--strict", check=False).returncode == 3
    train = json.loads(cli("train", proj, "--model", "classifier", "--device", "cpu",
                           "--param", "mlp_max_steps=100", "--json").stdout)
    assert train["n_labelled"] == 20 and train["model_selected"] in ("knn", "linear_svm", "mlp")
    ev = json.loads(cli("evaluate", proj, "--json").stdout)
    assert ev["unlabelled"]["n"] == 40 and ev["all"]["n"] == 60
    assert ev["unlabelled"]["accuracy"] > 0.6  # digits 0-3 from 5 labels each: well above chance (0.25)
    assert set(ev["all"]["clusters"]) == {"acc", "nmi", "ari"}
    out_csv = tmp_path / "export.csv"
    cli("export", proj, "--format", "csv", "--out", out_csv)
    with open(out_csv) as f:
        exported = list(csv.DictReader(f))
    assert len(exported) == 60 and "reference_label" not in exported[0]
    assert sum(r["confirmed"] == "True" for r in exported) == 20
    out_jsonl = tmp_path / "export.jsonl"
    cli("export", proj, "--format", "jsonl", "--out", out_jsonl, "--include-reference")
    first = json.loads(out_jsonl.read_text().splitlines()[0])
    assert "votes" in first and first["reference_label"] is not None
    st = json.loads(cli("status", proj, "--json").stdout)
    assert st["items"] == 60 and st["latest_run"]["id"] == train["run"]
    q = json.loads(cli("query", proj, "--strategy", "margin", "--n", "5", "--annotator", "alice", "--json").stdout)
    assert len(q["items"]) == 5


def test_cli_errors_are_clear_and_coded(tmp_path):
    p = cli("status", tmp_path / "none", check=False)
    assert p.returncode == 1 and "No project" in p.stderr and "Traceback" not in p.stderr
    p = cli("init", tmp_path / "x", "--modality", "video", check=False)
    assert p.returncode == 2
    cli("init", tmp_path / "x", "--modality", "image")
    p = cli("train", tmp_path / "x", "--model", "nonsense", check=False)
    assert p.returncode == 1 and "'classifier'" in p.stderr
    p = cli("evaluate", tmp_path / "x", check=False)
    assert p.returncode == 1 and "no published run" in p.stderr
    p = cli("import", tmp_path / "x", tmp_path / "missing", check=False)
    assert p.returncode == 1 and "missing" in p.stderr
    p = cli("query", tmp_path / "x", "--strategy", "bogus", check=False)
    assert p.returncode == 1 and "least_confidence" in p.stderr
