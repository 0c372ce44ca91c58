"""Text from users and files is shown as text (issue 15): core.views.text and the pages that use it.

The unit tests render :func:`md_literal`'s output with markdown-it-py (CommonMark with raw HTML allowed, GFM
tables and strikethrough: stricter than Streamlit's renderer, which drops raw HTML) and check that only the
literal text comes out. The AppTest tests open the pages on a project whose file names, captions, labels and
annotator names are hostile, and check every text element that Streamlit renders as Markdown, and the plotly
figures' text, the same way. ``tests/test_browser_xss.py`` checks the real browser.
"""
from __future__ import annotations

import html
import json
import re
import string
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import ValidationError
from core.views.text import MARKDOWN_ACTIVE, clip, html_literal, html_literal_axes, html_literal_columns, md_literal

HOSTILE = ["<img src=x onerror=alert(1)>", "<script>alert(1)</script>", "[x](javascript:alert(1))", "**bold**"]
"""The issue's examples: raw HTML that runs script, a script link, Markdown emphasis."""
MORE = ["![i](http://127.0.0.1:9/x.png)", ":red[red] :material/home: :smile:", "$x^2$", "&lt;b&gt; &amp; &#39;",
        "a_b_c_", "`code`", "~~s~~", "| a | b |", "<http://e.com>", "a\\b\\*", "<!-- c -->", "[x]: /y",
        "# h", "- item", "1. x", "> quote", "+ plus", "***", ":blue-background[bg]", "<a href='javascript:x'>y</a>"]
"""More Markdown and Streamlit syntax that must show as typed."""
MULTILINE = "first\n# heading\n- list\n> quote\n\n    code block\n1. item\n===\n<div>raw</div>"


def _md():
    markdown_it = pytest.importorskip("markdown_it")
    md = markdown_it.MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    md.validateLink = lambda url: True  # a javascript: link counts as a link (Streamlit draws it, href blanked)
    return md


def _rendered(source: str) -> tuple[str, set[str]]:
    """(the text a reader sees, the token types) of ``source`` rendered as Markdown."""
    md = _md()
    tokens = md.parse(source)
    types = {t.type for t in tokens} | {c.type for t in tokens for c in t.children or []}
    return html.unescape(re.sub(r"<[^>]*>", "", md.renderer.render(tokens, md.options, {}))).strip(), types


UNSAFE_TOKENS = {"html_inline", "html_block", "image", "link_open", "code_inline", "code_block", "fence", "strong_open",
                 "em_open", "s_open", "heading_open", "bullet_list_open", "ordered_list_open", "blockquote_open",
                 "table_open", "hr"}


# ------------------------------------------------------------------------------------------------ md_literal
@pytest.mark.parametrize("text", HOSTILE + MORE)
def test_md_literal_renders_as_exactly_the_text(text):
    shown, types = _rendered(md_literal(text))
    assert shown == text.strip()
    assert not types & UNSAFE_TOKENS, types & UNSAFE_TOKENS
    assert md_literal(text).count("\n") == 0


def test_md_literal_puts_several_lines_on_one_line_with_no_block_structure():
    source = md_literal(MULTILINE)
    shown, types = _rendered(source)
    assert "\n" not in source
    assert shown == " ".join(MULTILINE.split())
    assert types <= {"paragraph_open", "paragraph_close", "inline", "text"}, types


def test_md_literal_stays_literal_inside_a_larger_markdown_string():
    # the pages embed names in bold: "you said **<label>**"; a name must not end the bold or open a link
    for text in HOSTILE + MORE:
        md = _md()
        tokens = [c for t in md.parse(f"you said **{md_literal(text)}**; others") for c in t.children or []]
        assert [t.type for t in tokens if t.type.endswith("_open") or t.type.startswith("html")] == ["strong_open"]
        inside = "".join(t.content for t in tokens if t.type == "text")
        assert text.strip() in " ".join(inside.split()) or " ".join(text.split()) in inside


def test_md_literal_escapes_every_active_character_and_nothing_else():
    text = "".join(ch for ch in string.printable if ch not in string.whitespace or ch == " ")
    out = md_literal(text)
    assert re.sub(r"\\(.)", r"\1", out) == text  # removing the escapes gives the text back
    for ch in MARKDOWN_ACTIVE:
        assert f"\\{ch}" in out
    for ch in set(text) - set(MARKDOWN_ACTIVE):
        assert f"\\{ch}" not in out
    assert md_literal("cat 1 é 猫") == "cat 1 é 猫"  # plain names stay as they are (AppTest, tests, readers)
    assert md_literal(None) == "" and md_literal(Path("a/b.png")) == "a\\/b\\.png" and md_literal(3) == "3"


