"""Helpers shared by the benchmarks: where the shared data is, and recording results with date and machine."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def shared_dir() -> Path:
    return Path(os.environ.get("LABELTOOL_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "datasets"


def machine() -> dict:
    """What ran the benchmark: CPU count, platform and the GPU's name when torch sees one."""
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def record(bench: str, result: dict, *, out: str | None = None) -> dict:
    """Print one JSON line and append it to bench/results/<out or bench>.jsonl (or $BENCH_OUT/...)."""
    row = {"bench": bench, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(), **result}
    print(json.dumps(row), flush=True)
    folder = Path(os.environ.get("BENCH_OUT", RESULTS))
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{out or bench}.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def check_list(option: str, value: str, allowed: tuple[str, ...]) -> list[str]:
    """The comma-separated names of ``value``; exits naming ``option``, the bad names and the allowed ones."""
    names = [v for v in value.split(",") if v]
    bad = [v for v in names if v not in allowed]
    if bad or not names:
        raise SystemExit(f"{option}: got {value!r}; allowed: a comma list of {', '.join(allowed)}")
    return names
