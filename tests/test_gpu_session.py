"""bench/gpu_session.sh on the CPU (issue 16): the dry run lists every GPU check with its budget, the budgets fit
one 10-minute device call, every script and flag its commands name exists, the install line reads the folder
../shared/tools/device-wheels fills, and a step that overruns is killed, recorded as timed out, and the next runs.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_session.sh"
LIMIT_S = 540
#: every GPU check the issue names, and the setup that installs what the device lacks
EXPECTED = {"setup", "tests", "features", "cifar", "dec_speed", "dec_quality", "pseudo_speed", "pseudo_fsdd",
            "spectrogram", "iic_speed", "reid_speed"}
STEP = re.compile(r"^step (\S+)\s+budget\s+(\d+) s\b")
EXTRA = re.compile(r"^named only, not in this run: (\S+), budget (\d+) s\b")  # listed, not in the total


def _session(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("OUT",) and not k.startswith("BUDGET_")}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**base, **(env or {})})


def _dry_run() -> tuple[dict[str, int], dict[str, list[str]], str]:
    """(budget per step of the default run, command lines per step, named-only steps included, the whole output)
    of ``--dry-run``."""
    proc = _session("--dry-run")
    assert proc.returncode == 0, proc.stderr
    budgets: dict[str, int] = {}
    commands: dict[str, list[str]] = {}
    step = None
    for line in proc.stdout.splitlines():
        m, extra = STEP.match(line), EXTRA.match(line)
        if m:
            step = m.group(1)
            budgets[step] = int(m.group(2))
            commands[step] = []
        elif extra:
            step = extra.group(1)
            commands[step] = []
        elif line.startswith("    $ "):
            assert step is not None, line
            commands[step].append(line[len("    $ "):])
    return budgets, commands, proc.stdout


def test_dry_run_lists_every_step_with_a_budget_that_fits_one_device_call():
    budgets, commands, out = _dry_run()
    assert set(budgets) == EXPECTED
    assert all(b > 0 for b in budgets.values()) and all(commands[s] for s in budgets)
    assert set(commands) - set(budgets) == {"retrain"}  # named only: listed with its commands, outside the total
    total = sum(budgets.values())
    assert f"total {total} s" in out and total <= LIMIT_S
    assert "$OUT/gpu-" in out  # where the results go on the device


def test_a_subset_runs_setup_and_the_named_steps_and_bad_names_or_budgets_are_refused():
    proc = _session("--dry-run", "features", "iic_speed")
    assert proc.returncode == 0, proc.stderr
    assert [m.group(1) for m in map(STEP.match, proc.stdout.splitlines()) if m] == ["setup", "features", "iic_speed"]
    bad = _session("--dry-run", "featurs")
    assert bad.returncode == 2 and "no step 'featurs'" in bad.stderr and "iic_speed" in bad.stderr
    over = _session("--dry-run", env={"BUDGET_tests": "500"})
    assert over.returncode == 1 and "over 540 s" in over.stderr


def _segments(line: str) -> list[list[str]]:
    """The simple commands of one shell line (split at &&, ||, ;, |, redirections dropped with their target)."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    out, cur, skip = [], [], False
    for tok in lex:
        if skip:
            skip = False
        elif tok in ("&&", "||", ";", "|"):
            out.append(cur)
            cur = []
        elif tok in (">", ">>", "<", "2>"):
            skip = True
        else:
            cur.append(tok)
    return [c for c in out + [cur] if c]


