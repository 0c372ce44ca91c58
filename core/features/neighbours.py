"""Nearest-neighbour indexes over feature vectors, on faiss: every k-NN search of the engine goes through here.

:class:`NeighbourIndex` holds ``n`` vectors in a faiss index (exact search: ``IndexFlatIP`` for cosine,
``IndexFlatL2`` for Euclidean; a half-precision ``IndexScalarQuantizer`` when the vectors would take more than
:data:`FP16_ABOVE_FLOATS` floats) and answers

* :meth:`NeighbourIndex.search`: the ``k`` nearest rows of each query (the classifier's k-NN, "more like this"),
* :meth:`NeighbourIndex.range`: every row within a similarity radius (near-duplicate suppression),
* :meth:`NeighbourIndex.max_similarity`: the similarity of each query to its single nearest row.

Scores are similarities (higher = nearer) for ``metric="cosine"`` and distances (lower = nearer, not squared)
for ``metric="euclidean"``. Ties in a score are broken by the lower row, as faiss's flat indexes do.

Users: :mod:`core.active.strategies` (near-duplicates in a batch), :mod:`core.models.classifier.faiss_knn`
(the classifier's k-NN on large projects) and :mod:`core.views.similar` (the Label page's "more like this").
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from core.errors import check_choice, check_param

METRICS = ("cosine", "euclidean")
#: above this many stored floats (n * d) the index keeps float16 codes (half the memory; search stays brute force)
FP16_ABOVE_FLOATS = 1 << 27
_OWNER = "NeighbourIndex"


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (m, d) scaled to unit L2 norm (zero rows stay zero), C-contiguous float32 (m, d)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norm, 1e-12), dtype=np.float32)


class NeighbourIndex:
    """An exact faiss index over the rows of ``X``.

    Parameters
    ----------
    X : np.ndarray, shape (n, d)
        The vectors (any float dtype; stored as float32, or float16 codes when ``n * d > FP16_ABOVE_FLOATS``).
    metric : {"cosine", "euclidean"}
        Cosine similarity (rows are unit-normalised, inner product) or Euclidean distance.
    fp16 : bool or None
        Force (True) or forbid (False) float16 codes; None decides by size.

    Attributes
    ----------
    n, d : int
        Number and dimension of the stored vectors.
    """

    def __init__(self, X: np.ndarray, *, metric: Literal["cosine", "euclidean"] = "cosine",
                 fp16: bool | None = None) -> None:
        import faiss

        check_choice(_OWNER, "metric", metric, METRICS)
        X = np.asarray(X)
        check_param(_OWNER, "X", f"array of shape {X.shape}", X.ndim == 2 and X.shape[1] >= 1,
                    "a 2-D (n, d) array with d >= 1")
        self.metric = metric
        self.n, self.d = int(X.shape[0]), int(X.shape[1])
        vecs = self._prepare(X)
        faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        self.fp16 = bool(self.n * self.d > FP16_ABOVE_FLOATS) if fp16 is None else bool(fp16)
        if self.fp16:
            self._index = faiss.IndexScalarQuantizer(self.d, faiss.ScalarQuantizer.QT_fp16, faiss_metric)
            self._index.train(vecs[:1] if len(vecs) else np.zeros((1, self.d), np.float32))
        elif metric == "cosine":
            self._index = faiss.IndexFlatIP(self.d)
        else:
            self._index = faiss.IndexFlatL2(self.d)
        if self.n:
            self._index.add(vecs)

    def _prepare(self, Q: np.ndarray) -> np.ndarray:
        Q = np.asarray(Q)
        check_param(_OWNER, "queries", f"array of shape {Q.shape}", Q.ndim == 2 and Q.shape[1] == self.d,
                    f"a 2-D (q, {self.d}) array")
        return unit_rows(Q) if self.metric == "cosine" else np.ascontiguousarray(Q, dtype=np.float32)

    def add(self, X: np.ndarray) -> None:
        """Append rows ``X`` (m, d); they get rows ``n .. n + m - 1``."""
        if len(X):
            self._index.add(self._prepare(X))
            self.n += int(len(X))

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The stored (unit-normalised for cosine) vectors of ``rows`` (m,) -> (m, d) float32."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.zeros((0, self.d), np.float32)
        return np.asarray(self._index.reconstruct_batch(rows), dtype=np.float32)

    def search(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest rows of each query.

        Parameters
        ----------
        Q : np.ndarray, shape (q, d)
        k : int
            Neighbours per query (>= 1); capped at ``n``.

        Returns
        -------
        scores : np.ndarray, shape (q, min(k, n)), float32
            Cosine similarities (descending) or Euclidean distances (ascending).
        rows : np.ndarray, shape (q, min(k, n)), int64
        """
        ok = isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1
        check_param(_OWNER, "k", k, ok, "an int >= 1")
        Q = self._prepare(Q)
        k = min(int(k), self.n)
        if k == 0 or Q.shape[0] == 0:
            return np.zeros((Q.shape[0], k), np.float32), np.zeros((Q.shape[0], k), np.int64)
        D, I = self._index.search(Q, k)
        if self.metric == "euclidean":
            D = np.sqrt(np.maximum(D, 0.0))
        return D.astype(np.float32), I.astype(np.int64)

    def max_similarity(self, Q: np.ndarray) -> np.ndarray:
        """Cosine similarity (q,) of each query to its nearest stored row; -inf when the index is empty."""
        check_param(_OWNER, "metric", self.metric, self.metric == "cosine", "'cosine' for max_similarity")
        if self.n == 0:
            return np.full(len(Q), -np.inf, np.float32)
        return self.search(Q, 1)[0][:, 0]

    def range(self, Q: np.ndarray, threshold: float) -> list[np.ndarray]:
        """Rows whose cosine similarity to each query is ``>= threshold``.

        Returns
        -------
        list of np.ndarray (int64), one per query (q,)
            The rows of each query, in no particular order.
        """
        check_param(_OWNER, "metric", self.metric, self.metric == "cosine", "'cosine' for range")
        Q = self._prepare(Q)
        if self.n == 0 or Q.shape[0] == 0:
            return [np.zeros(0, np.int64) for _ in range(Q.shape[0])]
        # faiss keeps inner products strictly above the radius: step one float below for ">="
        radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
        lims, _, I = self._index.range_search(Q, radius)
        I = I.astype(np.int64)
        return [I[lims[i]:lims[i + 1]] for i in range(Q.shape[0])]


