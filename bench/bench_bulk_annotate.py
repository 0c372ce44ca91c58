"""Bulk labels from a CSV (``python -m core annotate``): the one-transaction write of every annotator's rows
(``annotate_rows``, consensus recomputed for the touched items only) against the previous way, one
``annotate_many`` transaction per annotator, in the same run. While each write runs, another process casts a
single vote every 50 ms and records how long it waited for the write lock.

    .venv/bin/python bench/bench_bulk_annotate.py [--items 100000] [--annotators 3] [--prior 1]

``--prior`` votes per item by other annotators are written first (a project that already holds votes: the cost
of the old write grew with them). Rows go to bench/results/bulk_annotate.jsonl.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import record  # noqa: E402
from core.store.project_store import Store, now  # noqa: E402

LABELS = [str(i) for i in range(10)]


def make_project(path: Path, n: int, prior: int) -> Store:
    store = Store.create(path, modality="text", labels=LABELS, min_votes=2)
    with store.transaction() as conn:
        conn.execute("INSERT INTO sources (root, kind, spec, created_at) VALUES ('.', 'manifest', 'bench', ?)", (now(),))
        conn.executemany("INSERT INTO items (source_id, uri, modality, text, content_hash, created_at) "
                         "VALUES (1, ?, 'text', ?, ?, ?)", ((f"text:{i}", f"t{i}", f"h{i}", now()) for i in range(n)))
    rng = np.random.default_rng(0)
    ids = store.item_ids()
    for p in range(prior):
        store.annotate_rows([(int(i), f"prior{p}", LABELS[int(j)]) for i, j in zip(ids, rng.integers(0, 10, len(ids)))])
    return store


def voter(path: str, stop, out) -> None:
    """Cast one vote every 50 ms on item 1 (alternating labels) and report the longest wait."""
    store = Store(path, origin="cli")
    waits, k = [], 0
    while not stop.is_set():
        t = time.perf_counter()
        store.annotate(1, "single", LABELS[k % 2])
        waits.append(time.perf_counter() - t)
        k += 1
        time.sleep(0.05)
    out.put((max(waits) if waits else 0.0, len(waits)))


def timed(store: Store, write) -> dict:
    stop, out = mp.Event(), mp.Queue()
    p = mp.Process(target=voter, args=(str(store.dir), stop, out))
    p.start()
    time.sleep(1.0)
    t = time.perf_counter()
    write()
    seconds = time.perf_counter() - t
    time.sleep(0.3)
    stop.set()
    worst, n = out.get(timeout=60)
    p.join(timeout=30)
    return {"seconds": round(seconds, 2), "max_single_vote_wait_s": round(worst, 3), "single_votes": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--annotators", type=int, default=3)
    ap.add_argument("--prior", type=int, default=1)
    a = ap.parse_args()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        for way in ("per_annotator", "one_transaction"):
            store = make_project(Path(tmp) / way, a.items, a.prior)
            store.origin = "cli"
            ids = store.item_ids()
            rows = [(int(i), f"ann{m}", LABELS[int(j)]) for m in range(a.annotators)
                    for i, j in zip(ids, rng.integers(0, 10, len(ids)))]
            if way == "per_annotator":
                def write():
                    for m in range(a.annotators):
                        store.annotate_many([(i, lab) for i, who, lab in rows if who == f"ann{m}"],
                                            annotator=f"ann{m}", skip_existing=True)
            else:
                def write():
                    store.annotate_rows(rows)
            res = timed(store, write)
            n_conf = store.conn.execute("SELECT COUNT(*) FROM consensus WHERE confirmed = 1").fetchone()[0]
            record("bulk_annotate", {"way": way, "items": a.items, "annotators": a.annotators, "prior_votes": a.prior,
                                     "rows": len(rows), "confirmed_items": int(n_conf), **res})


if __name__ == "__main__":
    main()
