"""Labels from a CSV (``python -m core annotate``): columns ``path`` (or ``item`` / ``item_id``), ``annotator``,
``label``. Every bad row is a report entry and the rest is written in ONE transaction
(:meth:`core.store.annotations.AnnotationsMixin.annotate_rows`): a failure writes nothing.

The file is read like an import manifest (:func:`core.io.ingest.manifest_encoding`: UTF-8 with or without an
Excel byte-order mark, a noted fall-back otherwise); rows with more or fewer fields than the header are
skipped and reported.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import ValidationError
from core.io.ingest import ImportReport, read_csv_records
from core.store.project_store import Store
from core.store.settings import validate_person_name

COLUMNS = ("path", "item", "item_id", "annotator", "label")


def read_rows(path: Path, report: ImportReport) -> list[tuple[int, dict[str, str]]]:
    """``(row number, {column: value})`` of each well-formed row (columns lower-cased and stripped)."""
    rows: list[tuple[int, dict[str, str]]] = []
    noted = False
    for k, record in read_csv_records(path, report):
        clean = {h.strip().lower(): v.strip() for h, v in record.items()}
        unknown = [h for h in clean if h not in COLUMNS]
        if unknown and not noted:
            noted = True
            report.problem(0, None, "unknown_column", f"unknown columns {unknown} ignored; expected path (or "
                           "item_id), annotator, label")
        rows.append((k, {h: v for h, v in clean.items() if h in COLUMNS}))
    return rows


def import_annotations(store: Store, csv_path: str | Path, *, annotator: str | None = None, kind: str = "human",
                       by: str | None = None) -> dict[str, Any]:
    """Record the CSV's labels; returns ``{"annotations", "skipped", "problems", "confirmed_items"}``.

    ``annotator`` is used for rows without one. Problems: unknown_item, bad_annotator, unknown_label,
    ragged_row, bad_csv_row (one entry per skipped row) and notes on the whole file (row 0).
    """
    path = Path(csv_path)
    if not path.is_file():
        raise ValidationError(f"The 'CSV' argument must be an existing CSV file. Got {str(path)!r}.")
    report = ImportReport(spec=str(path))
    rows = read_rows(path, report)
    labels = set(store.labels())
    found = store.find_items_by_path([r.get("path") or r.get("item") for _, r in rows
                                      if not r.get("item_id") and (r.get("path") or r.get("item"))])
    valid_ids = set(store.item_ids().tolist())
    good: list[tuple[int, str, str]] = []
    for k, r in rows:
        name = r.get("path") or r.get("item") or r.get("item_id") or ""
        item_id = _item_id(r, found, valid_ids)
        if item_id is None:
            report.problem(k, name, "unknown_item", f"no item {name!r} in the project")
            continue
        try:
            who = validate_person_name(r.get("annotator") or annotator or "")
        except ValidationError as exc:
            report.problem(k, name, "bad_annotator", str(exc))
            continue
        label = r.get("label") or ""
        if label not in labels:
            report.problem(k, name, "unknown_label", f"label {label[:100]!r} is not in the label set {sorted(labels)}")
            continue
        good.append((item_id, who, label))
    n = len(store.annotate_rows(good, kind=kind, by=by)) if good else 0
    return {"annotations": n, "skipped": report.skipped, "problems": report.problems,
            "confirmed_items": store.overview()["confirmed_items"]}


def _item_id(row: dict[str, str], found: dict[str, int], valid_ids: set[int]) -> int | None:
    if row.get("item_id"):
        try:
            item_id = int(row["item_id"])
        except ValueError:
            return None
        return item_id if item_id in valid_ids else None
    return found.get(row.get("path") or row.get("item") or "")
