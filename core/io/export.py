"""Export of a project's items with their consensus and the newest (or a given) run's predictions."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from core.errors import check_choice
from core.store.project_store import Store

COLUMNS = ["item_id", "path", "text", "group", "identity", "consensus_label", "confirmed", "n_votes", "agreement",
           "predicted_label", "confidence", "cluster", "x", "y", "run_id"]


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
                writer.writerow(row)
            else:
                row["votes"] = votes.get(it.id, [])
                f.write(json.dumps(row) + "\n")
            n += 1
    os.replace(tmp, out)
    return n
