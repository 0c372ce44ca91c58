"""Browser benchmark: first page load and label key -> next item on a generated project of 100,000 items.

Playwright drives Debian's Chromium (``/usr/bin/chromium``) against ``streamlit run app.py``. The project is
generated (``tests/browser_helpers.make_big_project``): N image items inserted directly, pointing at a few real
digit PNGs; no features are cached (the queue then skips near-duplicate suppression), no model is trained.

    .venv/bin/python bench/bench_browser.py [--items 100000] [--presses 15] [--worker]

Times are measured inside the browser (``performance.now()``) from the keydown event to the DOM mutation that
shows the next item's caption ("item <id> · <uri>"). Appends one line to bench/results/browser.jsonl.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import record  # noqa: E402
from tests.browser_helpers import (app_server, browser, chromium_problem, goto_page, press_and_wait_next,  # noqa: E402
                                   set_annotator, shot, wait_home, wait_label_ready)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--presses", type=int, default=15)
    ap.add_argument("--worker", action="store_true", help="also run the worker (idle: nothing is queued)")
    ap.add_argument("--no-record", action="store_true", help="print, do not append to bench/results")
    args = ap.parse_args(argv)
    problem = chromium_problem()
    if problem:
        print(f"skipped: {problem}", file=sys.stderr)
        return 1

    from core.active.queue import next_items
    from tests.browser_helpers import make_big_project

    with tempfile.TemporaryDirectory(prefix="bench_browser_") as tmp:
        projects = Path(tmp) / "projects"
        t0 = time.perf_counter()
        store = make_big_project(projects / "big", n=args.items)
        make_s = time.perf_counter() - t0
        assert store.item_count() == args.items
        t0 = time.perf_counter()
        next_items(store, n=10, annotator="bench")
        next_items_ms = (time.perf_counter() - t0) * 1000
        print(f"generated {args.items} items in {make_s:.1f} s; next_items(n=10) in-process {next_items_ms:.0f} ms",
              flush=True)

        with app_server(projects, worker=args.worker, log_dir=Path(tmp) / "logs") as url, browser() as b:
            loads = []
            for _ in range(2):  # the first load includes the server's first script run; the second is warm
                ctx = b.new_context(viewport={"width": 1400, "height": 900})
                page = ctx.new_page()
                t0 = time.perf_counter()
                page.goto(url)
                wait_home(page)
                loads.append(time.perf_counter() - t0)
                if len(loads) < 2:
                    ctx.close()
            set_annotator(page, "bench")
            t0 = time.perf_counter()
            goto_page(page, "Label")
            wait_label_ready(page)
            label_open_s = time.perf_counter() - t0
            shot(page, "bench_label_100k")
            times, seen = [], set()
            for k in range(args.presses):
                cap, ms = press_and_wait_next(page, str(k % 10))
                seen.add(cap)
                times.append(ms)
            ctx.close()
        votes = sum(1 for v in store.active_votes() if v["annotator"] == "bench")

    result = {
        "items": args.items, "presses": args.presses, "worker": args.worker,
        "first_load_s": round(loads[0], 3), "second_load_s": round(loads[1], 3),
        "label_page_open_s": round(label_open_s, 3), "next_items_in_process_ms": round(next_items_ms, 1),
        "key_to_next_ms": {"median": round(statistics.median(times), 1), "max": round(max(times), 1),
                           "min": round(min(times), 1), "all": [round(t, 1) for t in times]},
        "distinct_items_shown": len(seen), "votes_stored": votes, "aim_ms": 300,
        "meets_aim_median": statistics.median(times) < 300,
    }
    if args.no_record:
        print(result)
    else:
        record("browser", result)
    return 0 if votes == args.presses and len(seen) == args.presses else 1


if __name__ == "__main__":
    sys.exit(main())
