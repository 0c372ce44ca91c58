"""Export of a project's items with their consensus and the newest (or a given) run's predictions.

CSV cells are neutralised against spreadsheet formula injection (OWASP's "CSV injection"): a text value that
starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading single quote, so Excel,
LibreOffice and Google Sheets show it as text instead of running it (a caption ``=HYPERLINK(...)``, a file
named ``@SUM(...).png``). Text that is a plain number (a label ``-1``, ``+3.5``) is left as it is: a
spreadsheet reads it as a number, not a formula. Numbers the export writes itself (coordinates, confidences)
are never changed. JSON Lines is data for programs and is written unchanged.
"""
from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Any

from core.errors import check_choice
from core.store.project_store import Store

COLUMNS = ["item_id", "path", "text", "group", "identity", "consensus_label", "confirmed", "n_votes", "agreement",
           "predicted_label", "confidence", "cluster", "x", "y", "run_id"]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def csv_safe(value: Any) -> Any:
    """``value`` as a CSV cell a spreadsheet will not run: a ``str`` starting with one of
    :data:`FORMULA_START` (and not a plain number) gets a leading ``'``; anything else is returned as is."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def export_items(store: Store, out: str | os.PathLike, *, fmt: str = "csv", run_id: int | None = None,
                 include_reference: bool = False) -> int:
    """Write one row per item to ``out`` (CSV or JSON Lines, written atomically); returns the row count.

    JSON Lines rows also list the item's active votes. Reference labels are left out unless asked for.
    """
    check_choice("export", "format", fmt, ("csv", "jsonl"))
    run = store.run(run_id)
    preds = {r["item_id"]: r for r in store.predictions(run["id"])} if run else {}
    cons = {r["item_id"]: r for r in store.consensus_rows()}
    ref = store.reference_labels() if include_reference else {}
    votes: dict[int, list[dict]] = {}
    if fmt == "jsonl":
        for v in store.active_votes():
            votes.setdefault(v["item_id"], []).append({"annotator": v["annotator"], "label": v["label"], "kind": v["kind"]})
    cols = COLUMNS + (["reference_label"] if include_reference else [])
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols) if fmt == "csv" else None
        if writer:
            writer.writeheader()
        for it in store.items():
            c, p = cons.get(it.id), preds.get(it.id)
            row = {
                "item_id": it.id, "path": str(it.path) if it.path else None, "text": it.text, "group": it.group,
                "identity": it.identity, "consensus_label": c["label"] if c else None,
                "confirmed": bool(c["confirmed"]) if c else False, "n_votes": c["n_votes"] if c else 0,
                "agreement": c["agreement"] if c else None, "predicted_label": p["label"] if p else None,
                "confidence": p["confidence"] if p else None, "cluster": p["cluster"] if p else None,
                "x": p["x"] if p else None, "y": p["y"] if p else None, "run_id": run["id"] if (run and p) else None,
            }
            if include_reference:
                row["reference_label"] = ref.get(it.id)
            if writer:
                writer.writerow({k: csv_safe(v) for k, v in row.items()})
            else:
                row["votes"] = votes.get(it.id, [])
                f.write(json.dumps(row) + "\n")
            n += 1
    os.replace(tmp, out)
    return n