# ---------------------------------------------------------------------------------------------- html_literal
@pytest.mark.parametrize("text", HOSTILE + MORE + ["<b>bold</b><br><a href='http://e.com'>x</a>", "&amp;lt;"])
def test_html_literal_leaves_no_tag_and_only_entities_plotly_decodes(text):
    out = html_literal(text)
    assert "<" not in out and ">" not in out
    assert set(re.findall(r"&#?\w+;", out)) <= {"&amp;", "&lt;", "&gt;"}  # plotly's entity table has these
    assert html.unescape(out) == text
    assert html_literal(None) == ""


def test_html_literal_columns_escapes_text_columns_of_a_copy():
    df = pd.DataFrame({"hover": ["<b>a</b>", "x & y", None], "color": [0.1, 0.2, 0.3], "item_id": [1, 2, 3]})
    out = html_literal_columns(df, ["hover", "color"])
    assert out["hover"].tolist()[:2] == ["&lt;b&gt;a&lt;/b&gt;", "x &amp; y"] and pd.isna(out["hover"].iloc[2])
    assert out["color"].tolist() == [0.1, 0.2, 0.3] and out["color"].dtype == float  # a continuous colour
    assert df["hover"].iloc[0] == "<b>a</b>"  # the input frame is not changed
    with pytest.raises(ValidationError, match="'columns' parameter of html_literal_columns.*'nope'"):
        html_literal_columns(df, ["hover", "nope"])


def test_html_literal_axes_escapes_names_not_cells_or_numbers():
    table = pd.DataFrame([[1, 2], [3, 4]], index=pd.Index([0, 1], name="cluster"),
                         columns=pd.Index(["<b>a</b>", "b&c"], name="label"))
    out = html_literal_axes(table)
    assert out.columns.tolist() == ["&lt;b&gt;a&lt;/b&gt;", "b&amp;c"] and out.columns.name == "label"
    assert out.index.tolist() == [0, 1] and out.index.dtype == table.index.dtype
    assert out.to_numpy().tolist() == [[1, 2], [3, 4]]
    assert table.columns[0] == "<b>a</b>"


def test_clip():
    assert clip("abcdef", 4) == "abc…" and clip("abcd", 4) == "abcd" and clip(None, 3) == ""
    with pytest.raises(ValidationError, match="'n' parameter of clip must be an int >= 1. Got 0"):
        clip("abc", 0)


# ------------------------------------------------------------------------------------------ a hostile project
FILE_NAMES = ["<img src=x onerror=alert(1)>", "[x](javascript:alert(1))", "**bold**"]  # no "/" in a file name
CAPTIONS = HOSTILE + ["![i](http://127.0.0.1:9/x.png)"]  # and an image Markdown would fetch from elsewhere
ANNOTATORS = HOSTILE
LABELS = HOSTILE


