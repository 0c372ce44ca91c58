"""CSV export neutralises spreadsheet formulas (OWASP CSV injection); JSON Lines export stays unchanged."""
from __future__ import annotations

import csv
import json

import pytest

from core.io.export import csv_safe, export_items
from core.io.ingest import import_manifest
from core.store.project_store import Store

# imports strip surrounding whitespace, so the leading tab / carriage return cases are unit-tested only
HOSTILE = ["=HYPERLINK(\"http://evil\",\"x\")", "+cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0", "@SUM(1+1)*cmd"]
CONTROL = ["\t=1+1", "\r=1+1", "\tsomething"]
HARMLESS = ["plain caption", "a = b", "-1", "+3.5", "-1e-3"]


@pytest.mark.parametrize("value", HOSTILE + CONTROL)
def test_values_a_spreadsheet_would_run_get_a_quote(value):
    assert csv_safe(value) == "'" + value


@pytest.mark.parametrize("value", [*HARMLESS, None, -1.5, 0, True])
def test_plain_text_numbers_and_non_text_pass_unchanged(value):
    assert csv_safe(value) is value


@pytest.fixture
def project(tmp_path):
    store = Store.create(tmp_path / "p", modality="text", labels=["-1", "+1", "=x"], extractor="tfidf_svd", min_votes=1)
    man = tmp_path / "t.csv"
    with open(man, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "group"])
        for k, text in enumerate(HOSTILE + HARMLESS):
            w.writerow([text, ["-1", "+1", "=x"][k % 3], "@group" if k == 0 else f"g{k}"])
    report = import_manifest(store, man, annotator="ann")
    assert report.added == len(HOSTILE + HARMLESS), report.problems
    return store


def test_csv_export_neutralises_every_text_cell(project, tmp_path):
    out = tmp_path / "out.csv"
    assert export_items(project, out, fmt="csv") == len(HOSTILE + HARMLESS)
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    texts = [r["text"] for r in rows]
    assert texts[: len(HOSTILE)] == ["'" + t for t in HOSTILE]
    assert texts[len(HOSTILE):] == HARMLESS
    assert rows[0]["group"] == "'@group" and rows[1]["group"] == "g1"
    # labels: "=x" is neutralised, the plain numbers "-1" / "+1" are kept as typed
    assert {r["consensus_label"] for r in rows} == {"-1", "+1", "'=x"}
    # no cell of the file starts a formula any more
    starts = ("=", "+", "-", "@", "\t", "\r")
    for r in rows:
        for v in r.values():
            assert not v.startswith(starts) or v in ("-1", "+1", *HARMLESS), v


def test_jsonl_export_is_unchanged(project, tmp_path):
    out = tmp_path / "out.jsonl"
    export_items(project, out, fmt="jsonl")
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == HOSTILE + HARMLESS
    assert rows[0]["group"] == "@group"
    assert {r["consensus_label"] for r in rows} == {"-1", "+1", "=x"}
