"""Admin: the project's accounts and roles, and the audit log (who imported, changed settings, adjudicated,
accepted pseudo-labels, retrained, ...), filterable. Admins only; core checks the role again on every write."""
import datetime as dt

import pandas as pd
import streamlit as st

from core.auth.passwords import generate_password
from core.auth.roles import ROLES
from core.errors import LabelToolError
from core.views.audit import audit_csv, audit_frame, audit_users
from core.views.text import md_literal
from pages.common import require_annotator, require_permission, require_store

store = require_store()
me = require_annotator()
require_permission(store, "users", "The Admin page")
st.title("Admin")

st.subheader("Accounts")
users = store.users()
st.dataframe(pd.DataFrame([{"account": u["name"], "role": u["role"], "disabled": bool(u["disabled"]),
                            "password": "set" if u["has_password"] else "none (OpenID Connect)",
                            "created by": u["created_by"]} for u in users]), hide_index=True, width="stretch")


def _act(fn, ok: str, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
        st.session_state["admin_msg"] = ("success", ok)
    except LabelToolError as exc:
        st.session_state["admin_msg"] = ("error", str(exc))


add, change, password = st.tabs(["Add an account", "Role or access", "Reset a password"])
with add, st.form("add-user", clear_on_submit=True):
    c1, c2 = st.columns(2)
    name = c1.text_input("Account name")
    role = c2.selectbox("Role", ROLES)
    pw = st.text_input("Password (empty: generate one)", type="password")
    if st.form_submit_button("Add") and name:
        chosen = pw or generate_password()
        _act(store.add_user, f"Added {name!r} ({role})." + ("" if pw else f" Their password, shown once: {chosen}"),
             name, chosen, role, by=me)
with change:
    names = [u["name"] for u in users]
    who = st.selectbox("Account", names, key="admin-who")
    c1, c2, c3 = st.columns(3)
    new_role = c1.selectbox("New role", ROLES, key="admin-role")
    if c1.button("Change role", key="admin-role-go"):
        _act(store.set_role, f"{who!r} is now {new_role}.", who, new_role, by=me)
    if c2.button("Disable", key="admin-disable", help="cannot sign in or write any more; their votes stay"):
        _act(store.set_disabled, f"Disabled {who!r}.", who, True, by=me)
    if c3.button("Enable", key="admin-enable"):
        _act(store.set_disabled, f"Enabled {who!r}.", who, False, by=me)
with password, st.form("reset-password", clear_on_submit=True):
    who = st.selectbox("Account", [u["name"] for u in users], key="admin-pw-who")
    pw = st.text_input("New password (empty: generate one)", type="password")
    if st.form_submit_button("Reset"):
        chosen = pw or generate_password()
        _act(store.set_password, f"Password of {who!r} changed." + ("" if pw else f" New password, shown once: {chosen}"),
             who, chosen, by=me)
msg = st.session_state.pop("admin_msg", None)
if msg:
    (st.success if msg[0] == "success" else st.error)(md_literal(msg[1]))  # account names as typed

st.subheader("Audit log")
c1, c2, c3 = st.columns([1, 1, 2])
user = c1.selectbox("User", ["everyone", *audit_users(store)], key="audit-user")
action = c2.selectbox("Action", ["every action", *store.audit_actions()], key="audit-action")
today = dt.date.today()
days = c3.date_input("Days", (today - dt.timedelta(days=30), today), key="audit-days")
day_from, day_to = (days[0], days[-1]) if isinstance(days, (list, tuple)) and days else (None, None)
log = audit_frame(store, user=None if user == "everyone" else user, action=None if action == "every action" else action,
                  day_from=day_from, day_to=day_to)
st.caption(f"{len(log)} rows (newest first, at most 1,000)")
st.dataframe(log, hide_index=True, width="stretch")
st.download_button("Download as CSV", audit_csv(log), "audit_log.csv", "text/csv")
