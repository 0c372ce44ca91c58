"""On-disk feature cache of a project: one folder per (extractor, version, options), rows appended in chunks.

Layout (``cache_dir`` is the project's feature folder, e.g. ``<project>/features``)::

    cache_dir/
      <extractor name>/
        v<version>-<options hash>/          # FeatureCache.dir; the hash covers options that change output
          meta.json                         # name, version, options, dim, state fingerprint
          state.npz                         # fitted state of a stateful extractor (arrays only, no pickle)
          chunk-<ns>-<pid>-<rand>.X.npy     # (m, d) float32 rows
          chunk-<ns>-<pid>-<rand>.ids.npy   # (m,) int64 item ids of those rows
          .lock                             # flock'd while a process computes into this folder

Why chunks rather than one ``X.npy`` rewritten on each append: adding 100 items to a 100,000 x 1,280
cache then writes 100 rows, not 500 MB, and a cancelled or crashed job keeps the chunks it finished.
Every file is written to a temporary name and moved in place with ``os.replace``; a chunk's ``X`` is
written before its ``ids``, and readers only see chunks whose ``ids`` file exists, so a reader never sees
half a chunk. Chunks are merged into one when there are more than :data:`MAX_CHUNKS`. Rows are read
through memory maps, so taking a few rows of a large cache reads only those rows. When an id appears
in two chunks (two writers raced) the first chunk in name order wins; both rows came from the same state.

Damage (a truncated or empty ``.npy``, ids and rows of different lengths, a chunk of another width, a
broken ``state.npz`` or ``meta.json``) is detected when the folder is read. Readers
(:meth:`FeatureCache.get`, :meth:`FeatureCache.cached_ids`) then raise :class:`~core.errors.FeatureError`
naming the folder and the damaged files, instead of a raw ``ValueError`` / ``EOFError`` / ``BadZipFile``
(a damaged ``meta.json`` is only logged: it is not needed to read rows). Whoever takes :meth:`FeatureCache.lock`
is about to write, so the lock first repairs the folder (:meth:`FeatureCache.repair`): damaged chunks are removed
(their rows are then computed again, like any missing row), a damaged ``meta.json`` is rewritten, and a
damaged state of a stateful extractor is removed, so the extractor is refitted and its rows recomputed (rows
made with a lost state cannot be reproduced). Each repair is logged as a warning with the folder.

Rows are keyed by item id only: an item's media is assumed not to change under the same id (a file
replaced in place needs a new item id, or the folder removed with ``FeatureCache.remove``). The compute
device is not part of the key: CPU float32 and GPU float16-autocast rows of the same extractor may sit
side by side (cosine similarity > 0.999).
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import time
import uuid
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from core.errors import FeatureError
from core.features.base import Extractor

MAX_CHUNKS = 16
_RETRIES = 5
#: what NumPy and zipfile raise on a damaged ``.npy`` / ``.npz`` (FileNotFoundError is handled apart)
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)

log = logging.getLogger(__name__)
_LOGGED: set[tuple[str, tuple[str, ...]]] = set()  # damage already logged by a reader (one line per state)


class _Damaged(Exception):
    """A cache file that exists but cannot be used: ``file`` (its name) and ``reason``."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file, self.reason = file, reason


def _log_once(folder: Path, problems: list[str], what: str) -> None:
    key = (str(folder), tuple(problems))
    if key not in _LOGGED:
        _LOGGED.add(key)
        log.warning("feature cache %s %s: %s", folder, what, "; ".join(problems))


