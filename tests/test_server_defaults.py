"""Safe defaults of the served app (issue 15, part): localhost only, XSRF on, no developer toolbar."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_streamlit_config_listens_on_localhost_with_xsrf_and_no_developer_toolbar():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "localhost"
    assert config["server"]["enableXsrfProtection"] is True
    assert config["client"]["toolbarMode"] == "viewer"


def test_make_run_passes_the_host_and_defaults_to_localhost():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^HOST \?= localhost$", makefile, re.M)
    assert "--server.address $(HOST)" in makefile
