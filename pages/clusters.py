"""Clusters: sizes, purity against confirmed labels, the dominant label, a sample grid per cluster, "label this
cluster" and "merge clusters"; at the main level or, when the run saved one, at its overclustering."""
import streamlit as st

import plotly.express as px

from core.models import LABEL_FREE
from core.views.clusters import (cluster_label_confusion, cluster_levels, cluster_members, cluster_summary,
                                 label_cluster, merge_clusters)
from core.views.text import html_literal_axes, md_literal
from pages.auth import can
from pages.common import current_user, item_grid, require_store, run_picker

LEVEL_NAMES = {"main": "main", "over": "overclustering"}

store = require_store()
st.title("Clusters")
run = run_picker(store)
if run is None:
    st.stop()
levels = cluster_levels(store, run["id"])
level = "main"
if len(levels) > 1:
    level = st.radio("Level", levels, format_func=LEVEL_NAMES.get, horizontal=True, key=f"level-{run['id']}")
summary = cluster_summary(store, run["id"], level=level)
st.dataframe(summary, hide_index=True, width="stretch")
if summary.empty:
    st.stop()

conf = cluster_label_confusion(store, run["id"], level=level)
collapse = conf["collapse"] or {}
if collapse.get("collapsed"):
    advice = collapse.get("advice") or []
    st.warning(f"The {run['model']} run looks degenerate: " + "; ".join(collapse.get("reasons", [])) + "."
               + (" What to try:" + "".join(f"\n- {a}" for a in advice) if advice else ""))
if not conf["table"].empty and conf["table"].to_numpy().sum() > 0:
    with st.expander(f"Clusters against confirmed labels ({'the model' if conf['source'] == 'model' else 'Hungarian'}"
                     " mapping)", expanded=run["model"] in LABEL_FREE):
        fig = px.imshow(html_literal_axes(conf["table"]), text_auto=True, aspect="auto", color_continuous_scale="Blues")
        fig.update_layout(height=max(260, 28 * len(conf["table"])), margin={"t": 10})
        st.plotly_chart(fig, width="stretch")
        st.dataframe([{"cluster": c, "mapped label": lab} for c, lab in sorted(conf["mapping"].items())],
                     hide_index=True)
        if conf["prior"]:
            st.caption(f"Class prior w of the KL(h || w) term: {conf['prior']['source']} "
                       f"({conf['prior']['reason']}). Set the DEC parameter prior_source to choose.")

clusters = summary["cluster"].tolist()
cluster = st.selectbox("Open overcluster" if level == "over" else "Open cluster", clusters,
                       format_func=lambda c: "outliers (-1)" if c == -1 else str(c))  # -1: a reid run's outliers
item_grid(store, cluster_members(store, run["id"], cluster, limit=18, level=level))
annotator = current_user()
reviewer = can(store, "bulk_label")
if not reviewer:
    st.caption("Labelling or merging whole clusters needs the reviewer role.")
c1, c2 = st.columns(2)
with c1:
    label = st.selectbox("Label this cluster as", store.labels())
    if st.button("Label unconfirmed members", disabled=not reviewer, type="primary"):
        n = label_cluster(store, run["id"], cluster, label, annotator=annotator, level=level)
        st.success(f"Recorded {n} labels as one bulk action by {md_literal(annotator)}.")
with c2:
    if level == "over":
        st.info("Merging works on the main level only: switch the level to main to merge clusters.")
    else:
        to_merge = st.multiselect("Merge clusters", clusters)
        if st.button("Merge", disabled=len(to_merge) < 2 or not reviewer):
            target = merge_clusters(store, run["id"], to_merge, merged_by=annotator)
            st.success(f"Merged {to_merge} into cluster {target}.")
            st.rerun()
