"""Feature extractors (image, text, audio) behind one registry, with an on-disk cache per project.

Public API
----------
``EXTRACTORS``            name -> Extractor class
``get_extractor``         an extractor instance from its name and options
``list_extractors``       one dict per extractor, for menus and the CLI
``default_extractor``     the extractor used for a modality when the user picks none
``compute_features``      features of exactly the given items, computing only what the cache lacks
``cached_features``       what the cache holds, read-only and without waiting on a running computation

Importing this package is cheap: torch, scikit-learn, sentence-transformers and librosa are imported
only when an extractor runs.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from core.device import resolve_device
from core.errors import JobCancelled, ValidationError, check_choice
from core.features.audio import LogMel
from core.features.audio_profile import MfccProfile
from core.features.base import Extractor, ItemError, ItemFailure, ItemRef
from core.features.cache import FeatureCache
from core.features.image import AlexNet, ConvNeXtTiny, EfficientNetLite0, EfficientNetV2S, PixelsPca, ResNet18, ResNet50
from core.features.text import MiniLM, TfidfSvd

__all__ = [
    "EXTRACTORS", "Extractor", "FeatureCache", "ItemError", "ItemFailure", "ItemRef", "cached_features",
    "compute_features", "default_extractor", "get_extractor", "list_extractors",
]

EXTRACTORS: dict[str, type[Extractor]] = {
    cls.name: cls
    for cls in (EfficientNetLite0, ResNet18, ResNet50, ConvNeXtTiny, EfficientNetV2S, AlexNet, PixelsPca,
                TfidfSvd, MiniLM, LogMel, MfccProfile)
}

_DEFAULTS = {"image": "efficientnet_lite0", "text": "tfidf_svd", "audio": "mfcc_profile", "image+text": "efficientnet_lite0"}

# A computation writes what it has finished to the cache at least this often (and on cancel or error).
FLUSH_SECONDS = 30.0
FLUSH_ROWS = 4096


def get_extractor(name: str, **options: Any) -> Extractor:
    """A new extractor instance.

    Raises
    ------
    ValidationError
        When ``name`` is not registered (the message lists the valid names), or an option is unknown
        or out of range.
    """
    check_choice("core.features", "extractor", name, EXTRACTORS)
    return EXTRACTORS[name](**options)


def list_extractors() -> list[dict[str, Any]]:
    """One dict per registered extractor.

    Keys: ``name``, ``modality``, ``version``, ``description``, ``stateful`` (fitted once per project),
    ``dim`` (None when it depends on the fit) and ``options`` (the defaults).
    """
    out = []
    for name, cls in EXTRACTORS.items():
        dim = cls.__dict__.get("dim", getattr(cls, "dim", None))
        out.append({
            "name": name, "modality": cls.modality, "version": cls.version, "description": cls.description,
            "stateful": cls.stateful, "dim": dim if isinstance(dim, int) and dim > 0 else None,
            "options": {f.name: f.default for f in dataclasses.fields(cls.Options)},
        })
    return out


def default_extractor(modality: str) -> str:
    """Name of the default extractor of ``modality`` ("image", "text", "audio", "image+text")."""
    check_choice("default_extractor", "modality", modality, _DEFAULTS)
    return _DEFAULTS[modality]


def compute_features(
    items: Iterable[ItemRef],
    extractor_name: str | Extractor,
    cache_dir: str | os.PathLike,
    *,
    device: str = "cpu",
    options: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    failures: list[ItemFailure] | None = None,
    refit: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Features of the given items, computing only the rows the cache lacks and appending them to it.

    Contract
    --------
    * The result holds the given items **in the given order, minus the items that failed**. Each item
      left out gets exactly one :class:`ItemFailure` (item id, path, reason) appended to ``failures``
      when that list is given. A failed item is not cached, so a later call tries it again (and
      reports it again if it still fails). Duplicate ids in ``items`` give duplicate rows.
    * :class:`FeatureError` is raised only when the extractor itself cannot run: missing weights or
      package, nothing to fit a stateful extractor on, an unreadable cache.
    * Stateful extractors (``pixels_pca``, ``tfidf_svd``) are fitted on ``items`` the first time
      (a fixed-seed subset when there are many) and their state is saved in the cache; later calls
      transform new items with that same state. ``refit=True`` drops the cached rows and the state,
      refits on ``items`` and recomputes them.
    * ``progress(done, total)`` is called with ``total`` = the number of items to compute (those not
      cached; 0 when everything was cached), once at the start and after each batch.
    * ``should_cancel()`` is polled between batches; when it returns True the finished rows are saved
      and :class:`core.errors.JobCancelled` is raised.
    * Two processes computing into the same cache folder take turns (an advisory file lock); reading
      with :func:`cached_features` does not wait.

    Parameters
    ----------
    items : iterable of ItemRef, length n
    extractor_name : str or Extractor
        A key of :data:`EXTRACTORS`, or an extractor instance from :func:`get_extractor` (then
        ``options`` must be None): a caller that computes often (the app) keeps one instance so the
        network is loaded once, not on every call.
    cache_dir : path
        The project's feature folder; see :mod:`core.features.cache` for its layout.
    device : {"cpu", "cuda", "auto"}
    options : dict, optional
        Options of the extractor (see ``list_extractors()[i]["options"]``).
    progress, should_cancel : callables, optional
    failures : list, optional
        Receives the :class:`ItemFailure` of every item left out of the result.
    refit : bool
        Refit a stateful extractor (ignored by stateless ones).

    Returns
    -------
    item_ids : ndarray of shape (m,) int64
        ``m = n - number of failed items``.
    X : ndarray of shape (m, d) float32
    """
    items = _check_items(items)
    extractor = _as_extractor(extractor_name, options)
    device = resolve_device(device)
    cache = FeatureCache(cache_dir, extractor)
    ids = np.fromiter((it.id for it in items), dtype=np.int64, count=len(items))
    new_failures: list[ItemFailure] = []
    try:
        with cache.lock():
            if refit:
                cache.clear()
            if items:
                _prepare_state(extractor, cache, items, device)
            todo = _missing_items(items, ids, cache.cached_ids())
            _compute_into_cache(extractor, cache, todo, device, progress, should_cancel, new_failures)
    finally:
        if failures is not None:
            failures.extend(new_failures)
    return cache.get(ids)


