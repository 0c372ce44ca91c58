"""Backup while annotators keep voting (a thread and another process), and restore: the copy passes
``integrity_check``, holds every vote committed before the backup began and is one consistent snapshot."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core.errors import StoreError, ValidationError
from core.io.ingest import import_folder
from core.store.backup import backup_project, integrity_check, restore_project
from core.store.project_store import DB_NAME, Store
from tests.helpers import digits_folder

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))

VOTER = """
import os, sys
from core.store.project_store import Store
store, stop = Store(sys.argv[1]), sys.argv[2]
ids, labels, n = store.item_ids().tolist(), store.labels(), 0
print("ready", flush=True)
while not os.path.exists(stop):
    store.annotate(ids[n % len(ids)], f"proc{n % 5}", labels[n % len(labels)])
    n += 1
print(n, flush=True)
"""


@pytest.fixture
def project(tmp_path) -> Store:
    store = Store.create(tmp_path / "proj", modality="image", extractor="pixels_pca", min_votes=2)
    import_folder(store, digits_folder(tmp_path / "src", per_class=6), labels_from_folders="initial", annotator="ann")
    d = store.dir
    np.save(d / "features" / "X.npy", np.arange(12.0).reshape(3, 4))
    (d / "runs" / "1").mkdir()
    (d / "runs" / "1" / "config.json").write_text('{"model": "classifier"}')
    (d / "projections" / "coords.npy").write_bytes(b"\x93NUMPY-ish")
    (d / "features" / ".X.npy.abc.tmp").write_bytes(b"half-written")  # a cache write in progress: left out
    with store.transaction() as conn:  # some bulk, so that copying takes a moment while the votes go on
        conn.execute("CREATE TABLE padding (b BLOB)")
        conn.executemany("INSERT INTO padding VALUES (?)", [(os.urandom(4096),) for _ in range(1500)])
    return store


class _Voter(threading.Thread):
    """Votes in a loop on its own connection until stopped; keeps each commit's time and any error."""

    def __init__(self, project: Path):
        super().__init__(daemon=True)
        self.project, self.stop, self.times, self.error = project, threading.Event(), [], None

    def run(self) -> None:
        try:
            store = Store(self.project)
            ids, labels = store.item_ids().tolist(), store.labels()
            n = 0
            while not self.stop.is_set():
                store.annotate(ids[n % len(ids)], f"thread{n % 3}", labels[n % len(labels)])
                self.times.append(time.monotonic())
                n += 1
        except Exception as exc:  # reported by the test
            self.error = exc


def _ids(db: Path) -> set[int]:
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM annotations")}
    finally:
        conn.close()


