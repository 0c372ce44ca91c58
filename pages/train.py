"""Train: "Retrain now" (a job for the worker), live progress, cancel, and the run history."""
import json

import pandas as pd
import streamlit as st

from core.jobs import queue as jobs
from core.views.runs import compare_runs
from core.views.text import md_literal
from core.models import MODELS
from pages.auth import can
from pages.common import current_user, require_store

store = require_store()
st.title("Train")
model = st.selectbox("Model", list(MODELS), format_func=lambda m: f"{m} — {MODELS[m].description}")
with st.expander("Model parameters (JSON)"):
    raw = st.text_area("Parameters", "{}", help='e.g. {"rounds": 3, "threshold": 0.99} for pseudo_label; '
                       "an unknown name is refused by the job with the list of valid ones")
    try:
        model_params = json.loads(raw or "{}")
        if not isinstance(model_params, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        st.error(f"The parameters must be a JSON object such as {{\"rounds\": 3}}. Got {md_literal(repr(raw))} "
                 f"({md_literal(exc)}).")
        model_params = None


@st.fragment(run_every=1)
def job_panel() -> None:
    job = jobs.active_job(store, "train")
    allowed = can(store, "retrain")
    st.button("Retrain now", type="primary", disabled=model_params is None or not allowed, on_click=jobs.request_job,
              args=(store, "train", {"model": model, "params": model_params or {}}),
              kwargs={"requested_by": current_user()},
              help="train on the confirmed labels in the background; the same request joins a queued one, "
                   "another model or parameters queue behind the running job" if allowed else
                   "retraining needs the reviewer role")
    waiting = [j for j in jobs.queued_jobs(store, "train") if job is None or j["id"] != job["id"]]
    if waiting:
        st.caption(f"Queued after it: {len(waiting)} job(s)")
        st.dataframe(pd.DataFrame([{"job": j["id"], "model": j["params"].get("model"),
                                    "parameters": json.dumps(j["params"].get("params") or {}),
                                    "requests": j["requests"], "requested by": j["requested_by"]}
                                   for j in waiting]), hide_index=True, width="stretch")
    if job is None:
        last = jobs.list_jobs(store, limit=1)
        if last:
            j = last[0]
            st.caption(f"Last job {j['id']} ({j['kind']}): {j['status']} — {md_literal(j['message'])}")
        return
    p = job["progress"]
    st.write(f"Job {job['id']} is **{job['status']}**" + (f": {p.get('phase', '')}" if p else ""))
    if p.get("total"):
        st.progress(min(1.0, p.get("step", 0) / p["total"]),
                    text=f"step {p.get('step')}/{p['total']}" + (f", ETA {p['eta_s']:.0f} s" if p.get("eta_s") else "")
                    + (f", score {p['score']:.3f}" if p.get("score") is not None else "")
                    + (f", loss {p['loss']:.4f}" if p.get("loss") is not None else ""))
    st.button("Cancel", key=f"cancel-{job['id']}", on_click=jobs.request_cancel, args=(store, job["id"]),
              kwargs={"by": current_user()}, disabled=not can(store, "cancel_job"))


job_panel()


@st.fragment(run_every=3)
def run_history() -> None:
    st.subheader("Run history")
    runs = store.runs()
    if not runs:
        st.info("No run yet.")
        return
    rows = []
    for r in runs:
        m = r["metrics"]
        ev = (m.get("evaluation") or {}).get("unlabelled") or {}
        cal = m.get("calibration") or {"status": "unknown"}  # runs before calibration: unknown
        rows.append({"run": r["id"], "model": r["model"],
                     "selected": f"{m.get('model_selected')} {m.get('params_selected')}",
                     "cv macro-F1": m.get("cv_macro_f1"), "labelled": r["n_labelled"], "items": r["n_items"],
                     "ref. accuracy (unlabelled)": ev.get("accuracy"), "ECE": cal.get("ece_after"),
                     "calibration": cal["status"] + (f" ({cal['method']})" if cal.get("method") else ""),
                     "device": r["device"],
                     "seconds": r["train_seconds"]})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption("ECE: expected calibration error of the out-of-fold predictions after calibration (cross-fitted); "
               "calibration 'unknown': too few labels per class or no out-of-sample predictions, so the run's "
               "confidences are not calibrated")


run_history()

runs = store.runs()
if len(runs) >= 2:
    st.subheader("Compare two runs")
    c1, c2 = st.columns(2)
    fmt = lambda r: f"run {r['id']} ({r['model']}, {r['n_labelled']} labels)"  # noqa: E731
    a = c1.selectbox("Run A", runs[1:] + runs[:1], format_func=fmt)
    b = c2.selectbox("Run B", runs, format_func=fmt)
    if a["id"] != b["id"]:
        cmp = compare_runs(store, a["id"], b["id"])
        st.write(f"**{cmp['changed']:,}** of {cmp['n_common']:,} predictions changed ({cmp['changed_share']:.1%}); "
                 f"mean confidence {cmp['mean_confidence_a']:.3f} → {cmp['mean_confidence_b']:.3f}")
        st.dataframe(cmp["per_class"], hide_index=True, width="stretch")
