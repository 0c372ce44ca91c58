"""A project's cached feature vectors, read without computing anything, and why some may be missing.

The labelling queue (near-duplicate suppression) and the Label page's "more like this" panel read the features
the worker has already cached for the project's extractor (``settings["extractor"]``; the image part of an
image+text project). :func:`project_features` never raises for a missing or unreadable cache: it returns what it
found and says why rows are missing in :attr:`ProjectFeatures.problem`, so that callers can show it; a cache that
exists but cannot be read is also logged as a warning. :func:`features_signature` changes whenever the cached rows
do, for cache keys of indexes built on them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from core.errors import FeatureError, ValidationError
from core.store.project_store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ProjectFeatures:
    """Cached features of a project.

    Attributes
    ----------
    ids : np.ndarray, shape (m,), int64
        Items with a cached row, in the order asked (every cached item when none were named).
    X : np.ndarray, shape (m, d), float32
    extractor : str or None
        The project's extractor.
    problem : str or None
        Why no row could be read at all: no extractor set, nothing cached yet, or the cache could not be read.
    failed : bool
        True when the cache exists but reading it raised (logged); False when features are simply not there yet.
    """

    ids: np.ndarray
    X: np.ndarray
    extractor: str | None
    problem: str | None = None
    failed: bool = False


def _empty(extractor: str | None, problem: str, failed: bool = False) -> ProjectFeatures:
    return ProjectFeatures(np.zeros(0, np.int64), np.zeros((0, 0), np.float32), extractor, problem, failed)


def project_features(store: Store, item_ids: Sequence[int] | np.ndarray | None = None) -> ProjectFeatures:
    """The cached features of ``item_ids`` (every cached item when None); computes nothing, takes no lock.

    Only the errors of a missing or unreadable cache are caught (:class:`core.errors.FeatureError`, an unknown
    extractor name, ``OSError`` and ``ValueError`` from a damaged ``.npy`` file); they come back as ``problem``
    with ``failed=True`` and a warning in the log. Anything else is a bug and propagates.
    """
    from core.features import cached_features

    name = store.settings().get("extractor")
    if not name:
        return _empty(None, "the project has no feature extractor set")
    try:
        ids, X = cached_features(name, store.dir / "features", item_ids=item_ids)
    except (FeatureError, ValidationError, OSError, ValueError) as exc:
        log.warning("cannot read the %r feature cache of %s: %s: %s", name, store.dir, type(exc).__name__, exc)
        return _empty(name, f"the {name!r} feature cache could not be read ({type(exc).__name__}: {exc})", True)
    if len(ids) == 0:
        return _empty(name, f"no {name!r} features are cached yet (the worker computes them on Retrain)")
    return ProjectFeatures(np.asarray(ids, dtype=np.int64), np.asarray(X, dtype=np.float32), name)


def features_signature(store: Store) -> tuple:
    """A value that changes whenever the project's cached rows change (rows added, compacted, refitted).

    Returns
    -------
    tuple
        (extractor, cache folder, chunk file names, fitted_at of the stateful extractors); () without an extractor.
    """
    from core.features import get_extractor
    from core.features.cache import FeatureCache

    name = store.settings().get("extractor")
    if not name:
        return ()
    try:
        cache = FeatureCache(store.dir / "features", get_extractor(name))
        return (name, str(cache.dir), tuple(cache._chunk_names()), cache.read_meta().get("fitted_at"))
    except (ValidationError, OSError, ValueError) as exc:  # read_meta on a damaged meta.json
        return (name, f"unreadable: {type(exc).__name__}")
