"""Browser benchmark of the Embeddings page on a generated project of 100,000 items with a published run.

The run is synthetic (coordinates drawn around one centre per reference label, confidences uniform): this
measures the page, not a model. Times: from clicking "Embeddings" until the WebGL map is drawn, and from
choosing another colouring until the page is idle again. Appends to bench/results/browser.jsonl.

    .venv/bin/python bench/bench_map.py [--items 100000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import record  # noqa: E402
from tests.browser_helpers import (app_server, browser, chromium_problem, set_annotator, shot, wait_home,  # noqa: E402
                                   wait_idle)


def publish_synthetic_run(store) -> int:
    ids = store.item_ids()
    ref = store.reference_labels()
    labels = [ref[int(i)] for i in ids]
    rng = np.random.default_rng(0)
    centres = {lab: rng.normal(0, 10, 2) for lab in set(labels)}
    coords = np.array([centres[lab] for lab in labels]) + rng.normal(0, 1.5, (len(ids), 2))
    conf = rng.uniform(0.3, 1.0, len(ids))
    return store.publish_run(model="classifier", config={"synthetic": True}, metrics={}, artefact_dir=store.dir,
                             classes=store.labels(), item_ids=ids, labels=labels, confidences=conf,
                             clusters=np.array([int(lab) for lab in labels]), coords=coords)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    args = ap.parse_args()
    if chromium_problem():
        print(f"skipped: {chromium_problem()}", file=sys.stderr)
        return 1
    from tests.browser_helpers import make_big_project

    with tempfile.TemporaryDirectory(prefix="bench_map_") as tmp:
        projects = Path(tmp) / "projects"
        store = make_big_project(projects / "big", n=args.items)
        publish_synthetic_run(store)
        with app_server(projects, worker=False, log_dir=Path(tmp) / "logs") as url, browser() as b:
            page = b.new_context(viewport={"width": 1400, "height": 900}).new_page()
            page.goto(url)
            wait_home(page)
            set_annotator(page, "bench")
            t0 = time.perf_counter()
            page.get_by_role("link", name="Embeddings", exact=True).first.click()
            page.locator(".js-plotly-plot .gl-container canvas, .js-plotly-plot canvas").first.wait_for(timeout=300_000)
            wait_idle(page, timeout=300_000)
            first = time.perf_counter() - t0
            t1 = time.perf_counter()
            page.get_by_text("confidence", exact=True).first.click()
            wait_idle(page, timeout=300_000)
            recolour = time.perf_counter() - t1
            shot(page, "bench_map_100k")
        record("browser", {"page": "embeddings", "n_items": args.items, "map_first_draw_s": round(first, 2),
                           "recolour_s": round(recolour, 2)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
