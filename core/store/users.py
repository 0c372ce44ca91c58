"""Accounts of a project and the role check every write goes through (schema v5, table ``users``).

A project without any account is *open*: its writes are recorded under the name the caller gives, as before
accounts existed (scripts, tests, a project made with ``python -m core init``). The app refuses to work on an
open project (``pages/common.py``) and ``make run`` creates the demo's accounts, so a browser never writes
without a signed-in account. Once a project has an account, every write of the store from the app or a
library caller names a user who must be an enabled account whose role allows it
(:data:`core.auth.roles.PERMISSIONS`); the CLI and the worker (:data:`core.store.audit.OPERATOR_ORIGINS`) are
not checked, but their writes are audited under the user they name.
"""
from __future__ import annotations

import sqlite3
from typing import Any

from core.auth import passwords, roles
from core.errors import PermissionDenied, ValidationError
from core.store.audit import OPERATOR_ORIGINS, AuditMixin
from core.store.connection import now
from core.store.settings import validate_account_name

MAX_FAILURES = 5   # failed sign-ins of one account name ...
LOCKOUT_S = 900    # ... within this many seconds (since its last success) lock it for the rest of the window
_PUBLIC = "name, role, disabled, created_by, created_at, updated_at, password_hash IS NOT NULL AS has_password"


