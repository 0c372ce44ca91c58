"""Consensus: items where annotators disagree, their votes side by side, and adjudication by a reviewer."""
import math

import plotly.express as px
import streamlit as st

from core.analysis import adjudicate, agreement_report, disagreements
from pages.common import require_annotator, require_store, show_item

store = require_store()
reviewer = require_annotator()
st.title("Consensus")
rows = disagreements(store, limit=200)
ov = store.overview()
st.caption(f"{len(rows)} disputed items · mean agreement "
           + ("-" if ov["mean_agreement"] is None else f"{ov['mean_agreement']:.0%}"))

report = agreement_report(store)
fmt = lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"  # noqa: E731
c = st.columns(3)
c[0].metric("Items with votes", report["n_items"])
c[1].metric("Fleiss' kappa", fmt(report["fleiss_kappa"]))
c[2].metric("Krippendorff's alpha (nominal)", fmt(report["krippendorff_alpha"]))
with st.expander("Annotators: pairwise agreement, accuracy against consensus, speed", expanded=False):
    if len(report["annotator_names"]) >= 2:
        fig = px.imshow(report["cohen"], text_auto=".2f", zmin=-1, zmax=1, color_continuous_scale="RdBu",
                        labels={"color": "Cohen's kappa"})
        fig.update_layout(height=320, margin={"t": 10})
        st.plotly_chart(fig, width="stretch")
    st.dataframe(report["annotators"], hide_index=True, width="stretch")
    st.caption("Per-class confusion between annotators (rows: one annotator's label, columns: another's)")
    st.dataframe(report["class_confusion"], width="stretch")

if not rows:
    st.success("No disagreement among annotators.")
    st.stop()
labels = store.labels()
for row in rows[:20]:
    item = store.item(row["item_id"])
    with st.container(border=True):
        left, mid, right = st.columns([1, 2, 2])
        with left:
            show_item(item, width=110)
        with mid:
            st.write(f"**item {item.id}** · agreement {row['agreement']:.0%} · {row['n_votes']} votes")
            st.write(", ".join(f"{a}: **{lab}**" for a, lab in row["votes"]))
        with right:
            leading = labels.index(row["label"]) if row.get("label") in labels else 0
            choice = st.selectbox("Decision", labels, index=leading, key=f"adj-{item.id}")
            if st.button("Adjudicate", key=f"adj-btn-{item.id}"):
                adjudicate(store, item.id, choice, reviewer=reviewer)
                st.rerun()