def _has_flag(text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def test_every_bench_script_and_cli_flag_the_commands_use_exists():
    _, commands, _ = _dry_run()
    helps: dict[tuple[str, ...], str] = {}

    def help_of(*target: str) -> str:
        if target not in helps:
            proc = subprocess.run([sys.executable, *target, "--help"], cwd=ROOT, capture_output=True, text=True,
                                  timeout=120)
            assert proc.returncode == 0, (target, proc.stderr[-2000:])
            helps[target] = proc.stdout
        return helps[target]

    scripts, cli = set(), set()
    for lines in commands.values():
        for line in lines:
            for seg in _segments(line):
                if seg[0] != "python3" or len(seg) < 2:
                    continue
                flags = [t.split("=")[0] for t in seg if t.startswith("--")]
                if seg[1].startswith("bench/"):
                    script = ROOT / seg[1]
                    assert script.is_file(), f"{seg[1]} does not exist"
                    source = script.read_text()
                    for flag in flags:
                        assert _has_flag(help_of(seg[1]), flag) or f'"{flag}"' in source, f"{seg[1]} has no {flag}"
                    scripts.add(script.name)
                elif seg[1:3] == ["-m", "core"]:
                    sub = seg[3]
                    for flag in flags:
                        assert _has_flag(help_of("-m", "core", sub), flag), f"core {sub} has no {flag}"
                    cli.add(sub)
    assert scripts == {"bench_features.py", "make_label_csv.py", "bench_dec.py", "bench_pseudo_label.py",
                       "bench_spectrogram.py", "bench_iic.py", "bench_reid_speed.py", "bench_retrain.py"}
    assert cli == {"init", "import", "features", "annotate", "train", "evaluate"}


@pytest.mark.shared
def test_the_install_line_reads_the_folder_device_wheels_fills():
    tool = SHARED.parent / "tools" / "device-wheels"
    if not tool.is_file():
        pytest.skip(f"no {tool}")
    folder = re.search(r"^mkdir -p (\S+)\s*$", tool.read_text(), re.M).group(1)  # where it downloads the wheels
    _, commands, _ = _dry_run()
    install = [line for line in commands["setup"] if "pip install" in line]
    assert len(install) == 1
    assert re.search(rf"--no-index .*--target /tmp/site {re.escape(folder)}/\*\.whl$", install[0]), install[0]
    text = SCRIPT.read_text()
    assert ".gpu/whl" not in text and f'carry=["{folder}"' in text


def test_a_step_that_overruns_is_killed_recorded_as_timed_out_and_the_next_step_runs(tmp_path):
    """A stand-in python3 on PATH: the spectrogram step sleeps past its 1 s budget, the IIC step writes a JSON
    file into its scratch folder and 8 row files (one more than the device tool brings back with the summary),
    then exits 3; everything else goes to the real interpreter (the summary)."""
    shim = tmp_path / "bin" / "python3"
    shim.parent.mkdir()
    shim.write_text("#!/bin/sh\n"
                    'case "$1" in\n'
                    "  bench/bench_spectrogram.py) sleep 30 ;;\n"
                    '  bench/bench_iic.py) echo \'{"rows": 3}\' > "$S/speed.json"; echo "iic ran on $DATA"\n'
                    '    for i in 1 2 3 4 5 6 7 8; do echo "{}" > "$BENCH_OUT/rows$i.jsonl"; done; exit 3 ;;\n'
                    "esac\n"
                    f'exec {shlex.quote(sys.executable)} "$@"\n')
    shim.chmod(0o755)
    out = tmp_path / "out"
    env = {"OUT": str(out), "PATH": f"{shim.parent}:{os.environ['PATH']}", "BUDGET_spectrogram": "1",
           "LABELTOOL_SHARED": str(tmp_path / "shared")}
    t0 = time.perf_counter()
    proc = _session("--no-setup", "spectrogram", "iic_speed", env=env)
    assert proc.returncode == 0, proc.stderr
    assert time.perf_counter() - t0 < 25  # the sleep was cut, not waited for
    (folder,) = out.iterdir()
    assert re.fullmatch(r"gpu-\d{4}-\d\d-\d\d", folder.name)
    summary = json.loads((folder / "summary.json").read_text())
    spec, iic = summary["steps"]
    assert spec["step"] == "spectrogram" and spec["timed_out"] is True and spec["exit_status"] in (124, 137)
    assert spec["budget_s"] == 1 and 1 <= spec["seconds"] < 15
    assert iic["step"] == "iic_speed" and iic["timed_out"] is False and iic["exit_status"] == 3
    assert iic["outputs"] == {"speed": {"rows": 3}}
    assert f"iic ran on {tmp_path / 'shared' / 'datasets'}" in iic["output_tail"]
    assert iic["command"].startswith("python3 bench/bench_iic.py --gpu-speed")
    assert summary["total_budget_s"] == 1 + _dry_run()[0]["iic_speed"] and summary["not_run"] == []
    assert sorted(p.name for p in folder.iterdir()) == ["rows.tar.gz", "summary.json"]  # 9 files: packed
    with tarfile.open(folder / "rows.tar.gz") as t:
        assert sorted(t.getnames()) == [f"rows{i}.jsonl" for i in range(1, 9)]
