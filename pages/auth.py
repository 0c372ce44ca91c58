"""Sign-in for the sidebar: per-project accounts (argon2id passwords, :mod:`core.store.users`), or an
organisation's OpenID Connect provider through ``st.login`` when ``[auth]`` is configured in
``.streamlit/secrets.toml`` (the account's name is the provider's e-mail address).

The signed-in user lives in this browser session's server-side state only (``signed_in``: project folder ->
account name); a reload signs out. Every write names that user and ``core`` checks their role again.
"""
from __future__ import annotations

import streamlit as st

from core.auth.roles import allows
from core.auth.setup import is_local, serving_problem
from core.errors import PermissionDenied
from core.store.project_store import Store
from core.views.text import md_literal

KEY = "signed_in"


def signed_in_user(store: Store) -> str | None:
    """The account signed in to ``store``'s project in this session, if it is still enabled."""
    name = st.session_state.get(KEY, {}).get(str(store.dir))
    return name if name is not None and store.role_of(name) is not None else None


def can(store: Store, permission: str) -> bool:
    """Whether the signed-in user's role (read now: a changed role applies at once) has ``permission``."""
    name = st.session_state.get(KEY, {}).get(str(store.dir))
    return name is not None and allows(store.role_of(name), permission)  # None for a disabled account


def _remember(store: Store, name: str) -> None:
    st.session_state.setdefault(KEY, {})[str(store.dir)] = name


def _sign_out(store: Store, name: str) -> None:
    st.session_state.get(KEY, {}).pop(str(store.dir), None)
    store.record_sign_out(name)


def _oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all
        return False


def account_panel(store: Store) -> None:
    """The sidebar's account box: who is signed in (and Sign out), or the sign-in form."""
    problem = serving_problem([store], str(st.get_option("server.address") or "localhost"))
    if problem:
        st.error(problem)
        st.stop()
    if not store.has_accounts():
        st.warning(f"The project {md_literal(repr(store.dir.name))} has no accounts yet, so nobody can sign in. "
                   f"Create an admin with `python -m core users add {store.dir} NAME --role admin`.")
        return
    name = signed_in_user(store)
    if name is not None:
        st.caption(f"Signed in as **{md_literal(name)}** ({store.role_of(name)})")
        st.button("Sign out", key="sign-out", on_click=_sign_out, args=(store, name))
        return
    if _oidc_configured():
        if st.user.is_logged_in:
            email = st.user.get("email")
            if email and store.role_of(email) is not None:
                _remember(store, email)
                st.rerun()
            st.warning(f"{md_literal(repr(email))} has no account in this project: ask an admin to add it.")
        else:
            st.button("Sign in with your organisation", on_click=st.login)
    with st.form("sign-in"):
        user = st.text_input("Account", autocomplete="username")
        password = st.text_input("Password", type="password", autocomplete="current-password")
        if st.form_submit_button("Sign in"):
            try:
                account = store.sign_in(user, password)
            except PermissionDenied as exc:
                st.error(str(exc))
                account = False
            if account is None:
                st.error("Unknown account or wrong password.")
            elif account:
                _remember(store, account["name"])
                st.rerun()
    if not is_local(str(st.get_option("server.address") or "localhost")):
        st.caption("Served beyond this machine: sign-in is over plain HTTP unless a TLS proxy is in front.")
