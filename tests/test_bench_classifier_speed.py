"""bench/bench_classifier_speed.py: labelled counts stratified over classes, and the CPU burners of --load."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import bench_classifier_speed as bcs  # noqa: E402


def test_stratified_count_gives_the_total_spread_over_classes():
    y = np.repeat(np.array(list("0123456789")), 300)
    lab = bcs.stratified_count(y, 161, seed=0)
    assert len(lab) == 161 and len(np.unique(lab)) == 161
    per_class = np.unique(y[lab], return_counts=True)[1]
    assert per_class.min() == 16 and per_class.max() == 17


def test_stratified_count_follows_class_sizes_and_keeps_two_per_class():
    y = np.array(["a"] * 900 + ["b"] * 90 + ["c"] * 10)
    lab = bcs.stratified_count(y, 100, seed=1)
    counts = dict(zip(*np.unique(y[lab], return_counts=True)))
    assert sum(counts.values()) == 100
    assert counts["a"] > counts["b"] > counts["c"] >= 2


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); read its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_burners_run_during_the_block_and_stop_after_an_exception():
    pids: list[int] = []
    with pytest.raises(RuntimeError):
        with bcs.burners(2) as procs:
            pids = [p.pid for p in procs]
            assert len(pids) == 2 and all(_alive(p) for p in pids)
            raise RuntimeError("boom")
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)


def test_no_burners_by_default():
    with bcs.burners(0) as procs:
        assert procs == []


@pytest.mark.shared
@pytest.mark.slow
def test_fsdd_counts_under_load_write_rows_and_leave_no_burner(tmp_path):
    """The script end to end on FSDD logmel: 30 labels, one burner, rows with the load fields; no burner left."""
    import json
    import subprocess

    env = {**os.environ, "BENCH_OUT": str(tmp_path)}
    subprocess.run([sys.executable, str(ROOT / "bench" / "bench_classifier_speed.py"), "--data", "fsdd",
                    "--counts", "30", "--skip-full", "--load", "1"], check=True, env=env, timeout=300,
                   capture_output=True)
    rows = [json.loads(line) for line in (tmp_path / "classifier_speed.jsonl").read_text().splitlines()]
    assert [r["method"] for r in rows] == ["auto", "logreg"]
    for r in rows:
        assert r["data"] == "fsdd logmel" and r["n_labelled"] == 30 and r["load_processes"] == 1
        assert len(r["loadavg_start"]) == 3 and len(r["loadavg_end"]) == 3 and r["selected"]
        assert r["burner_cpu_seconds"] is not None
    assert rows[0]["burner_cpu_seconds"] > 0
