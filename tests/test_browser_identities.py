"""Real-browser test of the Identities page: confirm a match with the keyboard, retrain, see the clusters change.

A 48-crop project (8 identities x 6 person-like crops, 2 cameras; the camera changes the brightness, so the
first clustering splits identities by camera) is trained once with the light "reid" head through a train job
before the app starts (so that "Retrain now" reuses its parameters). In Chromium: open Identities, press ``S``
on the focused match (the best match from the other camera, in another pseudo-identity), check the pair vote,
press Retrain now and wait for the page to show the new run, where the confirmed pair is one identity.
"""
from __future__ import annotations

import re
import time

import pytest

from core.jobs import queue as jobs
from core.jobs.worker import run_job
from core.views.identities import identity_queue, load_identity_run, ranked_matches
from tests.browser_helpers import (CHROMIUM, app_server, browser, chromium_problem, goto_page, set_annotator, shot,
                                   wait_home, wait_idle)
from tests.test_identities_view import people_project

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"Debian's Chromium is absent at {CHROMIUM}"),
]

#: the light variant, with neighbourhoods sized for 6 crops per identity; without the per-camera standardisation,
#: so that the first clustering splits identities by camera and the confirmed pair has something to join
PARAMS = {"variant": "head", "epochs": 3, "k1": 6, "k2": 2, "min_samples": 2, "camera_norm": False}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, store, browser) for the crop project with one reid run, served with its worker."""
    import torch

    torch.set_num_threads(1)
    problem = chromium_problem()
    if problem:
        pytest.skip(problem)
    tmp = tmp_path_factory.mktemp("browser-identities")
    store = people_project(tmp / "projects" / "people")
    store.origin = "cli"  # the tests' own set-up writes, like the CLI's, are not role-checked; the browser's are
    store.set_setting("auto_retrain", False)
    job_id, _ = jobs.request_job(store, "train", {"model": "reid", "params": PARAMS}, requested_by="setup")
    assert run_job(store, jobs.claim_next(store, job_id=job_id)) == "done", jobs.get_job(store, job_id)["message"]
    with app_server(tmp / "projects", worker=True, log_dir=tmp / "logs") as url, browser() as b:
        yield url, store, b


def _wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def test_confirm_a_match_with_the_keyboard_retrain_and_see_the_clusters_change(served):
    url, store, b = served
    before = load_identity_run(store)
    query = identity_queue(store, before, "tester")[0]  # what the page shows first
    match = ranked_matches(before, query)[0]  # the focused match
    q_cluster = int(before.clusters[before.row_of(query)])
    assert not match.same_camera and match.cluster != q_cluster, "the first clustering should split by camera"
    ctx = b.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    try:
        page.goto(url)
        wait_home(page)
        assert page.get_by_text("Deploy", exact=True).count() == 0  # no developer toolbar (.streamlit/config.toml)
        set_annotator(page, "tester")
        goto_page(page, "Identities")
        page.get_by_text(f"query item {query} ").wait_for(timeout=60_000)
        page.get_by_text(re.compile(rf"▶ focused · #{match.item_id} ")).wait_for(timeout=30_000)
        page.locator('kbd[aria-label^="Shortcut"]').last.wait_for(timeout=30_000)
        wait_idle(page)
        shot(page, "identities_before")

        page.keyboard.press("s")
        votes = _wait_for(lambda: [v for v in store.active_pair_votes() if v["annotator"] == "tester"], 30,
                          "the pair vote of the key press")
        assert len(votes) == 1 and votes[0]["decision"] == "same"
        assert {votes[0]["item_a"], votes[0]["item_b"]} == {query, match.item_id}
        page.get_by_text(re.compile(rf"#{match.item_id} · .* · same ✓")).wait_for(timeout=30_000)
        wait_idle(page)

        page.get_by_role("button", name="Retrain now").click()
        new = _wait_for(lambda: (r := store.run(model="reid")) is not None and r["id"] != before.id and r, 240,
                        "the retrained reid run")
        page.get_by_text(re.compile(rf"reid run {new['id']} ·")).wait_for(timeout=60_000)
        wait_idle(page)
        page.mouse.move(5, 5)
        shot(page, "identities_after")
        assert page.locator("[data-testid=stException]").count() == 0
        metrics = dict(zip(page.locator('[data-testid="stMetricLabel"]').all_inner_texts(),
                           page.locator('[data-testid="stMetricValue"]').all_inner_texts()))
        assert metrics.get("Must-links") == "1", metrics
        after = load_identity_run(store)
        assert int(after.clusters[after.row_of(query)]) == int(after.clusters[after.row_of(match.item_id)]) != -1
        assert metrics.get("Identities") == str(len(set(after.clusters.tolist()) - {-1}))
    finally:
        ctx.close()
