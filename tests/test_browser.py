"""Real-browser end-to-end tests: Playwright drives Debian's Chromium against the app and the worker.

The app (``streamlit run app.py``) and the worker (``python -m core worker``) run as subprocesses on a 300-item
demo project. Screenshots of every page visited go to ``test-output/browser/``. Speed is measured by
``bench/bench_browser.py`` (100,000 items), not asserted here.
"""
from __future__ import annotations

import re
import statistics
import time

import pytest

from core.io.demo import create_demo
from core.store.project_store import Store
from tests.browser_helpers import (CHROMIUM, app_server, browser, caption, chromium_problem, goto_page, lasso,
                                   press_and_wait_next, set_annotator, shot, wait_home, wait_idle, wait_label_ready,
                                   wait_map)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"Debian's Chromium is absent at {CHROMIUM}"),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, store, browser) for a 300-item demo project served with its worker."""
    problem = chromium_problem()
    if problem:
        pytest.skip(problem)
    tmp = tmp_path_factory.mktemp("browser")
    store, created = create_demo(tmp / "projects" / "demo", n=300, queue_features=False)
    assert created
    store.origin = "cli"  # the tests' own set-up writes, like the CLI's, are not role-checked; the browser's are
    store.set_setting("auto_retrain", False)  # these tests retrain on purpose; the demo's automatic retrains
    # are tested in tests/test_auto_retrain.py
    with app_server(tmp / "projects", worker=True, log_dir=tmp / "logs") as url, browser() as b:
        yield url, store, b


def _open(b, url: str, annotator: str | None = None):
    ctx = b.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    page.goto(url)
    wait_home(page)
    if annotator:
        set_annotator(page, annotator)
    return ctx, page


def _item_id(cap: str) -> int:
    return int(re.match(r"item (\d+) ", cap).group(1))


def _votes_by(store: Store, annotator: str) -> int:
    return sum(1 for v in store.active_votes() if v["annotator"] == annotator)


def test_label_retrain_and_suggestions(served):
    url, store, b = served
    ctx, page = _open(b, url)
    try:
        wait_idle(page)
        shot(page, "home")
        set_annotator(page, "tester")
        goto_page(page, "Label")
        wait_label_ready(page)
        assert page.get_by_text("No model suggestion yet.").is_visible()
        shot(page, "label_before")
        truth = store.reference_labels()
        shown = []
        for _ in range(5):
            cap = caption(page)
            shown.append(_item_id(cap))
            new, _ms = press_and_wait_next(page, truth[_item_id(cap)])  # press the digit of the true label
            assert new != cap
        assert _votes_by(store, "tester") == 5
        assert {v["item_id"] for v in store.active_votes() if v["annotator"] == "tester"} == set(shown)

        goto_page(page, "Train")
        page.get_by_role("button", name="Retrain now").click()
        page.get_by_text(re.compile(r"Job \d+ is|published run")).first.wait_for(timeout=30_000)
        shot(page, "train_running")
        page.get_by_text(re.compile(r"published run \d+")).wait_for(timeout=180_000)
        wait_idle(page)
        page.mouse.move(5, 5)  # no tooltip over the page in the screenshot
        shot(page, "train_done")
        assert store.run() is not None, "the Train page said a run was published but the store has none"

        goto_page(page, "Label")
        wait_label_ready(page)
        page.get_by_text("Model suggests").wait_for(timeout=30_000)
        assert not page.get_by_text("No model suggestion yet.").is_visible()
        shot(page, "label_after")
    finally:
        ctx.close()


def test_two_annotators_at_once(served):
    url, store, b = served
    ctx_a, a = _open(b, url, "ann_a")
    ctx_b, bb = _open(b, url, "ann_b")
    try:
        goto_page(a, "Label")
        goto_page(bb, "Label")
        for k in range(4):  # interleave: a, b, a, b, ...
            press_and_wait_next(a, str(k % 10))
            press_and_wait_next(bb, str((k + 5) % 10))
        shot(a, "label_ann_a")
        shot(bb, "label_ann_b")
        assert _votes_by(store, "ann_a") == 4
        assert _votes_by(store, "ann_b") == 4
        assert {"ann_a", "ann_b"} <= set(store.annotators())
    finally:
        ctx_a.close()
        ctx_b.close()


def test_label_speed_smoke(served):
    """Times the first load and key -> next item on the small project; reports, asserts no timing."""
    url, store, b = served
    ctx = b.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    try:
        t0 = time.perf_counter()
        page.goto(url)
        wait_home(page)
        first_load = time.perf_counter() - t0
        set_annotator(page, "speed")
        goto_page(page, "Label")
        times, seen = [], set()
        for k in range(15):
            cap, ms = press_and_wait_next(page, str(k % 10))
            seen.add(cap)
            times.append(ms)
        assert len(seen) == 15 and _votes_by(store, "speed") == 15
        print(f"\n300 items: first load {first_load:.2f} s; key -> next item median {statistics.median(times):.0f} ms, "
              f"max {max(times):.0f} ms")
    finally:
        ctx.close()


def _settled_votes(store, annotator: str, quiet_s: float = 3.0, timeout_s: float = 60.0) -> list[int]:
    """The annotator's active votes once no new one has arrived for ``quiet_s`` seconds (a loaded machine can
    deliver a burst of key presses after the page first looks idle)."""

    def votes() -> list[int]:
        return [v["item_id"] for v in store.active_votes() if v["annotator"] == annotator]

    seen, since, start = votes(), time.monotonic(), time.monotonic()
    while time.monotonic() - since < quiet_s and time.monotonic() - start < timeout_s:
        time.sleep(0.25)
        now = votes()
        if len(now) != len(seen):
            seen, since = now, time.monotonic()
    return seen


def test_rapid_key_presses_never_vote_twice_on_one_item(served):
    """Keys pressed faster than the page redraws must not land on the item that was already labelled."""
    url, store, b = served
    ctx, page = _open(b, url, "rapid")
    try:
        goto_page(page, "Label")
        press_and_wait_next(page, "1")  # the shortcuts are live once one press has moved to the next item
        wait_label_ready(page)
        for _ in range(4):
            page.keyboard.press("1")  # no wait between presses
        wait_idle(page)
        burst = _settled_votes(store, "rapid")  # presses queued in the browser may still be arriving
        assert 1 <= len(burst) <= 5  # how many presses outran the redraw depends on the machine's load
        press_and_wait_next(page, "1")  # the page is still live after the burst
        votes = [v["item_id"] for v in store.active_votes() if v["annotator"] == "rapid"]
        assert len(votes) == len(burst) + 1
        assert len(votes) == len(set(votes)), f"an item got several votes from one fast typist: {votes}"
    finally:
        ctx.close()


def test_every_page_in_the_browser(served):
    """After the retrain above: every page renders without an exception; a screenshot of each is saved."""
    url, store, b = served
    assert store.run() is not None
    ctx, page = _open(b, url, "viewer")
    try:
        shot(page, "page_home")
        for title in ("Label", "Embeddings", "Pseudo-labels", "Clusters", "Consensus", "Train"):
            goto_page(page, title)
            wait_idle(page)
            assert page.locator("[data-testid=stException]").count() == 0, title
            shot(page, "page_" + title.lower().replace("-", "_"))
        goto_page(page, "Embeddings")
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)  # the WebGL map is drawn
        assert page.locator(".js-plotly-plot").count() >= 1
    finally:
        ctx.close()


def test_lasso_on_the_map_labels_the_selected_items(served):
    """Lasso a known group of points on the Embeddings map and label it: one bulk action on exactly those items.

    A run with a known layout is published first (30 items in a tight group at the origin, the rest on a circle
    of radius 10), so the test knows which items the lasso encloses. It runs last: the Label tests above expect
    no run at the start.
    """
    import numpy as np

    url, store, b = served
    ids = store.item_ids()
    group = [int(i) for i in ids[:30]]
    angle = np.linspace(0, 2 * np.pi, len(ids) - 30, endpoint=False)
    rng = np.random.default_rng(0)
    coords = np.concatenate([rng.normal(scale=0.3, size=(30, 2)), 10 * np.stack([np.cos(angle), np.sin(angle)], 1)])
    run_dir = store.dir / "runs" / "lasso-layout"
    run_dir.mkdir(parents=True, exist_ok=True)
    store.publish_run(model="classifier", config={}, metrics={}, artefact_dir=run_dir, classes=store.labels(),
                      item_ids=ids, labels=["0"] * len(ids), confidences=np.full(len(ids), 0.5),
                      clusters=np.zeros(len(ids), int), coords=coords)
    ctx, page = _open(b, url, "lasso")
    try:
        goto_page(page, "Embeddings")
        wait_idle(page)
        wait_map(page)
        assert page.locator("[data-testid=stException]").count() == 0
        lasso(page, (0.0, 0.0), 3.0)
        selected = page.get_by_text(re.compile(r"items on the map · 30 selected"))
        error = page.locator("[data-testid=stException]")
        selected.or_(error).first.wait_for(timeout=30_000)
        assert not error.count(), f"the lasso selection raised: {error.first.inner_text()[:1000]}"
        wait_idle(page)
        shot(page, "embeddings_lasso")
        page.get_by_role("button", name="Label 30 items").click()
        page.get_by_text(re.compile(r"Recorded 30 labels '0' as one bulk action by lasso")).wait_for(timeout=30_000)
        votes = [v for v in store.active_votes() if v["annotator"] == "lasso"]
        assert sorted(v["item_id"] for v in votes) == sorted(group)
        assert {v["kind"] for v in votes} == {"bulk"} and {v["label"] for v in votes} == {"0"}
        batches = {r[0] for r in store.conn.execute("SELECT DISTINCT batch FROM annotations WHERE annotator = 'lasso'")}
        assert len(batches) == 1 and None not in batches  # one action: one undo retracts it
        assert sorted(store.undo_last("lasso")) == sorted(group)
    finally:
        ctx.close()
