"""Helpers for the real-browser tests and the browser benchmark: Chromium, the app as subprocesses, big projects.

Playwright drives Debian's Chromium (``/usr/bin/chromium``); nothing is downloaded (never ``playwright install``).
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("LABELTOOL_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SHOTS = ROOT / "test-output" / "browser"
CAPTION_RE = re.compile(r"^item \d+ · ")
# JS: the text of the Label page's caption "item <id> · <uri>", or null when not shown
CAPTION_JS = """() => {
  for (const el of document.querySelectorAll('[data-testid="stCaptionContainer"]')) {
    const t = (el.innerText || '').trim();
    if (/^item \\d+ · /.test(t)) return t;
  }
  return null;
}"""


def chromium_problem() -> str | None:
    """Why the browser tests cannot run here (None when Chromium launches under Playwright)."""
    if not CHROMIUM.is_file():
        return f"Debian's Chromium is absent at {CHROMIUM} (apt-get install chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        return f"the playwright package is not installed: {exc}"
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            b.close()
    except Exception as exc:  # noqa: BLE001 - any launch failure means: skip with its reason
        return f"Playwright cannot launch {CHROMIUM}: {str(exc).splitlines()[0]}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


BROWSER_ACCOUNTS = (("tester", "admin"), ("speed", "annotator"), ("ann_a", "annotator"), ("ann_b", "annotator"),
                    ("rapid", "annotator"), ("viewer", "reviewer"), ("lasso", "reviewer"))


@contextmanager
def app_server(projects: Path, *, worker: bool = True, log_dir: Path | None = None,
               ready_timeout: float = 90.0, accounts=BROWSER_ACCOUNTS) -> Iterator[str]:
    """Start the worker (optional) and the Streamlit app on a free port; yield the app's base URL. Each
    project in ``projects`` first gets ``accounts`` ((name, role) pairs, the tests' password)."""
    from core.jobs.worker import discover_projects
    from tests.helpers import ensure_account

    for project in discover_projects(projects):  # the accounts the browser tests sign in with
        for name, role in accounts:
            ensure_account(project, name, role)
    env = dict(os.environ, LABELTOOL_PROJECTS=str(projects), PYTHONUNBUFFERED="1")
    log_dir = Path(log_dir or projects.parent)
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        if worker:
            wlog = open(log_dir / "worker.log", "w")
            logs.append(wlog)
            procs.append(subprocess.Popen([sys.executable, "-m", "core", "worker", str(projects)], cwd=ROOT, env=env,
                                          stdout=wlog, stderr=subprocess.STDOUT))
        port = free_port()
        alog = open(log_dir / "app.log", "w")
        logs.append(alog)
        app = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                               cwd=ROOT, env=env, stdout=alog, stderr=subprocess.STDOUT)
        procs.append(app)
        url = f"http://localhost:{port}"
        deadline = time.monotonic() + ready_timeout
        while True:
            if app.poll() is not None:
                raise RuntimeError(f"the app exited with {app.returncode}: {(log_dir / 'app.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.read().decode().strip() == "ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the app did not answer {url}/_stcore/health within {ready_timeout:.0f} s")
            time.sleep(0.3)
        yield url
    finally:
        for p in reversed(procs):
            _stop(p)
        for f in logs:
            f.close()


@contextmanager
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


# ------------------------------------------------------------------------------------------------ page actions
def wait_home(page, timeout: float = 60_000) -> None:
    page.get_by_role("heading", name="Labelling studio").wait_for(timeout=timeout)


def set_annotator(page, name: str, password: str | None = None) -> None:
    """Sign in through the sidebar's form as ``name`` (the account must exist: :func:`app_server` creates
    :data:`BROWSER_ACCOUNTS` in every project it serves, with the tests' password)."""
    from tests.helpers import TEST_PASSWORD

    sb = page.locator('[data-testid="stSidebar"]')
    sb.get_by_role("textbox", name="Account").fill(name)
    # by role: the label "Password" also matches the field's "Show password" button
    sb.get_by_role("textbox", name="Password").fill(password or TEST_PASSWORD)
    sb.get_by_role("button", name="Sign in").click()
    page.get_by_text("Signed in as").wait_for(timeout=30_000)
    # blur the form so digit keys reach the page's shortcuts, not a text field
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    wait_idle(page)


IDLE_JS = """() => {
  if (document.querySelector('[data-stale="true"]')) return false;
  const w = document.querySelector('[data-testid="stStatusWidget"]');
  return !w || !/Running|Connecting|Stop/i.test(w.innerText || '');
}"""


def wait_idle(page, timeout: float = 30_000, settle_ms: int = 150) -> None:
    """Wait until the script run is over: no stale (faded) element and no "Running" status widget."""
    page.wait_for_function(IDLE_JS, timeout=timeout)
    page.wait_for_timeout(settle_ms)
    page.wait_for_function(IDLE_JS, timeout=timeout)


def wait_label_ready(page, timeout: float = 60_000) -> str:
    """Wait until the Label page shows an item with its label buttons bound to keys; returns the caption."""
    wait_caption(page, timeout=timeout)
    page.locator('kbd[aria-label^="Shortcut"]').last.wait_for(timeout=timeout)
    wait_idle(page, timeout=timeout)
    return caption(page)


def goto_page(page, title: str) -> None:
    page.get_by_role("link", name=title, exact=True).first.click()
    heading = page.get_by_role("heading", name=title, exact=True)
    error = page.locator('[data-testid="stException"]')
    heading.or_(error).first.wait_for(timeout=60_000)
    if error.count() and not heading.count():
        raise AssertionError(f"the {title} page raised: {error.first.inner_text()[:1500]}")
    page.evaluate("() => document.activeElement && document.activeElement.blur()")


def caption(page) -> str | None:
    return page.evaluate(CAPTION_JS)


def wait_caption(page, timeout: float = 60_000) -> str:
    page.wait_for_function(CAPTION_JS, timeout=timeout)
    return caption(page)


def press_and_wait_next(page, key: str, timeout: float = 30_000) -> tuple[str, float]:
    """Press a label key and wait until the caption names another item; returns (new caption, ms).

    The time is measured inside the browser, from the keydown event to the DOM mutation that changed the caption.
    """
    prev = wait_label_ready(page)
    page.evaluate("""([prev, captionJs]) => {
      const getCap = eval(captionJs);
      window.__kd = null; window.__changed = null; window.__newcap = null;
      if (window.__obs) window.__obs.disconnect();
      window.addEventListener('keydown', () => { if (window.__kd === null) window.__kd = performance.now(); },
                              {capture: true, once: true});
      window.__obs = new MutationObserver(() => {
        if (window.__changed !== null) return;
        const c = getCap();
        if (c !== null && c !== prev) { window.__changed = performance.now(); window.__newcap = c; }
      });
      window.__obs.observe(document.body, {subtree: true, childList: true, characterData: true});
    }""", [prev, CAPTION_JS])
    page.keyboard.press(key)
    page.wait_for_function("() => window.__changed !== null", timeout=timeout)
    new, kd, changed = page.evaluate("() => [window.__newcap, window.__kd, window.__changed]")
    page.evaluate("() => window.__obs && window.__obs.disconnect()")
    return new, (changed - kd) if kd is not None else float("nan")


def shot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# ------------------------------------------------------------------------------------------------ big projects
def make_big_project(project_dir: Path, n: int = 100_000, *, n_files: int = 50, batch: int = 20_000):
    """An image project of ``n`` items (labels 0-9, one vote confirms) pointing at ``n_files`` real digit PNGs.

    Items are inserted directly (``Store.insert_items``) with distinct uris ``<file>#t=<k>`` (``uri_path`` strips the ``#t=`` part) so that no import-time
    duplicate check applies; each uri's path part is a real PNG under ``media/digits``. No features are cached.
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from core.store.project_store import Store

    store = Store.create(project_dir, modality="image", name=f"{n} generated digits", labels=[str(d) for d in range(10)],
                         min_votes=1, extractor="pixels_pca")
    media = store.dir / "media" / "digits"
    media.mkdir(parents=True, exist_ok=True)
    d = load_digits()
    names = []
    for k in range(n_files):
        img = (d.images[k] / 16.0 * 255).astype(np.uint8)
        name = f"d{k:03d}.png"
        Image.fromarray(img, mode="L").resize((28, 28)).save(media / name)
        names.append((name, str(d.target[k])))
    source_id = store.add_source(media, kind="folder", spec=str(media))
    for start in range(0, n, batch):
        rows = []
        for k in range(start, min(n, start + batch)):
            name, lab = names[k % n_files]
            rows.append({"source_id": source_id, "uri": f"{name}#t={k}", "modality": "image",
                         "reference_label": lab, "content_hash": f"gen-{k}"})
        with store.transaction() as conn:
            store.insert_items(conn, rows)
    return store


# ------------------------------------------------------------------------------------------------ the plotly map
# JS: page coordinates of data points (x, y) on the first plotly chart, from its axes (plotly's own l2p mapping)
DATA_TO_PAGE_JS = """(pts) => {
  const gd = document.querySelector('.js-plotly-plot');
  if (!gd || !gd._fullLayout || !gd._fullLayout.xaxis) return null;
  const L = gd._fullLayout, r = gd.getBoundingClientRect();
  return pts.map(([x, y]) => [r.left + window.scrollX + L._size.l + L.xaxis.l2p(x),
                              r.top + window.scrollY + L._size.t + L.yaxis.l2p(y)]);
}"""


def wait_map(page, timeout: float = 60_000) -> None:
    """Wait until the Embeddings page's plotly chart is drawn with its axes laid out."""
    page.locator(".js-plotly-plot").first.wait_for(timeout=timeout)
    page.wait_for_function("() => { const gd = document.querySelector('.js-plotly-plot');"
                           " return !!(gd && gd._fullLayout && gd._fullLayout.xaxis && gd._fullLayout._size); }",
                           timeout=timeout)


def lasso(page, centre: tuple[float, float], radius: float, *, vertices: int = 16) -> None:
    """Drag a lasso (a closed polygon) around ``centre`` with ``radius`` in data units on the plotly map.

    The chart's drag mode must be "lasso". The mouse is pressed on the first vertex, moved through the others
    in small steps (plotly draws the lasso from mousemove events) and released on the first vertex again.
    """
    import math

    poly = [(centre[0] + radius * math.cos(2 * math.pi * k / vertices),
             centre[1] + radius * math.sin(2 * math.pi * k / vertices)) for k in range(vertices)]
    pixels = page.evaluate(DATA_TO_PAGE_JS, [list(p) for p in poly])
    if pixels is None:
        raise AssertionError("no plotly chart with axes on the page")
    page.evaluate("() => window.scrollTo(0, 0)")
    pixels = page.evaluate(DATA_TO_PAGE_JS, [list(p) for p in poly])  # after the scroll
    (x0, y0), rest = pixels[0], pixels[1:]
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in rest + [pixels[0]]:
        page.mouse.move(x, y, steps=4)
    page.mouse.up()
