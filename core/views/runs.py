"""The Train page's back end: how the predictions changed from one run to another."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.errors import check_param
from core.store.project_store import Store
from core.views.common import _predictions, _require_run, _run_classes


def compare_runs(store: Store, run_a: int, run_b: int) -> dict[str, Any]:
    """How predictions changed from run ``run_a`` to run ``run_b`` on the items both predicted.

    Returns
    -------
    dict
        run_a, run_b; n_common (items with a predicted label in both); changed (their number whose label
        differs) and changed_share (changed / n_common, 0 when none); only_a, only_b (items predicted by one
        run only); mean_confidence_a, mean_confidence_b (over the common items; NaN when none);
        per_class: DataFrame with class, count_a, count_b, changed_from (predicted as the class in a and
        another in b), changed_to (another in a, the class in b); transitions: DataFrame crosstab a -> b.
    """
    owner = "compare_runs"
    for name, value in (("run_a", run_a), ("run_b", run_b)):
        check_param(owner, name, value, value is not None, "the id of a run of this project")
    ra = _require_run(store, run_a, owner, "run_a")
    rb = _require_run(store, run_b, owner, "run_b")
    a = _predictions(store, ra["id"])
    b = _predictions(store, rb["id"])
    a, b = a[a["label"].notna()], b[b["label"].notna()]
    both = a[["item_id", "label", "confidence"]].merge(b[["item_id", "label", "confidence"]], on="item_id",
                                                          suffixes=("_a", "_b"))
    changed = both["label_a"].to_numpy(dtype=object) != both["label_b"].to_numpy(dtype=object)
    classes = _run_classes(ra, both["label_a"], both["label_b"])
    for c in rb.get("classes") or []:
        if c not in classes:
            classes.append(c)
    per_class = pd.DataFrame({
        "class": classes,
        "count_a": both["label_a"].value_counts().reindex(classes, fill_value=0).to_numpy(np.int64),
        "count_b": both["label_b"].value_counts().reindex(classes, fill_value=0).to_numpy(np.int64),
        "changed_from": both.loc[changed, "label_a"].value_counts().reindex(classes, fill_value=0).to_numpy(np.int64),
        "changed_to": both.loc[changed, "label_b"].value_counts().reindex(classes, fill_value=0).to_numpy(np.int64),
    })
    n = int(len(both))
    mean = lambda s: float(s.mean()) if n and s.notna().any() else float("nan")  # noqa: E731
    return {
        "run_a": ra["id"], "run_b": rb["id"], "n_common": n, "changed": int(changed.sum()),
        "changed_share": float(changed.sum() / n) if n else 0.0,
        "only_a": int((~a["item_id"].isin(both["item_id"])).sum()),
        "only_b": int((~b["item_id"].isin(both["item_id"])).sum()),
        "mean_confidence_a": mean(both["confidence_a"]), "mean_confidence_b": mean(both["confidence_b"]),
        "per_class": per_class,
        "transitions": pd.crosstab(both["label_a"], both["label_b"]).reindex(index=classes, columns=classes,
                                                                           fill_value=0),
    }
