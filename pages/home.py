"""Home: create or import a project, and its overview (items, labels, agreement, model, jobs)."""
import pandas as pd
import streamlit as st

from core.jobs import queue as jobs
from core.errors import LabelToolError
from core.views.analysis import confirmed_rule
from core.io.ingest import import_source, parse_labels
from core.store.project_store import Store
from pages.common import current_store, projects_root

st.title("Labelling studio")
store = current_store()

with st.expander("Create a project", expanded=store is None):
    with st.form("create"):
        name = st.text_input("Folder name (inside the projects folder)")
        modality = st.selectbox("Modality", ["image", "audio", "text", "image+text"])
        labels = st.text_input("Labels (comma-separated; or leave empty to take them from the first import)")
        min_votes = st.number_input("Agreeing votes that confirm an item", 1, 10, 2)
        if st.form_submit_button("Create") and name:
            try:
                new = Store.create(projects_root() / name, modality=modality, labels=parse_labels(labels),
                                   min_votes=int(min_votes))
                st.session_state["project"] = str(new.dir)
                st.rerun()
            except LabelToolError as exc:
                st.error(str(exc))

if store is None:
    st.stop()

with st.expander("Import items"):
    with st.form("import"):
        source = st.text_input("Folder or manifest (CSV / JSONL) path on the server")
        mode = st.radio("Class sub-folders become", ["nothing", "reference labels (evaluation only)",
                                                     "initial labels"], horizontal=True)
        annotator = st.text_input("Record imported labels under", value="import")
        if st.form_submit_button("Import") and source:
            label_mode = {"nothing": None, "initial labels": "initial"}.get(mode, "reference")
            try:
                with st.spinner("Checking and importing files..."):
                    report = import_source(store, source, labels_from_folders=label_mode, annotator=annotator)
                jobs.request_job(store, "features", {}, requested_by=st.session_state.get("annotator") or None)
                st.success(f"Imported {report.added} items ({report.already_present} already present, "
                           f"{report.skipped} rows skipped, {report.annotations} labels). Features are being "
                           "computed in the background.")
                if report.problems:
                    st.dataframe(pd.DataFrame(report.problems), hide_index=True, width="stretch")
            except LabelToolError as exc:
                st.error(str(exc))


@st.fragment(run_every=3)
def overview() -> None:
    ov = store.overview()
    c = st.columns(5)
    c[0].metric("Items", ov["items"])
    c[1].metric("Labelled", ov["labelled_items"])
    c[2].metric("Confirmed", ov["confirmed_items"], help=confirmed_rule(store))
    c[3].metric("Mean agreement", "-" if ov["mean_agreement"] is None else f"{ov['mean_agreement']:.0%}",
                help="items with two or more votes")
    c[4].metric("Annotators", ov["annotators"])
    run = ov["latest_run"]
    if run is None:
        st.info("No model yet: label some items, then press Retrain now on the Train page.")
    else:
        m = run["metrics"]
        st.subheader(f"Model in service: run {run['id']} ({run['model']})")
        cols = st.columns(4)
        cols[0].metric("Selected", f"{m.get('model_selected')} {m.get('params_selected')}")
        cols[1].metric("CV macro-F1", f"{m['cv_macro_f1']:.3f}" if m.get("cv_macro_f1") is not None else "-")
        cols[2].metric("Trained on", m.get("n_labelled"))
        ev = (m.get("evaluation") or {}).get("unlabelled") or {}
        cols[3].metric("Accuracy on unlabelled (reference)",
                       f"{ev['accuracy']:.3f}" if ev.get("accuracy") is not None else "-")
    recent = jobs.list_jobs(store, limit=5)
    if recent:
        st.caption("Recent jobs")
        st.dataframe(pd.DataFrame([{"job": j["id"], "kind": j["kind"], "status": j["status"],
                                    "phase": j["progress"].get("phase"), "message": j["message"]} for j in recent]),
                     hide_index=True, width="stretch")


overview()
