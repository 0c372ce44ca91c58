"""Write a labels CSV (path, annotator, label) for a fraction of a project's items, from its reference labels.

Simulates one annotator who labels a stratified random share of the items correctly; used by the CLI
walk-through in the README, the benchmarks and the shared-data tests.

    python bench/make_label_csv.py PROJECT --fraction 0.1 --annotator alice > labels.csv
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.store.project_store import Store  # noqa: E402


def label_rows(store: Store, fraction: float, annotator: str, seed: int = 0) -> list[tuple[str, str, str]]:
    """(item_id, annotator, label) for a stratified ``fraction`` of the items with reference labels."""
    ref = store.reference_labels()
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for item_id, lab in sorted(ref.items()):
        by_label.setdefault(lab, []).append(item_id)
    rows = []
    for lab, ids in sorted(by_label.items()):
        k = max(1, int(round(fraction * len(ids))))
        for item_id in rng.choice(ids, size=k, replace=False):
            rows.append((str(int(item_id)), annotator, lab))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("project")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--annotator", default="alice")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    w = csv.writer(sys.stdout)
    w.writerow(["item_id", "annotator", "label"])
    w.writerows(label_rows(Store(a.project), a.fraction, a.annotator, a.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
