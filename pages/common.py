"""Shared pieces of the pages: opening stores, the sidebar, showing an item. Thin: everything else is core."""
from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from core.auth.roles import PERMISSIONS
from core.store.project_store import Store
from core.jobs.worker import scan_projects
from core.views.text import clip, md_literal
from pages.auth import account_panel, can, signed_in_user


def projects_root() -> Path:
    return Path(os.environ.get("LABELTOOL_PROJECTS", "projects"))


@st.cache_resource
def open_store(path: str) -> Store:
    """One Store per project for the server process (its connections are per thread); its writes are
    checked against the project's accounts and roles."""
    return Store(path, origin="app")


def sidebar() -> None:
    """Project picker and the account box (sign-in, who is signed in)."""
    with st.sidebar:
        # absolute paths on both sides: a store's dir is resolved, the projects root may be relative
        healthy, broken = scan_projects(projects_root())
        projects = [str(p.resolve()) for p in healthy]
        for path, why in broken:  # one bad project folder must not stop the others
            st.warning(f"Project {md_literal(path.name)} cannot be opened: {md_literal(why)}")
        if projects:
            current = st.session_state.get("project")
            current = str(Path(current).resolve()) if current else None
            index = projects.index(current) if current in projects else 0
            st.session_state["project"] = st.selectbox("Project", projects, index=index,
                                                      format_func=lambda p: Path(p).name)
        else:
            st.session_state.pop("project", None)
            st.info(f"No project in {projects_root()}/ yet: create one on Home.")
        store = current_store()
        if store is not None:
            account_panel(store)


def current_store() -> Store | None:
    path = st.session_state.get("project")
    return open_store(path) if path else None


def require_store() -> Store:
    """The current project's store, once someone is signed in to it (nothing of a project shows before)."""
    store = current_store()
    if store is None:
        st.warning("Pick or create a project on the Home page first.")
        st.stop()
    if signed_in_user(store) is None:
        st.warning("Sign in in the sidebar first.")
        st.stop()
    return store


def require_annotator() -> str:
    """The account signed in to the current project; stops the page with a prompt to sign in otherwise."""
    store = current_store()
    name = None if store is None else signed_in_user(store)
    if not name:
        st.warning("Sign in in the sidebar first: every label is recorded under your account.")
        st.stop()
    return name


def require_permission(store: Store, permission: str, what: str) -> None:
    """Stop the page with the reason when the signed-in user's role lacks ``permission`` (``what`` says what
    they tried to reach, e.g. "the Admin page")."""
    if not can(store, permission):
        st.info(f"{what} needs the {PERMISSIONS[permission]} role; ask an admin of the project.")
        st.stop()


def show_item(item, *, width: int = 320) -> None:
    """Display an item by its modality: image, audio player, text, or image with its caption."""
    if item.path is not None and item.modality in ("image", "image+text"):
        st.image(str(item.path), width=width)
    elif item.path is not None and item.modality == "audio":
        st.audio(str(item.path))
        show_spectrogram(str(item.path))
    if item.text:
        st.text(item.text)  # as written: no Markdown or HTML (the text comes from files and people)


@st.cache_data(max_entries=64, show_spinner=False)
def _spectrogram(path: str):
    from core.audio.preview import log_mel

    return log_mel(path)


def show_spectrogram(path: str) -> None:
    """The clip's log-mel spectrogram as a heat map (time on x, mel band on y)."""
    import numpy as np
    import plotly.express as px

    S, hop = _spectrogram(path)
    fig = px.imshow(S, origin="lower", aspect="auto", color_continuous_scale="Magma",
                    x=np.arange(S.shape[1]) * hop, labels={"x": "seconds", "y": "mel band", "color": "dB"})
    fig.update_layout(height=220, margin={"l": 0, "r": 0, "t": 0, "b": 0}, coloraxis_showscale=False)
    st.plotly_chart(fig, width="stretch")


def item_grid(store: Store, item_ids: list[int], *, columns: int = 6, width: int = 110, captions: dict | None = None) -> None:
    """A grid of thumbnails (or text snippets) for a few items; ``captions`` (item id -> plain text) shown as
    typed, like the items' text."""
    if not item_ids:
        st.caption("No items.")
        return
    cols = st.columns(columns)
    for k, item in enumerate(store.items(item_ids)):
        with cols[k % columns]:
            if item.path is not None and not item.path.is_file():
                st.caption(f"media file missing: {md_literal(item.path.name)}")
            elif item.path is not None and item.modality in ("image", "image+text"):
                st.image(str(item.path), width=width)
            elif item.path is not None and item.modality == "audio":
                st.audio(str(item.path))
            if item.text:
                st.caption(md_literal(clip(item.text, 80)))
            note = captions.get(item.id) if captions else None
            st.caption(f"#{item.id}" + (f" · {md_literal(note)}" if note is not None else ""))


def run_picker(store: Store, *, key: str = "run") -> dict | None:
    """Select a published run (newest first); None when there is none."""
    runs = store.runs()
    if not runs:
        st.info("No model run yet: label some items and press Retrain now on the Train page.")
        return None
    return st.selectbox("Model run", runs, key=key,
                        format_func=lambda r: f"run {r['id']} · {r['model']} · {r['n_labelled']} labels")


def current_user() -> str | None:
    """The account signed in to the current project, or None (pages that show things without signing in)."""
    store = current_store()
    return None if store is None else signed_in_user(store)
