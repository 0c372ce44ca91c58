"""core.views.projection: the UMAP cache, incremental transform, refit rules and tiny inputs."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from core.errors import ValidationError
from core.views.projection import MIN_UMAP_POINTS, Projection, _pca_init, load_state, project

KEY = "digits-test"
N_FIT = 500


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids (n,), X (n, 64) float32, y (n,)) of sklearn's bundled digits."""
    from sklearn.datasets import load_digits

    d = load_digits()
    ids = np.arange(1000, 1000 + d.data.shape[0])
    return ids, d.data.astype(np.float32), d.target


@pytest.fixture(scope="module")
def fitted(digits, tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A cache fitted on the first 500 digits (fit once: numba compiles UMAP on first use)."""
    ids, X, _ = digits
    cache = tmp_path_factory.mktemp("proj")
    coords = project(ids[:N_FIT], X[:N_FIT], cache, key=KEY)
    return cache, coords


@pytest.fixture
def cache(fitted, tmp_path) -> Path:
    """A private copy of the fitted cache, so tests do not see each other's updates."""
    src, _ = fitted
    shutil.copytree(src, tmp_path / "cache")
    return tmp_path / "cache"


def test_fit_writes_cache(fitted, digits):
    cache, coords = fitted
    ids, _, _ = digits
    assert coords.shape == (N_FIT, 2) and coords.dtype == np.float32
    assert np.isfinite(coords).all()
    st = load_state(cache, KEY)
    assert st is not None and st.n_fits == 1 and st.n_transforms == 0
    np.testing.assert_array_equal(st.ids, ids[:N_FIT])
    np.testing.assert_array_equal(st.coords, coords)
    names = sorted(p.name for p in (cache / KEY).iterdir())
    assert len(names) == 3 and names[-1] == "state.json"
    assert not any(n.endswith(".tmp") for n in names)


def test_new_items_are_transformed_not_refit(cache, fitted, digits, monkeypatch):
    import umap

    ids, X, y = digits
    _, old = fitted

    def no_fit(self, *args, **kwargs):
        raise AssertionError("UMAP was refit; 20 new items should go through transform")

    monkeypatch.setattr(umap.UMAP, "fit", no_fit)
    monkeypatch.setattr(umap.UMAP, "fit_transform", no_fit)
    seen: list[tuple[float, str]] = []
    n = N_FIT + 20
    coords = project(ids[:n], X[:n], cache, key=KEY, progress=lambda f, m: seen.append((f, m)))

    np.testing.assert_array_equal(coords[:N_FIT], old)  # old items did not move
    new = coords[N_FIT:]
    assert np.isfinite(new).all()
    st = load_state(cache, KEY)
    assert st.n_fits == 1 and st.n_transforms == 1
    np.testing.assert_array_equal(st.fit_ids, ids[:N_FIT])
    np.testing.assert_array_equal(st.ids, ids[:n])
    # the new digits land next to fitted digits of the same class
    nearest = np.argmin(((new[:, None, :] - old[None, :, :]) ** 2).sum(-1), axis=1)
    assert np.mean(y[nearest] == y[N_FIT:n]) >= 0.8
    assert seen[-1][0] == 1.0 and "20 placed" in seen[-1][1]
    # superseded coords file removed, model kept
    assert len(list((cache / KEY).iterdir())) == 3

    # asking again for the same items recomputes nothing
    again = project(ids[:n], X[:n], cache, key=KEY)
    np.testing.assert_array_equal(again, coords)
    assert load_state(cache, KEY).n_transforms == 1


def test_removed_ids_are_dropped(cache, fitted, digits):
    ids, X, _ = digits
    _, old = fitted
    keep = np.r_[0:100, 200:N_FIT]
    order = keep[::-1]  # any order of ids is fine
    coords = project(ids[order], X[order], cache, key=KEY)
    np.testing.assert_array_equal(coords, old[order])
    st = load_state(cache, KEY)
    assert st.ids.shape == (keep.shape[0],) and not np.isin(ids[100:200], st.ids).any()
    assert st.n_fits == 1


def test_refit_when_new_items_exceed_the_fraction(cache, fitted, digits):
    ids, X, _ = digits
    _, old = fitted
    n = N_FIT + 150  # 150 > 0.2 * 500
    coords = project(ids[:n], X[:n], cache, key=KEY, refit_fraction=0.2)
    st = load_state(cache, KEY)
    assert st.n_fits == 2 and st.n_transforms == 0
    np.testing.assert_array_equal(st.fit_ids, ids[:n])
    assert coords.shape == (n, 2) and np.isfinite(coords).all()
    # the refit map is aligned onto the old one: it stays in the same region and orientation
    spread = np.abs(old - old.mean(axis=0)).mean()
    assert np.abs(coords[:N_FIT] - old).mean() < spread


def test_parameter_change_refits(cache, digits):
    ids, X, _ = digits
    project(ids[:N_FIT], X[:N_FIT], cache, key=KEY, n_neighbors=10)
    assert load_state(cache, KEY).n_fits == 2


def test_projection_object_and_clear(cache, digits):
    ids, X, _ = digits
    proj = Projection(cache, key=KEY)
    st = proj.state()
    assert st is not None and st.n_fits == 1
    got_ids, got_coords = proj.coords()
    assert got_ids.shape[0] == N_FIT and got_coords.shape == (N_FIT, 2)
    assert proj.model() is not None
    proj.clear()
    assert proj.state() is None and not (cache / KEY).exists()


def test_any_key_maps_to_a_folder_inside_the_cache(digits, tmp_path):
    ids, X, _ = digits
    coords = project(ids[:20], X[:20], tmp_path / "c", key="../features-clip+hf/all-MiniLM", n_epochs=10)
    assert coords.shape == (20, 2)
    (folder,) = list((tmp_path / "c").iterdir())
    assert folder.name.startswith("features-clip+hf-all-MiniLM-") and (folder / "state.json").is_file()
    assert load_state(tmp_path / "c", "../features-clip+hf/all-MiniLM").n_fits == 1
    assert not (tmp_path / "features-clip+hf").exists()


def test_pca_init_path(cache, digits):
    # init="auto" switches to this from PCA_INIT_N points on; exercised here on 500 points
    ids, X, y = digits
    coords = project(ids[:N_FIT], X[:N_FIT], cache, key=KEY, init="pca", n_epochs=50)
    st = load_state(cache, KEY)
    assert st.n_fits == 2 and st.params.init == "pca"  # a different init refits
    # digits of one class stay together: the nearest other point mostly has the same label
    d = ((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert np.mean(y[:N_FIT][d.argmin(axis=1)] == y[:N_FIT]) >= 0.8


def test_pca_init_scaling():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 8)).astype(np.float32) * np.arange(1, 51)[:, None]  # norms differ
    Y = _pca_init(X, "cosine", 0)
    assert Y.shape == (50, 2) and Y.dtype == np.float32
    assert np.abs(Y).max() == pytest.approx(10.0, abs=1e-3)
    # cosine: rescaling a row does not move its start
    X2 = X.copy()
    X2[0] *= 100
    np.testing.assert_allclose(_pca_init(X2, "cosine", 0)[0], Y[0], atol=1e-3)


@pytest.mark.parametrize("n", [0, 1, 2, MIN_UMAP_POINTS - 1])
def test_tiny_inputs_get_a_pca_layout(n, digits, tmp_path):
    ids, X, _ = digits
    coords = project(ids[:n], X[:n], tmp_path, key=KEY)
    assert coords.shape == (n, 2) and coords.dtype == np.float32
    assert np.isfinite(coords).all()
    if n == 1:
        assert (coords == 0).all()
    if n >= 2:
        assert coords[:, 0].std() > 0
    assert not (tmp_path / KEY).exists()  # nothing cached


@pytest.mark.parametrize("kwargs, param", [
    ({"key": ""}, "key"),
    ({"key": KEY, "refit_fraction": -0.1}, "refit_fraction"),
    ({"key": KEY, "n_neighbors": 1}, "n_neighbors"),
    ({"key": KEY, "progress": "yes"}, "progress"),
    ({"key": KEY, "init": "umap"}, "init"),
    ({"key": KEY, "n_epochs": 0}, "n_epochs"),
])
def test_bad_parameters_are_named(kwargs, param, digits, tmp_path):
    ids, X, _ = digits
    with pytest.raises(ValidationError, match=f"'{param}'"):
        project(ids[:10], X[:10], tmp_path, **kwargs)


def test_bad_inputs_are_named(digits, tmp_path):
    ids, X, _ = digits
    with pytest.raises(ValidationError, match="'ids'.*unique"):
        project(np.zeros(10, int), X[:10], tmp_path, key=KEY)
    with pytest.raises(ValidationError, match="'X'"):
        project(ids[:10], X[:9], tmp_path, key=KEY)
    bad = X[:10].copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValidationError, match="'X'.*finite"):
        project(ids[:10], bad, tmp_path, key=KEY)


