"""Small real data sets written to disk for tests: scikit-learn's digits as PNG files, tones as WAV files."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def digits_folder(root: Path, *, per_class: int = 10, classes: tuple[int, ...] = (0, 1, 2), size: int = 16) -> Path:
    """Write scikit-learn digits as PNGs in class sub-folders ``root/<digit>/dNNNN.png``; returns root."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    root.mkdir(parents=True, exist_ok=True)
    for c in classes:
        (root / str(c)).mkdir(exist_ok=True)
        idx = np.flatnonzero(d.target == c)[:per_class]
        for i in idx:
            img = (d.images[i] / 16.0 * 255).astype(np.uint8)
            Image.fromarray(img, mode="L").resize((size, size)).save(root / str(c) / f"d{i:04d}.png")
    return root


def tone_wav(path: Path, *, freq: float = 440.0, seconds: float = 0.5, sr: int = 8000) -> Path:
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return path


ROOT = Path(__file__).resolve().parents[1]


TEST_PASSWORD = "test-password-1"
TEST_ADMIN = "test-admin"


def ensure_account(project_dir: str | Path, name: str, role: str = "admin", *, password: str = TEST_PASSWORD) -> None:
    """Give the project the account ``name`` with ``role`` (and a first admin when it has no account yet);
    an existing account gets ``role``."""
    from core.store.project_store import Store

    store = Store(project_dir, origin="cli")
    if not store.has_accounts():
        store.add_user(name if role == "admin" else TEST_ADMIN, password, "admin", by="tests")
    if store.user(name) is None:
        store.add_user(name, password, role, by="tests")
    elif store.user(name)["role"] != role:
        store.set_role(name, role, by="tests")


def open_page(page: str | None = None, *, annotator: str | None = "tester", timeout: float = 90,
              state: dict[str, Any] | None = None, role: str = "admin"):
    """An AppTest of the app (``app.py``) switched to ``page`` (e.g. "pages/label.py"), signed in to the
    project the sidebar picks as ``annotator`` with ``role`` (the account is created when missing; None:
    nobody signs in), with any other ``state`` in the session; asserts that it rendered without an exception."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    for key, value in (state or {}).items():
        at.session_state[key] = value
    at.run()
    project = at.session_state["project"] if "project" in at.session_state else None
    if annotator and project:
        ensure_account(project, annotator, role)
        at.session_state["signed_in"] = {str(Path(project).resolve()): annotator}
        at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, at.exception
    return at
