"""Shared fixtures and the skip rules for markers that need something a machine may lack."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LABELTOOL_SHARED", ROOT.parent / "shared")) / "datasets"


def pytest_configure(config):
    """The tests sign artefacts with a key of their own (core/io/artefacts.py), never the user's
    ~/.config/labeltool/artefact.key; the app and worker processes the browser tests start inherit it."""
    if "LABELTOOL_KEY_FILE" not in os.environ:
        import tempfile

        os.environ["LABELTOOL_KEY_FILE"] = str(Path(tempfile.mkdtemp(prefix="labeltool-tests-")) / "artefact.key")


def pytest_collection_modifyitems(config, items):
    have_shared = SHARED.is_dir()
    try:
        import torch

        have_cuda = torch.cuda.is_available()
    except Exception:  # torch missing entirely: the gpu tests cannot run either
        have_cuda = False
    for item in items:
        if "shared" in item.keywords and not have_shared:
            item.add_marker(pytest.mark.skip(reason=f"needs the shared data sets at {SHARED}, absent here"))
        if "gpu" in item.keywords and not have_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; run on the device machine"))


@pytest.fixture
def shared_datasets() -> Path:
    return SHARED


@pytest.fixture
def torch_one_thread():
    """torch on one thread for the test (the 2-core CI machine; results do not depend on it), restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
