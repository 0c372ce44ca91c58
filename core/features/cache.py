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

Rows are keyed by item id only: an item's media is assumed not to change under the same id (a file
replaced in place needs a new item id, or the folder removed with ``FeatureCache.remove``). The compute
device is not part of the key: CPU float32 and GPU float16-autocast rows of the same extractor may sit
side by side (cosine similarity > 0.999).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from core.errors import FeatureError
from core.features.base import Extractor

MAX_CHUNKS = 16
_RETRIES = 5

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
        """Hold an exclusive advisory lock on this folder (blocks while another process computes)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+") as fh:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # ------------------------------------------------------------------ meta and state
    def read_meta(self) -> dict[str, Any]:
        """Contents of ``meta.json`` (empty dict when absent)."""
        try:
            return json.loads((self.dir / "meta.json").read_text())
        except FileNotFoundError:
            return {}

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
        """The saved extractor state, or None when none was saved."""
        path = self.dir / "state.npz"
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise FeatureError(f"The saved state of {self.extractor.name!r} at {path} is unreadable: {exc}. "
                               "Recompute with refit=True.") from exc

    def save_state(self, state: dict[str, np.ndarray]) -> None:
        """Save the extractor state atomically (arrays only)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(self.dir / "state.npz", lambda fh: np.savez(fh, **state))

    # ------------------------------------------------------------------ rows
    def _chunk_names(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.name[: -len(".ids.npy")] for p in self.dir.glob("chunk-*.ids.npy"))

    def _read_chunks(self, mmap: bool) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """List of (chunk name, ids, X); retried when a concurrent merge removes a chunk mid-read."""
        for attempt in range(_RETRIES):
            try:
                out = []
                for name in self._chunk_names():
                    ids = np.load(self.dir / f"{name}.ids.npy", allow_pickle=False)
                    X = np.load(self.dir / f"{name}.X.npy", allow_pickle=False, mmap_mode="r" if mmap else None)
                    out.append((name, ids, X))
                return out
            except FileNotFoundError:
                time.sleep(0.05 * (attempt + 1))
        raise FeatureError(f"The feature cache at {self.dir} kept changing while it was read; try again.")

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