def test_backup_during_concurrent_votes_is_a_sound_snapshot_with_every_earlier_vote(project, tmp_path):
    stop_file = tmp_path / "stop"
    proc = subprocess.Popen([sys.executable, "-c", VOTER, str(project.dir), str(stop_file)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    voter = _Voter(project.dir)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        voter.start()
        deadline = time.monotonic() + 60
        while len(voter.times) < 20 or not project.conn.execute(
                "SELECT 1 FROM annotations WHERE annotator LIKE 'proc%' LIMIT 1").fetchone():
            assert time.monotonic() < deadline and voter.error is None and proc.poll() is None, voter.error
            time.sleep(0.02)
        max_before = project.conn.execute("SELECT MAX(id) FROM annotations").fetchone()[0]
        t0 = time.monotonic()
        summary = backup_project(project.dir, tmp_path / "backup")
        t1 = time.monotonic()
        n_at_end = len(voter.times)
        while len(voter.times) < n_at_end + 10:  # the voters go on after the backup, too
            assert voter.error is None and voter.is_alive(), voter.error
            time.sleep(0.02)
    finally:
        stop_file.touch()
        voter.stop.set()
        voter.join(30)
        out, err = proc.communicate(timeout=60)
    assert voter.error is None, voter.error
    assert proc.returncode == 0 and int(out.split()[-1]) > 0, err
    assert any(t0 <= t <= t1 for t in voter.times)  # votes kept committing while the backup ran

    copy = tmp_path / "backup" / DB_NAME
    assert integrity_check(copy) == ["ok"] and summary["integrity"] == "ok"
    copied, live = _ids(copy), _ids(project.path)
    assert set(range(1, max_before + 1)) & live <= copied  # every vote committed before the backup began
    assert copied == {i for i in live if i <= max(copied)}  # one snapshot: no later vote, no gap
    assert max(live) > max(copied)  # and the voting went on after it
    assert summary["annotations"] == len(copied) and summary["max_annotation_id"] == max(copied)
    assert summary["items"] == 18 and summary["path"] == str((tmp_path / "backup").resolve())
    # each copied item's consensus matches the copied votes (the vote and its consensus commit together)
    conn = sqlite3.connect(copy)
    n_votes = dict(conn.execute("SELECT item_id, n_votes FROM consensus"))
    active = dict(conn.execute(
        "SELECT a.item_id, COUNT(DISTINCT a.annotator) FROM annotations a "
        "LEFT JOIN retractions r ON r.annotation_id = a.id WHERE r.annotation_id IS NULL GROUP BY a.item_id"))
    conn.close()
    assert n_votes == active


def test_backup_copies_the_folders_files_but_not_temporary_ones_or_the_wal(project, tmp_path):
    summary = backup_project(project.dir, tmp_path / "b")
    b = tmp_path / "b"
    assert np.array_equal(np.load(b / "features" / "X.npy"), np.arange(12.0).reshape(3, 4))
    assert (b / "runs" / "1" / "config.json").read_text() == '{"model": "classifier"}'
    assert (b / "projections" / "coords.npy").is_file() and (b / "media").is_dir()
    assert not list(b.rglob("*.tmp"))
    assert not (b / f"{DB_NAME}-wal").exists() and not (b / f"{DB_NAME}-shm").exists()
    assert summary["files"] == 4 and summary["bytes"] == sum(p.stat().st_size for p in b.rglob("*") if p.is_file())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.")]  # no staging folder left behind


def test_paged_backup_of_a_quiet_project_reports_progress(project, tmp_path):
    steps = []
    summary = backup_project(project.dir, tmp_path / "b", pages=64, sleep_s=0.0,
                             progress=lambda remaining, total: steps.append((remaining, total)))
    assert len(steps) > 1 and steps[-1][0] == 0 and steps[0][1] == steps[-1][1]
    assert summary["integrity"] == "ok" and _ids(tmp_path / "b" / DB_NAME) == _ids(project.path)


def test_backup_refuses_out_inside_the_project_and_a_non_empty_out(project, tmp_path):
    with pytest.raises(ValidationError, match="outside the project"):
        backup_project(project.dir, project.dir / "features" / "bk")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValidationError, match="not empty"):
        backup_project(project.dir, tmp_path / "full")
    with pytest.raises(StoreError, match="nothing to back up"):
        backup_project(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    assert backup_project(project.dir, tmp_path / "empty")["integrity"] == "ok"


def test_restore_round_trip_into_a_new_folder(project, tmp_path):
    project.annotate(project.item_ids()[0], "alice", project.labels()[0])
    votes = sorted((v["item_id"], v["annotator"], v["label"]) for v in project.active_votes())
    backup_project(project.dir, tmp_path / "b")
    summary = restore_project(tmp_path / "b", tmp_path / "restored")
    assert summary["replaced"] is None and summary["integrity"] == "ok"
    restored = Store(tmp_path / "restored")
    assert sorted((v["item_id"], v["annotator"], v["label"]) for v in restored.active_votes()) == votes
    assert restored.item_count() == project.item_count() == summary["items"]
    assert (tmp_path / "restored" / "runs" / "1" / "config.json").is_file()
    assert restored.settings()["name"] == project.settings()["name"]


def test_restore_refuses_an_existing_project_unless_forced_and_moves_it_aside(project, tmp_path):
    backup_project(project.dir, tmp_path / "b")
    project.annotate(project.item_ids()[1], "bob", project.labels()[1])  # after the backup
    with pytest.raises(ValidationError, match="--force"):
        restore_project(tmp_path / "b", project.dir)
    project.close()
    summary = restore_project(tmp_path / "b", project.dir, force=True)
    aside = Path(summary["replaced"])
    assert aside.name.startswith("proj.replaced-") and aside.parent == project.dir.parent
    assert "bob" in {v["annotator"] for v in Store(aside).active_votes()}  # the old project is kept, whole
    assert "bob" not in {v["annotator"] for v in Store(project.dir).active_votes()}
    again = restore_project(tmp_path / "b", project.dir, force=True)  # within the same second: a new name
    assert again["replaced"] != summary["replaced"] and Path(summary["replaced"]).is_dir()


def test_restore_checks_the_backup_before_touching_the_project(project, tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / DB_NAME).write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StoreError, match="integrity check"):
        restore_project(tmp_path / "bad", project.dir, force=True)
    assert Store(project.dir).item_count() == 18  # untouched
    assert not list(tmp_path.glob("proj.replaced-*"))
    with pytest.raises(ValidationError, match="apart from the backup"):
        restore_project(project.dir, project.dir / "runs" / "x")


def test_cli_backup_and_restore(project, tmp_path):
    def cli(*args):
        p = subprocess.run([sys.executable, "-m", "core", *map(str, args)], cwd=ROOT, env=ENV, capture_output=True,
                           text=True, timeout=120)
        return p.returncode, p.stdout, p.stderr

    rc, out, err = cli("backup", project.dir, tmp_path / "b", "--json")
    assert rc == 0, err
    assert json.loads(out)["items"] == 18
    rc, _, err = cli("backup", project.dir, tmp_path / "b")
    assert rc == 1 and "must be a new or empty folder" in err and "Traceback" not in err
    rc, out, err = cli("restore", tmp_path / "b", tmp_path / "r", "--json")
    assert rc == 0, err
    assert json.loads(out)["schema_version"] >= 1 and Store(tmp_path / "r").item_count() == 18
