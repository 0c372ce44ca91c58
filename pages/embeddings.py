"""Embeddings: the UMAP map coloured by label, prediction, confidence, cluster or disagreement; select a region
with the lasso or box and label it in one action (a bulk annotation, undoable)."""
import plotly.express as px
import streamlit as st

from core.views.map import COLOR_BY, NO_LABEL, map_frame, map_version
from core.views.selection import selected_item_ids, trace_item_ids
from core.views.text import html_literal_columns, md_literal
from pages.auth import can
from pages.common import current_user, item_grid, require_store, run_picker

store = require_store()
st.title("Embeddings")
run = run_picker(store)
if run is None:
    st.stop()
color_by = st.radio("Colour by", COLOR_BY, horizontal=True)


@st.cache_data(max_entries=8, show_spinner="Loading the map...")
def load(project: str, run_id: int, color_by: str, version: tuple):
    # file names, captions and labels as plotly text: escaped, so that no <b>, <a href> or entity takes effect
    return html_literal_columns(map_frame(store, run_id, color_by=color_by), ["hover", "color"])


version = map_version(store, run["id"])  # votes, undos, consensus rewrites and merges change the colours
df = load(str(store.dir), run["id"], color_by, version)
if df.empty:
    st.warning("This run has no map coordinates.")
    st.stop()
continuous = color_by in ("confidence", "disagreement")
styling = {"color_continuous_scale": "Viridis"}
if not continuous:  # unlabelled items in light grey, drawn first so that labelled ones stay visible on top
    cats = sorted(df["color"].unique(), key=lambda c: (c != NO_LABEL, len(c), c))
    palette = px.colors.qualitative.Dark24 + px.colors.qualitative.Light24
    styling = {"category_orders": {"color": cats},
               "color_discrete_map": {c: "#d3d3d3" if c == NO_LABEL else palette[k % len(palette)]
                                      for k, c in enumerate(cats)}}
fig = px.scatter(df, x="x", y="y", color="color", render_mode="webgl", hover_name="hover",
                 custom_data=["item_id"], labels={"color": color_by}, **styling)
fig.update_traces(marker={"size": 4 if len(df) > 20000 else 6, "opacity": 0.8})
fig.update_layout(height=620, dragmode="lasso", margin={"l": 0, "r": 0, "t": 10, "b": 0},
                  xaxis={"visible": False}, yaxis={"visible": False})
event = st.plotly_chart(fig, on_select="rerun", selection_mode=("lasso", "box"), key="map", width="stretch")
selected = selected_item_ids(event.selection.points if event else [], trace_item_ids([t.customdata for t in fig.data]))
st.caption(f"{len(df):,} items on the map · {len(selected):,} selected")

if selected:
    item_grid(store, selected[:12])
    annotator = current_user()
    bulk = can(store, "bulk_label")
    labels = store.labels()
    c1, c2 = st.columns([2, 1])
    label = c1.selectbox("Label for the selection", labels)
    if c2.button(f"Label {len(selected)} items", type="primary", disabled=not bulk,
                 help=None if bulk else "labelling a selection in one action needs the reviewer role"):
        n = len(store.annotate_many([(i, label) for i in selected], annotator=annotator, kind="bulk"))
        st.success(f"Recorded {n} labels '{md_literal(label)}' as one bulk action by {md_literal(annotator)}.")
if st.button("Undo my last action"):
    undone = store.undo_last(current_user())
    st.info(f"Undid {len(undone)} label(s).")