def torch_knn(X: np.ndarray, k: int, *, metric: Literal["cosine", "euclidean"] = "cosine", device: str = "cuda",
              batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN of every row of ``X`` among all rows by a batched torch top-k, for a GPU.

    faiss-cpu (:class:`NeighbourIndex`) is the engine's k-NN on the CPU; on a GPU the same exact search is a matrix
    product and a top-k per block of ``batch`` query rows, with the data on the device. The result matches
    :meth:`NeighbourIndex.search` of ``X`` against itself (up to ties and float rounding).

    Parameters
    ----------
    X : np.ndarray, shape (n, d)
    k : int
        Neighbours per row (>= 1; capped at n), the row itself included.
    metric : {"cosine", "euclidean"}
    device : str
        A torch device ("cuda", or "cpu" for tests).
    batch : int
        Query rows per block (memory ``batch x n`` floats).

    Returns
    -------
    scores : np.ndarray, shape (n, min(k, n)), float32
        Cosine similarities (descending) or Euclidean distances (ascending).
    rows : np.ndarray, shape (n, min(k, n)), int64
    """
    import torch

    check_choice("torch_knn", "metric", metric, METRICS)
    ok = isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1
    check_param("torch_knn", "k", k, ok, "an int >= 1")
    V = torch.as_tensor(unit_rows(X) if metric == "cosine" else np.ascontiguousarray(X, np.float32), device=device)
    n, k = V.shape[0], min(int(k), V.shape[0])
    sq = (V * V).sum(1)
    scores, rows = [], []
    for s in range(0, n, batch):
        q = V[s:s + batch]
        sim = q @ V.T if metric == "cosine" else -(sq[s:s + batch, None] - 2 * q @ V.T + sq[None, :])
        top = torch.topk(sim, k, dim=1)
        vals = top.values if metric == "cosine" else torch.sqrt(torch.clamp(-top.values, min=0))
        scores.append(vals.float().cpu())
        rows.append(top.indices.cpu())
    return torch.cat(scores).numpy(), torch.cat(rows).numpy().astype(np.int64)
