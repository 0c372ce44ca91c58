"""Project settings, the label set and the annotators (the ``meta``, ``labels`` and ``annotators`` tables)."""
from __future__ import annotations

import json
import sqlite3
from typing import Any, Iterable

import numpy as np

from core.errors import check_param
from core.labels import engine as consensus_engine
from core.store.connection import StoreBase, now


class SettingsMixin(StoreBase):
    def settings(self) -> dict[str, Any]:
        """Project settings (name, modality, min_votes, extractor, ...)."""
        rows = self.conn.execute("SELECT key, value FROM meta WHERE key != 'schema_version'").fetchall()
        return {r["key"]: json.loads(r["value"]) for r in rows}

    def set_setting(self, key: str, value: Any, *, by: str | None = None) -> None:
        """Store one setting; a consensus setting is validated first and the consensus rows follow it.
        ``by``: who changes it (needs the ``settings`` permission; audited with the old and new value)."""
        by = self.actor(by)
        with self.transaction() as conn:
            role = self.authorize(by, "settings", conn)
            consensus_engine.check_setting(key, value)
            old = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            self.db["meta"].upsert({"key": key, "value": json.dumps(value)}, pk="key")
            self.audit(conn, by, "settings", role=role, key=key, old=None if old is None else json.loads(old[0]),
                       new=value)
            if key in consensus_engine.RECOMPUTE_ON:
                consensus_engine.recompute(self, conn, None)
        if key == "consensus_method":
            consensus_engine.refit(self)  # the change itself was authorised and audited above

    @property
    def modality(self) -> str:
        return self.settings()["modality"]

    def labels(self) -> list[str]:
        """The label set, in display order."""
        return [r[0] for r in self.conn.execute("SELECT name FROM labels ORDER BY position, name")]

    def add_labels(self, names: Iterable[str], *, by: str | None = None, permission: str = "labels") -> list[str]:
        """Add labels (existing ones are kept); returns the labels that were new. ``by`` needs the ``labels``
        permission (an admin; importing with new labels is an admin's action too), or ``permission`` when
        the label set grows as part of another action (naming an identity: ``merge_identities``)."""
        added = []
        by = self.actor(by)
        with self.transaction() as conn:
            role = self.authorize(by, permission, conn)
            existing = {r[0] for r in conn.execute("SELECT name FROM labels")}
            pos = conn.execute("SELECT COALESCE(MAX(position), -1) FROM labels").fetchone()[0]
            for name in names:
                name = validate_label_name(name)
                if name in existing:
                    continue
                pos += 1
                self.db["labels"].insert({"name": name, "position": pos, "created_at": now()})
                existing.add(name)
                added.append(name)
            if added:
                self.audit(conn, by, "add_labels", role=role, n=len(added), labels=added)
        return added

    def annotators(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM annotators ORDER BY name")]

    @staticmethod
    def _ensure_annotator(conn: sqlite3.Connection, name: str) -> None:
        conn.execute("INSERT OR IGNORE INTO annotators (name, created_at) VALUES (?, ?)", (name, now()))


def validate_label_name(name: Any) -> str:
    """Labels are non-empty strings of at most 100 characters, without leading/trailing spaces."""
    if isinstance(name, (int, np.integer)):
        name = str(name)
    ok = isinstance(name, str) and 0 < len(name.strip()) <= MAX_NAME and _printable(name.strip())
    check_param("the label set", "label", _shown(name), ok,
                f"a non-empty string of at most {MAX_NAME} printable characters (no control characters)")
    return name.strip()


#: names the engine writes under itself: no person's account or file row may take them
RESERVED_NAMES = ("import", "worker", "cluster_merges.json")
RESERVED_PREFIXES = ("model:",)
MAX_NAME = 100


def _printable(name: str) -> bool:
    return all(ch.isprintable() for ch in name)


def _shown(name: Any) -> Any:
    """A bad name as the error shows it: clipped, so a 1,000-character name does not fill the screen."""
    return name[:40] + f"... ({len(name)} characters)" if isinstance(name, str) and len(name) > 60 else name


def validate_annotator_name(name: Any, owner: str = "annotate", param: str = "annotator") -> str:
    """An annotator's name as stored: a non-empty string of at most 100 printable characters (no NUL or other
    control character), without leading or trailing spaces. Reserved names are allowed here (the engine
    writes imported labels under ``import``); :func:`validate_person_name` refuses them."""
    ok = isinstance(name, str) and 0 < len(name.strip()) <= MAX_NAME and _printable(name.strip())
    check_param(owner, param, _shown(name), ok,
                f"a non-empty name of at most {MAX_NAME} printable characters (no control characters)")
    return name.strip()


def validate_person_name(name: Any, owner: str = "annotate", param: str = "annotator") -> str:
    """A name a person gives (an account, an annotator column of a file): :func:`validate_annotator_name`'s
    rule, and none of :data:`RESERVED_NAMES` or a name starting with one of :data:`RESERVED_PREFIXES`."""
    name = validate_annotator_name(name, owner, param)
    reserved = name.lower() in RESERVED_NAMES or name.lower().startswith(RESERVED_PREFIXES)
    check_param(owner, param, name, not reserved,
                f"a name that is not reserved by the engine ({', '.join(RESERVED_NAMES)}, model:...)")
    return name


def validate_account_name(name: Any) -> str:
    """An account's name: :func:`validate_person_name`'s rule (e-mail addresses are fine)."""
    return validate_person_name(name, "the accounts", "name")
