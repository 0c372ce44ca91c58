"""Tests of core.features: registry, cache, stateful extractors, failures, and each extractor on tiny data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import core.features as F
from core.errors import FeatureError, JobCancelled, ValidationError
from core.features.base import Extractor, ItemRef


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory) -> list[ItemRef]:
    """60 scikit-learn digits written as 8x8 greyscale PNGs."""
    from PIL import Image
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    refs = []
    for i in range(60):
        path = folder / f"{i:03d}.png"
        Image.fromarray((digits.images[i] * 15).astype(np.uint8), mode="L").save(path)
        refs.append(ItemRef(id=1000 + i, path=path))
    return refs


@pytest.fixture
def corrupt_pngs(tmp_path) -> list[ItemRef]:
    """A file of random bytes named .png, a truncated PNG, and a path that does not exist."""
    from PIL import Image

    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(np.random.default_rng(0).bytes(500))
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:300])
    return [ItemRef(7001, garbage), ItemRef(7002, truncated), ItemRef(7003, tmp_path / "missing.png")]


class Counting(Extractor):
    """A stateless test extractor that counts the items it decodes: the row of item i is [i, 2i, 3i]."""

    name = "counting"
    modality = "text"
    dim = 3
    cpu_batch_size = 4
    loaded: list[int] = []

    def num_workers(self, device: str) -> int:
        return 0

    def load(self, item: ItemRef) -> int:
        if item.text in (None, "bad"):
            raise F.ItemError("bad text")
        type(self).loaded.append(item.id)
        return item.id

    def embed(self, batch, *, device):
        return np.array([[i, 2 * i, 3 * i] for i in batch], dtype=np.float32)


@pytest.fixture
def counting(monkeypatch):
    Counting.loaded = []
    monkeypatch.setitem(F.EXTRACTORS, "counting", Counting)
    return Counting


def texts(ids) -> list[ItemRef]:
    return [ItemRef(int(i), text=f"t{i}") for i in ids]


# ---------------------------------------------------------------------------------------------- registry
def test_unknown_extractor_lists_valid_names():
    with pytest.raises(ValidationError) as err:
        F.get_extractor("resnet1000")
    for name in ("efficientnet_lite0", "tfidf_svd", "logmel", "minilm", "pixels_pca", "resnet18"):
        assert repr(name) in str(err.value)
    with pytest.raises(ValidationError, match="valid options are .*'n_components'"):
        F.get_extractor("pixels_pca", n_component=3)
    with pytest.raises(ValidationError, match="'n_components' parameter .* must be an int >= 1. Got 0"):
        F.get_extractor("pixels_pca", n_components=0)


def test_list_and_defaults():
    listed = {d["name"]: d for d in F.list_extractors()}
    assert set(listed) == set(F.EXTRACTORS)
    assert {"name", "modality", "version", "description"} <= set(listed["logmel"])
    assert listed["efficientnet_lite0"]["dim"] == 1280 and listed["pixels_pca"]["dim"] is None
    assert listed["mfcc_profile"]["dim"] == 286 and listed["mfcc_profile"]["options"]["f_max"] == (4000.0, 8000.0)
    assert [F.default_extractor(m) for m in ("image", "text", "audio", "image+text")] == [
        "efficientnet_lite0", "tfidf_svd", "mfcc_profile", "efficientnet_lite0"]
    with pytest.raises(ValidationError, match="'audio'"):
        F.default_extractor("video")


def test_cache_key_ignores_batch_size_but_not_output_options():
    a, b = F.get_extractor("pixels_pca", batch_size=8), F.get_extractor("pixels_pca")
    assert a.cache_key() == b.cache_key()
    assert F.get_extractor("pixels_pca", size=16).cache_key() != b.cache_key()


# ---------------------------------------------------------------------------------------------- cache
def test_cache_computes_only_missing_items(tmp_path, counting):
    ids, X = F.compute_features(texts([5, 3, 9]), "counting", tmp_path)
    assert counting.loaded == [5, 3, 9]
    assert ids.dtype == np.int64 and X.dtype == np.float32
    np.testing.assert_array_equal(ids, [5, 3, 9])
    np.testing.assert_array_equal(X[:, 0], [5, 3, 9])

    counting.loaded = []
    calls = []
    ids, X = F.compute_features(texts([1, 9, 5, 2, 3, 5]), "counting", tmp_path,
                                progress=lambda d, t: calls.append((d, t)))
    assert counting.loaded == [1, 2]  # only the two new ones, each once
    np.testing.assert_array_equal(ids, [1, 9, 5, 2, 3, 5])  # input order, duplicates kept
    np.testing.assert_array_equal(X[:, 1], 2 * ids)
    assert calls[0] == (0, 2) and calls[-1] == (2, 2)

    counting.loaded = []
    F.compute_features(texts([9, 1]), F.get_extractor("counting"), tmp_path)  # an instance works too
    assert counting.loaded == []
    cache_dir = tmp_path / "counting" / F.get_extractor("counting").cache_key()
    assert (cache_dir / "meta.json").exists() and list(cache_dir.glob("chunk-*.ids.npy"))
    got_ids, got_X = F.cached_features("counting", tmp_path, item_ids=[2, 77, 3])
    np.testing.assert_array_equal(got_ids, [2, 3])
    np.testing.assert_array_equal(got_X[:, 2], [6, 9])


def test_cache_merges_chunks(tmp_path, counting, monkeypatch):
    import core.features.cache as cache_mod

    monkeypatch.setattr(cache_mod, "MAX_CHUNKS", 3)
    for i in range(6):
        F.compute_features(texts([i]), "counting", tmp_path)
    cache_dir = tmp_path / "counting" / F.get_extractor("counting").cache_key()
    assert len(list(cache_dir.glob("chunk-*.ids.npy"))) <= 3
    ids, X = F.cached_features("counting", tmp_path)
    assert sorted(ids.tolist()) == list(range(6))
    np.testing.assert_array_equal(X[:, 0], ids)


def test_failures_are_reported_and_left_out(tmp_path, counting):
    items = texts([1, 2]) + [ItemRef(3, text="bad"), ItemRef(4)] + texts([5])
    failures: list = []
    ids, X = F.compute_features(items, "counting", tmp_path, failures=failures)
    np.testing.assert_array_equal(ids, [1, 2, 5])
    assert X.shape == (3, 3)
    assert [(f.item_id, f.reason) for f in failures] == [(3, "bad text"), (4, "bad text")]
    failures2: list = []
    F.compute_features(items, "counting", tmp_path, failures=failures2)  # failed items are retried
    assert [f.item_id for f in failures2] == [3, 4]


def test_cancel_keeps_finished_rows(tmp_path, counting):
    polls = []

    def should_cancel() -> bool:
        polls.append(1)
        return len(polls) > 2  # the check before starting, then after batch 1; cancel after batch 2

    with pytest.raises(JobCancelled):
        F.compute_features(texts(range(20)), "counting", tmp_path, should_cancel=should_cancel)
    ids, _ = F.cached_features("counting", tmp_path)
    assert sorted(ids.tolist()) == list(range(8))  # two batches of 4 were saved
    counting.loaded = []
    ids, _ = F.compute_features(texts(range(20)), "counting", tmp_path)
    assert counting.loaded == list(range(8, 20)) and len(ids) == 20


def test_items_must_be_itemrefs(tmp_path):
    with pytest.raises(ValidationError, match="ItemRef"):
        F.compute_features([1, 2], "logmel", tmp_path)


def test_process_decoding_matches_threads(digit_pngs, corrupt_pngs):
    """The DataLoader-worker decoding used on CUDA gives the same rows and failures as the thread pool."""
    items = digit_pngs[:7] + corrupt_pngs[:2] + digit_pngs[7:10]
    ext = F.get_extractor("pixels_pca", n_components=4, batch_size=4, num_workers=2).fit(digit_pngs)
    fail_threads, fail_procs = [], []
    rows_threads = np.concatenate([r for _, r in ext._iter_with_threads(items, "cpu", fail_threads)])
    rows_procs = np.concatenate([r for _, r in ext._iter_with_processes(items, "cpu", fail_procs)])
    np.testing.assert_array_equal(rows_threads, rows_procs)
    assert np.isnan(rows_procs[7:9]).all() and np.isfinite(rows_procs[:7]).all()
    assert [f.item_id for f in fail_procs] == [f.item_id for f in fail_threads] == [7001, 7002]


# ---------------------------------------------------------------------------------------------- stateful
def test_pixels_pca_state_persists(tmp_path, digit_pngs):
    first, later = digit_pngs[:40], digit_pngs[40:]
    ids1, X1 = F.compute_features(first, "pixels_pca", tmp_path, options={"n_components": 8, "grayscale": True})
    assert X1.shape == (40, 8)
    ids2, X2 = F.compute_features(first + later, "pixels_pca", tmp_path,
                                  options={"n_components": 8, "grayscale": True})
    np.testing.assert_array_equal(X2[:40], X1)  # not refitted: old rows unchanged
    # later items were projected with the state fitted on the first 40
    ext = F.get_extractor("pixels_pca", n_components=8, grayscale=True)
    ext.set_state(F.FeatureCache(tmp_path, ext).load_state())
    np.testing.assert_allclose(X2[40:], ext.extract(later), rtol=1e-5, atol=1e-5)
    # an explicit refit fits on all 60 and changes the basis
    ids3, X3 = F.compute_features(first + later, "pixels_pca", tmp_path, refit=True,
                                  options={"n_components": 8, "grayscale": True})
    assert not np.allclose(np.abs(X3[:40]), np.abs(X1), atol=1e-3)


def test_corrupt_images_are_failures(tmp_path, digit_pngs, corrupt_pngs):
    items = digit_pngs[:5] + corrupt_pngs
    failures: list = []
    ids, X = F.compute_features(items, "pixels_pca", tmp_path, options={"n_components": 4}, failures=failures)
    np.testing.assert_array_equal(ids, [it.id for it in digit_pngs[:5]])
    assert np.isfinite(X).all() and X.shape == (5, 4)
    by_id = {f.item_id: f for f in failures}
    assert sorted(by_id) == [7001, 7002, 7003]
    assert by_id[7001].path == corrupt_pngs[0].path and "decode" in by_id[7001].reason
    assert "not found" in by_id[7003].reason
    assert "7001" in str(by_id[7001])


def test_tfidf_svd_state_persists(tmp_path):
    docs = ["the cat sat on the mat", "a dog chased the cat", "stocks fell on wall street",
            "the market rallied as stocks rose", "my dog likes the park", "bond yields and stocks"]
    items = [ItemRef(i, text=t) for i, t in enumerate(docs)]
    ids, X = F.compute_features(items[:4], "tfidf_svd", tmp_path)
    assert X.shape == (4, 3)  # n_components capped at n_docs - 1
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, rtol=1e-5)
    ids2, X2 = F.compute_features(items, "tfidf_svd", tmp_path)
    np.testing.assert_array_equal(X2[:4], X)
    ext = F.get_extractor("tfidf_svd")
    ext.set_state(F.FeatureCache(tmp_path, ext).load_state())
    np.testing.assert_allclose(X2[4:], ext.extract(items[4:]), rtol=1e-5, atol=1e-6)
    with pytest.raises(FeatureError, match="at least 2"):
        F.compute_features([ItemRef(1, text="alone")], "tfidf_svd", tmp_path / "other")


# ---------------------------------------------------------------------------------------------- CNNs
def test_torchvision_without_weights_is_a_clear_error(tmp_path, monkeypatch, digit_pngs):
    import torch

    monkeypatch.setenv("LABELTOOL_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FeatureError) as err:
        F.compute_features(digit_pngs[:2], "resnet18", tmp_path / "cache")
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg
    assert str(tmp_path / "weights") in msg and str(tmp_path / "hub" / "checkpoints") in msg
    with pytest.raises(FeatureError, match="nowhere.pth"):
        F.compute_features(digit_pngs[:2], "alexnet", tmp_path / "cache",
                           options={"weights": str(tmp_path / "nowhere.pth")})


def test_torchvision_loads_a_local_weights_file(tmp_path, monkeypatch, digit_pngs):
    import torch
    import torchvision

    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights_dir / "resnet18-f37072fd.pth")
    monkeypatch.setenv("LABELTOOL_WEIGHTS_DIR", str(weights_dir))
    ids, X = F.compute_features(digit_pngs[:3], "resnet18", tmp_path / "cache")
    assert X.shape == (3, 512) and np.isfinite(X).all()


def test_efficientnet_names_sklearn_sample_photos(tmp_path):
    from sklearn.datasets import load_sample_images

    paths = [Path(p) for p in load_sample_images().filenames]
    china, flower = sorted(paths, key=lambda p: p.name)  # china.jpg, flower.jpg
    ext = F.get_extractor("efficientnet_lite0")
    top = ext.predict_imagenet([ItemRef(1, china), ItemRef(2, flower)], top_k=3)
    temple_like = {"bell cote", "palace", "monastery", "stupa", "church", "mosque", "castle"}
    assert top[0][0][0] in temple_like, top[0]
    assert top[1][0][0] == "daisy", top[1]
    ids, X = F.compute_features([ItemRef(1, china), ItemRef(2, flower)], "efficientnet_lite0", tmp_path)
    assert X.shape == (2, 1280) and np.isfinite(X).all() and (X >= 0).all()  # pooled ReLU6 activations


# ---------------------------------------------------------------------------------------------- text
def test_minilm_paraphrases_are_close(tmp_path):
    sentences = ["A man is playing a guitar.", "Someone plays the guitar.", "Stock markets fell sharply today."]
    ids, X = F.compute_features([ItemRef(i, text=s) for i, s in enumerate(sentences)], "minilm", tmp_path)
    assert X.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, rtol=1e-4)
    sim = X @ X.T
    assert sim[0, 1] > 0.6 and sim[0, 1] > sim[0, 2] + 0.4


# ---------------------------------------------------------------------------------------------- audio
def _wav(path: Path, y: np.ndarray, sr: int) -> Path:
    import soundfile as sf

    sf.write(path, y, sr)
    return path


def test_logmel_tone_vs_noise_and_failures(tmp_path):
    rng = np.random.default_rng(0)
    t8, t44 = np.arange(8000) / 8000, np.arange(44100) / 44100
    tone8 = _wav(tmp_path / "tone8k.wav", 0.5 * np.sin(2 * np.pi * 440 * t8), 8000)
    tone44 = np.stack([0.5 * np.sin(2 * np.pi * 440 * t44)] * 2, axis=1)  # stereo, 44.1 kHz
    tone44 = _wav(tmp_path / "tone44k.wav", tone44, 44100)
    noise = _wav(tmp_path / "noise.wav", 0.5 * rng.standard_normal(16000), 16000)
    empty = _wav(tmp_path / "empty.wav", np.zeros(0), 16000)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF not really a wave file")
    items = [ItemRef(1, tone8), ItemRef(2, tone44), ItemRef(3, noise), ItemRef(4, empty), ItemRef(5, junk)]
    failures: list = []
    ids, X = F.compute_features(items, "logmel", tmp_path / "cache", failures=failures)
    np.testing.assert_array_equal(ids, [1, 2, 3])
    assert X.shape == (3, 192) and np.isfinite(X).all()
    same_tone, tone_vs_noise = np.linalg.norm(X[0] - X[1]), np.linalg.norm(X[0] - X[2])
    assert tone_vs_noise > 5 * same_tone  # resampled tones agree; noise is far
    assert {f.item_id for f in failures} == {4, 5}
    assert "empty" in next(f.reason for f in failures if f.item_id == 4)


# ---------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
def test_efficientnet_on_cuda_matches_cpu(tmp_path, digit_pngs):
    """float16 autocast + channels-last on CUDA gives the same features as float32 on CPU, up to rounding."""
    items = digit_pngs[:16]
    _, X_cpu = F.compute_features(items, "efficientnet_lite0", tmp_path / "cpu", device="cpu")
    _, X_gpu = F.compute_features(items, "efficientnet_lite0", tmp_path / "gpu", device="cuda")
    cos = (X_cpu * X_gpu).sum(1) / np.linalg.norm(X_cpu, axis=1) / np.linalg.norm(X_gpu, axis=1)
    assert cos.min() > 0.999, cos
