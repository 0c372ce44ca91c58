"""The project store: one SQLite database (through sqlite-utils) in a project folder a user can copy.

A project folder holds::

    project.db          items, annotations, consensus, runs, predictions, jobs (WAL mode)
    features/           feature caches, per extractor and version
    runs/<id>/          artefacts of each published model version (weights, probabilities)
    projections/        UMAP models and coordinates
    media/              media copied into the project (the demo's images, ``import --copy``)

:class:`Store` is composed of one mixin per concern: connection and migrations
(:mod:`core.store.connection`), settings and labels (:mod:`core.store.settings`), items
(:mod:`core.store.items`), annotations (:mod:`core.store.annotations`), runs (:mod:`core.store.runs`).
Consensus logic lives in :mod:`core.labels.engine`; the job queue's SQL in :mod:`core.jobs.queue`.
"""
from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any, Sequence

from core.errors import StoreError, check_choice
from core.labels import engine as consensus_engine
from core.store.annotations import HUMAN_KINDS, AnnotationsMixin
from core.store.connection import BUSY_TIMEOUT_S, DB_NAME, StoreBase, now
from core.store.items import ItemRow, ItemsMixin, uri_path
from core.store.pair_votes import PairVotesMixin
from core.store.runs import RunsMixin
from core.store.schema import MODALITIES
from core.store.settings import SettingsMixin, validate_annotator_name, validate_label_name
from core.store.users import UsersMixin

__all__ = ["Store", "ItemRow", "DB_NAME", "BUSY_TIMEOUT_S", "HUMAN_KINDS", "now", "uri_path",
           "validate_label_name", "validate_annotator_name"]

FOLDERS = ("features", "runs", "projections", "media")


class Store(UsersMixin, SettingsMixin, ItemsMixin, AnnotationsMixin, PairVotesMixin, RunsMixin, StoreBase):
    """The project store of one project folder.

    Parameters
    ----------
    project_dir : path
        The project folder; it must hold ``project.db`` (use :meth:`create` for a new project, or
        :meth:`in_memory` for a throw-away one in tests).
    """

    @classmethod
    def create(
        cls,
        project_dir: str | os.PathLike,
        *,
        modality: str,
        name: str | None = None,
        labels: Sequence[str] = (),
        min_votes: int = 2,
        extractor: str | None = None,
        origin: str = "library",
        by: str | None = None,
    ) -> "Store":
        """Create a new project folder (or refuse when one exists there) and return its store, opened from
        ``origin``. ``by`` (recorded in the audit log) is who creates it."""
        _check_new(modality, min_votes)
        pdir = Path(project_dir)
        if (pdir / DB_NAME).exists():
            raise StoreError(f"A project already exists at {pdir.resolve()}; open it instead of creating it.")
        pdir.mkdir(parents=True, exist_ok=True)
        for sub in FOLDERS:
            (pdir / sub).mkdir(exist_ok=True)
        conn = sqlite3.connect(pdir / DB_NAME)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.commit()
        conn.close()
        store = cls(pdir, origin=origin)
        store._initialise(modality=modality, name=name or pdir.resolve().name, labels=labels,
                          min_votes=min_votes, extractor=extractor, by=by)
        return store

    @classmethod
    def in_memory(cls, *, modality: str = "image", labels: Sequence[str] = (), min_votes: int = 1,
                  project_dir: str | os.PathLike | None = None) -> "Store":
        """A store on a shared in-memory database (fast tests). Files (features, runs) go to ``project_dir``,
        a new temporary folder when not given. The database lives as long as the store object."""
        _check_new(modality, min_votes)
        pdir = Path(project_dir) if project_dir is not None else Path(tempfile.mkdtemp(prefix="labeltool-"))
        for sub in FOLDERS:
            (pdir / sub).mkdir(parents=True, exist_ok=True)
        store = cls(pdir, memory_name=cls.new_memory_name())
        store._initialise(modality=modality, name=pdir.resolve().name, labels=labels, min_votes=min_votes,
                          extractor=None, by=None)
        return store

    def _initialise(self, *, modality: str, name: str, labels: Sequence[str], min_votes: int,
                    extractor: str | None, by: str | None) -> None:
        """Write a new project's settings and label set (audited as ``create_project`` by ``by``)."""
        store = self
        by = self.actor(by)
        from core.features import default_extractor

        with store.transaction() as conn:
            settings = {
                "name": name,
                "modality": modality,
                "min_votes": min_votes,
                "extractor": extractor or default_extractor(modality),
                "created_at": now(),
            }
            store.db["meta"].upsert_all([{"key": k, "value": json.dumps(v)} for k, v in settings.items()], pk="key")
            store.audit(conn, by, "create_project", **settings)
            if labels:
                store.add_labels(labels, by=by)

    def overview(self) -> dict[str, Any]:
        """Counts for the home page and ``status``."""
        c = self.conn
        one = lambda q: c.execute(q).fetchone()[0]  # noqa: E731
        latest = self.run()
        return {
            "project": self.settings().get("name"),
            "modality": self.modality,
            "items": one("SELECT COUNT(*) FROM items"),
            "labels": self.labels(),
            "annotators": one("SELECT COUNT(*) FROM annotators"),
            "labelled_items": one("SELECT COUNT(*) FROM consensus"),
            "confirmed_items": one("SELECT COUNT(*) FROM consensus WHERE confirmed = 1"),
            "mean_agreement": one("SELECT AVG(agreement) FROM consensus WHERE n_votes >= 2"),
            "annotations": one("SELECT COUNT(*) FROM annotations a LEFT JOIN retractions r ON r.annotation_id = a.id "
                               "WHERE r.annotation_id IS NULL AND a.kind != 'machine'"),
            "reference_labels": one("SELECT COUNT(*) FROM items WHERE reference_label IS NOT NULL"),
            "latest_run": None if latest is None else {k: latest[k] for k in ("id", "model", "metrics", "created_at")},
            "min_votes": self.settings().get("min_votes"),
        }


def _check_new(modality: str, min_votes: int) -> None:
    check_choice("init", "modality", modality, MODALITIES)
    consensus_engine.check_setting("min_votes", min_votes)
