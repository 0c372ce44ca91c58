"""Shared pieces of the pages: opening stores, the sidebar, showing an item. Thin: everything else is core."""
from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from core.store.project_store import Store
from core.jobs.worker import discover_projects


def projects_root() -> Path:
    return Path(os.environ.get("LABELTOOL_PROJECTS", "projects"))


@st.cache_resource
def open_store(path: str) -> Store:
    """One Store per project for the server process (its connections are per thread)."""
    return Store(path)


def sidebar() -> None:
    """Project picker and the annotator's name (asked once, kept for the session)."""
    with st.sidebar:
        # absolute paths on both sides: a store's dir is resolved, the projects root may be relative
        projects = [str(p.resolve()) for p in discover_projects(projects_root())]
        if projects:
            current = st.session_state.get("project")
            current = str(Path(current).resolve()) if current else None
            index = projects.index(current) if current in projects else 0
            st.session_state["project"] = st.selectbox("Project", projects, index=index,
                                                      format_func=lambda p: Path(p).name)
        else:
            st.session_state.pop("project", None)
            st.info(f"No project in {projects_root()}/ yet: create one on Home.")
        name = st.text_input("Your name", value=st.session_state.get("annotator", ""),
                             placeholder="who is labelling?", help="every vote is recorded under this name")
        st.session_state["annotator"] = name.strip()


def current_store() -> Store | None:
    path = st.session_state.get("project")
    return open_store(path) if path else None


def require_store() -> Store:
    store = current_store()
    if store is None:
        st.warning("Pick or create a project on the Home page first.")
        st.stop()
    return store


def require_annotator() -> str:
    name = st.session_state.get("annotator", "")
    if not name:
        st.warning("Enter your name in the sidebar first: every label is recorded under it.")
        st.stop()
    return name


def show_item(item, *, width: int = 320) -> None:
    """Display an item by its modality: image, audio player, text, or image with its caption."""
    if item.path is not None and item.modality in ("image", "image+text"):
        st.image(str(item.path), width=width)
    elif item.path is not None and item.modality == "audio":
        st.audio(str(item.path))
        show_spectrogram(str(item.path))
    if item.text:
        st.markdown(f"> {item.text}")


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
    """A grid of thumbnails (or text snippets) for a few items."""
    if not item_ids:
        st.caption("No items.")
        return
    cols = st.columns(columns)
    for k, item in enumerate(store.items(item_ids)):
        with cols[k % columns]:
            if item.path is not None and item.modality in ("image", "image+text"):
                st.image(str(item.path), width=width)
            elif item.path is not None and item.modality == "audio":
                st.audio(str(item.path))
            if item.text:
                st.caption(item.text[:80])
            st.caption(f"#{item.id}" + (f" · {captions[item.id]}" if captions and item.id in captions else ""))


def run_picker(store: Store, *, key: str = "run") -> dict | None:
    """Select a published run (newest first); None when there is none."""
    runs = store.runs()
    if not runs:
        st.info("No model run yet: label some items and press Retrain now on the Train page.")
        return None
    return st.selectbox("Model run", runs, key=key,
                        format_func=lambda r: f"run {r['id']} · {r['model']} · {r['n_labelled']} labels")
