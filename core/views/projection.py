"""2-D UMAP projection of item features, cached on disk and updated incrementally.

The map an analyst looks at must not jump every time a few items are imported, and refitting UMAP
on 100k items takes minutes. So the projection of one feature set (one ``key``, e.g.
``"image-clip-vitb32"``) is cached in ``cache_dir/<key>/`` (see :func:`key_folder_name` for keys that
are not plain file names):

* ``model-<token>.joblib``: the fitted :class:`umap.UMAP` (it keeps its training data and k-NN
  graph, which :meth:`umap.UMAP.transform` needs), a pickle signed by this installation
  (:mod:`core.io.artefacts`): one it did not sign (a project copied from elsewhere, a replaced file) is
  never unpickled, and the map is refitted instead, with the reason in ``state.json``'s
  ``extra.last_refit_reason``;
* ``coords-<token>.npz``: ``ids`` (m,) and ``coords`` (m, 2) float32 of every item projected so far,
  and ``fit_ids`` (the items the model was fitted on);
* ``state.json``: the UMAP parameters, the file names above, and counters (``n_fits``,
  ``n_transforms``). It is written last, atomically (temp file + :func:`os.replace`), so it is the
  commit point: a crash leaves the previous state in force. Superseded files are removed after it.

:func:`project` then, for the ids asked for,

* reuses the cached coordinates of items already projected (they do not move);
* places NEW items with ``umap_model.transform`` (fast: a k-NN query and a short optimisation),
  unless the items not in the fitted set (new ones plus earlier transformed ones still present)
  would exceed ``refit_fraction`` of the fitted set: then it refits on all current items, and
  aligns the new map to the old one (similarity Procrustes on the common items) so it keeps its
  orientation;
* drops ids that are no longer asked for from the cache;
* refits when there is no cache, the parameters or the feature dimension changed, or a cached
  file is missing, damaged or (the model) not signed by this installation.

The cache is keyed by ``key`` only: the caller must use a new key when the features of existing
items change (a new extractor, a new checkpoint), since cached coordinates are never recomputed.
A model's own embedding changes with every run, so :func:`embedding_key` names it by a fingerprint of
its values; such a first fit is aligned to a reference map (``align_to``: the previous run's coordinates)
with the same similarity Procrustes, so the map keeps its orientation from run to run, and
:func:`prune` removes the caches of superseded embeddings.

Size rules
    * Fewer than :data:`MIN_UMAP_POINTS` items cannot be embedded by UMAP (its spectral
      initialisation needs more points than dimensions): they get a PCA layout (zeros for one
      item) and nothing is cached.
    * ``init="auto"`` uses UMAP's spectral initialisation below :data:`PCA_INIT_N` items and a PCA
      initialisation from there on (of the unit-normalised rows for the cosine and correlation
      metrics, scaled to UMAP's initial range). The spectral layout is an eigen-decomposition of
      the k-NN graph whose cost depends on how fragmented the graph is: warm 10k-point fits of
      tiled digits (200 epochs, 2 shared cores) took 8-48 s with it and 4-5 s from PCA, and
      ``bench/bench_query_umap.py`` fits 100k points in about 25 s from PCA. A PCA start keeps the
      global arrangement as well for a map (Kobak & Linderman, Nat. Biotechnol. 2021).
    * From :data:`LARGE_N` items on, UMAP runs with ``low_memory=True`` and
      :data:`LARGE_N_EPOCHS` optimisation epochs instead of its default 200 (the layout is settled
      for visual use; it halves the optimisation time).
    * ``random_state`` makes runs reproducible but makes UMAP single-threaded (about 2x slower
      on 2 cores at 10k points); pass ``random_state=None`` on a many-core worker.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import uuid
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from core.errors import check_choice, check_param

__all__ = [
    "MIN_UMAP_POINTS",
    "LARGE_N",
    "LARGE_N_EPOCHS",
    "PCA_INIT_N",
    "ProjectionParams",
    "ProjectionState",
    "Projection",
    "project",
    "load_state",
    "load_model",
    "clear",
    "small_layout",
    "key_folder_name",
    "embedding_key",
    "prune",
]

#: below this many items the layout is PCA (or zeros), not UMAP
MIN_UMAP_POINTS = 5
#: from this many items on UMAP runs with ``low_memory=True`` and fewer epochs
LARGE_N = 50_000
#: optimisation epochs used from ``LARGE_N`` items on (UMAP's own default is 200 above 10k items)
LARGE_N_EPOCHS = 100
#: from this many items on ``init="auto"`` starts UMAP from a PCA layout instead of a spectral one
PCA_INIT_N = 10_000
_INITS = ("auto", "spectral", "pca", "random")

_OWNER = "project"
log = logging.getLogger(__name__)
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=@-]{0,127}$")
_STATE = "state.json"
_FORMAT = 1

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class ProjectionParams:
    """The UMAP settings a cached projection was made with (a change forces a refit)."""

    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "cosine"
    random_state: int | None = 0
    n_features: int = 0
    init: str = "auto"


@dataclass
class ProjectionState:
    """What the cache holds for one key (the model itself is loaded separately, see :func:`load_model`).

    Attributes
    ----------
    key : str
    params : ProjectionParams
    ids : np.ndarray, shape (m,)
        Every item projected and still present, in cache order.
    coords : np.ndarray, shape (m, 2), float32
    fit_ids : np.ndarray, shape (n_fit,)
        Items the UMAP model was fitted on.
    n_fits, n_transforms : int
        How many times this key was (re)fitted and how many incremental transforms ran since.
    model_file, coords_file : str
        File names inside the key's folder.
    updated_at : str
        ISO 8601 UTC time of the last write.
    """

    key: str
    params: ProjectionParams
    ids: np.ndarray
    coords: np.ndarray
    fit_ids: np.ndarray
    n_fits: int = 0
    n_transforms: int = 0
    model_file: str = ""
    coords_file: str = ""
    updated_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- files
def key_folder_name(key: str) -> str:
    """The folder name of ``key``: the key itself when it is a safe file name, else a slug and a hash.

    Examples
    --------
    >>> key_folder_name("features-clip+mfcc")
    'features-clip+mfcc'
    >>> key_folder_name("../hf/all-MiniLM")
    'hf-all-MiniLM-e479b079'
    """
    check_param(_OWNER, "key", key, isinstance(key, str) and key.strip() != "", "a non-empty string")
    if _KEY_RE.match(key):
        return key
    slug = re.sub(r"[^A-Za-z0-9_.+=@-]+", "-", key).strip("-.")[:80] or "key"
    return f"{slug}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def _key_dir(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / key_folder_name(key)


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through a temp file in the same folder and :func:`os.replace` it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def load_state(cache_dir: Path | str, key: str) -> ProjectionState | None:
    """Read the cached ids and coordinates of ``key`` (cheap: does not unpickle the model).

    Returns
    -------
    ProjectionState or None
        ``None`` when nothing usable is cached: no state, a newer format, a missing file, or a damaged one
        (unreadable JSON or ``.npz``, coordinates that do not match the ids, file names that are not this
        module's own, such as a path out of the folder in a received project); damage is logged with the
        folder, and the next :func:`project` refits.
    """
    folder = _key_dir(Path(cache_dir), key)
    state_path = folder / _STATE
    if not state_path.is_file():
        return None
    try:
        meta = json.loads(state_path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("projection cache %s: unreadable %s (%s); it is refitted", folder, _STATE, exc)
        return None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        return None
    try:
        return _read_state(folder, key, meta)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("projection cache %s is damaged (%s: %s); it is refitted", folder, type(exc).__name__, exc)
        return None


_MODEL_FILE_RE = re.compile(r"^(model-[0-9a-f]{1,32}\.joblib)?$")
_COORDS_FILE_RE = re.compile(r"^coords-[0-9a-f]{1,32}\.npz$")


def _read_state(folder: Path, key: str, meta: dict) -> ProjectionState:
    """The :class:`ProjectionState` of ``meta`` (the parsed ``state.json``) and its coordinates file.

    Raises ValueError / KeyError / TypeError / OSError on anything damaged or foreign."""
    model_file, coords_file = meta["model_file"], meta["coords_file"]
    if not (isinstance(model_file, str) and _MODEL_FILE_RE.match(model_file)
            and isinstance(coords_file, str) and _COORDS_FILE_RE.match(coords_file)):
        raise ValueError(f"file names {model_file!r} / {coords_file!r} are not this cache's own")
    with np.load(folder / coords_file, allow_pickle=False) as npz:
        ids, coords, fit_ids = npz["ids"], npz["coords"], npz["fit_ids"]
    if ids.ndim != 1 or coords.shape != (ids.shape[0], 2) or fit_ids.ndim != 1:
        raise ValueError(f"coordinates of shape {coords.shape} for {ids.shape} ids")
    return ProjectionState(
        key=key, params=ProjectionParams(**meta["params"]), ids=ids, coords=coords.astype(np.float32),
        fit_ids=fit_ids, n_fits=int(meta["n_fits"]), n_transforms=int(meta["n_transforms"]),
        model_file=model_file, coords_file=coords_file, updated_at=str(meta.get("updated_at", "")),
        extra=dict(meta.get("extra", {})),
    )


def load_model(cache_dir: Path | str, key: str, state: ProjectionState | None = None) -> Any | None:
    """The fitted :class:`umap.UMAP` of ``key``, or ``None`` when there is none.

    The model is a pickle signed by this installation (:func:`core.io.artefacts.write_signed_pickle`); its
    signature is checked before it is unpickled.

    Raises
    ------
    core.io.artefacts.UntrustedArtefact
        When the model file carries no valid signature of this installation (a project copied from elsewhere,
        a replaced file); it is not unpickled. :func:`project` then refits and records why.
    """
    from core.io.artefacts import read_signed_pickle

    state = state if state is not None else load_state(cache_dir, key)
    if state is None or not state.model_file:
        return None
    path = _key_dir(Path(cache_dir), key) / state.model_file
    if not path.is_file():
        return None
    return read_signed_pickle(path, remedy=f"recompute the projection (the next retrain refits it, or clear the "
                                           f"cache of {key!r})")


def clear(cache_dir: Path | str, key: str) -> None:
    """Delete everything cached for ``key`` (the next :func:`project` refits)."""
    folder = _key_dir(Path(cache_dir), key)
    if not folder.is_dir():
        return
    (folder / _STATE).unlink(missing_ok=True)
    for path in folder.iterdir():
        if path.is_file() and (path.name.startswith(("model-", "coords-")) or path.name.endswith(".tmp")):
            path.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:  # someone else's file in there: leave the folder
        pass


def _save(folder: Path, state: ProjectionState, model: Any | None, previous: ProjectionState | None) -> None:
    """Write the coords (and model, when given, as a signed pickle) under fresh names, then commit ``state.json``."""
    from core.io.artefacts import write_signed_pickle

    token = uuid.uuid4().hex[:12]
    if model is not None:
        state.model_file = f"model-{token}.joblib"
        _atomic_write(folder / state.model_file, lambda p: write_signed_pickle(p, model))
    state.coords_file = f"coords-{token}.npz"

    def write_npz(p: Path) -> None:
        with open(p, "wb") as fh:
            np.savez(fh, ids=state.ids, coords=state.coords.astype(np.float32), fit_ids=state.fit_ids)

    _atomic_write(folder / state.coords_file, write_npz)
    state.updated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta = {
        "format": _FORMAT, "key": state.key, "params": asdict(state.params), "n_fits": state.n_fits,
        "n_transforms": state.n_transforms, "model_file": state.model_file, "coords_file": state.coords_file,
        "updated_at": state.updated_at, "n_items": int(state.ids.shape[0]),
        "n_fit_items": int(state.fit_ids.shape[0]), "extra": state.extra,
    }
    _atomic_write(folder / _STATE, lambda p: p.write_text(json.dumps(meta, indent=1)))
    if previous is not None:  # remove only what the state we replaced referenced
        for name in (previous.coords_file, previous.model_file):
            if name and name not in (state.coords_file, state.model_file):
                (folder / name).unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------- layouts
def small_layout(X: np.ndarray) -> np.ndarray:
    """PCA layout for a handful of items, where UMAP cannot run.

    Parameters
    ----------
    X : np.ndarray, shape (n, d)

    Returns
    -------
    np.ndarray, shape (n, 2), float32
        The first two principal component scores (a zero column where the rank is lower); all
        zeros for ``n <= 1``.
    """
    n = X.shape[0]
    out = np.zeros((n, 2), np.float32)
    if n <= 1:
        return out
    Xc = np.asarray(X, np.float64) - np.asarray(X, np.float64).mean(axis=0)
    U, S, _ = np.linalg.svd(Xc, full_matrices=False)
    r = min(2, S.shape[0])
    Y = U[:, :r] * S[:r]
    signs = np.sign(Y[np.argmax(np.abs(Y), axis=0), np.arange(r)])  # deterministic orientation
    out[:, :r] = Y * np.where(signs == 0, 1.0, signs)
    return out


def _procrustes(Y: np.ndarray, Y_ref: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray] | None:
    """Similarity transform (scale, rotation/reflection, translation) taking ``Y`` onto ``Y_ref``.

    Parameters
    ----------
    Y, Y_ref : np.ndarray, shape (m, 2)
        The same items in the new and in the old map.

    Returns
    -------
    (scale, R (2, 2), mu (2,), mu_ref (2,)) or None when degenerate; apply as
    ``scale * (Z - mu) @ R + mu_ref``.
    """
    mu, mu_ref = Y.mean(axis=0), Y_ref.mean(axis=0)
    A, B = Y - mu, Y_ref - mu_ref
    norm = float((A ** 2).sum())
    if norm <= 1e-12 or float((B ** 2).sum()) <= 1e-12:
        return None
    U, S, Vt = np.linalg.svd(A.T @ B)
    return float(S.sum() / norm), U @ Vt, mu, mu_ref


def _pca_init(X: np.ndarray, metric: str, random_state: int | None) -> np.ndarray:
    """Initial 2-D layout for UMAP from the first two principal components.

    Rows are unit-normalised first for the cosine metric (and also centred for correlation), so
    the start reflects the geometry UMAP will use. Scaled like UMAP's own initialisations: the
    largest coordinate is 10, plus a little noise so duplicate rows do not coincide.

    Parameters
    ----------
    X : np.ndarray, shape (n, d), float32

    Returns
    -------
    np.ndarray, shape (n, 2), float32
    """
    from sklearn.decomposition import PCA

    Z = np.asarray(X, np.float32)
    if metric == "correlation":
        Z = Z - Z.mean(axis=1, keepdims=True)
    if metric in ("cosine", "correlation"):
        Z = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    n_comp = min(2, Z.shape[1])
    Y = np.zeros((Z.shape[0], 2), np.float32)
    Y[:, :n_comp] = PCA(n_components=n_comp, svd_solver="randomized", random_state=random_state).fit_transform(Z)
    Y *= 10.0 / max(float(np.abs(Y).max()), 1e-12)
    rng = np.random.default_rng(random_state)
    return (Y + rng.normal(scale=1e-4, size=Y.shape)).astype(np.float32)


def _make_umap(n: int, params: ProjectionParams, n_epochs: int | None, X: np.ndarray) -> Any:
    import umap

    kwargs: dict[str, Any] = {}
    init = params.init
    if init == "auto":
        init = "pca" if n >= PCA_INIT_N else "spectral"
    kwargs["init"] = _pca_init(X, params.metric, params.random_state) if init == "pca" else init
    if n >= LARGE_N:
        kwargs["low_memory"] = True
        kwargs["n_epochs"] = LARGE_N_EPOCHS if n_epochs is None else n_epochs
    elif n_epochs is not None:
        kwargs["n_epochs"] = n_epochs
    return umap.UMAP(n_components=2, n_neighbors=max(2, min(params.n_neighbors, n - 1)),
                     min_dist=params.min_dist, metric=params.metric, random_state=params.random_state, **kwargs)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence UMAP's notice that a fixed random_state makes it single-threaded (documented above)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
        yield


# --------------------------------------------------------------------------------------------- API
def _check_inputs(ids: np.ndarray, X: np.ndarray, refit_fraction: float, n_neighbors: int, min_dist: float,
                  metric: str, random_state: int | None, progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(ids)
    check_param(_OWNER, "ids", f"array of shape {ids.shape}", ids.ndim == 1, "a 1-D array of item ids")
    check_param(_OWNER, "ids", f"array of dtype {ids.dtype}", ids.dtype.kind in "iuU" or ids.size == 0,
                "an array of integer or string ids")
    X = np.asarray(X)
    check_param(_OWNER, "X", f"array of shape {X.shape}", X.ndim == 2 and X.shape[0] == ids.shape[0]
                and X.shape[1] >= 1, f"a 2-D (n, d) feature array with one row per id ({ids.shape[0]})")
    X = X.astype(np.float32, copy=False)
    if X.size:
        check_param(_OWNER, "X", "an array with NaN or infinite values", bool(np.isfinite(X).all()), "finite")
    if ids.size:
        check_param(_OWNER, "ids", "an array with repeated ids", np.unique(ids).shape[0] == ids.shape[0],
                    "unique")
    check_param(_OWNER, "refit_fraction", refit_fraction,
                isinstance(refit_fraction, (int, float)) and not isinstance(refit_fraction, bool)
                and refit_fraction >= 0, "a float >= 0")
    check_param(_OWNER, "n_neighbors", n_neighbors,
                isinstance(n_neighbors, (int, np.integer)) and not isinstance(n_neighbors, bool) and n_neighbors >= 2,
                "an int >= 2")
    check_param(_OWNER, "min_dist", min_dist, isinstance(min_dist, (int, float)) and min_dist >= 0, "a float >= 0")
    check_param(_OWNER, "metric", metric, isinstance(metric, str) and bool(metric), "a UMAP metric name")
    check_param(_OWNER, "random_state", random_state,
                random_state is None or (isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool)),
                "an int or None")
    check_param(_OWNER, "progress", progress, progress is None or callable(progress),
                "a callable progress(fraction, message) or None")
    return ids, X


def _lookup(ids: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``ids`` (n,): whether it is in ``table`` (m,) and its position there (n,) int64."""
    if table.shape[0] == 0 or ids.shape[0] == 0:
        return np.zeros(ids.shape[0], bool), np.zeros(ids.shape[0], np.int64)
    try:
        order = np.argsort(table, kind="stable")
        sorted_table = table[order]
        pos = np.searchsorted(sorted_table, ids)
    except TypeError:  # ids changed type (ints vs strings) between calls: nothing matches
        return np.zeros(ids.shape[0], bool), np.zeros(ids.shape[0], np.int64)
    pos = np.clip(pos, 0, table.shape[0] - 1)
    found = sorted_table[pos] == ids
    return np.asarray(found, bool), order[pos].astype(np.int64)


def _check_align_to(align_to: Any) -> tuple[np.ndarray, np.ndarray] | None:
    if align_to is None:
        return None
    ok = isinstance(align_to, (tuple, list)) and len(align_to) == 2
    check_param(_OWNER, "align_to", type(align_to).__name__, ok, "None or a pair (ids (m,), coords (m, 2))")
    ref_ids, ref_xy = np.asarray(align_to[0]), np.asarray(align_to[1], dtype=np.float64)
    ok = ref_ids.ndim == 1 and ref_xy.shape == (ref_ids.shape[0], 2) and bool(np.isfinite(ref_xy).all())
    check_param(_OWNER, "align_to", f"ids of shape {ref_ids.shape} and coords of shape {ref_xy.shape}", ok,
                "a pair (ids (m,), finite coords (m, 2))")
    return ref_ids, ref_xy


def _align(coords: np.ndarray, ids: np.ndarray, ref_ids: np.ndarray, ref_xy: np.ndarray) -> tuple[np.ndarray, bool]:
    """``coords`` (n, 2) moved by the similarity transform that best takes them onto ``ref_xy`` (m, 2) on the
    items both hold; unchanged (and False) with fewer than 3 common items or a degenerate map."""
    common, cpos = _lookup(ids, ref_ids)
    if common.sum() < 3:
        return coords, False
    fit = _procrustes(coords[common].astype(np.float64), ref_xy[cpos[common]].astype(np.float64))
    if fit is None:
        return coords, False
    s, R, mu, mu_ref = fit
    return (s * (coords.astype(np.float64) - mu) @ R + mu_ref).astype(np.float32), True


def project(ids: np.ndarray, X: np.ndarray, cache_dir: Path | str, *, key: str, n_neighbors: int = 15,
            min_dist: float = 0.1, metric: str = "cosine", random_state: int | None = 0,
            refit_fraction: float = 0.2, n_epochs: int | None = None, init: str = "auto",
            progress: Progress | None = None,
            align_to: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """2-D coordinates of the items ``ids`` from their features ``X``, reusing the cache of ``key``.

    Parameters
    ----------
    ids : np.ndarray, shape (n,), int or str
        Unique item ids.
    X : np.ndarray, shape (n, d)
        Features, one row per id (cast to float32).
    cache_dir : Path
        Folder holding one sub-folder per key (created when missing).
    key : str
        Names the feature set; use a new key when the features of existing items change. Any
        non-empty string; see :func:`key_folder_name` for its folder.
    n_neighbors, min_dist, metric, random_state
        UMAP settings (``n_neighbors`` is capped at ``n - 1`` for small sets). A change refits.
    refit_fraction : float
        Refit when the items not in the fitted set would exceed this fraction of it; otherwise new
        items are placed with ``transform``. ``0`` refits on every new item.
    n_epochs : int, optional
        UMAP optimisation epochs; default UMAP's own (200 above 10k items, 500 below), and
        :data:`LARGE_N_EPOCHS` from :data:`LARGE_N` items on.
    init : {"auto", "spectral", "pca", "random"}
        UMAP's initial layout; ``"auto"`` is spectral below :data:`PCA_INIT_N` items, PCA from there
        on (see the module docstring). A change refits.
    progress : callable, optional
        ``progress(fraction in [0, 1], message)``, called at each stage.
    align_to : (ids (m,), coords (m, 2)), optional
        A reference map (e.g. the previous run's) that a fit with no cached map of ``key`` to align to is
        aligned to (similarity Procrustes on the common items, at least 3). Cached coordinates never move.

    Returns
    -------
    np.ndarray, shape (n, 2), float32
        Coordinates in the order of ``ids``. Items already projected keep their cached coordinates.

    Raises
    ------
    ValidationError
        On malformed inputs (shapes, repeated ids, non-finite features, bad parameters).
    """
    ids, X = _check_inputs(ids, X, refit_fraction, n_neighbors, min_dist, metric, random_state, progress)
    reference = _check_align_to(align_to)
    check_choice(_OWNER, "init", init, _INITS)
    check_param(_OWNER, "n_epochs", n_epochs,
                n_epochs is None or (isinstance(n_epochs, (int, np.integer)) and not isinstance(n_epochs, bool)
                                     and n_epochs >= 1), "an int >= 1 or None")

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(float(fraction), message)

    n = ids.shape[0]
    if n < MIN_UMAP_POINTS:
        report(1.0, f"{n} items: PCA layout, UMAP needs at least {MIN_UMAP_POINTS}")
        return small_layout(X)

    cache_dir = Path(cache_dir)
    folder = _key_dir(cache_dir, key)
    params = ProjectionParams(n_neighbors=int(n_neighbors), min_dist=float(min_dist), metric=metric,
                              random_state=None if random_state is None else int(random_state),
                              n_features=int(X.shape[1]), init=init)
    report(0.0, "reading the projection cache")
    state = load_state(cache_dir, key)

    reason = ""
    known = np.zeros(n, bool)
    pos = np.zeros(n, np.int64)
    if state is None:
        reason = "no cached projection"
    elif state.params != params:
        reason = "UMAP parameters or feature dimension changed"
    elif not state.model_file or not (folder / state.model_file).is_file():
        reason = "cached model missing"
    else:
        known, pos = _lookup(ids, state.ids)
        in_fit, _ = _lookup(ids, state.fit_ids)
        outside = int((~in_fit).sum())
        if outside > refit_fraction * state.fit_ids.shape[0]:
            reason = (f"{outside} items outside the fitted set exceed refit_fraction={refit_fraction} "
                      f"of {state.fit_ids.shape[0]}")
    model = None
    if not reason and state is not None and not known.all():  # new items to place: the model is needed
        model, reason = _cached_model(cache_dir, key, state)

    if reason or state is None:
        report(0.05, f"fitting UMAP on {n} items ({reason})")
        model = _make_umap(n, params, n_epochs, X)
        with _quiet():
            coords = np.asarray(model.fit_transform(X), np.float32)
        aligned_to = ""
        if state is not None:  # keep the orientation of this key's previous map
            coords, done = _align(coords, ids, state.ids, state.coords)
            aligned_to = "previous fit" if done else ""
        elif reference is not None:  # a first fit: take the orientation of the reference map
            coords, done = _align(coords, ids, *reference)
            aligned_to = "reference" if done else ""
        new_state = ProjectionState(
            key=key, params=params, ids=ids.copy(), coords=coords, fit_ids=ids.copy(),
            n_fits=(state.n_fits if state is not None else 0) + 1, n_transforms=0,
            extra={"last_refit_reason": reason, "aligned_to": aligned_to},
        )
        report(0.9, "saving the projection")
        _save(folder, new_state, model, state)
        report(1.0, f"fitted UMAP on {n} items")
        return coords

    coords = np.zeros((n, 2), np.float32)
    coords[known] = state.coords[pos[known]]
    new = ~known
    n_new = int(new.sum())
    n_removed = int(state.ids.shape[0] - known.sum())
    if n_new:
        report(0.1, f"placing {n_new} new items with the fitted UMAP")
        with _quiet():
            coords[new] = np.asarray(model.transform(X[new]), np.float32)
    if n_new or n_removed:
        new_state = ProjectionState(
            key=key, params=params, ids=ids.copy(), coords=coords, fit_ids=state.fit_ids,
            n_fits=state.n_fits, n_transforms=state.n_transforms + (1 if n_new else 0),
            model_file=state.model_file, extra=dict(state.extra),
        )
        report(0.9, "saving the projection")
        _save(folder, new_state, None, state)
    report(1.0, f"{n - n_new} cached, {n_new} placed, {n_removed} dropped")
    return coords


def _cached_model(cache_dir: Path, key: str, state: ProjectionState) -> tuple[Any | None, str]:
    """The cached UMAP model of ``key`` to place new items with, or None and why the map is refitted instead
    (a model this installation did not sign is never unpickled; one that vanished is refitted too)."""
    from core.io.artefacts import UntrustedArtefact

    try:
        model = load_model(cache_dir, key, state)
    except UntrustedArtefact as exc:
        log.warning("projection cache %s: %s", _key_dir(cache_dir, key), exc)
        return None, f"cached model refused: {exc}"
    except OSError as exc:
        return None, f"cached model unreadable ({type(exc).__name__}: {exc})"
    return (model, "") if model is not None else (None, "cached model missing")


class Projection:
    """The cached projection of one feature set: :func:`project` with its settings bound.

    Parameters
    ----------
    cache_dir : Path
        Folder of the project's projection caches.
    key : str
        Names the feature set (see :func:`project`).
    n_neighbors, min_dist, metric, random_state, refit_fraction, n_epochs, init
        See :func:`project`.

    Examples
    --------
    >>> proj = Projection(tmp_path, key="image-clip")                     # doctest: +SKIP
    >>> xy = proj.project(ids, X)                                         # doctest: +SKIP
    >>> proj.state().n_fits                                               # doctest: +SKIP
    1
    """

    def __init__(self, cache_dir: Path | str, *, key: str, n_neighbors: int = 15, min_dist: float = 0.1,
                 metric: str = "cosine", random_state: int | None = 0, refit_fraction: float = 0.2,
                 n_epochs: int | None = None, init: str = "auto") -> None:
        _key_dir(Path(cache_dir), key)  # validates the key
        self.cache_dir = Path(cache_dir)
        self.key = key
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.metric = metric
        self.random_state = random_state
        self.refit_fraction = refit_fraction
        self.n_epochs = n_epochs
        self.init = init

    def project(self, ids: np.ndarray, X: np.ndarray, *, progress: Progress | None = None) -> np.ndarray:
        """See :func:`project`. Returns (n, 2) float32 coordinates in the order of ``ids``."""
        return project(ids, X, self.cache_dir, key=self.key, n_neighbors=self.n_neighbors, min_dist=self.min_dist,
                       metric=self.metric, random_state=self.random_state, refit_fraction=self.refit_fraction,
                       n_epochs=self.n_epochs, init=self.init, progress=progress)

    def state(self) -> ProjectionState | None:
        """The cached ids, coordinates and counters, or ``None``."""
        return load_state(self.cache_dir, self.key)

    def model(self) -> Any | None:
        """The fitted :class:`umap.UMAP`, or ``None``; see :func:`load_model` (a model this installation did not
        sign raises :class:`core.io.artefacts.UntrustedArtefact` and is not unpickled)."""
        return load_model(self.cache_dir, self.key)

    def coords(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(ids (m,), coords (m, 2) float32)`` as cached, without fitting anything; ``None`` when empty."""
        st = self.state()
        return None if st is None else (st.ids, st.coords)

    def clear(self) -> None:
        """Forget the cached projection of this key."""
        clear(self.cache_dir, self.key)

    def __repr__(self) -> str:
        return f"Projection(cache_dir={str(self.cache_dir)!r}, key={self.key!r})"


def embedding_key(prefix: str, ids: np.ndarray, X: np.ndarray) -> str:
    """A cache key for features that change with every run (a model's embedding): ``<prefix>-<fingerprint>``.

    Parameters
    ----------
    prefix : str
        E.g. ``"dec-embedding"``.
    ids : np.ndarray, shape (n,)
    X : np.ndarray, shape (n, d)

    Returns
    -------
    str
        ``prefix`` and the first 16 hex digits of the SHA-1 of the ids, the shape and the float32 values:
        the same embedding gets the same key (and reuses its cache), any other gets a new one.
    """
    check_param(_OWNER, "prefix", prefix, isinstance(prefix, str) and bool(_KEY_RE.match(prefix or "")),
                "a plain key such as 'dec-embedding'")
    h = hashlib.sha1()
    ids = np.ascontiguousarray(ids)
    X = np.ascontiguousarray(X, dtype=np.float32)
    h.update(str((ids.dtype.str, X.shape)).encode())
    h.update(ids.tobytes())
    h.update(X.tobytes())
    return f"{prefix}-{h.hexdigest()[:16]}"


def prune(cache_dir: Path | str, prefix: str, *, keep: str) -> list[str]:
    """Clear the cached projections whose key folder starts with ``prefix`` except ``keep``'s.

    Used for run embeddings (:func:`embedding_key`): a superseded embedding's map is never asked for again.
    Returns the folder names removed.
    """
    cache_dir = Path(cache_dir)
    keep_name = key_folder_name(keep)
    removed = []
    if not cache_dir.is_dir():
        return removed
    for folder in sorted(cache_dir.iterdir()):
        if folder.is_dir() and folder.name.startswith(prefix) and folder.name != keep_name:
            clear(cache_dir, folder.name)
            removed.append(folder.name)
    return removed


MAP_INPUT_DIM = 128


def reduce_for_map(X: np.ndarray, *, dim: int = MAP_INPUT_DIM, seed: int = 0) -> np.ndarray:
    """Shrink wide features (d > ``dim``) with a fixed Gaussian random projection before UMAP.

    Random projections keep pairwise distances and angles approximately (Johnson-Lindenstrauss) and need no
    fitted state: the same input dimension always gives the same projection, so items added later land in
    the same space as those the cached UMAP was fitted on. On 5,000 x 1,280 features the fit took 16.2 s
    on the 1,280 columns and 11.4 s after the projection (bench/bench_query_umap.py --wide,
    bench/results/query_umap.json, 2-core CPU).

    Parameters
    ----------
    X : ndarray (n, d)

    Returns
    -------
    ndarray (n, min(d, dim)) float32
    """
    X = np.asarray(X, dtype=np.float32)
    if X.shape[1] <= dim:
        return X
    R = np.random.default_rng(seed + X.shape[1]).normal(0.0, 1.0 / np.sqrt(dim), size=(X.shape[1], dim))
    return X @ R.astype(np.float32)
