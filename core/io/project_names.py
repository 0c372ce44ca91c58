"""Project names typed in the browser: a plain folder name inside the projects folder, nothing else.

A name such as ``../x``, ``/tmp/x`` or ``a/b`` would put a project database outside the projects folder (or
deep inside it); :func:`project_path` accepts only one plain folder name and returns where it lives.
"""
from __future__ import annotations

import os
from pathlib import Path

from core.errors import check_param

MAX_PROJECT_NAME = 64
_PUNCTUATION = frozenset(" -_.")
_ALLOWED = (f"a plain folder name of 1 to {MAX_PROJECT_NAME} letters, digits, spaces, '-', '_' or '.', not starting "
            "with '.' and without '/', '\\\\', '..' or control characters")


def _plain(name: str) -> bool:
    return (0 < len(name) <= MAX_PROJECT_NAME and not name.startswith(".") and ".." not in name
            and all(ch.isalnum() or ch in _PUNCTUATION for ch in name))


def validate_project_name(name: object) -> str:
    """``name`` without surrounding spaces when it is a plain folder name; otherwise a
    ValidationError naming the value (the rule: the error message).

    >>> validate_project_name(" birds 2024 ")
    'birds 2024'
    >>> validate_project_name("../x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    core.errors.ValidationError: The 'name' parameter of the project must be a plain folder name ... Got '../x'.
    """
    clean = name.strip() if isinstance(name, str) else name
    shown = name[:40] + f"... ({len(name)} characters)" if isinstance(name, str) and len(name) > 80 else name
    check_param("the project", "name", shown, isinstance(clean, str) and _plain(clean), _ALLOWED)
    return clean


def project_path(root: str | os.PathLike, name: object) -> Path:
    """The folder of project ``name`` inside the projects folder ``root``: ``root / name`` for a plain folder
    name (:func:`validate_project_name`), never a path outside ``root`` or below one of its sub-folders."""
    return Path(root) / validate_project_name(name)
