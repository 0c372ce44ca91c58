"""Published model versions and their predictions (the ``runs`` and ``predictions`` tables, and the run
folders' probability arrays). A run is immutable once published."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Sequence

import numpy as np

from core.errors import ValidationError
from core.store.connection import StoreBase, now


class RunsMixin(StoreBase):
    def publish_run(
        self,
        *,
        model: str,
        config: dict,
        metrics: dict,
        artefact_dir: Path,
        classes: Sequence[str],
        item_ids: np.ndarray,
        labels: Sequence[str | None],
        confidences: np.ndarray,
        clusters: np.ndarray | None = None,
        coords: np.ndarray | None = None,
        n_labelled: int = 0,
        parent_id: int | None = None,
        job_id: int | None = None,
        extractor: str | None = None,
        device: str | None = None,
        train_seconds: float | None = None,
        pseudo_labels: Sequence[tuple[int, str, float, int]] = (),
        by: str | None = None,
    ) -> int:
        """Publish a finished model version and its predictions atomically; returns the run id.

        Arrays: ``item_ids`` (n,), ``confidences`` (n,), ``clusters`` (n,) or None, ``coords`` (n, 2) or None.
        ``pseudo_labels`` ``(item_id, label, confidence, round)`` are stored in the same transaction as machine
        annotations of the run (annotator ``model:<model>``); they never count towards the consensus.
        ``by``: who asked for the run (the job's requester; needs the ``retrain`` permission; audited).
        """
        by = self.actor(by)
        n = len(item_ids)
        try:
            rel = str(Path(artefact_dir).resolve().relative_to(self.dir))
        except ValueError:
            rel = str(Path(artefact_dir).resolve())
        rows = (
            (
                int(item_ids[i]),
                labels[i],
                float(confidences[i]),
                None if clusters is None else int(clusters[i]),
                None if coords is None else float(coords[i, 0]),
                None if coords is None else float(coords[i, 1]),
            )
            for i in range(n)
        )
        with self.transaction() as conn:
            role = self.authorize(by, "retrain", conn)
            run_id = self.db["runs"].insert(
                {"model": model, "config": json.dumps(config), "metrics": json.dumps(metrics), "parent_id": parent_id,
                 "job_id": job_id, "extractor": extractor, "artefact_dir": rel, "device": device, "n_items": n,
                 "n_labelled": n_labelled, "classes": json.dumps(list(classes)), "train_seconds": train_seconds,
                 "created_at": now()}).last_pk
            # predictions stay a plain executemany of tuples: a run writes one row per item (10^5 and more)
            conn.executemany(
                "INSERT INTO predictions (run_id, item_id, label, confidence, cluster, x, y) VALUES "
                f"({run_id}, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            if pseudo_labels:
                t = now()
                conn.execute("INSERT OR IGNORE INTO annotators (name, created_at) VALUES (?, ?)", (f"model:{model}", t))
                conn.executemany(
                    "INSERT INTO annotations (item_id, annotator, label, kind, run_id, round, confidence, batch, "
                    "seconds, created_at) VALUES (?, ?, ?, 'machine', ?, ?, ?, NULL, NULL, ?)",
                    [(int(i), f"model:{model}", lab, run_id, int(r), float(c), t) for i, lab, c, r in pseudo_labels],
                )
            if job_id is not None:
                conn.execute("UPDATE jobs SET run_id = ? WHERE id = ?", (run_id, job_id))
            self.audit(conn, by, "publish_run", role=role, n=n, run=int(run_id), model=model, job=job_id,
                       labelled=int(n_labelled), pseudo_labels=len(pseudo_labels))
        return run_id

    def runs(self, model: str | None = None) -> list[dict]:
        q = "SELECT * FROM runs" + (" WHERE model = ?" if model else "") + " ORDER BY id DESC"
        return [_run_dict(r) for r in self.conn.execute(q, (model,) if model else ())]

    def run(self, run_id: int | None = None, *, model: str | None = None) -> dict | None:
        """The given run, or the newest published one (of ``model`` when given); None when there is none."""
        if run_id is not None:
            row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (int(run_id),)).fetchone()
            if row is None:
                raise ValidationError(f"The 'run' parameter must name a run of this project. Got {run_id!r}.")
            return _run_dict(row)
        runs = self.runs(model)
        return runs[0] if runs else None

    def run_dir(self, run: dict) -> Path:
        p = Path(run["artefact_dir"])
        return p if p.is_absolute() else self.dir / p

    def predictions(self, run_id: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT item_id, label, confidence, cluster, x, y FROM predictions WHERE run_id = ? ORDER BY item_id",
            (int(run_id),),
        ).fetchall()

    def run_proba(self, run_id: int | None, item_ids: Sequence[int] | np.ndarray,
                  n_classes: int | None = None) -> np.ndarray | None:
        """The run's class probabilities (n, K) for ``item_ids`` (n,), NaN rows for items it did not predict.

        None without a run, when its files are gone, or when it has not ``n_classes`` columns (the label set
        grew since). The run's arrays are memory-mapped and kept for the last run asked.
        """
        if run_id is None:
            return None
        if run_id not in self._run_arrays:
            try:
                d = self.run_dir(self.run(run_id))
                arrays = (np.load(d / "item_ids.npy"), np.load(d / "proba.npy", mmap_mode="r"))
            except (OSError, ValidationError):
                return None
            self._run_arrays = {run_id: arrays}
        ids, proba = self._run_arrays[run_id]
        if len(ids) == 0 or (n_classes is not None and proba.shape[1] != n_classes):
            return None
        item_ids = np.asarray(item_ids, dtype=np.int64)
        out = np.full((len(item_ids), proba.shape[1]), np.nan)
        pos = np.clip(np.searchsorted(ids, item_ids), 0, len(ids) - 1)
        hit = ids[pos] == item_ids
        out[hit] = proba[pos[hit]]
        return out


def _run_dict(row: sqlite3.Row) -> dict:
    d = dict(row)
    for key in ("config", "metrics", "classes"):
        d[key] = json.loads(d[key])
    return d
