"""The extractor contract: what an item looks like to an extractor, and what an extractor must provide.

An :class:`Extractor` turns a sequence of :class:`ItemRef` into a float32 matrix of shape (n, d). Items
that cannot be decoded (a corrupt image, an empty WAV) do not stop the run: each becomes an
:class:`ItemFailure` and its row is filled with NaN, so that one bad file among 100,000 costs one row,
not the job. An extractor that cannot run at all (missing weights, nothing to fit on) raises
:class:`core.errors.FeatureError`.

Most extractors are "decode one item, embed a batch": they implement :meth:`Extractor.load` (one item,
called from a small thread pool, may raise :class:`ItemError`) and :meth:`Extractor.embed` (a list of
decoded items to an array). The base class does the batching, the bounded prefetch of the next batch
while the current one is embedded, and the failure bookkeeping in :meth:`Extractor.iter_extract`.

Stateful extractors (PCA on pixels, TF-IDF + SVD) also implement :meth:`Extractor.fit`,
:meth:`Extractor.get_state` and :meth:`Extractor.set_state`; their state is a flat ``dict`` of NumPy
arrays so that the cache can store it with ``np.savez`` and load it without pickle.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Sequence

import numpy as np

from core.errors import FeatureError, ValidationError

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class ItemRef:
    """One item as an extractor sees it.

    Attributes
    ----------
    id : int
        The item's id in the project store.
    path : pathlib.Path or None
        Absolute path of the media file (image, audio, or a text file), or None.
    text : str or None
        Inline text (text items, captions), or None.
    """

    id: int
    path: Path | None = None
    text: str | None = None


@dataclass(frozen=True)
class ItemFailure:
    """An item whose features could not be computed.

    Attributes
    ----------
    item_id : int
    path : pathlib.Path or None
    reason : str
        A one-line human-readable cause, e.g. ``"cannot decode image: cannot identify image file"``.
    """

    item_id: int
    path: Path | None
    reason: str

    def __str__(self) -> str:
        where = f" ({self.path})" if self.path is not None else ""
        return f"item {self.item_id}{where}: {self.reason}"


class ItemError(Exception):
    """Raised by :meth:`Extractor.load` when one item cannot be decoded; becomes an :class:`ItemFailure`."""


@dataclass(frozen=True)
class Options:
    """Options every extractor accepts. Subclasses extend this frozen dataclass.

    Fields whose metadata holds ``{"cache": False}`` do not change the output and are left out of the
    cache key (batch sizes, thread counts).
    """

    batch_size: int | None = dataclasses.field(default=None, metadata={"cache": False})
    num_workers: int | None = dataclasses.field(default=None, metadata={"cache": False})

    def validate(self, owner: str) -> None:
        """Raise :class:`ValidationError` on a bad value; subclasses extend it."""
        from core.errors import check_param

        if self.batch_size is not None:
            check_param(owner, "batch_size", self.batch_size,
                        isinstance(self.batch_size, int) and self.batch_size >= 1, "an int >= 1 or None")
        if self.num_workers is not None:
            check_param(owner, "num_workers", self.num_workers,
                        isinstance(self.num_workers, int) and self.num_workers >= 0, "an int >= 0 or None")


class Extractor:
    """Base class of feature extractors.

    Class attributes
    ----------------
    name : str
        Registry name, e.g. ``"efficientnet_lite0"``.
    version : str
        Bumped whenever the output for the same input and options changes; part of the cache key.
    modality : {"image", "text", "audio"}
    description : str
        One line for menus.
    stateful : bool
        True when :meth:`fit` must run before :meth:`extract`.
    Options : type
        The frozen dataclass of accepted options.
    dim : int
        Output dimension (a property for stateful extractors: known once fitted).
    cpu_batch_size, gpu_batch_size : int
        Default items per batch on CPU and on CUDA (the ``batch_size`` option overrides them).
    decode_in_processes : bool
        On CUDA, decode in forked DataLoader worker processes instead of threads (images: decoding
        many files in threads is bound by the GIL; measured 2-3x faster on a 16-core machine).

    Parameters
    ----------
    **options
        Fields of ``Options``; an unknown name raises :class:`ValidationError` listing the valid ones.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    modality: ClassVar[str] = ""
    description: ClassVar[str] = ""
    stateful: ClassVar[bool] = False
    Options: ClassVar[type] = Options
    cpu_batch_size: ClassVar[int] = 64
    gpu_batch_size: ClassVar[int] = 256
    decode_in_processes: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        valid = [f.name for f in dataclasses.fields(self.Options)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValidationError(
                f"Unknown option(s) {', '.join(map(repr, unknown))} for the feature extractor {self.name!r}; "
                f"valid options are {', '.join(map(repr, valid))}."
            )
        self.options = self.Options(**options)
        self.options.validate(f"the feature extractor {self.name!r}")

    # ----------------------------------------------------------------- identity and cache key
    def cache_options(self) -> dict[str, Any]:
        """Options that change the output, as JSON-able values (the cache key is a hash of them)."""
        out = {}
        for f in dataclasses.fields(self.options):
            if f.metadata.get("cache", True):
                value = getattr(self.options, f.name)
                out[f.name] = str(value) if isinstance(value, Path) else value
        return out

    def cache_key(self) -> str:
        """Folder name of this extractor's cache: ``v<version>-<hash of cache_options()>``."""
        blob = json.dumps(self.cache_options(), sort_keys=True, default=str).encode()
        return f"v{self.version}-{hashlib.sha1(blob).hexdigest()[:10]}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options})"

    # ----------------------------------------------------------------- state (stateful extractors)
    def fit(self, items: Sequence[ItemRef], *, device: str = "cpu") -> "Extractor":
        """Fit the extractor's state on ``items``; stateless extractors return self unchanged."""
        return self

    def get_state(self) -> dict[str, np.ndarray]:
        """The fitted state as a flat dict of arrays (empty for stateless extractors)."""
        return {}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore a state produced by :meth:`get_state`."""

    @property
    def is_fitted(self) -> bool:
        """True when :meth:`extract` can run (always for stateless extractors)."""
        return True

    # ----------------------------------------------------------------- the per-item / per-batch hooks
    def load(self, item: ItemRef) -> Any:
        """Decode one item (in a worker thread or process). Raise :class:`ItemError` when it cannot be read."""
        raise NotImplementedError

    def embed(self, batch: list[Any], *, device: str) -> np.ndarray:
        """Embed a list of decoded items, returning an array of shape (len(batch), d)."""
        raise NotImplementedError

    def batch_size(self, device: str) -> int:
        """Items per batch: the ``batch_size`` option, else a default for CPU or GPU."""
        if self.options.batch_size is not None:
            return self.options.batch_size
        return self.gpu_batch_size if device.startswith("cuda") else self.cpu_batch_size

    def num_workers(self, device: str) -> int:
        """Decoding threads or processes: the ``num_workers`` option, else 2 on CPU and up to 16 with a GPU."""
        if self.options.num_workers is not None:
            return self.options.num_workers
        cpus = os.cpu_count() or 2
        return min(16, cpus) if device.startswith("cuda") else min(2, cpus)

    # ----------------------------------------------------------------- driving
    def iter_extract(self, items: Sequence[ItemRef], *, device: str = "cpu",
                     failures: list[ItemFailure] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, rows)`` per batch, ``rows`` of shape (batch, d) float32, NaN for failed items.

        Decoding of the next batches overlaps the embedding of the current one: in a thread pool, or,
        for extractors with ``decode_in_processes`` on CUDA, in forked DataLoader worker processes
        (decoding many small files is bound by the GIL in threads). Closing the generator early
        (cancellation) stops the decoding threads or processes.
        """
        if not self.is_fitted:
            raise FeatureError(f"The feature extractor {self.name!r} must be fitted before it extracts.")
        if self._use_processes(device):
            yield from self._iter_with_processes(items, device, failures)
        else:
            yield from self._iter_with_threads(items, device, failures)

    def _use_processes(self, device: str) -> bool:
        return (self.decode_in_processes and device.startswith("cuda") and self.num_workers(device) > 1
                and "fork" in multiprocessing.get_all_start_methods())

    def _iter_with_threads(self, items: Sequence[ItemRef], device: str,
                           failures: list[ItemFailure] | None) -> Iterator[tuple[int, np.ndarray]]:
        bs = self.batch_size(device)
        starts = list(range(0, len(items), bs))
        workers = self.num_workers(device)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"decode-{self.name}") if workers else None
        try:
            pending: deque[tuple[int, list[Any]]] = deque()
            for start in starts[:2]:
                pending.append((start, self._submit(items[start:start + bs], pool)))
            next_i = 2
            while pending:
                start, jobs = pending.popleft()
                if next_i < len(starts):
                    s = starts[next_i]
                    pending.append((s, self._submit(items[s:s + bs], pool)))
                    next_i += 1
                decoded = [j.result() if isinstance(j, Future) else j for j in jobs]
                yield start, self._rows(decoded, device, failures)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _iter_with_processes(self, items: Sequence[ItemRef], device: str,
                             failures: list[ItemFailure] | None) -> Iterator[tuple[int, np.ndarray]]:
        from torch.utils.data import DataLoader

        loader = DataLoader(_DecodeDataset(self, items), batch_size=self.batch_size(device), shuffle=False,
                            num_workers=self.num_workers(device), collate_fn=_pack, prefetch_factor=4,
                            multiprocessing_context="fork")
        with warnings.catch_warnings():
            # Python 3.12 warns on any fork of a multi-threaded process. The workers only decode files
            # (Pillow, NumPy) and never touch CUDA or torch's thread pools, as with DataLoader's own
            # default start method on Linux; "spawn" would re-import torch in every worker per call.
            warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks",
                                    category=DeprecationWarning)
            batches = iter(loader)
        start = 0
        try:
            for packed in batches:
                decoded = _unpack(packed)
                yield start, self._rows(decoded, device, failures)
                start += len(decoded)
        finally:
            del batches  # the iterator's finaliser stops the worker processes

    def extract(self, items: Sequence[ItemRef], *, device: str = "cpu", progress: ProgressFn | None = None,
                failures: list[ItemFailure] | None = None) -> np.ndarray:
        """Features of ``items``.

        Parameters
        ----------
        items : sequence of ItemRef, length n
        device : {"cpu", "cuda"}
        progress : callable(done, total), optional
            Called after each batch.
        failures : list, optional
            Receives one :class:`ItemFailure` per item that could not be decoded.

        Returns
        -------
        X : ndarray of shape (n, d), float32
            Rows of failed items are NaN.
        """
        blocks: list[np.ndarray] = []
        total = len(items)
        for start, rows in self.iter_extract(items, device=device, failures=failures):
            blocks.append(rows)
            if progress is not None:
                progress(start + len(rows), total)
        if not blocks:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(blocks).astype(np.float32, copy=False)

    # ----------------------------------------------------------------- helpers
    def _safe_load(self, item: ItemRef) -> Any:
        try:
            return self.load(item)
        except ItemError as exc:
            return ItemFailure(item.id, item.path, str(exc))

    def _submit(self, batch: Sequence[ItemRef], pool: ThreadPoolExecutor | None) -> list[Any]:
        if pool is None:
            return [self._safe_load(it) for it in batch]
        return [pool.submit(self._safe_load, it) for it in batch]

    def _rows(self, decoded: list[Any], device: str, failures: list[ItemFailure] | None) -> np.ndarray:
        """Embed the decoded items of one batch; (len(decoded), d) float32 with NaN rows for failures."""
        ok = [i for i, d in enumerate(decoded) if not isinstance(d, ItemFailure)]
        if failures is not None:
            failures.extend(d for d in decoded if isinstance(d, ItemFailure))
        emb = self.embed([decoded[i] for i in ok], device=device) if ok else None
        dim = emb.shape[1] if emb is not None else self._known_dim()
        rows = np.full((len(decoded), dim), np.nan, dtype=np.float32)
        if emb is not None:
            rows[ok] = emb
        return rows

    def _known_dim(self) -> int:
        """Output dimension when it is known without running (0 otherwise); used for all-failed batches."""
        return int(getattr(self, "dim", 0) or 0)