def cached_features(
    extractor_name: str,
    cache_dir: str | os.PathLike,
    *,
    options: dict[str, Any] | None = None,
    item_ids: Sequence[int] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows already in the cache, computing nothing and taking no lock.

    Returns
    -------
    item_ids : ndarray of shape (m,) int64
        The requested ids that have a row, in the requested order (every cached id when None).
    X : ndarray of shape (m, d) float32
    """
    cache = FeatureCache(cache_dir, get_extractor(extractor_name, **(options or {})))
    return cache.get(None if item_ids is None else np.asarray(item_ids, dtype=np.int64))


# -------------------------------------------------------------------------------------------------- helpers
def _as_extractor(extractor: str | Extractor, options: dict[str, Any] | None) -> Extractor:
    if isinstance(extractor, Extractor):
        if options:
            raise ValidationError("The 'options' parameter of compute_features must be None when an extractor "
                                  f"instance is passed (its options are fixed). Got {options!r}.")
        return extractor
    return get_extractor(extractor, **(options or {}))


def _check_items(items: Iterable[ItemRef]) -> list[ItemRef]:
    items = list(items)
    for it in items:
        if not isinstance(it, ItemRef):
            raise ValidationError(f"The 'items' parameter of compute_features must hold ItemRef objects. "
                                  f"Got {type(it).__name__}: {it!r}.")
    return items


def _missing_items(items: list[ItemRef], ids: np.ndarray, cached: np.ndarray) -> list[ItemRef]:
    """Items without a cached row, each id once, in input order."""
    missing = ~np.isin(ids, cached)
    seen: set[int] = set()
    todo = []
    for it, miss in zip(items, missing):
        if miss and it.id not in seen:
            seen.add(it.id)
            todo.append(it)
    return todo


def _prepare_state(extractor: Extractor, cache: FeatureCache, items: list[ItemRef], device: str) -> None:
    """Load the saved state of a stateful extractor, or fit it on ``items`` and save it."""
    if not extractor.stateful:
        return
    state = cache.load_state()
    if state is not None:
        extractor.set_state(state)
        return
    cache.clear()  # rows without a state (an interrupted refit) cannot be trusted
    extractor.fit(items, device=device)
    cache.save_state(extractor.get_state())
    cache.write_meta(dim=extractor.dim, fitted_on=len(items), fitted_at=time.strftime("%Y-%m-%dT%H:%M:%S"))


def _compute_into_cache(
    extractor: Extractor,
    cache: FeatureCache,
    todo: list[ItemRef],
    device: str,
    progress: Callable[[int, int], None] | None,
    should_cancel: Callable[[], bool] | None,
    failures: list[ItemFailure],
) -> None:
    """Extract ``todo`` batch by batch, appending finished rows to the cache at least every FLUSH_SECONDS."""
    total = len(todo)
    if progress is not None:
        progress(0, total)
    if not todo:
        return
    if should_cancel is not None and should_cancel():
        raise JobCancelled(f"Feature extraction with {extractor.name!r} was cancelled before it started.")
    buf_ids: list[np.ndarray] = []
    buf_X: list[np.ndarray] = []
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        if buf_ids:
            X = np.concatenate(buf_X)
            cache.append(np.concatenate(buf_ids), X)
            if not cache.read_meta().get("dim"):
                cache.write_meta(dim=int(X.shape[1]))
            buf_ids.clear()
            buf_X.clear()
        last_flush = time.monotonic()

    gen = extractor.iter_extract(todo, device=device, failures=failures)
    done = 0
    try:
        while True:
            n_failed = len(failures)
            try:
                start, rows = next(gen)  # appends this batch's failures
            except StopIteration:
                break
            batch = todo[start:start + len(rows)]
            bad = {f.item_id for f in failures[n_failed:]}
            keep = [i for i, it in enumerate(batch) if it.id not in bad]
            if keep:
                buf_ids.append(np.array([batch[i].id for i in keep], dtype=np.int64))
                buf_X.append(rows[keep])
            done += len(rows)
            if progress is not None:
                progress(done, total)
            if time.monotonic() - last_flush > FLUSH_SECONDS or sum(map(len, buf_ids)) >= FLUSH_ROWS:
                flush()
            if should_cancel is not None and should_cancel():
                raise JobCancelled(f"Feature extraction with {extractor.name!r} was cancelled after "
                                   f"{done} of {total} items; the finished rows are cached.")
    finally:
        gen.close()
        flush()