try:  # POSIX advisory locks; elsewhere the cache is single-writer by convention
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_write_bytes(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class FeatureCache:
    """The cache folder of one extractor configuration.

    Parameters
    ----------
    cache_dir : path
        The project's feature folder (created on first write).
    extractor : Extractor
        Gives the name, version and cache key.
    """

    def __init__(self, cache_dir: str | os.PathLike, extractor: Extractor) -> None:
        self.root = Path(cache_dir)
        self.extractor = extractor
        self.dir = self.root / extractor.name / extractor.cache_key()

    # ------------------------------------------------------------------ locking
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive advisory lock on this folder (blocks while another process computes).

        The holder is about to write, so damaged files are repaired first (:meth:`repair`)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+") as fh:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                self.repair()
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # ------------------------------------------------------------------ meta and state
    def read_meta(self) -> dict[str, Any]:
        """Contents of ``meta.json``: an empty dict when it is absent or damaged (damage is logged once)."""
        meta, problem = self._read_meta()
        if problem:
            _log_once(self.dir, [problem], "has a damaged meta.json (rewritten by the next feature computation)")
        return meta

    def _read_meta(self) -> tuple[dict[str, Any], str | None]:
        """(``meta.json`` or {}, what is wrong with it or None)."""
        try:
            meta = json.loads((self.dir / "meta.json").read_text())
        except FileNotFoundError:
            return {}, None
        except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            return {}, f"meta.json: unreadable ({type(exc).__name__}: {exc})"
        if not isinstance(meta, dict):
            return {}, f"meta.json: holds a {type(meta).__name__}, not an object"
        dim = meta.get("dim", 0)
        if not (isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0):
            return {}, f"meta.json: 'dim' is {dim!r}, not an int >= 0"
        return meta, None

    def write_meta(self, **extra: Any) -> None:
        """Write ``meta.json`` with the extractor's identity and ``extra`` fields."""
        meta = {
            "name": self.extractor.name,
            "version": self.extractor.version,
            "modality": self.extractor.modality,
            "options": self.extractor.cache_options(),
            **self.read_meta(),
            **extra,
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        blob = json.dumps(meta, indent=2, sort_keys=True, default=str).encode()
        _atomic_write_bytes(self.dir / "meta.json", lambda fh: fh.write(blob))

    def load_state(self) -> dict[str, np.ndarray] | None:
        """The saved extractor state, or None when none was saved.

        Raises
        ------
        FeatureError
            Naming the file when it is damaged: unreadable, or a state the extractor cannot take.
        """
        if not (self.dir / "state.npz").exists():
            return None
        state, problem, _ = self._checked_state()
        if problem:
            raise FeatureError(f"The saved state of {self.extractor.name!r} at {self.dir} is damaged ({problem}). "
                               "The next feature computation refits the extractor and recomputes its rows "
                               "(or recompute with refit=True).")
        return state

    def _read_state(self, path: Path) -> dict[str, np.ndarray]:
        """Every array of ``state.npz`` (each read in full, so a bad CRC shows here); raises :class:`_Damaged`."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                if not hasattr(npz, "files"):
                    raise ValueError("a single array, not an .npz archive")
                return {k: npz[k] for k in npz.files}
        except _READ_ERRORS as exc:
            raise _Damaged(path.name, f"unreadable ({type(exc).__name__}: {exc})") from exc

    def _checked_state(self) -> tuple[dict[str, np.ndarray] | None, str | None, int | None]:
        """(the saved state or None, what is wrong with it or None, the output width it gives or None).

        A state is damaged when it cannot be read or, for a stateful extractor, when the extractor cannot take
        it (a copy of the extractor is set from it, so this one is left as it was)."""
        path = self.dir / "state.npz"
        if not path.is_file():
            return None, None, None
        try:
            state = self._read_state(path)
        except _Damaged as exc:
            return None, str(exc), None
        if not self.extractor.stateful:
            return state, None, None
        probe = copy.copy(self.extractor)
        try:
            probe.set_state(state)
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            return None, f"state.npz: the extractor cannot use it ({type(exc).__name__}: {exc})", None
        if not probe.is_fitted:
            return None, "state.npz: holds no fitted state", None
        dim = getattr(probe, "dim", None)
        return state, None, dim if isinstance(dim, int) and dim > 0 else None

    def save_state(self, state: dict[str, np.ndarray]) -> None:
        """Save the extractor state atomically (arrays only)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(self.dir / "state.npz", lambda fh: np.savez(fh, **state))

    # ------------------------------------------------------------------ rows
    def _chunk_names(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.name[: -len(".ids.npy")] for p in self.dir.glob("chunk-*.ids.npy"))

    def _load_chunk(self, name: str, mmap: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (m,) int64, X (m, d) float32)`` of chunk ``name``; raises :class:`_Damaged` for a chunk that
        cannot be used and FileNotFoundError when its ids file went away (a concurrent merge)."""
        ids_path, X_path = self.dir / f"{name}.ids.npy", self.dir / f"{name}.X.npy"
        try:
            ids = np.load(ids_path, allow_pickle=False)
        except FileNotFoundError:
            raise
        except _READ_ERRORS as exc:
            raise _Damaged(ids_path.name, f"unreadable ({type(exc).__name__}: {exc})") from exc
        try:
            X = np.load(X_path, allow_pickle=False, mmap_mode="r" if mmap else None)
        except FileNotFoundError:
            if ids_path.exists():  # X is written before ids and removed after them: this is no race
                raise _Damaged(X_path.name, "missing (its ids file is there)") from None
            raise
        except _READ_ERRORS as exc:
            raise _Damaged(X_path.name, f"unreadable ({type(exc).__name__}: {exc})") from exc
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise _Damaged(ids_path.name, f"holds an array of shape {ids.shape} and dtype {ids.dtype}, not item ids")
        if len(ids) == 0:
            raise _Damaged(ids_path.name, "is empty (chunks are never written empty)")
        if X.ndim != 2 or X.dtype != np.float32:
            raise _Damaged(X_path.name, f"holds an array of shape {X.shape} and dtype {X.dtype}, not (m, d) float32")
        if X.shape[0] != len(ids):
            raise _Damaged(X_path.name, f"holds {X.shape[0]} rows for the {len(ids)} ids of {ids_path.name}")
        return ids.astype(np.int64, copy=False), X

    def _scan(self, mmap: bool, dim: int | None = None
              ) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], list[tuple[str, str]]]:
        """The usable chunks (name, ids, X) and the damaged ones (name, reason); retried when a concurrent
        merge removes a chunk mid-read. Chunks whose width differs from ``dim`` (default: the width of most
        rows) are damaged."""
        for attempt in range(_RETRIES):
            try:
                good, bad = [], []
                for name in self._chunk_names():
                    try:
                        good.append((name, *self._load_chunk(name, mmap)))
                    except _Damaged as exc:
                        bad.append((name, str(exc)))
                break
            except FileNotFoundError:
                time.sleep(0.05 * (attempt + 1))
        else:
            raise FeatureError(f"The feature cache at {self.dir} kept changing while it was read; try again.")
        if good:
            if dim is None:
                widths = Counter()
                for _, ids, X in good:
                    widths[X.shape[1]] += len(ids)
                dim = max(widths, key=lambda w: widths[w])  # ties: the oldest chunk's width (insertion order)
            bad += [(name, f"{name}.X.npy: {X.shape[1]} columns where the cache has {dim}")
                    for name, _, X in good if X.shape[1] != dim]
            good = [c for c in good if c[2].shape[1] == dim]
        return good, bad

    def _read_chunks(self, mmap: bool) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """List of (chunk name, ids, X); :class:`FeatureError` naming the folder when a chunk is damaged."""
        good, bad = self._scan(mmap)
        if bad:
            problems = [reason for _, reason in bad]
            _log_once(self.dir, problems, "is damaged (the next feature computation recomputes those rows)")
            raise FeatureError(f"The feature cache at {self.dir} is damaged ({'; '.join(problems)}). The next feature "
                               "computation (a retrain, or 'python -m core features') removes the damaged files and "
                               "recomputes their rows.")
        return good

    def check(self) -> list[str]:
        """What is damaged in this folder (``"<file>: <reason>"``, empty when nothing is); changes nothing."""
        _, state_problem, state_dim = self._checked_state()
        _, bad = self._scan(mmap=True, dim=state_dim)
        _, meta_problem = self._read_meta()
        return [reason for _, reason in bad] + [p for p in (meta_problem, state_problem) if p]

    def repair(self) -> list[str]:
        """Remove damaged chunks and state, rewrite a damaged ``meta.json``; returns what was wrong.

        Call while holding :meth:`lock` (which calls it). Removed chunks' rows are then missing, so the next
        computation computes them again; without its state a stateful extractor is refitted and all of its rows
        recomputed (:func:`core.features.compute_features` does both). Logged as a warning with the folder.
        """
        if not self.dir.is_dir():
            return []
        _, state_problem, state_dim = self._checked_state()
        good, bad = self._scan(mmap=True, dim=state_dim)
        meta, meta_problem = self._read_meta()
        dim = state_dim or (good[0][2].shape[1] if good else None)
        if meta_problem is None and dim and meta.get("dim") not in (None, 0, dim):
            meta_problem = f"meta.json: 'dim' is {meta['dim']} where the rows have {dim} columns"
        for name, _ in bad:  # ids first, as in compact(): readers ignore a chunk without its ids file
            for suffix in (".ids.npy", ".X.npy"):
                with contextlib.suppress(FileNotFoundError):
                    (self.dir / f"{name}{suffix}").unlink()
        if state_problem:
            with contextlib.suppress(FileNotFoundError):
                (self.dir / "state.npz").unlink()
        if meta_problem:
            with contextlib.suppress(FileNotFoundError):
                (self.dir / "meta.json").unlink()
            if dim:
                self.write_meta(dim=int(dim), repaired_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        problems = [reason for _, reason in bad] + [p for p in (meta_problem, state_problem) if p]
        if problems:
            log.warning("feature cache %s was damaged and is repaired (%s): %s", self.dir,
                        "the extractor is refitted and its rows recomputed" if state_problem
                        else "the removed rows are recomputed", "; ".join(problems))
        return problems

    def cached_ids(self) -> np.ndarray:
        """Ids with a cached row, shape (m,) int64, unique, in storage order."""
        chunks = self._read_chunks(mmap=True)
        if not chunks:
            return np.zeros(0, dtype=np.int64)
        ids = np.concatenate([c[1] for c in chunks])
        _, first = np.unique(ids, return_index=True)
        return ids[np.sort(first)]

    def get(self, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Cached rows.

        Parameters
        ----------
        ids : ndarray of shape (k,), optional
            Ids wanted; None for every cached row.

        Returns
        -------
        found_ids : ndarray of shape (m,) int64
            The ids found: in the order of ``ids`` (those without a row left out), or storage order.
        X : ndarray of shape (m, d) float32
        """
        chunks = self._read_chunks(mmap=True)
        dim = int(self.read_meta().get("dim", 0))
        if not chunks:
            return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
        all_ids = np.concatenate([c[1] for c in chunks])
        chunk_of = np.concatenate([np.full(len(c[1]), k) for k, c in enumerate(chunks)])
        row_of = np.concatenate([np.arange(len(c[1])) for c in chunks])
        uniq, first = np.unique(all_ids, return_index=True)  # first occurrence wins
        if ids is None:
            pos = np.sort(first)
        else:
            ids = np.asarray(ids, dtype=np.int64)
            idx = np.searchsorted(uniq, ids)
            idx = np.clip(idx, 0, max(len(uniq) - 1, 0))
            hit = uniq[idx] == ids
            pos = first[idx[hit]]
        dim = chunks[0][2].shape[1]
        X = np.empty((len(pos), dim), dtype=np.float32)
        for k, (_, _, Xc) in enumerate(chunks):
            sel = np.nonzero(chunk_of[pos] == k)[0]
            if len(sel):
                X[sel] = Xc[row_of[pos[sel]]]
        return all_ids[pos], X

    def append(self, ids: np.ndarray, X: np.ndarray) -> None:
        """Add rows as a new chunk. ``ids`` (m,) int64, ``X`` (m, d) float32."""
        ids = np.asarray(ids, dtype=np.int64)
        X = np.ascontiguousarray(X, dtype=np.float32)
        if len(ids) == 0:
            return
        if X.ndim != 2 or X.shape[0] != len(ids):
            raise FeatureError(f"Cannot cache rows of shape {X.shape} for {len(ids)} ids.")
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"chunk-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        _atomic_save_npy(self.dir / f"{name}.X.npy", X)
        _atomic_save_npy(self.dir / f"{name}.ids.npy", ids)
        if len(self._chunk_names()) > MAX_CHUNKS:
            self.compact()

    def compact(self) -> None:
        """Merge every chunk into one (call while holding :meth:`lock`)."""
        chunks = self._read_chunks(mmap=True)
        if len(chunks) <= 1:
            return
        ids, X = self.get()
        name = f"chunk-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        _atomic_save_npy(self.dir / f"{name}.X.npy", X)
        _atomic_save_npy(self.dir / f"{name}.ids.npy", ids)
        for old, _, _ in chunks:  # ids first: readers ignore a chunk without its ids file
            for suffix in (".ids.npy", ".X.npy"):
                with contextlib.suppress(FileNotFoundError):
                    (self.dir / f"{old}{suffix}").unlink()

    def clear(self) -> None:
        """Remove every row, the state and the meta (call while holding :meth:`lock`)."""
        if not self.dir.is_dir():
            return
        for name in self._chunk_names():  # ids first, as in compact()
            with contextlib.suppress(FileNotFoundError):
                (self.dir / f"{name}.ids.npy").unlink()
        leftovers = [*self.dir.glob("chunk-*"), *self.dir.glob(".*.tmp"),
                     self.dir / "state.npz", self.dir / "meta.json"]
        for path in leftovers:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def remove(self) -> None:
        """Delete the whole folder of this configuration."""
        shutil.rmtree(self.dir, ignore_errors=True)