class ComponentsState:
    """Mixin of stateful extractors whose fitted state ends in a ``components_`` matrix (k, d_in): its row
    count is the output dimension, and the extractor is fitted once it is set."""

    components_: np.ndarray | None = None

    @property
    def dim(self) -> int | None:
        return None if self.components_ is None else int(self.components_.shape[0])

    @property
    def is_fitted(self) -> bool:
        return self.components_ is not None


class _DecodeDataset:
    """Map-style dataset for DataLoader workers: item i -> decoded item or :class:`ItemFailure`."""

    def __init__(self, extractor: Extractor, items: Sequence[ItemRef]) -> None:
        self.extractor = extractor
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.extractor._safe_load(self.items[i])


def _pack(decoded: list[Any]) -> tuple[int, list[tuple[list[int], Any]], list[tuple[int, Any]]]:
    """Collate in a DataLoader worker: stack same-shape arrays into one tensor (sent through shared
    memory instead of being pickled one by one); everything else (failures) travels as it is."""
    import torch

    groups: dict[tuple, list[int]] = {}
    others = []
    for i, d in enumerate(decoded):
        if isinstance(d, np.ndarray):
            groups.setdefault((d.shape, d.dtype.str), []).append(i)
        else:
            others.append((i, d))
    stacked = [(idx, torch.from_numpy(np.stack([decoded[i] for i in idx]))) for idx in groups.values()]
    return len(decoded), stacked, others


def _unpack(packed: tuple[int, list[tuple[list[int], Any]], list[tuple[int, Any]]]) -> list[Any]:
    """Inverse of :func:`_pack` in the main process: the list of decoded items (array views)."""
    n, stacked, others = packed
    out: list[Any] = [None] * n
    for idx, tensor in stacked:
        arrays = tensor.numpy()
        for k, i in enumerate(idx):
            out[i] = arrays[k]
    for i, d in others:
        out[i] = d
    return out


def subsample(items: Sequence[ItemRef], max_items: int, seed: int = 0) -> list[ItemRef]:
    """At most ``max_items`` items, chosen at random with a fixed seed, in their original order."""
    if len(items) <= max_items:
        return list(items)
    keep = np.sort(np.random.default_rng(seed).choice(len(items), size=max_items, replace=False))
    return [items[i] for i in keep]


def torch_load_weights(path: Path) -> dict:
    """Load a state dict on CPU with ``weights_only=True``; a broken file raises :class:`FeatureError`."""
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise FeatureError(f"Cannot read the weights file {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise FeatureError(f"The weights file {path} does not hold a state dict (got {type(state).__name__}).")
    return state
