"""Home: create or import a project, and its overview (items, labels, agreement, model, jobs).

Import runs as a job of the worker (decoding every file is too slow for the script thread); the page queues
it and polls its progress.
"""
import pandas as pd
import streamlit as st

from core.jobs import auto_retrain
from core.jobs import queue as jobs
from core.errors import LabelToolError
from core.views.consensus import confirmed_rule
from core.views.text import md_literal
from core.auth.setup import create_project_as
from core.io.ingest import parse_labels, request_import
from core.io.media_roots import media_roots
from core.io.project_names import project_path
from pages.auth import can
from pages.common import current_store, current_user, projects_root

st.title("Labelling studio")
store = current_store()
user = current_user()

if store is None:
    st.info("No project yet. Create the first one from the shell, with its first admin account:\n\n"
            "`python -m core init projects/NAME --modality image` then "
            "`python -m core users add projects/NAME YOUR_NAME --role admin`. "
            "(`make run` creates the demo project and its accounts.)")
    st.stop()
if user is None:
    st.info("Sign in in the sidebar to label, import and see the project's overview.")
    st.stop()

if can(store, "create_project"):
    with st.expander("Create a project"):
        with st.form("create"):
            name = st.text_input("Folder name (inside the projects folder)")
            modality = st.selectbox("Modality", ["image", "audio", "text", "image+text"])
            labels = st.text_input("Labels (comma-separated; or leave empty to take them from the first import)")
            min_votes = st.number_input("Agreeing votes that confirm an item", 1, 10, 2)
            st.caption("You become its admin, with the same password.")
            if st.form_submit_button("Create") and name:
                try:
                    new = create_project_as(store, user, project_path(projects_root(), name), modality=modality,
                                            labels=parse_labels(labels), min_votes=int(min_votes))
                    st.session_state["project"] = str(new.dir)
                    st.session_state.setdefault("signed_in", {})[str(new.dir)] = user
                    st.rerun()
                except LabelToolError as exc:
                    st.error(md_literal(exc))  # it quotes the name typed

if can(store, "import"):
    with st.expander("Import items"):
        with st.form("import"):
            source = st.text_input("Folder or manifest (CSV / JSONL) path on the server",
                                   help="below the media roots: " + ", ".join(str(r) for r in media_roots())
                                   + " (set LABELTOOL_MEDIA_ROOTS to change them)")
            mode = st.radio("Class sub-folders become", ["nothing", "reference labels (evaluation only)",
                                                         "initial labels"], horizontal=True)
            annotator = st.text_input("Record imported labels under", value="import")
            if st.form_submit_button("Import") and source:
                label_mode = {"nothing": None, "initial labels": "initial"}.get(mode, "reference")
                try:
                    job_id, _ = request_import(store, source, labels_from_folders=label_mode, annotator=annotator,
                                               requested_by=user, confine_to=media_roots())
                    st.session_state["import_job"] = {"project": str(store.dir), "id": job_id}
                except LabelToolError as exc:
                    st.error(md_literal(exc))  # it quotes the path typed

if can(store, "settings"):
    with st.expander("Automatic retraining"), st.form("auto-retrain"):
        on, every = auto_retrain.read_settings(store.settings())
        on = st.toggle("Queue a light retrain while annotators work", value=on, key="auto-retrain-on")
        every = st.number_input("after every N newly confirmed labels", 1, 100_000, every, key="auto-retrain-every")
        if st.form_submit_button("Save"):
            store.set_setting("auto_retrain", bool(on), by=user)
            store.set_setting("auto_retrain_every", int(every), by=user)
            st.success("Saved: the worker applies it on its next pass.")


@st.fragment(run_every=1)
def import_panel() -> None:
    """The running or queued import job, else the one this session asked for, with its progress."""
    job = jobs.active_job(store, "import")
    mine = st.session_state.get("import_job")
    if job is None and mine and mine["project"] == str(store.dir):
        job = jobs.get_job(store, mine["id"])
    if job is None:
        return
    p = job["progress"]
    if job["status"] in ("queued", "running"):
        wait = " (waiting for the worker: `make run` starts it)" if job["status"] == "queued" else ""
        st.info(f"Import job {job['id']} is {job['status']}{wait}" + (f": {p['phase']}" if p.get("phase") else ""))
        if p.get("total"):
            st.progress(min(1.0, p.get("step", 0) / p["total"]), text=f"{p.get('step', 0)}/{p['total']} files"
                        + (f", ETA {p['eta_s']:.0f} s" if p.get("eta_s") else ""))
        st.button("Cancel import", key=f"cancel-import-{job['id']}", on_click=jobs.request_cancel,
                  args=(store, job["id"]), kwargs={"by": user}, disabled=not can(store, "cancel_job"))
    elif job["status"] == "done":
        st.success(md_literal(job["message"]))  # a job message may quote paths and names
        problems = (p.get("report") or {}).get("problems")
        if problems:
            st.dataframe(pd.DataFrame(problems), hide_index=True, width="stretch")
    else:
        st.error(f"Import job {job['id']} {job['status']}: {md_literal(job['message'])}")


import_panel()


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
