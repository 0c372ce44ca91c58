"""Consensus: items where annotators disagree, their votes side by side, and adjudication by a reviewer."""
import streamlit as st

from core.analysis import adjudicate, disagreements
from pages.common import require_annotator, require_store, show_item

store = require_store()
reviewer = require_annotator()
st.title("Consensus")
rows = disagreements(store, limit=200)
ov = store.overview()
st.caption(f"{len(rows)} disputed items · mean agreement "
           + ("-" if ov["mean_agreement"] is None else f"{ov['mean_agreement']:.0%}"))
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
