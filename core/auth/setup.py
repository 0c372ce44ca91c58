"""First accounts and the serving check.

* :func:`create_demo_accounts`: the demo project's accounts (an admin and two annotators) with random
  passwords, written once to a file only the user can read (``make run`` prints it); never committed.
* :func:`serving_problem`: serving beyond localhost is refused while a project has no admin account, since
  anyone reaching the port could then label and change settings.
"""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from core.auth.passwords import generate_password
from core.store.project_store import Store, now

DEMO_ACCOUNTS = (("admin", "admin"), ("annotator1", "annotator"), ("annotator2", "annotator"))
ACCOUNTS_FILE = "demo-accounts.txt"
LOCAL_HOSTS = ("localhost", "")


def create_demo_accounts(store: Store, out: str | os.PathLike) -> dict[str, str] | None:
    """Give a project without accounts the demo accounts; returns ``{name: password}`` (None when the project
    has accounts already: nothing changes then).

    The passwords are written to ``out`` (mode 0600, created before anything is written into it) as
    ``name<TAB>role<TAB>password`` lines, for the newcomer who runs ``make run``.
    """
    if store.has_accounts():
        return None
    made = {name: generate_password() for name, _ in DEMO_ACCOUNTS}
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file keeps its mode through O_TRUNC
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"# demo accounts of {store.dir}; sign in at the app's sidebar. Keep this file private.\n")
        for name, role in DEMO_ACCOUNTS:
            f.write(f"{name}\t{role}\t{made[name]}\n")
    admin = DEMO_ACCOUNTS[0][0]
    for name, role in DEMO_ACCOUNTS:
        store.add_user(name, made[name], role, by=admin)
    return made


def is_local(host: str) -> bool:
    """Whether ``host`` only listens on this machine (localhost, 127.0.0.0/8, ::1)."""
    host = host.strip().strip("[]")
    if host.lower() in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serving_problem(projects: list[Store], host: str) -> str | None:
    """Why the app must not serve ``host``, or None. Beyond localhost every project needs an admin account."""
    if is_local(host):
        return None
    bare = [s for s in projects if not any(u["role"] == "admin" and not u["disabled"] for u in s.users())]
    if not bare:
        return None
    first = os.path.relpath(bare[0].dir)
    bare = [s.dir.name for s in bare]
    return (f"Refusing to serve on {host!r}: the project(s) {bare} have no admin account, so anyone reaching the port "
            f"could label and change settings. Create one with 'python -m core users add {first} NAME "
            "--role admin' (it asks for the password), or serve on localhost.")


def create_project_as(creator_store: Store, creator: str, project_dir: str | os.PathLike, **settings) -> Store:
    """Create a project from the app: ``creator`` must be allowed to ``create_project`` in the project they
    are signed in to, and becomes the new project's first admin with the same password (its hash is copied,
    so the password itself is never needed here).

    Parameters
    ----------
    creator_store : Store
        The project the creator is signed in to.
    project_dir : path
        The new project's folder (validated by the caller, e.g. :func:`core.io.project_names.project_path`).
    **settings
        ``modality``, ``labels``, ``min_votes`` as :meth:`Store.create` takes them.
    """
    creator_store.authorize(creator, "create_project")
    row = creator_store.conn.execute("SELECT password_hash FROM users WHERE name = ?", (creator,)).fetchone()
    new = Store.create(project_dir, origin=creator_store.origin, by=creator, **settings)
    t = now()
    with new.transaction() as conn:
        conn.execute("INSERT INTO users (name, password_hash, role, disabled, created_by, created_at, updated_at) "
                     "VALUES (?, ?, 'admin', 0, ?, ?, ?)", (creator, None if row is None else row[0], creator, t, t))
        new._ensure_annotator(conn, creator)
        new.audit(conn, creator, "add_user", role="admin", account=creator, account_role="admin",
                  copied_from=str(creator_store.dir))
    return new
