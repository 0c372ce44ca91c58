"""The media roots: the folders an import asked for in the browser may read from.

The web app lets anyone who can reach it name a path on the server; an import from the browser therefore
reads only below these folders (``LABELTOOL_MEDIA_ROOTS``, separated by ``os.pathsep``; by default the
projects folder, the repository's ``data/`` folder and a sibling ``../shared/datasets`` when it exists). The
source folder or manifest must lie below a root, and so must every file it leads to once symlinks and ``..``
are resolved. The command line (``python -m core import``) is not confined: the shell user may read what
they can read.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from core.errors import ValidationError

MEDIA_ROOTS_ENV = "LABELTOOL_MEDIA_ROOTS"
PROJECTS_ENV = "LABELTOOL_PROJECTS"
REPO = Path(__file__).resolve().parents[2]


def default_media_roots() -> list[Path]:
    """The projects folder (``LABELTOOL_PROJECTS``, default ``projects``), the repository's ``data/`` and
    ``../shared/datasets`` next to the repository when it exists; resolved."""
    roots = [Path(os.environ.get(PROJECTS_ENV, "projects")), REPO / "data"]
    shared = REPO.parent / "shared" / "datasets"
    if shared.is_dir():
        roots.append(shared)
    return _unique(p.resolve() for p in roots)


def media_roots() -> list[Path]:
    """The folders browser imports may read: ``LABELTOOL_MEDIA_ROOTS`` (``os.pathsep``-separated, empty
    entries ignored) when it names any, else :func:`default_media_roots`; resolved, without repeats."""
    raw = os.environ.get(MEDIA_ROOTS_ENV, "")
    named = [part.strip() for part in raw.split(os.pathsep) if part.strip()]
    if not named:
        return default_media_roots()
    for part in named:
        if "\0" in part:
            raise ValidationError(f"The {MEDIA_ROOTS_ENV} setting holds a path with a NUL byte: {part!r}. "
                                  f"Set it to folders separated by {os.pathsep!r}.")
    return _unique(Path(part).expanduser().resolve() for part in named)


def _unique(paths: Iterable[Path]) -> list[Path]:
    return list(dict.fromkeys(paths))


def resolve_roots(roots: Iterable[str | os.PathLike]) -> list[Path]:
    """``roots`` as absolute, resolved paths (what :func:`check_under_roots` compares against)."""
    return _unique(Path(r).resolve() for r in roots)


def under_roots(path: str | os.PathLike, roots: Sequence[Path]) -> Path | None:
    """The resolved ``path`` (symlinks and ``..`` followed) when it lies below one of ``roots`` (resolved
    already, e.g. by :func:`resolve_roots`), else None; a path the system cannot resolve (a NUL byte, a name too
    long) is None too."""
    try:
        if "\0" in os.fspath(path):
            return None
        full = Path(path).resolve()
    except (OSError, ValueError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return None
    return full if any(full.is_relative_to(root) for root in roots) else None


def check_under_roots(path: str | os.PathLike, roots: Sequence[str | os.PathLike]) -> Path:
    """The resolved ``path`` when it lies below one of the media ``roots``; otherwise a ValidationError that
    names the path and the roots and says how to allow it.

    >>> check_under_roots("/etc/passwd", ["/srv/media"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    core.errors.ValidationError: The path '/etc/passwd' is outside the media roots (/srv/media): ...
    """
    resolved = resolve_roots(roots)
    full = under_roots(path, resolved)
    if full is None:
        listed = ", ".join(str(r) for r in resolved) or "none are set"
        raise ValidationError(
            f"The path {os.fspath(path)!r} is outside the media roots ({listed}): imports from the browser read "
            f"only below them. Move or copy the data below a root, or add its folder to {MEDIA_ROOTS_ENV} "
            f"(folders separated by {os.pathsep!r}) and restart the app; the command line "
            "(python -m core import) is not confined.")
    return full
