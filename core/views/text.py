"""Text from users and files shown as text: never as Markdown or HTML that could run, load or link anything.

Captions, file names, labels, annotator names, camera and identity names come from people and files. The
pages render them through two interpreters:

- Streamlit's Markdown (``st.markdown``, ``st.caption``, ``st.write``, ``st.info`` and the other alerts,
  ``st.subheader``, ``st.metric``, and the labels of buttons, radio options, tabs and expanders). It turns
  ``[x](url)`` into a link, ``![x](url)`` into an image fetched from anywhere, ``**x**`` into bold, and
  Streamlit's own ``:red[x]``, ``:material/icon:``, ``:smile:`` and ``$x$`` into colour, icons, emoji and
  LaTeX. :func:`md_literal` backslash-escapes every character that starts one of these, so the text shows as
  typed. (``st.selectbox`` / ``st.multiselect`` options, ``st.text``, ``st.code`` and ``st.dataframe`` show
  plain text already: escaping them would show the backslashes.)
- plotly's pseudo-HTML in hover text, legend entries and axis ticks (``<b>``, ``<br>``, ``<a href>``,
  ``<span style>``, entities). :func:`html_literal` escapes ``&``, ``<`` and ``>``, which plotly decodes back
  to the literal characters. :func:`html_literal_columns` and :func:`html_literal_axes` do the same for the
  frames a figure is drawn from.

One thing escaping cannot stop: Streamlit's Markdown links a bare ``http://...``, ``www....`` or e-mail
address found in the text after parsing. Such links are to web pages, never to script (``javascript:`` and
other schemes are not auto-linked), and the text itself still shows literally.
"""
from __future__ import annotations

import html
import re
from typing import Sequence

import pandas as pd

from core.errors import check_param, is_int

__all__ = ["MARKDOWN_ACTIVE", "clip", "html_literal", "html_literal_axes", "html_literal_columns", "md_literal"]

MARKDOWN_ACTIVE = "\\`*_{}[]()#+-.!|<>~:/$&"
"""Characters :func:`md_literal` escapes: CommonMark's inline and block markers (emphasis, code, links and
images, headings, lists, quotes, tables, strikethrough, raw HTML, entities) and Streamlit's directives and
emoji shortcodes (``:``), icons (``:material/name:``, found in the source before Markdown: hence ``/``) and
LaTeX (``$``)."""

_ACTIVE_RE = re.compile("([" + re.escape(MARKDOWN_ACTIVE) + "])")
_SPACE_RE = re.compile(r"\s+")
_HTML_TABLE = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def md_literal(s: object) -> str:
    """``s`` as Markdown source that Streamlit shows exactly as the characters of ``s``, on one line.

    Every character of :data:`MARKDOWN_ACTIVE` gets a backslash (CommonMark drops the backslash and shows the
    character); runs of whitespace, line breaks included, become one space, so no line of the text can start
    a heading, list, quote, table or code block. The result is safe anywhere inside a larger Markdown string
    (``f"you said **{md_literal(label)}**"``). None gives ``""``; anything else is shown by its ``str``.

    Examples
    --------
    >>> md_literal("[x](javascript:alert(1))")
    '\\\\[x\\\\]\\\\(javascript\\\\:alert\\\\(1\\\\)\\\\)'
    >>> md_literal("cat 1")
    'cat 1'
    """
    if s is None:
        return ""
    return _ACTIVE_RE.sub(r"\\\1", _SPACE_RE.sub(" ", str(s)))


def html_literal(s: object) -> str:
    """``s`` for plotly's text (hover, legend, ticks, annotations): ``&``, ``<`` and ``>`` as entities.

    plotly interprets a few HTML tags and decodes entities in every text it draws; with these three escaped no
    tag can form and an entity in the text (``&lt;``) shows as typed. None gives ``""``.

    >>> html_literal("<b>x</b> & y")
    '&lt;b&gt;x&lt;/b&gt; &amp; y'
    """
    if s is None:
        return ""
    return html.escape(str(s), quote=False)


def _escape_values(values: pd.Series | pd.Index) -> pd.Series | pd.Index:
    """A text column or index escaped with :func:`html_literal` (vectorised; each value by its ``str``, missing
    values kept); a column of numbers or other non-text dtype is returned unchanged."""
    if not (pd.api.types.is_object_dtype(values.dtype) or pd.api.types.is_string_dtype(values.dtype)):
        return values
    escaped = values.astype(str).str.translate(_HTML_TABLE)
    return escaped.where(values.notna(), values)


def html_literal_columns(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """A copy of ``df`` whose text cells in ``columns`` are escaped with :func:`html_literal` (for plotly).

    Parameters
    ----------
    df : pandas.DataFrame
        (n rows, any columns); not changed.
    columns : sequence of str
        Columns of ``df`` that plotly shows as text (``hover_name``, ``color``, ``hover_data``, ...). A column
        that holds no strings (a continuous colour) is left as it is.

    Returns
    -------
    pandas.DataFrame
        (n rows, the same columns), the same index.
    """
    missing = [c for c in columns if c not in df.columns]
    check_param("html_literal_columns", "columns", missing, not missing, f"columns of the frame ({list(df.columns)})")
    out = df.copy()
    for col in columns:
        out[col] = _escape_values(out[col])
    return out


def html_literal_axes(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` (rows x columns, e.g. clusters x labels) whose row and column names are escaped with
    :func:`html_literal`: ``px.imshow`` draws them as axis ticks and in the hover text. Cells are unchanged."""
    out = table.copy()
    out.index = _escape_values(out.index)
    out.columns = _escape_values(out.columns)
    return out


def clip(s: object, n: int) -> str:
    """At most ``n`` characters of ``str(s)``, the last one an ellipsis when anything was cut (None gives "").

    >>> clip("abcdef", 4), clip("abc", 4)
    ('abc…', 'abc')
    """
    check_param("clip", "n", n, is_int(n) and n >= 1, "an int >= 1")
    text = "" if s is None else str(s)
    return text if len(text) <= n else text[: n - 1] + "…"
