"""Accounts of a project: argon2id hashes, sign-in, roles, the last admin, names the engine reserves."""
from __future__ import annotations

import pytest

from core.errors import PermissionDenied, ValidationError
from core.store.project_store import Store

PW = "correct horse 1"


@pytest.fixture
def store(tmp_path):
    s = Store.create(tmp_path / "p", modality="image", labels=["cat", "dog"], min_votes=1)
    s.add_user("boss", PW, "admin", by="boss")
    s.add_user("ann", "annotator-pw", "annotator", by="boss")
    return s


def test_passwords_are_stored_as_argon2id_hashes_only(store, tmp_path):
    row = store.conn.execute("SELECT password_hash FROM users WHERE name = 'boss'").fetchone()
    assert row[0].startswith("$argon2id$") and PW not in row[0]
    store.close()
    for f in (tmp_path / "p").glob("project.db*"):  # the database and its WAL hold no clear password
        assert PW.encode() not in f.read_bytes()
    assert "password_hash" not in store.users()[0] and store.user("boss")["has_password"] == 1


def test_sign_in_checks_the_password_and_audits_both_outcomes_without_it(store):
    assert store.sign_in("boss", PW)["role"] == "admin"
    assert store.sign_in("boss", "wrong password") is None
    assert store.sign_in("nobody", PW) is None
    actions = [(r["user"], r["action"]) for r in store.audit_log(limit=3)]
    assert actions == [("nobody", "sign_in_failed"), ("boss", "sign_in_failed"), ("boss", "sign_in")]
    assert all(PW not in str(r["details"]) for r in store.audit_log())


def test_a_disabled_account_cannot_sign_in_or_write(store):
    store.set_disabled("ann", True, by="boss")
    assert store.sign_in("ann", "annotator-pw") is None
    with pytest.raises(PermissionDenied, match="disabled"):
        store.authorize("ann", "label")
    store.set_disabled("ann", False, by="boss")
    assert store.sign_in("ann", "annotator-pw") is not None


def test_the_first_account_is_an_admin_and_the_last_admin_stays(tmp_path):
    s = Store.create(tmp_path / "q", modality="image")
    with pytest.raises(ValidationError, match="first account of a project must be an admin"):
        s.add_user("ann", PW, "annotator", by="ann")
    s.add_user("boss", PW, "admin", by="boss")
    with pytest.raises(ValidationError, match="last admin"):
        s.set_role("boss", "reviewer", by="boss")
    with pytest.raises(ValidationError, match="last admin"):
        s.set_disabled("boss", True, by="boss")
    with pytest.raises(ValidationError, match="exists already"):
        s.add_user("boss", PW, "admin", by="boss")


def test_only_admins_manage_accounts_and_anyone_changes_their_own_password(store):
    with pytest.raises(PermissionDenied, match="needs the admin role"):
        store.add_user("eve", PW, "admin", by="ann")
    with pytest.raises(PermissionDenied):
        store.set_role("ann", "admin", by="ann")
    with pytest.raises(PermissionDenied):
        store.set_password("boss", "taken over!", by="ann")
    store.set_password("ann", "a new password", by="ann")
    assert store.sign_in("ann", "a new password") is not None
    store.set_role("ann", "reviewer", by="boss")
    assert store.role_of("ann") == "reviewer"
    assert [r["action"] for r in store.audit_log(limit=3)] == ["set_role", "sign_in", "set_password"]


@pytest.mark.parametrize("name", ["import", "worker", "model:classifier", "Model:x", "a\x00b", "x" * 101, "", "  ",
                                  "tab\there"])
def test_reserved_and_malformed_account_names_are_refused(store, name):
    with pytest.raises(ValidationError, match="'name' parameter of the accounts"):
        store.add_user(name, PW, "annotator", by="boss")
    assert store.user(name) is None


def test_short_passwords_are_refused_without_echoing_them(store):
    with pytest.raises(ValidationError) as exc:
        store.add_user("short", "abc", "annotator", by="boss")
    assert "abc" not in str(exc.value) and "at least 8" in str(exc.value)


def test_repeated_failed_sign_ins_lock_the_account_name_for_a_while(store, monkeypatch):
    import time

    import core.store.users as users

    for _ in range(5):
        assert store.sign_in("ann", "guess guess") is None
    with pytest.raises(PermissionDenied, match="Too many failed sign-ins"):
        store.sign_in("ann", "annotator-pw")  # even the right password: refused unchecked
    assert store.audit_log(limit=1)[0]["action"] == "sign_in_locked"
    assert store.sign_in("boss", PW) is not None  # other accounts are not locked
    monkeypatch.setattr(users, "now", lambda: time.time() + users.LOCKOUT_S + 1)  # the window has passed
    assert store.sign_in("ann", "annotator-pw") is not None
