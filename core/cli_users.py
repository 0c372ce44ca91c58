"""``python -m core users add|passwd|role|disable|enable|list PROJECT ...`` and ``serve-check``: the accounts
of a project from the shell (:mod:`core.store.users`).

Passwords are never command-line arguments (they would show in ``ps`` and the shell's history): they are asked
for twice on the terminal, read from standard input with ``--password-stdin``, or generated with
``--generate`` and printed once. Writes are recorded in the audit log under ``--user`` (default: the OS user).
"""
from __future__ import annotations

import argparse
import getpass
import sys

from core.auth import roles
from core.auth.passwords import check_password, generate_password
from core.errors import ValidationError


def _password(a) -> tuple[str | None, bool]:
    """(password, generated) from the command's options."""
    if getattr(a, "no_password", False):
        return None, False
    if a.generate:
        return generate_password(), True
    if a.password_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    if not sys.stdin.isatty():
        raise ValidationError("No password given: run on a terminal (it asks), or pass --password-stdin or --generate.")
    first = getpass.getpass(f"password for {a.name}: ")
    check_password(first)
    if getpass.getpass("again: ") != first:
        raise ValidationError("The two passwords differ; nothing was changed.")
    return first, False


def cmd_users(a, store) -> dict:
    """Run one ``users`` action on ``store`` (opened by the CLI); returns what to print."""
    by = store.actor(None)
    if a.action == "list":
        return {"users": store.users()}
    if a.action == "add":
        password, generated = _password(a)
        store.add_user(a.name, password, a.role, by=by)
        out = {"added": a.name, "role": a.role}
    elif a.action == "passwd":
        password, generated = _password(a)
        store.set_password(a.name, password, by=by)
        out = {"password_changed": a.name}
    elif a.action == "role":
        store.set_role(a.name, a.role, by=by)
        return {"account": a.name, "role": a.role}
    else:
        store.set_disabled(a.name, a.action == "disable", by=by)
        return {"account": a.name, "disabled": a.action == "disable"}
    if generated:
        out["password"] = password  # printed once, here; stored only as its argon2id hash
    return out


def add_parser(sub, cmd) -> None:
    """Register ``users`` on the CLI's subparsers (``cmd`` is the CLI's helper that adds common options)."""
    sp = cmd("users", None, "manage the accounts of a project (roles: annotator, reviewer, admin)")
    acts = sp.add_subparsers(dest="action", required=True)
    for name, help_ in (("add", "add an account"), ("passwd", "change an account's password"),
                        ("role", "change an account's role"), ("disable", "disable an account (its votes stay)"),
                        ("enable", "enable a disabled account"), ("list", "list the accounts")):
        p = acts.add_parser(name, help=help_, description=help_)
        p.add_argument("project")
        if name != "list":
            p.add_argument("name")
        if name in ("add", "role"):
            p.add_argument("--role" if name == "add" else "role", choices=roles.ROLES,
                           **({"default": "annotator"} if name == "add" else {}))
        if name in ("add", "passwd"):
            g = p.add_mutually_exclusive_group()
            g.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
            g.add_argument("--generate", action="store_true", help="generate a password and print it once")
            if name == "add":
                g.add_argument("--no-password", action="store_true",
                               help="no password: the account signs in through OpenID Connect (st.login) only")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.add_argument("--user", help="who this command's writes are recorded under (default: the OS user)")
    assert isinstance(sp, argparse.ArgumentParser)
