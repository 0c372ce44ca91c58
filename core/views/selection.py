"""Reading the Embeddings map's lasso or box selection: which items the selected points are.

``st.plotly_chart(..., on_select="rerun")`` returns the selected points as dicts. What a point's ``customdata``
looks like depends on the Streamlit and plotly versions: a list ``[item_id]`` (Streamlit's documentation), a
dict ``{"0": item_id}`` (Streamlit 1.67 with plotly 7.1, which crashed the page with ``KeyError: 0``), a dict
with an int key, a bare number, or missing for a WebGL trace. :func:`selected_item_ids` reads every one of these
and, when a point has no usable ``customdata``, falls back to its trace and index in the figure
(``curve_number`` and ``point_index`` / ``point_number``).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["selected_item_ids", "trace_item_ids"]


def _as_id(value: Any) -> int | None:
    """An item id from one customdata value (int, float, numeric str); None when it is not one."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if math.isfinite(value) and float(value).is_integer() else None
    if isinstance(value, str):
        try:
            return _as_id(float(value)) if value.strip() else None
        except ValueError:
            return None
    return None


def _from_customdata(cd: Any) -> int | None:
    """The first column of a point's customdata, whatever its shape."""
    if isinstance(cd, Mapping):
        for key in ("0", 0):
            if key in cd:
                return _as_id(cd[key])
        return None
    if isinstance(cd, (list, tuple, np.ndarray)):
        return _from_customdata(cd[0]) if len(cd) else None
    return _as_id(cd)


def trace_item_ids(customdata: Sequence[Any]) -> list[np.ndarray]:
    """Per trace of a figure (``[t.customdata for t in fig.data]``), the item id of each point (m_t,), int64."""
    out = []
    for cd in customdata:
        num = np.asarray(cd if cd is not None else [])
        if num.ndim >= 1 and num.dtype.kind in "iu":  # plotly express: an (m, 1) int array, read without a loop
            out.append(num.reshape(num.shape[0], -1)[:, 0].astype(np.int64) if num.shape[0] else np.zeros(0, np.int64))
            continue
        arr = np.asarray(cd if cd is not None else [], dtype=object)
        col = arr.reshape(arr.shape[0], -1)[:, 0] if arr.ndim >= 1 and arr.shape[0] else np.zeros(0, object)
        out.append(np.array([_as_id(v) if _as_id(v) is not None else -1 for v in col], dtype=np.int64))
    return out


def selected_item_ids(points: Sequence[Mapping[str, Any]] | None,
                      traces: Sequence[np.ndarray] | None = None) -> list[int]:
    """Item ids of the selected points, unique and ascending.

    Parameters
    ----------
    points : sequence of dict, or None
        ``event.selection.points``; each may carry ``customdata`` (list, dict with key ``"0"`` or ``0``, or
        a scalar), ``curve_number`` and ``point_index`` (or ``point_number``).
    traces : list of np.ndarray (m_t,), optional
        :func:`trace_item_ids` of the figure, for points without usable customdata.

    Returns
    -------
    list of int
        Points that name no item (neither way) are left out.
    """
    ids: set[int] = set()
    for p in points or ():
        if not isinstance(p, Mapping):
            continue
        item = _from_customdata(p.get("customdata"))
        if item is None and traces is not None:
            curve = _as_id(p.get("curve_number", 0))
            index = _as_id(p.get("point_index", p.get("point_number")))
            if curve is not None and index is not None and 0 <= curve < len(traces) and 0 <= index < len(traces[curve]):
                item = int(traces[curve][index]) if traces[curve][index] >= 0 else None
        if item is not None:
            ids.add(item)
    return sorted(ids)
