"""Folder imports with a group pattern: the camera (or speaker) of each file from its name."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.errors import ValidationError
from core.io.ingest import import_folder, import_source, request_import
from core.store.project_store import Store


def _crops(root):
    for pid in ("001", "002"):
        (root / pid).mkdir(parents=True)
        for name in ("01_1.png", "02_1.png", "odd.png"):
            val = np.random.default_rng(abs(hash((pid, name))) % 2**32).integers(0, 255, (8, 4, 3), dtype=np.uint8)
            Image.fromarray(val).save(root / pid / name)
    return root


def test_group_pattern_sets_the_camera_and_reports_files_it_does_not_match(tmp_path):
    store = Store.in_memory(modality="image")
    report = import_folder(store, _crops(tmp_path / "src"), labels_from_folders="reference", group_pattern=r"^(\d+)_")
    groups = sorted((it.uri, it.group) for it in store.items())
    assert groups == [("001/01_1.png", "01"), ("001/02_1.png", "02"), ("001/odd.png", None),
                      ("002/01_1.png", "01"), ("002/02_1.png", "02"), ("002/odd.png", None)]
    no_group = [p for p in report.problems if p["problem"] == "no_group"]
    assert len(no_group) == 2 and report.skipped == 0 and report.added == 6  # informational: still imported


def test_whole_match_without_a_capture_group_and_bad_patterns(tmp_path):
    store = Store.in_memory(modality="image")
    import_source(store, _crops(tmp_path / "src"), group_pattern=r"0[12]")
    assert {it.group for it in store.items()} == {"01", "02", None}
    with pytest.raises(ValidationError, match="'group_pattern' parameter of import must be a regular expression"):
        import_folder(store, tmp_path / "src", group_pattern="(")


def test_import_job_params_carry_and_check_the_pattern(tmp_path):
    store = Store.create(tmp_path / "p", modality="image", min_votes=1)
    src = _crops(tmp_path / "src")
    with pytest.raises(ValidationError, match="group_pattern"):
        request_import(store, src, group_pattern="[")
    job_id, _ = request_import(store, src, group_pattern=r"^(\d+)_")
    row = store.conn.execute("SELECT params FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert '"group_pattern": "^(\\\\d+)_"' in row[0]
