"""bench/run_all.py registers every benchmark script, with options the scripts accept (no benchmark runs here)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import run_all  # noqa: E402


def test_every_bench_script_is_registered():
    on_disk = run_all.scripts_on_disk()
    assert "bench_dec.py" in on_disk  # the glob sees the folder
    assert run_all.unregistered() == [], "add these scripts to BENCHES in bench/run_all.py"


def test_registered_scripts_exist():
    for name, b in run_all.BENCHES.items():
        assert (run_all.BENCH / b.script).is_file(), name


@pytest.mark.parametrize("name", sorted(run_all.BENCHES))
def test_registered_options_are_accepted_by_the_script(name):
    """Every --option in the full and quick argument lists is declared by the script's argparse."""
    b = run_all.BENCHES[name]
    source = (run_all.BENCH / b.script).read_text()
    declared = set(re.findall(r"""add_argument\(\s*["'](--[\w-]+)["']""", source))
    used = {a for a in (*b.full, *b.quick) if a.startswith("--")}
    assert used <= declared, f"{b.script} does not declare {sorted(used - declared)}"


def test_unregistered_script_is_reported(tmp_path, monkeypatch):
    (tmp_path / "bench_new_thing.py").write_text("")
    for b in run_all.BENCHES.values():
        (tmp_path / b.script).write_text("")
    monkeypatch.setattr(run_all, "BENCH", tmp_path)
    assert run_all.unregistered() == ["bench_new_thing.py"]
    assert run_all.main(["--list"]) == 1


def test_commands_fill_the_results_folder(tmp_path, monkeypatch):
    cmd = run_all.command("query_umap", quick=True, out=tmp_path)
    assert cmd[0] == sys.executable and cmd[1].endswith("bench_query_umap.py")
    assert str(tmp_path / "query_umap.json") in cmd and not any("{out}" in a for a in cmd)
    monkeypatch.setattr(run_all, "unregistered", lambda: [])
    assert run_all.main(["--only", "no_such_bench", "--list"]) == 2
