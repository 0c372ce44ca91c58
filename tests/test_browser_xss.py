"""Real-browser test (issue 15): hostile file names, captions, labels and annotator names show as text.

The project of :func:`tests.test_text_safety.hostile_project` (an image+text project whose names and captions
are ``<img src=x onerror=alert(1)>``, ``<script>alert(1)</script>``, ``[x](javascript:alert(1))`` and
``**bold**``, with a published run) is served without a worker; Chromium visits Home, Label, Embeddings,
Clusters and Consensus. On every page: no dialog fired, no ``<img src="x">``, no ``javascript:`` link, no
script element holding the payload, no bold "bold", no link "x", no image fetched from elsewhere; and the
literal text is on the page (Streamlit itself drops raw HTML and blanks ``javascript:`` hrefs; the Markdown, the
remote image and plotly's tags are what escaping stops).
"""
from __future__ import annotations

import pytest

from tests.browser_helpers import (CAPTION_JS, CHROMIUM, app_server, browser, chromium_problem, goto_page,
                                   set_annotator, shot, wait_home, wait_idle, wait_label_ready)
from tests.test_text_safety import ANNOTATORS, CAPTIONS, FILE_NAMES, LABELS, hostile_project

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"Debian's Chromium is absent at {CHROMIUM}"),
]

USER = "tester"

# JS: what the payloads would have made of the page, had any been rendered as HTML or Markdown
DAMAGE_JS = """() => ({
  img_x: document.querySelectorAll('img[src="x"]').length,
  js_links: [...document.querySelectorAll('a')]
            .map(a => a.getAttribute('href') || a.getAttribute('xlink:href') || '')
            .filter(h => /^\\s*javascript:/i.test(h)).length,
  scripts: [...document.querySelectorAll('script')].filter(s => (s.textContent || '').includes('alert(1)')).length,
  bold: [...document.querySelectorAll('strong, b')].filter(e => e.textContent.trim() === 'bold').length,
  x_links: [...document.querySelectorAll('a')].filter(a => a.textContent.trim() === 'x').length,
  remote_imgs: [...document.querySelectorAll('img')]
            .filter(i => (i.getAttribute('src') || '').includes('127.0.0.1:9')).length,
})"""
BUTTONS_JS = "() => [...document.querySelectorAll('button')].map(b => (b.innerText || '').split('\\n')[0])"
NO_SKELETON_JS = "() => !document.querySelector('[data-testid=stSkeleton]')"
PLOTLY_TEXT_JS = """() => [...document.querySelectorAll(
  '.js-plotly-plot .legendtext, .js-plotly-plot .xtick text, .js-plotly-plot .ytick text')].map(e => e.textContent)"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, store, browser) for the hostile project, with an admin account ``tester``."""
    problem = chromium_problem()
    if problem:
        pytest.skip(problem)
    from tests.helpers import ensure_account

    tmp = tmp_path_factory.mktemp("xss")
    store = hostile_project(tmp / "projects" / "hostile")
    ensure_account(store.dir, USER, "admin")
    with app_server(tmp / "projects", worker=False, log_dir=tmp / "logs") as url, browser() as b:
        yield url, store, b


def _settle(page) -> None:
    wait_idle(page)
    page.wait_for_function(NO_SKELETON_JS, timeout=30_000)
    wait_idle(page)


def _assert_no_damage(page, where: str, dialogs: list[str]) -> None:
    damage = page.evaluate(DAMAGE_JS)
    assert not dialogs, f"{where}: a dialog fired: {dialogs}"
    assert damage == {k: 0 for k in damage}, f"{where}: {damage}"
    assert page.locator("[data-testid=stException]").count() == 0, where


def _text(page) -> str:
    return page.evaluate("() => document.body.innerText")


def _open_expander(page, label: str) -> None:
    page.locator('[data-testid="stExpander"] summary', has_text=label).first.click()
    _settle(page)


def test_hostile_names_show_as_text_on_every_page(served):
    url, store, b = served
    ctx = b.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        page.goto(url)
        wait_home(page)
        set_annotator(page, USER)
        _settle(page)
        _assert_no_damage(page, "Home", dialogs)
        shot(page, "xss_home")

        goto_page(page, "Label")
        cap = wait_label_ready(page)
        _settle(page)
        _assert_no_damage(page, "Label", dialogs)
        assert any(f"· {name} " in cap for name in FILE_NAMES), cap  # the file name, brackets and stars kept
        item = store.item(int(cap.split()[1]))
        assert item.text in _text(page)  # the caption, as typed
        buttons = page.evaluate(BUTTONS_JS)
        assert all(lab in buttons for lab in LABELS), buttons  # the label buttons carry the labels as typed
        page.get_by_role("button", name=LABELS[0]).first.click()  # vote: the others' votes become visible
        page.wait_for_function("(prev) => { const c = (" + CAPTION_JS + ")(); return c && c !== prev; }",
                               arg=cap, timeout=30_000)
        _settle(page)
        _open_expander(page, "Your last label")
        shown = _text(page)
        assert f"you said {LABELS[0]}" in shown
        assert all(f"{a}: " in shown for a in ANNOTATORS), shown[-2000:]
        _assert_no_damage(page, "Label after a vote", dialogs)
        shot(page, "xss_label")

        goto_page(page, "Embeddings")
        page.locator(".js-plotly-plot .legendtext").first.wait_for(timeout=60_000)
        _settle(page)
        _assert_no_damage(page, "Embeddings", dialogs)
        legend = page.evaluate(PLOTLY_TEXT_JS)
        assert all(lab in legend for lab in LABELS), legend  # the consensus labels, drawn literally by plotly
        shot(page, "xss_embeddings")

        goto_page(page, "Clusters")
        _settle(page)
        _open_expander(page, "Clusters against confirmed labels")
        page.locator(".js-plotly-plot .xtick text").first.wait_for(timeout=60_000)
        _assert_no_damage(page, "Clusters", dialogs)
        ticks = page.evaluate(PLOTLY_TEXT_JS)
        assert all(lab in ticks for lab in LABELS), ticks  # the labels on the heat map's axis
        shown = _text(page)
        assert all(f"{h} caption" in shown for h in CAPTIONS), shown  # the grid's caption snippets
        shot(page, "xss_clusters")

        goto_page(page, "Consensus")
        _settle(page)
        _open_expander(page, "Annotators: pairwise agreement")
        page.locator(".js-plotly-plot .xtick text").first.wait_for(timeout=60_000)
        _assert_no_damage(page, "Consensus", dialogs)
        shown = _text(page)
        for a in ANNOTATORS:
            assert any(f"{a}: {lab}" in shown for lab in LABELS), a  # "annotator: label" for each vote
        ticks = page.evaluate(PLOTLY_TEXT_JS)
        assert all(a in ticks for a in ANNOTATORS), ticks  # Cohen's kappa between annotators
        shot(page, "xss_consensus")
        assert not dialogs
    finally:
        ctx.close()
