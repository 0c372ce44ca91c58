"""Media sources, items and imports (the ``sources``, ``items`` and ``imports`` tables)."""
from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from core.errors import ValidationError
from core.store.connection import StoreBase, chunks, now


@dataclass(frozen=True)
class ItemRow:
    """One item as the engine sees it (``path`` resolved against its media root)."""

    id: int
    uri: str
    modality: str
    path: Path | None
    text: str | None
    group: str | None
    identity: str | None


class ItemsMixin(StoreBase):
    def _stored_root(self, root: Path) -> str:
        """A media root as the ``sources`` table keeps it: relative to the project folder when inside it."""
        root = Path(root).resolve()
        try:
            return str(root.relative_to(self.dir))
        except ValueError:
            return str(root)

    def find_source(self, root: Path, *, kind: str, spec: str) -> int | None:
        """The id of the source registered for ``(root, kind, spec)``, or None; writes nothing."""
        row = self.conn.execute("SELECT id FROM sources WHERE root = ? AND kind = ? AND spec = ?",
                                (self._stored_root(root), kind, spec)).fetchone()
        return None if row is None else row[0]

    def add_source(self, root: Path, *, kind: str, spec: str) -> int:
        """Register a media root (idempotent) and return its id. Inside a caller's transaction it joins it, so
        an import that fails leaves no ``sources`` row behind."""
        stored = self._stored_root(root)
        with self.transaction() as conn:
            self.db["sources"].insert({"root": stored, "kind": kind, "spec": spec, "created_at": now()}, ignore=True)
            return conn.execute(
                "SELECT id FROM sources WHERE root = ? AND kind = ? AND spec = ?", (stored, kind, spec)
            ).fetchone()[0]

    def source_roots(self) -> dict[int, Path]:
        roots = {}
        for r in self.conn.execute("SELECT id, root FROM sources"):
            p = Path(r["root"])
            roots[r["id"]] = p if p.is_absolute() else self.dir / p
        return roots

    def item_count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def item_ids(self) -> np.ndarray:
        """Every item id, ascending; shape (n,)."""
        return np.array([r[0] for r in self.conn.execute("SELECT id FROM items ORDER BY id")], dtype=np.int64)

    def items(self, ids: Sequence[int] | None = None) -> list[ItemRow]:
        """Items with their media paths resolved, in id order (or in the order of ``ids``)."""
        roots = self.source_roots()
        cols = "id, source_id, uri, modality, text, grp, identity"
        if ids is None:
            rows = self.conn.execute(f"SELECT {cols} FROM items ORDER BY id").fetchall()
        else:
            rows = []
            ids = [int(i) for i in ids]
            for chunk in chunks(ids):
                q = f"SELECT {cols} FROM items WHERE id IN ({','.join('?' * len(chunk))})"
                rows.extend(self.conn.execute(q, chunk).fetchall())
            order = {i: k for k, i in enumerate(ids)}
            rows.sort(key=lambda r: order[r["id"]])
        out = []
        for r in rows:
            path = None if r["uri"].startswith("text:") else roots[r["source_id"]] / uri_path(r["uri"])
            out.append(ItemRow(r["id"], r["uri"], r["modality"], path, r["text"], r["grp"], r["identity"]))
        return out

    def item(self, item_id: int) -> ItemRow:
        rows = self.items([item_id])
        if not rows:
            raise ValidationError(f"The 'item_id' parameter must name an item of this project. Got {item_id!r}.")
        return rows[0]

    def reference_labels(self) -> dict[int, str]:
        """Ground truth kept for evaluation: {item id: label}. Never show these to annotators."""
        q = "SELECT id, reference_label FROM items WHERE reference_label IS NOT NULL"
        return {r[0]: r[1] for r in self.conn.execute(q)}

    def existing_uris(self, source_id: int) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT uri FROM items WHERE source_id = ?", (source_id,))}

    def item_ids_by_hash(self, hashes: Iterable[str]) -> dict[str, int]:
        hashes = list(set(hashes))
        found: dict[str, int] = {}
        for chunk in chunks(hashes):
            q = f"SELECT content_hash, MIN(id) FROM items WHERE content_hash IN ({','.join('?' * len(chunk))}) GROUP BY content_hash"
            found.update({r[0]: r[1] for r in self.conn.execute(q, chunk)})
        return found

    def item_ids_for_source(self, source_id: int) -> dict[str, int]:
        """``{uri: item id}`` of every item of one source (one query, for the votes of an import)."""
        q = "SELECT uri, id FROM items WHERE source_id = ?"
        return {r[0]: r[1] for r in self.conn.execute(q, (source_id,))}

    def item_id_for_uri(self, source_id: int, uri: str) -> int | None:
        row = self.conn.execute("SELECT id FROM items WHERE source_id = ? AND uri = ?", (source_id, uri)).fetchone()
        return row[0] if row else None

    def find_items_by_path(self, paths: Sequence[str]) -> dict[str, int]:
        """Map item paths (as ``uri``, absolute or relative to any media root) to item ids."""
        roots = self.source_roots()
        by_abs: dict[str, int] = {}
        by_uri: dict[str, list[int]] = {}
        for r in self.conn.execute("SELECT id, source_id, uri FROM items"):
            by_abs[str((roots[r["source_id"]] / uri_path(r["uri"])).resolve())] = r["id"]
            by_uri.setdefault(r["uri"], []).append(r["id"])
        out = {}
        for p in paths:
            if p in by_uri and len(by_uri[p]) == 1:
                out[p] = by_uri[p][0]
            elif str(Path(p).resolve()) in by_abs:
                out[p] = by_abs[str(Path(p).resolve())]
        return out

    def record_import(self, *, source_id: int | None, spec: str, added: int, already_present: int, skipped: int,
                      annotations: int, report: list[dict]) -> int:
        """Record one import's counts and per-row report; returns its id."""
        with self.transaction():
            return self.db["imports"].insert(
                {"source_id": source_id, "spec": spec, "added": added, "already_present": already_present,
                 "skipped": skipped, "annotations": annotations, "report": json.dumps(report), "created_at": now()}
            ).last_pk

    def insert_items(self, conn: sqlite3.Connection, rows: Sequence[dict]) -> list[int]:
        """Insert item rows inside the caller's transaction; returns their ids."""
        t = now()
        items = self.db["items"]
        return [items.insert({"source_id": r["source_id"], "uri": r["uri"], "modality": r["modality"],
                              "text": r.get("text"), "grp": r.get("group"), "identity": r.get("identity"),
                              "meta": json.dumps(r.get("meta") or {}), "reference_label": r.get("reference_label"),
                              "content_hash": r["content_hash"], "created_at": t}).last_pk
                for r in rows]


#: the caption suffix of an image+caption item's uri: ``#t=`` and hex digits at the very end. A media file's own
#: name never ends so (it ends in an extension such as ``.jpg``), so ``photo#t=1.jpg`` keeps its whole name.
_CAPTION_SUFFIX = re.compile(r"#t=[0-9a-f]+\Z")


def uri_path(uri: str) -> str:
    """The media path part of an item uri: the file's real name, with only an image+caption item's trailing
    ``#t=<caption hash>`` removed (the uri is a file path, never parsed as a URL: ``a?b.png``, ``%20.png`` and
    ``photo#t=1.jpg`` are names of files).

    >>> uri_path("photo#t=1.jpg"), uri_path("photo#t=1.jpg#t=0a1b2c3d4e5f"), uri_path("%20.png")
    ('photo#t=1.jpg', 'photo#t=1.jpg', '%20.png')
    """
    return _CAPTION_SUFFIX.sub("", uri)
