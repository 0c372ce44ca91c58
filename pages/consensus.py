"""Consensus: items where annotators disagree, their votes side by side, and adjudication by a reviewer."""
import math
import time

import plotly.express as px
import streamlit as st

from core.labels import engine as consensus_engine
from core.views.consensus import adjudicate, agreement_report, consensus_apply, disagreements
from core.views.text import html_literal_axes, md_literal
from pages.auth import can
from pages.common import require_annotator, require_store, show_item

store = require_store()
reviewer = require_annotator()
st.title("Consensus")
rows = disagreements(store, limit=200)
ov = store.overview()
st.caption(f"{len(rows)} disputed items, the most important first (model uncertainty, disagreement, votes) · "
           "mean agreement "
           + ("-" if ov["mean_agreement"] is None else f"{ov['mean_agreement']:.0%}"))

METHODS = {"majority": "Majority vote (agreeing votes)", "dawid_skene": "Dawid-Skene (annotator confusion)",
           "model_aware": "Model-aware (votes + model, weighted by quality)"}
cfg = consensus_engine.settings(store)
with st.expander(f"Consensus method: {METHODS[cfg['method']]}", expanded=False):
    with st.form("consensus-method"):
        method = st.radio("Method", list(METHODS), index=list(METHODS).index(cfg["method"]),
                          format_func=METHODS.get, horizontal=True)
        c = st.columns(3)
        min_votes = c[0].number_input("Majority: agreeing votes that confirm", 1, 10, cfg["min_votes"])
        min_conf = c[1].slider("Dawid-Skene / model-aware: posterior that confirms", 0.5, 1.0,
                               cfg["min_confidence"], 0.01)
        weighted = c[2].checkbox("Training weighs items by consensus confidence",
                                 bool(store.settings().get("weight_by_confidence", False)))
        admin = can(store, "settings")
        if not admin:
            st.caption("Only an admin changes the consensus method.")
        if st.form_submit_button("Apply and re-estimate", disabled=not admin):
            consensus_apply(store, method=method, min_votes=int(min_votes), min_confidence=float(min_conf),
                            weight_by_confidence=weighted, by=reviewer)
            st.rerun()
    fit = consensus_engine.fit_report(store)
    if fit is not None:
        st.caption("Annotator accuracy estimated by the method at its last fit "
                   + time.strftime("%Y-%m-%d %H:%M", time.localtime(fit["fitted_at"])))
        st.dataframe(fit["annotators"], hide_index=True)
        if fit["model"]:
            st.caption(fit["model"])

report = agreement_report(store)
fmt = lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"  # noqa: E731
c = st.columns(3)
c[0].metric("Items with votes", report["n_items"])
c[1].metric("Fleiss' kappa", fmt(report["fleiss_kappa"]))
c[2].metric("Krippendorff's alpha (nominal)", fmt(report["krippendorff_alpha"]))
with st.expander("Annotators: pairwise agreement, accuracy against consensus, speed", expanded=False):
    if len(report["annotator_names"]) >= 2:
        fig = px.imshow(html_literal_axes(report["cohen"]), text_auto=".2f", zmin=-1, zmax=1,  # names as ticks
                        color_continuous_scale="RdBu", labels={"color": "Cohen's kappa"})
        fig.update_layout(height=320, margin={"t": 10})
        st.plotly_chart(fig, width="stretch")
    st.dataframe(report["annotators"], hide_index=True, width="stretch")
    st.caption("Per-class confusion between annotators (rows: one annotator's label, columns: another's)")
    st.dataframe(report["class_confusion"], width="stretch")

if not rows:
    st.success("No disagreement among annotators.")
    st.stop()
labels = store.labels()
may_adjudicate = can(store, "adjudicate")
if not may_adjudicate:
    st.caption("Adjudication needs the reviewer role: you see the disputes, a reviewer decides them.")
for row in rows[:20]:
    item = store.item(row["item_id"])
    with st.container(border=True):
        left, mid, right = st.columns([1, 2, 2])
        with left:
            show_item(item, width=110)
        with mid:
            st.write(f"**item {item.id}** · agreement {row['agreement']:.0%} · {row['n_votes']} votes · "
                     f"model uncertainty {row['model_uncertainty']:.2f}")
            st.write(", ".join(f"{md_literal(a)}: **{md_literal(lab)}**" for a, lab in row["votes"]))
        with right:
            leading = labels.index(row["label"]) if row.get("label") in labels else 0
            choice = st.selectbox("Decision", labels, index=leading, key=f"adj-{item.id}")
            if st.button("Adjudicate", key=f"adj-btn-{item.id}", disabled=not may_adjudicate):
                adjudicate(store, item.id, choice, reviewer=reviewer)
                st.rerun()
