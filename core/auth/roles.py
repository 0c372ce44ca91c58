"""Roles of a project's accounts and the one table of what each may do.

Roles are ordered: a reviewer may do everything an annotator may, an admin everything a reviewer may.

=========  ==========================================================================================
annotator  label items one at a time, undo their own labels, decide identity pairs (same / different)
reviewer   also adjudicate, accept pseudo-labels, label clusters, lasso selections and similar items in
           one action, merge and split identities, merge clusters, retrain, cancel jobs
admin      also import, change settings (consensus method, auto-retrain, ...), edit the label set,
           manage accounts, create projects
=========  ==========================================================================================

Every write of the store names its permission here (:meth:`core.store.users.UsersMixin.authorize`), so the
rule is checked in ``core`` whatever calls it, not only by the pages.
"""
from __future__ import annotations

from core.errors import check_choice

ROLES = ("annotator", "reviewer", "admin")

#: permission -> the least role that has it
PERMISSIONS: dict[str, str] = {
    "label": "annotator",
    "undo_own": "annotator",
    "vote_pairs": "annotator",
    "bulk_label": "reviewer",
    "adjudicate": "reviewer",
    "accept_pseudo_labels": "reviewer",
    "merge_identities": "reviewer",
    "merge_clusters": "reviewer",
    "retrain": "reviewer",
    "extract_features": "reviewer",
    "cancel_job": "reviewer",
    "retract_others": "reviewer",
    "import": "admin",
    "settings": "admin",
    "labels": "admin",
    "users": "admin",
    "create_project": "admin",
}


def check_role(role: str) -> str:
    """``role`` when it is one of :data:`ROLES`; a ValidationError listing them otherwise."""
    check_choice("the accounts", "role", role, ROLES)
    return role


def allows(role: str | None, permission: str) -> bool:
    """Whether ``role`` has ``permission`` (False for no role).

    >>> allows("annotator", "label"), allows("annotator", "adjudicate"), allows("admin", "adjudicate")
    (True, False, True)
    """
    check_choice("allows", "permission", permission, PERMISSIONS)
    if role is None:
        return False
    return ROLES.index(role) >= ROLES.index(PERMISSIONS[permission])


def permissions_of(role: str) -> list[str]:
    """Every permission of ``role``, in the table's order."""
    return [p for p in PERMISSIONS if allows(role, p)]
