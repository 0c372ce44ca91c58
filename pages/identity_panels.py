"""Panels of the Identities page (pages/identities.py): the retrain panel with its parameters, and the merge /
split / name tabs. Thin views: every write goes through core (core.labels.pairs, core.views.identities)."""
import json
from typing import Callable

import streamlit as st

from core.jobs import queue as jobs
from core.labels.pairs import merge_identities, split_identity
from pages.auth import can
from core.views.identities import OUTLIER, REID_MODEL, cluster_members, name_identity
from core.views.text import md_literal
from pages.common import item_grid

GALLERY = 18  # members shown per identity in the merge, split and name panels


def retrain_panel(store, annotator: str, shown_run_id: int | None, params: dict) -> None:
    """The Retrain button, the job's progress, and a full rerun once a newer reid run is published."""

    @st.fragment(run_every=2)
    def panel() -> None:
        newest = store.run(model=REID_MODEL)
        if newest is not None and newest["id"] != shown_run_id:
            st.rerun()  # a new run: reload the whole page on it
        job = jobs.active_job(store, "train")
        st.button("Retrain now", type="primary", key="id-retrain", on_click=jobs.request_job,
                  disabled=not can(store, "retrain"),
                  args=(store, "train", {"model": REID_MODEL, "params": params}), kwargs={"requested_by": annotator},
                  help="re-cluster the identities in the background, with the confirmed same / different pairs "
                       "as must-links / cannot-links")
        if job is not None:
            p = job["progress"] or {}
            st.caption(f"Job {job['id']} is {job['status']}" + (f": {p.get('phase', '')}" if p else ""))
            if p.get("total"):
                st.progress(min(1.0, p.get("step", 0) / p["total"]))

    panel()


def parameters(default: dict) -> dict | None:
    """The retrain's model parameters (JSON), pre-filled with those of the run shown."""
    with st.expander("Model parameters (JSON)"):
        raw = st.text_area("Parameters", json.dumps(default), key="id-params",
                           help='e.g. {"variant": "head", "epochs": 5}; an unknown name is refused by the job')
    try:
        params = json.loads(raw or "{}")
        if isinstance(params, dict):
            return params
    except ValueError:
        pass
    st.error(f"The parameters must be a JSON object such as {{\"epochs\": 5}}. Got {md_literal(repr(raw))}.")
    return None


def identity_tabs(store, run, annotator: str, summary: list, cluster_name: Callable[[int], str]) -> None:
    """Merge two identities, split one, name one: each a batch of core writes by ``annotator``."""
    if not can(store, "merge_identities"):
        st.caption("Merging, splitting and naming identities needs the reviewer role.")
        return
    identities = [r.cluster for r in summary if r.cluster != OUTLIER]
    merge_tab, split_tab, name_tab = st.tabs(["Merge identities", "Split an identity", "Name an identity"])
    with merge_tab:
        if len(identities) < 2:
            st.caption("Merging needs two identities.")
        else:
            c1, c2 = st.columns(2)
            a = c1.selectbox("Identity A", identities, format_func=cluster_name, key="id-merge-a")
            b = c2.selectbox("Identity B", identities, index=1, format_func=cluster_name, key="id-merge-b")
            shown_a, shown_b = cluster_members(run, a, limit=GALLERY), cluster_members(run, b, limit=GALLERY)
            with c1:
                item_grid(store, shown_a, columns=6, width=70)
            with c2:
                item_grid(store, shown_b, columns=6, width=70)
            if st.button("Merge", key="id-merge", disabled=a == b, help="'same' decisions linking the shown members"):
                merge_identities(store, shown_a, shown_b, annotator=annotator)
                st.success(f"Recorded identities {a} and {b} as one ({len(shown_a) + len(shown_b)} items, one batch: "
                           "Undo retracts it). Retrain now to see them merged.")
    with split_tab:
        if not identities:
            st.caption("No identity to split.")
        else:
            cl = st.selectbox("Identity", identities, format_func=cluster_name, key="id-split-cluster")
            members = cluster_members(run, cl, limit=3 * GALLERY)
            item_grid(store, members, columns=9, width=70)
            off = st.multiselect("Members to split off", members, key=f"id-split-off-{cl}")
            keep = [i for i in members if i not in set(off)]
            if st.button("Split", key="id-split", disabled=not off or not keep,
                         help="'same' within each part, 'different' between them"):
                split_identity(store, keep, off, annotator=annotator)
                st.success(f"Recorded identity {cl} as two: {len(keep)} kept, {len(off)} split off (one batch: Undo "
                           "retracts it). Retrain now to see them apart.")
    with name_tab:
        if not identities:
            st.caption("No identity to name.")
        else:
            cl = st.selectbox("Identity", identities, format_func=cluster_name, key="id-name-cluster")
            shown = cluster_members(run, cl, limit=GALLERY)
            item_grid(store, shown, columns=9, width=70)
            labels = store.labels()
            c1, c2 = st.columns(2)
            existing = c1.selectbox("Existing name", ["(a new name)"] + labels, key="id-name-existing")
            new = c2.text_input("New name", key="id-name-new", disabled=existing != "(a new name)")
            name = new.strip() if existing == "(a new name)" else existing
            if st.button(f"Name the {len(shown)} shown items", key="id-name", disabled=not name, type="primary"):
                n = name_identity(store, shown, name, annotator=annotator)
                st.success(f"Recorded {n} labels '{md_literal(name)}' as one bulk action by {md_literal(annotator)}; "
                           "they go through the consensus like any label.")
