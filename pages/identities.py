"""Identities (re-identification): a query item and its ranked matches, the other cameras' first; mark each match
same or different with keys (S, D; N: next query, U: undo), merge two pseudo-identities, split one, name one, and
retrain. Same / different pairs become must-links / cannot-links of the next "reid" clustering."""
import time

import streamlit as st

from core.labels.pairs import decisions_for
from core.views.clusters import cluster_merges
from core.views.identities import (OUTLIER, REID_MODEL, cluster_members, cluster_summary, identity_queue,
                                   load_identity_run, ranked_matches, retrain_params, run_report)
from core.views.text import md_literal
from pages.common import require_annotator, require_store
from pages.identity_panels import identity_tabs, parameters, retrain_panel

K = 10  # matches shown per query
MARK = {"same": ":green[same ✓]", "different": ":red[different ✗]"}

store = require_store()
annotator = require_annotator()
st.title("Identities")
state = st.session_state


@st.cache_resource(max_entries=2, show_spinner="Loading the identities...")
def identity_run(project: str, run_id: int, merges: tuple):
    return load_identity_run(store, run_id)


latest = store.run(model=REID_MODEL)
if latest is None:
    st.info("No re-identification run yet: press Retrain now to cluster the items into pseudo-identities "
            "(the model \"reid\"; it uses each item's camera, its group, when the project has one).")
    params = parameters({})
    if params is not None:
        retrain_panel(store, annotator, None, params)
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
        retrain_panel(store, annotator, run.id, params)

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
        st.caption(f"query item {query} · camera {md_literal(cam) if cam is not None else '-'} · "
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
                where = ("same camera" if m.same_camera  # a camera is an item's group, named by its files
                         else f"camera {md_literal(m.camera) if m.camera is not None else '-'}")
                mark = MARK.get(decided.get(m.item_id), "")
                ident = "outlier" if m.cluster == OUTLIER else f"identity {m.cluster}"
                st.markdown(("**▶ focused** · " if k == pos else "") + f"#{m.item_id} · {where} · {m.score:.2f} · "
                            + ident + (f" · {mark}" if mark else ""))
                if k != pos:
                    st.button("focus", key=f"id-focus-{k}", on_click=focus, args=(k,))

identity_tabs(store, run, annotator, summary, cluster_name)
