"""``python -m core users ...``, ``serve-check`` and the demo accounts."""
from __future__ import annotations

import io
import json
import stat

import pytest

from core.__main__ import main
from core.auth.setup import DEMO_ACCOUNTS, create_demo_accounts, is_local
from core.store.project_store import Store


@pytest.fixture
def project(tmp_path):
    Store.create(tmp_path / "projects" / "p", modality="image", labels=["a", "b"])
    return tmp_path / "projects" / "p"


def _cli(capsys, monkeypatch, *argv, stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_users_add_list_role_passwd_with_the_audit_under_the_named_user(project, capsys, monkeypatch):
    assert _cli(capsys, monkeypatch, "users", "add", project, "boss", "--role", "admin", "--password-stdin",
                stdin="boss password\n")[0] == 0
    rc, out, _ = _cli(capsys, monkeypatch, "users", "add", project, "ann", "--generate", "--user", "boss", "--json")
    generated = json.loads(out)["password"]
    assert rc == 0 and len(generated) >= 12
    store = Store(project)
    assert store.sign_in("ann", generated) and store.sign_in("boss", "boss password")
    rc, out, _ = _cli(capsys, monkeypatch, "users", "list", project, "--json")
    listed = json.loads(out)["users"]
    assert [(u["name"], u["role"]) for u in listed] == [("ann", "annotator"), ("boss", "admin")]
    assert "hash" not in out and "argon2" not in out
    assert _cli(capsys, monkeypatch, "users", "role", project, "ann", "reviewer", "--user", "boss")[0] == 0
    assert _cli(capsys, monkeypatch, "users", "passwd", project, "ann", "--password-stdin", stdin="new password 2\n")[0] == 0
    assert store.role_of("ann") == "reviewer" and store.sign_in("ann", "new password 2")
    rows = [(r["user"], r["origin"], r["action"]) for r in store.audit_log(action="set_role")]
    assert rows == [("boss", "cli", "set_role")]
    assert all("new password 2" not in json.dumps(r) for r in store.audit_log())


def test_cli_errors_name_the_problem_and_change_nothing(project, capsys, monkeypatch):
    rc, _, err = _cli(capsys, monkeypatch, "users", "add", project, "ann", "--role", "annotator", "--generate")
    assert rc == 1 and "first account of a project must be an admin" in err
    rc, _, err = _cli(capsys, monkeypatch, "users", "add", project, "boss", "--role", "admin", "--password-stdin",
                      stdin="short\n")
    assert rc == 1 and "at least 8 characters" in err and "short" not in err
    rc, _, err = _cli(capsys, monkeypatch, "users", "add", project, "model:x", "--role", "admin", "--generate")
    assert rc == 1 and "reserved" in err
    assert Store(project).users() == []


def test_serve_check_refuses_other_addresses_until_every_project_has_an_admin(project, capsys, monkeypatch):
    root = project.parent
    assert _cli(capsys, monkeypatch, "serve-check", root)[0] == 0  # localhost: fine without accounts
    rc, _, err = _cli(capsys, monkeypatch, "serve-check", root, "--host", "0.0.0.0")
    assert rc == 1 and "no admin account" in err and "users add" in err
    Store(project).add_user("boss", "boss password", "admin", by="boss")
    assert _cli(capsys, monkeypatch, "serve-check", root, "--host", "0.0.0.0")[0] == 0
    (root / "broken").mkdir()
    (root / "broken" / "project.db").write_bytes(b"not a database at all" * 50)
    rc, _, err = _cli(capsys, monkeypatch, "serve-check", root, "--host", "0.0.0.0")
    assert rc == 0 and "broken" in err and "cannot be opened" in err


@pytest.mark.parametrize("host,local", [("localhost", True), ("127.0.0.1", True), ("::1", True), ("[::1]", True),
                                        ("0.0.0.0", False), ("192.168.1.4", False), ("example.org", False)])
def test_is_local(host, local):
    assert is_local(host) is local


def test_demo_accounts_are_made_once_into_a_private_file(project, tmp_path):
    store = Store(project)
    out = tmp_path / "projects" / "demo-accounts.txt"
    made = create_demo_accounts(store, out)
    assert sorted(made) == sorted(n for n, _ in DEMO_ACCOUNTS)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    lines = [ln.split("\t") for ln in out.read_text().splitlines() if not ln.startswith("#")]
    assert {(n, r) for n, r, _ in lines} == set(DEMO_ACCOUNTS)
    for name, _, password in lines:
        assert store.sign_in(name, password) is not None
    assert create_demo_accounts(store, out) is None  # kept: the passwords are not changed or printed again
    assert out.read_text().count("\t") == 2 * len(DEMO_ACCOUNTS)