class UsersMixin(AuditMixin):
    # ------------------------------------------------------------------------------------------- checks
    def has_accounts(self) -> bool:
        """Whether the project has at least one account (else it is open: writes are not role-checked)."""
        return self.conn.execute("SELECT EXISTS (SELECT 1 FROM users)").fetchone()[0] == 1

    def role_of(self, name: str) -> str | None:
        """The role of an enabled account, None for an unknown or disabled name."""
        row = self.conn.execute("SELECT role FROM users WHERE name = ? AND disabled = 0", (name,)).fetchone()
        return None if row is None else row[0]

    def authorize(self, user: str, permission: str, conn: sqlite3.Connection | None = None) -> str | None:
        """Check that ``user`` may do ``permission`` in this project; returns their role (None: open project,
        or an operator origin writing under a name that is no account).

        Raises
        ------
        PermissionDenied
            The project has accounts and ``user`` is none of them, is disabled, or their role lacks the
            permission (the message names the role needed and how an admin grants it).
        """
        c = conn if conn is not None else self.conn
        row = c.execute("SELECT role, disabled FROM users WHERE name = ?", (user,)).fetchone()
        if self.origin in OPERATOR_ORIGINS:
            return None if row is None else row[0]
        if row is None:
            if not c.execute("SELECT EXISTS (SELECT 1 FROM users)").fetchone()[0]:
                return None
            raise PermissionDenied(f"{user!r} is not an account of the project {self.dir.name!r}: sign in with an "
                                   "account (an admin adds one with 'python -m core users add PROJECT NAME').")
        role, disabled = row
        if disabled:
            raise PermissionDenied(f"The account {user!r} is disabled in the project {self.dir.name!r}.")
        if not roles.allows(role, permission):
            need = roles.PERMISSIONS[permission]
            raise PermissionDenied(
                f"{user!r} is {_article(role)} {role} in the project {self.dir.name!r} and may not "
                f"{permission.replace('_', ' ')}: that needs the {need} role (an admin grants it on the Admin page "
                f"or with 'python -m core users role PROJECT {user} {need}').")
        return role

    # ----------------------------------------------------------------------------------------- accounts
    def users(self) -> list[dict[str, Any]]:
        """Every account: name, role, disabled, created_by, created_at, updated_at, has_password (no hash)."""
        return [dict(r) for r in self.conn.execute(f"SELECT {_PUBLIC} FROM users ORDER BY name")]

    def user(self, name: str) -> dict[str, Any] | None:
        row = self.conn.execute(f"SELECT {_PUBLIC} FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else dict(row)

    def add_user(self, name: str, password: str | None, role: str, *, by: str) -> None:
        """Create an account. The first account of a project must be an admin (someone must manage the
        others); later ones need the ``users`` permission. ``password`` None: OpenID Connect sign-in only."""
        name = validate_account_name(name)
        roles.check_role(role)
        encoded = None if password is None else passwords.hash_password(password)
        with self.transaction() as conn:
            first = not conn.execute("SELECT EXISTS (SELECT 1 FROM users)").fetchone()[0]
            if first and role != "admin":
                raise ValidationError(f"The first account of a project must be an admin; got role {role!r} for "
                                      f"{name!r}. Create an admin first.")
            actor_role = None if first else self.authorize(by, "users", conn)
            if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise ValidationError(f"The account {name!r} exists already; change it with 'users passwd' or "
                                      "'users role'.")
            t = now()
            conn.execute("INSERT INTO users (name, password_hash, role, disabled, created_by, created_at, updated_at) "
                         "VALUES (?, ?, ?, 0, ?, ?, ?)", (name, encoded, role, by, t, t))
            self._ensure_annotator(conn, name)
            self.audit(conn, by, "add_user", role=actor_role or ("admin" if first and by == name else None),
                       account=name, account_role=role, password=encoded is not None)

    def set_password(self, name: str, password: str | None, *, by: str) -> None:
        """Change an account's password (its own user, or one with the ``users`` permission)."""
        encoded = None if password is None else passwords.hash_password(password)
        with self.transaction() as conn:
            self._require_account(conn, name)
            role = self.role_of(by) if by == name else self.authorize(by, "users", conn)
            conn.execute("UPDATE users SET password_hash = ?, updated_at = ? WHERE name = ?", (encoded, now(), name))
            self.audit(conn, by, "set_password", role=role, account=name)

    def set_role(self, name: str, role: str, *, by: str) -> None:
        """Change an account's role; the last enabled admin keeps theirs."""
        roles.check_role(role)
        with self.transaction() as conn:
            old = self._require_account(conn, name)["role"]
            actor_role = self.authorize(by, "users", conn)
            if old == "admin" and role != "admin":
                self._keep_an_admin(conn, name)
            conn.execute("UPDATE users SET role = ?, updated_at = ? WHERE name = ?", (role, now(), name))
            self.audit(conn, by, "set_role", role=actor_role, account=name, old_role=old, new_role=role)

    def set_disabled(self, name: str, disabled: bool, *, by: str) -> None:
        """Disable an account (it cannot sign in or write; its votes stay) or enable it again."""
        with self.transaction() as conn:
            account = self._require_account(conn, name)
            actor_role = self.authorize(by, "users", conn)
            if disabled and account["role"] == "admin":
                self._keep_an_admin(conn, name)
            conn.execute("UPDATE users SET disabled = ?, updated_at = ? WHERE name = ?", (int(bool(disabled)), now(), name))
            self.audit(conn, by, "disable_user" if disabled else "enable_user", role=actor_role, account=name)

    def sign_in(self, name: str, password: str) -> dict[str, Any] | None:
        """Verify a password; the account (public fields) when it matches an enabled account, else None.
        Both outcomes are audited (the password never is); an outdated hash is upgraded.

        Raises
        ------
        PermissionDenied
            After :data:`MAX_FAILURES` failed sign-ins of ``name`` within :data:`LOCKOUT_S` seconds: further
            tries are refused unchecked (and audited) until the window has passed, against password guessing.
        """
        name = name.strip()[:100] if isinstance(name, str) else ""
        failures = self.conn.execute(
            "SELECT COUNT(*) FROM audit_log WHERE user = ? AND action = 'sign_in_failed' AND created_at >= ? AND id > "
            "COALESCE((SELECT MAX(id) FROM audit_log WHERE user = ? AND action = 'sign_in'), 0)",
            (name or "?", now() - LOCKOUT_S, name or "?")).fetchone()[0]
        if failures >= MAX_FAILURES:
            with self.transaction() as conn:
                self.audit(conn, name or "?", "sign_in_locked")
            raise PermissionDenied(f"Too many failed sign-ins for {name!r}: wait {LOCKOUT_S // 60} minutes, or ask an "
                                   "admin to reset the password.")
        row = self.conn.execute("SELECT password_hash, disabled FROM users WHERE name = ?", (name,)).fetchone()
        ok = passwords.verify_password(None if row is None else row[0], password) and row is not None and not row[1]
        with self.transaction() as conn:
            if ok and passwords.needs_rehash(row[0]):
                conn.execute("UPDATE users SET password_hash = ? WHERE name = ?", (passwords.hash_password(password), name))
            self.audit(conn, name or "?", "sign_in" if ok else "sign_in_failed")
        return self.user(name) if ok else None

    def record_sign_out(self, name: str) -> None:
        with self.transaction() as conn:
            self.audit(conn, name, "sign_out")

    # ---------------------------------------------------------------------------------------- internals
    @staticmethod
    def _require_account(conn: sqlite3.Connection, name: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ValidationError(f"There is no account {name!r} in this project; add it with 'users add'.")
        return row

    @staticmethod
    def _keep_an_admin(conn: sqlite3.Connection, name: str) -> None:
        others = conn.execute("SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled = 0 AND name != ?",
                              (name,)).fetchone()[0]
        if not others:
            raise ValidationError(f"{name!r} is the project's last admin: make another account admin first.")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"
