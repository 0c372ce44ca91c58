"""Project names typed in the browser: only a plain folder name inside the projects folder."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ValidationError
from core.io.project_names import MAX_PROJECT_NAME, project_path, validate_project_name


@pytest.mark.parametrize("name", ["birds", "Birds 2024", "a-b_c.d", "café", "x" * MAX_PROJECT_NAME, "v1.2"])
def test_plain_names_land_inside_the_projects_folder(tmp_path, name):
    path = project_path(tmp_path, name)
    assert path == tmp_path / name and path.parent == tmp_path
    assert path.resolve().parent == tmp_path.resolve()


def test_surrounding_spaces_are_dropped(tmp_path):
    assert project_path(tmp_path, "  birds ") == tmp_path / "birds"


@pytest.mark.parametrize("name", ["", "   ", "../x", "..", ".", ".hidden", "a/b", "/tmp/x", "a\\b", "C:\\x", "a\0b",
                                  "a..b", "x" * (MAX_PROJECT_NAME + 1), "tab\there", "new\nline", "semi;colon",
                                  "~root", "$HOME", None, 7, Path("x")])
def test_anything_else_is_refused_naming_the_value(tmp_path, name):
    with pytest.raises(ValidationError) as err:
        project_path(tmp_path, name)
    msg = str(err.value)
    assert "'name'" in msg and "plain folder name" in msg
    assert f"Got {name!r}." in msg


def test_long_name_is_clipped_in_the_message():
    with pytest.raises(ValidationError) as err:
        validate_project_name("y" * 1000)
    assert len(str(err.value)) < 400 and "1000 characters" in str(err.value)
