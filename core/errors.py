"""Domain exceptions and the one validation helper of the engine.

Every error a user can cause names the bad value and says what is allowed, following
scikit-learn's template: "The 'n_clusters' parameter of DEC must be an int >= 2. Got 1."
"""
from __future__ import annotations

import numbers
from typing import Any, Iterable


class LabelToolError(Exception):
    """Base class of every error the engine raises on purpose (the CLI prints these without a traceback)."""


class StoreError(LabelToolError):
    """The project store is missing, of an unknown schema version, or was asked for something it lacks."""


class ProjectNotFound(StoreError):
    """No project database at the given folder."""


class ValidationError(LabelToolError, ValueError):
    """A parameter or an input value is not allowed."""


class FeatureError(LabelToolError):
    """A feature extractor cannot run (missing weights, no items of its modality, ...)."""


class TrainingError(LabelToolError):
    """A model cannot be trained on what the project holds (too few labels, no features, ...)."""


class JobCancelled(LabelToolError):
    """Raised inside a job when its cancel flag was set; the worker marks the job cancelled."""


def check_param(owner: str, name: str, value: Any, ok: bool, allowed: str) -> None:
    """Raise a :class:`ValidationError` in the project's one error template when ``ok`` is false.

    Examples
    --------
    >>> check_param("DEC", "n_clusters", 1, 1 >= 2, "an int >= 2")
    Traceback (most recent call last):
    ...
    core.errors.ValidationError: The 'n_clusters' parameter of DEC must be an int >= 2. Got 1.
    """
    if not ok:
        raise ValidationError(f"The {name!r} parameter of {owner} must be {allowed}. Got {value!r}.")


def is_int(value: Any) -> bool:
    """True for Python and NumPy integers, False for bools (``True`` is an int to Python, never a count here).

    >>> is_int(3), is_int(__import__("numpy").int64(3)), is_int(True), is_int(3.0)
    (True, True, False, False)
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for Python and NumPy ints and floats, False for bools (a config's numeric fields).

    >>> is_number(0.5), is_number(__import__("numpy").float32(2)), is_number(True), is_number("1")
    (True, True, False, False)
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_choice(owner: str, name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise a :class:`ValidationError` listing the valid choices when ``value`` is not one of them."""
    choices = list(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValidationError(f"The {name!r} parameter of {owner} must be one of {listed}. Got {value!r}.")


class PermissionDenied(LabelToolError):
    """The signed-in user's role in the project does not allow the action (see :mod:`core.auth.roles`)."""
