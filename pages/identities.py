"""Identities (re-identification): a query item and its ranked matches, the other cameras' first; mark each match
same or different with keys (S, D; N: next query, U: undo), merge two pseudo-identities, split one, name one, and
retrain. Same / different pairs become must-links / cannot-links of the next "reid" clustering."""
import json
import time

import streamlit as st

from core.jobs import queue as jobs
from core.labels.pairs import decisions_for, merge_identities, split_identity
from core.views.clusters import cluster_merges
from core.views.identities import (OUTLIER, REID_MODEL, cluster_members, cluster_summary, identity_queue,
                                   load_identity_run, name_identity, ranked_matches, retrain_params, run_report)
from pages.common import item_grid, require_annotator, require_store

K = 10  # matches shown per query
GALLERY = 18  # members shown per identity in the merge, split and name panels
MARK = {"same": ":green[same ✓]", "different": ":red[different ✗]"}

store = require_store()
annotator = require_annotator()
st.title("Identities")
state = st.session_state


@st.cache_resource(max_entries=2, show_spinner="Loading the identities...")
def identity_run(project: str, run_id: int, merges: tuple):
    return load_identity_run(store, run_id)


def retrain_panel(shown_run_id: int | None, params: dict) -> None:
    """The Retrain button, the job's progress, and a full rerun once a newer reid run is published."""

    @st.fragment(run_every=2)
    def panel() -> None:
        newest = store.run(model=REID_MODEL)
        if newest is not None and newest["id"] != shown_run_id:
            st.rerun()  # a new run: reload the whole page on it
        job = jobs.active_job(store, "train")
        st.button("Retrain now", type="primary", key="id-retrain", on_click=jobs.request_job,
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
    st.error(f"The parameters must be a JSON object such as {{\"epochs\": 5}}. Got {raw!r}.")
    return None


latest = store.run(model=REID_MODEL)
if latest is None:
    st.info("No re-identification run yet: press Retrain now to cluster the items into pseudo-identities "
            "(the model \"reid\"; it uses each item's camera, its group, when the project has one).")
    params = parameters({})
    if params is not None:
        retrain_panel(None, params)
    st.stop()

run = identity_run(str(store.dir), latest["id"], tuple(sorted(cluster_merges(store, latest["id"]).items())))
report = run_report(run)
c = st.columns([1, 1, 1, 1, 2])
c[0].metric("Identities", report["clusters"])
c[1].metric("Outliers", report["outliers"])
c[2].metric("Must-links", "-" if report["must_links"] is None else report["must_links"])
c[3].metric("Cannot-links", "-" if report["cannot_links"] is None else report["cannot_links"])
with c[4]:
    st.caption(f"reid run {run.id} · {run.n:,} items")
    params = parameters(retrain_params(store, run))
    if params is not None:
        retrain_panel(run.id, params)

key = (str(store.dir), annotator, run.id)
if state.get("id_key") != key:
    state.update(id_key=key, id_queue=[], id_seen=set(), id_focus=0, id_query=None)


def refill() -> None:
    if not state["id_queue"]:
        state["id_queue"] = identity_queue(store, run, annotator, k=K, limit=20, exclude=sorted(state["id_seen"]))


def show_query(item_id: int) -> None:
    if state.get("id_query") != item_id:
        state.update(id_query=item_id, id_focus=0, id_shown_at=time.monotonic())


def decide(query: int, match_ids: tuple, pos: int, decision: str) -> None:
    match = match_ids[pos]
    if decisions_for(store, query, annotator).get(match) != decision:  # a key pressed twice votes once
        seconds = time.monotonic() - state.get("id_shown_at", time.monotonic())
        store.vote_pairs([(query, match)], decision, annotator=annotator, seconds=round(seconds, 3))
    state["id_focus"] = min(pos + 1, len(match_ids) - 1)
    state["id_shown_at"] = time.monotonic()


def next_query(query: int) -> None:
    state["id_seen"].add(query)
    state["id_queue"] = [i for i in state["id_queue"] if i != query]
    state["id-mode"] = "queue"


def undo() -> None:
    undone = store.undo_last_pair_votes(annotator)
    state["id_msg"] = f"Undid {len(undone)} pair decision(s)." if undone else "Nothing to undo."


def focus(pos: int) -> None:
    state["id_focus"] = pos


summary = cluster_summary(run)
identities = [r.cluster for r in summary if r.cluster != OUTLIER]
info = {r.cluster: r for r in summary}


def cluster_name(cl: int) -> str:
    r = info[cl]
    name = "outliers" if cl == OUTLIER else f"identity {cl}"
    return f"{name} · {r.size} items · certainty {r.certainty:.2f}" + (f" · cameras {', '.join(r.cameras)}"
                                                                      if r.cameras else "")


mode = st.radio("Query from", ["queue", "item id", "cluster"], horizontal=True, key="id-mode",
                help="queue: the least certain identities first")
query = None
if mode == "queue":
    refill()
    if state["id_queue"]:
        query = state["id_queue"][0]
    else:
        st.success("Every query in the queue is decided. Retrain, or pick a query by item id or cluster.")
elif mode == "item id":
    query = int(st.number_input("Item id", min_value=0, step=1, value=int(state.get("id_query") or run.item_ids[0]),
                                key="id-pick-item"))
else:
    cl = st.selectbox("Cluster", [r.cluster for r in summary], format_func=cluster_name, key="id-pick-cluster")
    query = st.selectbox("Member", cluster_members(run, cl), key=f"id-pick-member-{cl}")

matches = []
if query is not None:
    try:
        matches = ranked_matches(run, query, k=K)
    except ValueError as exc:  # an item id the run did not embed
        st.error(str(exc))
        query = None

if query is not None:
    show_query(query)
    decided = decisions_for(store, query, annotator)
    pos = min(state["id_focus"], max(len(matches) - 1, 0))
    q_row = run.row_of(query)
    left, right = st.columns([1, 4])
    with left:
        item = store.item(query)
        if item.path is not None and item.modality in ("image", "image+text"):
            st.image(str(item.path), width=140)
        cam = run.cameras[q_row]
        st.caption(f"query item {query} · camera {cam if cam is not None else '-'} · "
                   + ("outlier" if run.clusters[q_row] == OUTLIER else f"identity {run.clusters[q_row]}")
                   + f" · confidence {run.confidence[q_row]:.2f}")
        ids = tuple(m.item_id for m in matches)
        if matches:
            st.button("Same", key="id-same", shortcut="S", type="primary", width="stretch",
                      on_click=decide, args=(query, ids, pos, "same"))
            st.button("Different", key="id-different", shortcut="D", width="stretch",
                      on_click=decide, args=(query, ids, pos, "different"))
        st.button("Next query", key="id-next", shortcut="N", width="stretch", on_click=next_query, args=(query,))
        st.button("Undo", key="id-undo", shortcut="U", width="stretch", on_click=undo)
        if state.get("id_msg"):
            st.caption(state.pop("id_msg"))
    with right:
        if not matches:
            st.caption("This run has no other item to match.")
        items = {it.id: it for it in store.items(list(ids))}
        for k, m in enumerate(matches):
            if k % 5 == 0:
                cols = st.columns(5)  # one row of five, in rank order
            with cols[k % 5], st.container(border=k == pos, key=f"id-tile-{k}"):
                it = items[m.item_id]
                if it.path is not None and it.modality in ("image", "image+text"):
                    st.image(str(it.path), width=110)
                where = "same camera" if m.same_camera else f"camera {m.camera if m.camera is not None else '-'}"
                mark = MARK.get(decided.get(m.item_id), "")
                ident = "outlier" if m.cluster == OUTLIER else f"identity {m.cluster}"
                st.markdown(("**▶ focused** · " if k == pos else "") + f"#{m.item_id} · {where} · {m.score:.2f} · "
                            + ident + (f" · {mark}" if mark else ""))
                if k != pos:
                    st.button("focus", key=f"id-focus-{k}", on_click=focus, args=(k,))

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
            st.success(f"Recorded {n} labels '{name}' as one bulk action by {annotator}; they go through the "
                       "consensus like any label.")
