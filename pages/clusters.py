"""Clusters: sizes, purity against confirmed labels, the dominant label, a sample grid per cluster, "label this
cluster" and "merge clusters"."""
import streamlit as st

import plotly.express as px

from core.views.clusters import cluster_label_confusion, cluster_members, cluster_summary, label_cluster, merge_clusters
from pages.common import item_grid, require_store, run_picker

store = require_store()
st.title("Clusters")
run = run_picker(store)
if run is None:
    st.stop()
summary = cluster_summary(store, run["id"])
st.dataframe(summary, hide_index=True, width="stretch")
if summary.empty:
    st.stop()

conf = cluster_label_confusion(store, run["id"])
if conf["collapse"] and conf["collapse"].get("collapsed"):
    st.warning(f"The {run['model']} run looks degenerate: " + "; ".join(conf["collapse"].get("reasons", []))
               + ". Try the IDEC option (parameter idec=true) or confirm labels of more classes.")
if not conf["table"].empty and conf["table"].to_numpy().sum() > 0:
    with st.expander(f"Clusters against confirmed labels ({'the model' if conf['source'] == 'model' else 'Hungarian'}"
                     " mapping)", expanded=run["model"] == "dec"):
        fig = px.imshow(conf["table"], text_auto=True, aspect="auto", color_continuous_scale="Blues")
        fig.update_layout(height=max(260, 28 * len(conf["table"])), margin={"t": 10})
        st.plotly_chart(fig, width="stretch")
        st.dataframe([{"cluster": c, "mapped label": lab} for c, lab in sorted(conf["mapping"].items())],
                     hide_index=True)
        if conf["prior"]:
            st.caption(f"Class prior w of the KL(h || w) term: {conf['prior']['source']} "
                       f"({conf['prior']['reason']}). Set the DEC parameter prior_source to choose.")

clusters = summary["cluster"].tolist()
cluster = st.selectbox("Open cluster", clusters)
item_grid(store, cluster_members(store, run["id"], cluster, limit=18))
annotator = st.session_state.get("annotator", "")
c1, c2 = st.columns(2)
with c1:
    label = st.selectbox("Label this cluster as", store.labels())
    if st.button("Label unconfirmed members", disabled=not annotator, type="primary"):
        n = label_cluster(store, run["id"], cluster, label, annotator=annotator)
        st.success(f"Recorded {n} labels as one bulk action by {annotator}.")
with c2:
    to_merge = st.multiselect("Merge clusters", clusters)
    if st.button("Merge", disabled=len(to_merge) < 2):
        target = merge_clusters(store, run["id"], to_merge, merged_by=annotator or None)
        st.success(f"Merged {to_merge} into cluster {target}.")
        st.rerun()
