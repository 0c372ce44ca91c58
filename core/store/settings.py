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

    def set_setting(self, key: str, value: Any) -> None:
        """Store one setting; a consensus setting is validated first and the consensus rows follow it."""
        with self.transaction() as conn:
            consensus_engine.check_setting(key, value)
            self.db["meta"].upsert({"key": key, "value": json.dumps(value)}, pk="key")
            if key in consensus_engine.RECOMPUTE_ON:
                consensus_engine.recompute(self, conn, None)
        if key == "consensus_method":
            consensus_engine.refit(self)

    @property
    def modality(self) -> str:
        return self.settings()["modality"]

    def labels(self) -> list[str]:
        """The label set, in display order."""
        return [r[0] for r in self.conn.execute("SELECT name FROM labels ORDER BY position, name")]

    def add_labels(self, names: Iterable[str]) -> list[str]:
        """Add labels (existing ones are kept); returns the labels that were new."""
        added = []
        with self.transaction() as conn:
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
    ok = isinstance(name, str) and 0 < len(name.strip()) <= 100
    check_param("the label set", "label", name, ok, "a non-empty string of at most 100 characters")
    return name.strip()


def validate_annotator_name(name: Any) -> str:
    ok = isinstance(name, str) and 0 < len(name.strip()) <= 100
    check_param("annotate", "annotator", name, ok, "a non-empty name of at most 100 characters")
    return name.strip()