def test_reduce_for_map_is_deterministic_and_keeps_angles():
    from core.views.projection import reduce_for_map

    rng = np.random.default_rng(1)
    d = 1280
    X = rng.normal(size=(50, d)).astype(np.float32)
    A, B = reduce_for_map(X), reduce_for_map(X[:10])
    assert A.shape == (50, 128)
    # Same projection for items added later. Each entry is a float32 dot product of length d, and the BLAS
    # may sum it in another order for another number of rows (blocking, SIMD width, threads). Recursive
    # summation of d products in float32 is off by at most gamma_d * sum_k |x_k r_k| with gamma_d ~ d * u
    # (u = eps/2, Higham, Accuracy and Stability, 3.1), so two orders differ by at most
    # d * eps * (|X| @ |R|) entrywise: a bound from float32 arithmetic, not from a value seen on one machine.
    # R itself is read off exactly: the identity times R has one nonzero product per entry.
    R = reduce_for_map(np.eye(d, dtype=np.float32)).astype(np.float64)
    assert R.shape == (d, 128)
    bound = d * np.finfo(np.float32).eps * (np.abs(X).astype(np.float64) @ np.abs(R))  # (50, 128)
    assert (np.abs(A[:10].astype(np.float64) - B) <= bound[:10]).all()
    assert (np.abs(A - X.astype(np.float64) @ R) <= bound).all()  # and each is X @ R up to float32 rounding
    small = rng.normal(size=(5, 64)).astype(np.float32)
    assert reduce_for_map(small) is not None and reduce_for_map(small).shape == (5, 64)
    cos = lambda M: (M / np.linalg.norm(M, axis=1, keepdims=True)) @ (M / np.linalg.norm(M, axis=1, keepdims=True)).T
    assert np.abs(cos(X) - cos(A)).max() < 0.35  # JL: angles roughly kept
