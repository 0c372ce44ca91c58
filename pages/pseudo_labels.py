"""Pseudo-labels: the current model's confidence per class, a threshold, what each class would gain, a sample
above the threshold, and "accept" (one bulk annotation by the annotator who accepts; undoable)."""
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core.views.pseudo_labels import (accept_pseudo_labels, accept_refusal, candidates, pseudo_label_rounds,
                                      pseudo_label_summary, threshold_by_target)
from pages.auth import can
from core.views.text import html_literal_columns, md_literal
from pages.common import current_user, item_grid, require_store, run_picker

store = require_store()
st.title("Pseudo-labels")
run = run_picker(store)
if run is None:
    st.stop()
rounds = pseudo_label_rounds(store, run["id"])
if not rounds["metrics"].empty or not rounds["counts"].empty:
    with st.expander(f"Rounds of run {run['id']} ({run['model']}): what each round added", expanded=True):
        st.dataframe(rounds["metrics"], hide_index=True, width="stretch")
        st.caption("Machine labels the run stored per round and class (never counted as confirmed until "
                   "accepted below)")
        st.dataframe(rounds["counts"], width="stretch")


def _set_by_target() -> None:
    choice = threshold_by_target(store, run["id"], float(st.session_state["pl-target"]))
    st.session_state["pl-target-reason"] = choice["reason"]
    if choice["threshold"] is not None:
        st.session_state["pl-threshold"] = min(1.0, float(choice["threshold"]))


st.session_state.setdefault("pl-threshold", 0.95)
left, right = st.columns([3, 1])
with right:
    st.number_input("Target precision", 0.5, 1.0, 0.98, 0.01, key="pl-target")
    st.button("Choose by target precision", key="pl-by-target", on_click=_set_by_target,
              help="the smallest threshold whose estimated precision (95% lower bound) reaches the target")
with left:
    threshold = st.slider("Confidence threshold", 0.0, 1.0, step=0.001, format="%.3f", key="pl-threshold")
summary = pseudo_label_summary(store, run["id"], threshold=threshold)
if st.session_state.get("pl-target-reason"):
    st.info(st.session_state.pop("pl-target-reason"))
if summary.get("confidence_status") == "known":
    st.markdown(f"**{summary['precision_text']}**")
    st.caption(summary["confidence_note"])
else:
    st.warning(summary["precision_text"])
ref = summary.get("reference_precision")
if ref and ref["precision"] is not None:
    st.caption(f"Against the reference labels (evaluation only): {100 * ref['precision']:.1f}% of the "
               f"{ref['n']:,} accepted items that have one are right.")

hist = pd.DataFrame(summary["histogram"])
if not hist.empty:
    fig = px.bar(html_literal_columns(hist, ["label"]), x="bin", y="count", color="label", barmode="overlay",
                 opacity=0.6, labels={"bin": "confidence", "count": "unconfirmed items"})
    fig.add_vline(x=threshold, line_dash="dash")
    fig.update_layout(height=320, margin={"t": 10})
    st.plotly_chart(fig, width="stretch")
rel = pd.DataFrame(summary.get("reliability") or [])
if not rel.empty and rel["count"].sum() > 0:
    with st.expander("Reliability: accuracy of out-of-fold predictions per confidence bin", expanded=True):
        filled = rel[rel["count"] > 0]
        fig = go.Figure()
        fig.add_bar(x=(rel["lo"] + rel["hi"]) / 2, y=rel["count"], width=rel["hi"] - rel["lo"], name="rows",
                    yaxis="y2", opacity=0.3)
        fig.add_scatter(x=filled["confidence"], y=filled["accuracy"], mode="lines+markers", name="accuracy")
        fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash"}, name="perfect calibration")
        fig.update_layout(height=320, margin={"t": 10}, xaxis_title="mean confidence", yaxis_title="accuracy",
                          yaxis={"range": [0, 1]}, yaxis2={"overlaying": "y", "side": "right", "title": "rows"})
        st.plotly_chart(fig, width="stretch")
gains = pd.DataFrame(summary["gains"])
st.subheader("What each class would gain")
st.dataframe(gains, hide_index=True, width="stretch")

label = st.selectbox("Sample of", ["all classes"] + store.labels())
picked = candidates(store, run["id"], threshold, label=None if label == "all classes" else label, limit=24)
item_grid(store, [c[0] for c in picked], captions={c[0]: f"{c[1]} {c[2]:.2f}" for c in picked})

annotator = current_user()
may_accept = can(store, "accept_pseudo_labels")
total = int(gains["gain"].sum()) if not gains.empty else 0
refusal = accept_refusal(run)
if refusal:
    st.warning(f"These pseudo-labels cannot be accepted: {refusal}.")
if st.button(f"Accept {total} pseudo-labels", type="primary", disabled=not may_accept or total == 0 or bool(refusal),
             help=refusal or (None if may_accept else "accepting pseudo-labels needs the reviewer role")):
    n = accept_pseudo_labels(store, run["id"], threshold, annotator=annotator)
    st.success(f"Recorded {n} labels as one bulk action by {md_literal(annotator)} (undo from the Label page or "
               "below).")
if st.button("Undo my last action"):
    st.info(f"Undid {len(store.undo_last(annotator))} label(s).")
