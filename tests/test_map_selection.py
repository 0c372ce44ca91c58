"""The Embeddings map's selection parser (core.views.selection) on the shapes Streamlit actually returns."""
from __future__ import annotations

import numpy as np
import plotly.express as px
import pandas as pd

from core.views.selection import selected_item_ids, trace_item_ids

# What Streamlit 1.67 with plotly 7.1 returned for a lasso over three points of a px.scatter(custom_data=[...])
STREAMLIT_167 = [
    {"curve_number": 0, "point_number": 3, "point_index": 3, "x": 1.0, "y": 2.0, "customdata": {"0": 41}},
    {"curve_number": 1, "point_number": 0, "point_index": 0, "x": 1.5, "y": 2.5, "customdata": {"0": 7}},
    {"curve_number": 1, "point_number": 2, "point_index": 2, "x": 1.2, "y": 2.1, "customdata": {"0": 41}},
]
# Streamlit's documented shape
DOCUMENTED = [{"curve_number": 2, "point_number": 9, "point_index": 9, "customdata": [12, "x"]}]


def test_dict_customdata_of_streamlit_167():
    assert selected_item_ids(STREAMLIT_167) == [7, 41]


def test_list_int_key_scalar_and_string_customdata():
    assert selected_item_ids(DOCUMENTED) == [12]
    assert selected_item_ids([{"customdata": {0: 5}}, {"customdata": 8}, {"customdata": "9"},
                              {"customdata": 3.0}, {"customdata": (4,)}]) == [3, 4, 5, 8, 9]


def test_no_selection_and_junk_points():
    assert selected_item_ids(None) == [] and selected_item_ids([]) == []
    assert selected_item_ids([{"customdata": None}, {"customdata": {}}, {"customdata": []}, "junk",
                              {"customdata": True}, {"customdata": 1.5}, {"customdata": "abc"}]) == []


def test_point_index_fallback_uses_the_figure():
    df = pd.DataFrame({"x": [0, 1, 2, 3, 4], "y": [0, 1, 2, 3, 4], "color": ["a", "b", "a", "b", "a"],
                       "item_id": [10, 11, 12, 13, 14]})
    fig = px.scatter(df, x="x", y="y", color="color", custom_data=["item_id"], render_mode="webgl")
    traces = trace_item_ids([t.customdata for t in fig.data])
    assert [t.tolist() for t in traces] == [[10, 12, 14], [11, 13]]
    points = [{"curve_number": 1, "point_index": 1}, {"curve_number": 0, "point_number": 2},
              {"curve_number": 5, "point_index": 0}, {"curve_number": 0, "point_index": 99}]
    assert selected_item_ids(points, traces) == [13, 14]
    assert selected_item_ids(points) == []  # without the figure there is nothing to go on
    assert selected_item_ids([{"curve_number": 0, "point_index": 0, "customdata": {"0": 99}}], traces) == [99]
    assert [len(t) for t in trace_item_ids([None, np.zeros((0, 1))])] == [0, 0]


def test_the_old_page_expression_crashed_on_the_167_shape():
    import pytest

    with pytest.raises(KeyError):  # what pages/embeddings.py did before: p["customdata"][0]
        sorted({int(p["customdata"][0]) for p in STREAMLIT_167 if p.get("customdata")})