def hostile_project(project_dir: Path, *, n: int = 12):
    """An image+text project whose file names, captions, labels and annotator names are :data:`HOSTILE`
    (:data:`FILE_NAMES`, :data:`CAPTIONS`, :data:`LABELS`, :data:`ANNOTATORS`).

    ``n`` digit PNGs, imported through a JSON Lines manifest (the import path a user takes); the first half
    of the items get four agreeing votes (confirmed), the second half four different ones (disputed). A run is
    published with map coordinates, two clusters and a prediction per item, as a finished retrain would.
    Returns the store (opened as a library: its writes are not role-checked).
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    from core.io.ingest import import_manifest
    from core.store.project_store import Store

    store = Store.create(project_dir, modality="image+text", labels=LABELS, min_votes=2)
    media = project_dir / "media" / "hostile"
    media.mkdir(parents=True)
    digits = load_digits()
    rows = []
    for k in range(n):
        name = f"{FILE_NAMES[k % len(FILE_NAMES)]} {k}.png"
        Image.fromarray((digits.images[k] / 16 * 255).astype(np.uint8)).resize((32, 32)).save(media / name)
        for a, annotator in enumerate(ANNOTATORS):
            label = LABELS[k % len(LABELS)] if k < n // 2 else LABELS[(k + a) % len(LABELS)]
            rows.append({"path": name, "text": f"{CAPTIONS[k % len(CAPTIONS)]} caption {k}", "label": label,
                         "annotator": annotator})
    manifest = media / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = import_manifest(store, manifest)
    assert report.added == n and not report.problems, report.problems
    ids = np.asarray(store.item_ids(), dtype=np.int64)
    run_dir = store.dir / "runs" / "hostile"
    run_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(len(store.labels())), size=len(ids))
    np.save(run_dir / "item_ids.npy", ids)
    np.save(run_dir / "proba.npy", proba)
    classes = store.labels()
    store.publish_run(model="classifier", config={}, metrics={}, artefact_dir=run_dir, classes=classes,
                      item_ids=ids, labels=[classes[k] for k in proba.argmax(1)], confidences=proba.max(1),
                      clusters=np.arange(len(ids)) % 2, coords=rng.normal(size=(len(ids), 2)))
    return store


@pytest.fixture
def hostile(tmp_path, monkeypatch):
    from tests.helpers import ROOT

    store = hostile_project(tmp_path / "projects" / "hostile")
    monkeypatch.setenv("LABELTOOL_PROJECTS", str(tmp_path / "projects"))
    monkeypatch.chdir(ROOT)
    return store


def _markdown_texts(at) -> list[str]:
    """The source of every element of the page that Streamlit renders as Markdown."""
    texts = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "success", "title", "header",
                                  "subheader") for e in getattr(at, kind)]
    texts += [b.label for b in at.get("button")]
    texts += [e.proto.label for kind in ("radio", "selectbox", "multiselect", "toggle", "checkbox")
              for e in at.get(kind)]
    texts += [o for r in at.get("radio") for o in r.proto.options]
    texts += [m.proto.label for m in at.get("metric")] + [m.proto.body for m in at.get("metric")]
    texts += [e.label for e in at.expander] + [t.label for t in at.tabs]
    return texts


def _check_page(at) -> str:
    """Every Markdown text of the page renders without a link, image, raw HTML or emphasis the page did not
    write itself; returns all the text a reader sees, joined."""
    shown = []
    for source in _markdown_texts(at):
        text, types = _rendered(source)
        assert not types & {"html_inline", "html_block", "image", "link_open"}, (source, types)
        shown.append(text)
    return "\n".join(shown)


def _plotly_texts(at) -> list[str]:
    out = []
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        for trace in spec["data"]:
            out += [str(trace.get("name") or "")] + [str(h) for h in trace.get("hovertext") or []]
            out += [str(v) for axis in ("x", "y") for v in (trace.get(axis) or []) if isinstance(v, str)]
    return out


def _check_plotly(at) -> str:
    texts = _plotly_texts(at)
    for t in texts:
        assert "<" not in t and ">" not in t, t  # plotly would draw a tag; escaped, it shows the characters
    return "\n".join(html.unescape(t) for t in texts)


def _open(page: str):
    from tests.helpers import open_page

    return open_page(page, annotator="tester")


def test_label_page_shows_file_name_caption_and_labels_as_typed(hostile):
    at = _open("pages/label.py")
    shown = _check_page(at)
    cap = next(c.value for c in at.caption if c.value.startswith("item "))
    item = hostile.item(int(cap.split()[1]))
    assert f"item {item.id} · {item.uri}" in shown  # the file name, with its brackets and stars
    assert item.text in [t.value for t in at.get("text")]  # the caption, as plain text
    assert all(lab in shown for lab in LABELS)  # the label buttons and the suggestion
    key = next(b for b in at.button if b.key and b.key.startswith("lab-"))
    key.click().run()  # vote; then "Your last label" lists the other annotators' votes
    assert not at.exception, at.exception
    shown = _check_page(at)
    assert f"you said {key.key[len('lab-'):]}; others: " in shown and all(f"{a}: " in shown for a in ANNOTATORS)


def test_consensus_page_shows_annotator_names_and_labels_as_typed(hostile):
    at = _open("pages/consensus.py")
    shown = _check_page(at)
    assert all(a in shown for a in ANNOTATORS) and all(lab in shown for lab in LABELS)
    assert any(" caption " in t.value for t in at.get("text"))
    ticks = _check_plotly(at)  # Cohen's kappa between annotators: their names on both axes
    assert all(a in ticks for a in ANNOTATORS)


def test_embeddings_page_hover_and_legend_are_escaped(hostile):
    at = _open("pages/embeddings.py")
    _check_page(at)
    texts = _check_plotly(at)
    assert all(lab in texts for lab in LABELS)  # legend: the consensus labels
    assert all(name in texts for name in FILE_NAMES) and all(f"{h} caption" in texts for h in CAPTIONS)  # hover


def test_clusters_page_grid_captions_and_heat_map_are_escaped(hostile):
    at = _open("pages/clusters.py")
    shown = _check_page(at)
    assert all(f"{h} caption" in shown for h in CAPTIONS)  # the grid's caption snippets
    assert all(lab in _check_plotly(at) for lab in LABELS[:2])  # labels of confirmed items on the heat map axis


def test_every_other_page_renders_hostile_names_without_markup(hostile):
    for page in ("pages/home.py", "pages/pseudo_labels.py", "pages/train.py"):
        at = _open(page)
        _check_page(at)
        _check_plotly(at)
