"""Re-identification accuracy on reid_col780 (issue 14): pretrained features, unsupervised training, confirmed
identities, the four batch samplers with K varied, and the fine-tuned backbone, on the 2-core CPU.

Data: ``../shared/datasets/reid_col780/train`` (``--data``): 62 identities x 16 crops (48 x 128, W x H), folder =
identity, file ``CC_V.png`` with CC the camera (01 / 02) and V the view (1-8).

Protocol
--------
* **Split.** Identities sorted by folder name; a permutation seeded by ``--split-seed`` (default: each run's own
  seed, so the spread over seeds covers the split too) holds out ``round(n / 3)`` of them (21 of 62) for
  evaluation; the others (41, 656 crops) are the training set. No held-out crop is ever seen in training.
* **Evaluation.** Every held-out crop (21 x 16 = 336) is a query against all held-out crops as the gallery,
  cosine distance (``1 - cos``) of the L2-normalised embeddings, scored by
  :func:`core.evaluation.reid_metrics.reid_scores` (Market-1501 protocol): gallery items of the query's own
  identity **and** camera are removed from its ranking (which removes the query itself), so each query has
  its identity's 8 crops of the other camera as correct answers. mAP and CMC rank-1 / 5 / 10.
* **Features.** EfficientNet-Lite0 (the project's default image extractor, ImageNet weights, 1280-d) of every
  crop, computed once through the feature cache (:func:`core.features.compute_features`) in
  ``bench/out/cache/reid/<data folder>-<path hash>/`` (``--cache``; bench/out/ is ignored by git).
* **Pseudo-label quality.** For each trained model the final training-set pseudo-identities (``labels_``) are
  compared with the true training identities: ARI (each DBSCAN outlier a group of its own,
  :func:`bench.bench_reid_scale.ari_outliers_apart`), the number of clusters and of outliers. The pretrained row
  gives the same for the clustering the first epoch starts from (the Jaccard + DBSCAN of the raw features).

Parts (``--part``, several allowed; default all):

* ``pretrained`` (a): the raw features, no training; the same **camera-centred** (L2-normalised, then each
  camera's mean feature over the training crops subtracted from the training and the held-out crops); and
  **camera-standardised** (the model's ``camera_standardise``, what the head sees at its first epoch with
  ``camera_norm``, the training cameras' statistics applied to the held-out crops). No identity label is used:
  the camera is an item's group. The two cameras of reid_col780 are grass and pavement: the raw features rank by
  background, and these rows show how much of that a per-camera normalisation removes.
* ``unsupervised`` (b): :class:`core.models.reid.model.ReidModel`, head variant (a projection head on the cached
  features), default :class:`~core.models.reid.config.ReidConfig` (pk_proxy sampler, K 4, batch 32, 20 epochs),
  fitted on the training crops' features with their cameras; the held-out features are then embedded with
  ``transform`` (with their cameras). Run with each of ``--camera-norm`` (default ``on,off``: the default config,
  which standardises the features per camera, and the cached features as they are).
* ``confirmed`` (c): the same with ``round(0.2 x 41) = 8`` training identities (drawn with the run's seed) given
  as confirmed labels: all their crops become must-links and the identities cannot-links of one another
  (:func:`core.models.reid.links.combine_links`). The row also gives the ARI on the unconfirmed training items.
* ``samplers``: the head variant with each sampler: ``pk_cluster``, ``pk_proxy`` and ``group`` with K in
  {2, 4, 8, 16} (``--ks``; batch 32, a multiple of every K), ``random`` once (K unused); one seed by default
  (``--sampler-seeds``); ``--sampler-camera-norm`` (default on); every sampler runs the same number of steps per
  epoch (``--sampler-iters``, default one pass of the training items, ``round(656 / 32) = 20``): a P x K epoch
  of ReidConfig's default (``iters_per_epoch`` None) visits each cluster or proxy once, 1-15 steps depending on K,
  which would compare the samplers at different amounts of training.
* ``finetune``: the backbone variant (``efficientnet_lite0``, ``--finetune-backbone``) on the 128 x 64 crops
  (:func:`core.models.reid.inputs.load_crops`), one seed, ``time_budget_s = --finetune-budget-s`` (600 s): it
  stops after the epoch that passes the budget. One run per ``--finetune-iters`` entry (default ``default,20``:
  the default config's few steps per epoch, and one pass of the training items per epoch). Skipped, with a row
  saying why, when the nets / inputs modules do not import.

Each row (``bench/results/reid.jsonl``; ``--out`` or ``$BENCH_OUT`` sets the folder) holds ``part``,
``condition``, ``sampler``, ``k``, ``seed``, ``split_seed``, ``epochs_run``, ``stopped``, ``seconds`` (the fit,
features excluded), ``n_train``, ``n_query`` (valid queries), ``mAP``, ``rank1``, ``rank5``, ``rank10``, ``ari``,
``n_clusters``, ``n_outliers`` (training-set pseudo-labels), ``inputs`` (pretrained: raw / centred /
standardised), ``camera_norm`` (trained rows), ``history`` (the model's per-epoch clusters, outliers, proxies,
steps, loss), ``links`` (counts), ``config`` (the ReidConfig as a dict, or the features' description),
``budget_s``, ``loadavg`` ([1, 5, 15 min] before and after the run: the machine may be shared), ``threads``,
``held_out`` (the held-out identity names), ``quick``. A run that fails records ``error``.

``--table`` prints markdown tables of the rows (mean ± population std over seeds): one per condition, and
sampler x K for mAP and rank-1. ``--quick`` is a smoke run (12 identities, 2 epochs, K in {2, 16}, the
finetune budget at most 60 s); its rows are not published.

    python bench/bench_reid.py [--part pretrained unsupervised confirmed samplers finetune] [--seeds 0,1,2]
                               [--sampler-seeds 0] [--epochs N] [--budget-s 600] [--finetune-budget-s 600]
                               [--finetune-iters default,20] [--threads 2] [--resume]
    python bench/bench_reid.py --sampler-seeds 0,1,2     # the recorded figures (run_all's full run), ~15 min
    python bench/bench_reid.py --quick --out DIR
    python bench/bench_reid.py --table [--results bench/results/reid.jsonl]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_reid_scale import ari_outliers_apart  # noqa: E402
from bench.common import RESULTS, check_list, record, shared_dir  # noqa: E402

OUT_NAME = "reid"
PARTS = ("pretrained", "unsupervised", "confirmed", "samplers", "finetune")
SAMPLER_NAMES = ("random", "pk_cluster", "pk_proxy", "group")
#: the pretrained part's feature views (see :meth:`Split.inputs`)
INPUTS = ("raw", "centred", "standardised")
INPUT_NOTE = {"raw": " features", "centred": ", camera-centred features",
              "standardised": ", camera-standardised features (the head's camera_norm input)"}
NORMS = {"on": True, "off": False}
CACHE = ROOT / "bench" / "out" / "cache" / "reid"
QUICK_IDS = 12


# ------------------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class Crops:
    """The crops of a reid folder, sorted by (identity name, file name).

    Attributes
    ----------
    paths : list of Path, length n
    ids : np.ndarray, shape (n,), int64     identity index into ``names``
    cams : np.ndarray, shape (n,), int64    camera (the file name's CC - 1)
    names : list of str                     identity folder names, sorted
    """

    paths: list[Path]
    ids: np.ndarray
    cams: np.ndarray
    names: list[str]

    def subset(self, rows: np.ndarray) -> "Crops":
        """The crops at ``rows`` (m,), identity indices unchanged."""
        return Crops([self.paths[i] for i in rows], self.ids[rows], self.cams[rows], self.names)


def load_folder(root: Path) -> Crops:
    """Every ``<identity>/<CC>_<V>.<ext>`` image of ``root``; exits naming a file whose name does not parse."""
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not names:
        raise SystemExit(f"{root}: no identity folders; expected <identity>/<CC>_<V>.png files")
    paths, ids, cams = [], [], []
    for i, name in enumerate(names):
        for f in sorted((root / name).iterdir()):
            if not f.is_file():
                continue
            cam = f.stem.split("_")[0]
            if not cam.isdigit():
                raise SystemExit(f"{f}: the file name must start with the camera number (CC_V.png), got {f.name!r}")
            paths.append(f)
            ids.append(i)
            cams.append(int(cam) - 1)
    return Crops(paths, np.asarray(ids, np.int64), np.asarray(cams, np.int64), names)


def split_ids(n_ids: int, seed: int, held_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train ids, held-out ids), each sorted: a permutation of ``range(n_ids)`` seeded by ``seed``, the first
    ``round(held_fraction * n_ids)`` held out."""
    perm = np.random.default_rng(seed).permutation(n_ids)
    n_held = int(round(held_fraction * n_ids))
    if not 2 <= n_held <= n_ids - 2:
        raise SystemExit(f"--held-out {held_fraction} holds out {n_held} of {n_ids} identities; "
                         "both sides need at least 2")
    return np.sort(perm[n_held:]), np.sort(perm[:n_held])


def features(crops: Crops, extractor: str, cache: Path, device: str) -> np.ndarray:
    """Features (n, d) float32 of every crop through the feature cache (item id = position in the full folder)."""
    from core.features import compute_features
    from core.features.base import ItemRef

    failures: list = []
    ids, X = compute_features([ItemRef(i, p) for i, p in enumerate(crops.paths)], extractor, cache, device=device,
                              failures=failures)
    if len(ids) != len(crops.paths):
        raise SystemExit(f"{len(failures)} crops failed feature extraction, e.g. {failures[:3]}")
    return X.astype(np.float32)


def default_cache(data: Path) -> Path:
    """``bench/out/cache/reid/<folder name>-<hash of its resolved path>``: one cache per data folder."""
    digest = hashlib.sha1(str(data.resolve()).encode()).hexdigest()[:8]
    return CACHE / f"{data.parent.name}_{data.name}-{digest}"


# ------------------------------------------------------------------------------------------------ scoring
def unit(F: np.ndarray) -> np.ndarray:
    """Rows of ``F`` (n, e) scaled to unit norm, float32."""
    F = np.asarray(F, np.float32)
    return F / np.maximum(np.linalg.norm(F, axis=1, keepdims=True), 1e-12)


def evaluate(F: np.ndarray, ids: np.ndarray, cams: np.ndarray) -> dict:
    """mAP and rank-1 / 5 / 10 of every row of ``F`` (n, e) as a query against all rows, cosine distance; the
    gallery items of a query's own identity and camera (the query among them) are removed from its ranking."""
    from core.evaluation.reid_metrics import reid_scores

    U = unit(F)
    dist = np.clip(1.0 - U @ U.T, 0.0, 2.0).astype(np.float64)
    s = reid_scores(dist, ids, ids, cams, cams, ranks=(1, 5, 10))
    return {"mAP": round(s["mAP"], 4), "rank1": round(s["rank1"], 4), "rank5": round(s["rank5"], 4),
            "rank10": round(s["rank10"], 4), "n_query": int(s["n_queries"]), "n_skipped": int(s["n_skipped"])}


def label_quality(labels: np.ndarray, ids: np.ndarray) -> dict:
    """ARI (outliers apart) of pseudo-labels (n,) against the true identities (n,), clusters and outliers."""
    labels = np.asarray(labels, np.int64)
    return {"ari": round(ari_outliers_apart(ids, labels), 4),
            "n_clusters": int(len(np.unique(labels[labels >= 0]))), "n_outliers": int((labels < 0).sum())}


# ------------------------------------------------------------------------------------------------ runs
def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def fit_reid(data: Any, cams: np.ndarray, links: Any, cfg_params: dict, args: argparse.Namespace):
    """Fit :class:`ReidModel` with ``cfg_params``; returns (model, seconds)."""
    from core.models.reid.config import ReidConfig
    from core.models.reid.model import ReidModel

    cfg = ReidConfig(**cfg_params)
    t0 = time.perf_counter()
    model = ReidModel(cfg, device=args.device).fit(data, cams=cams, links=links, progress=_printer(cfg_params))
    return model, time.perf_counter() - t0


def _printer(params: dict):
    name = ", ".join(f"{k}={params[k]}" for k in ("variant", "sampler", "k", "seed") if k in params)

    def show(info: dict) -> None:
        if "loss" in info:
            print(f"  [{name}] epoch {info['step']}/{info['total']} loss {info['loss']:.4f} "
                  f"clusters {info.get('n_clusters')}", flush=True)
    return show


def head_params(args: argparse.Namespace, seed: int, **extra: Any) -> dict:
    """ReidConfig fields of a head-variant run: the defaults, the seed, the budget, ``--epochs``, ``extra``."""
    params = {"variant": "head", "seed": seed, "time_budget_s": float(args.budget_s), **_schedule(args), **extra}
    return params


def _schedule(args: argparse.Namespace) -> dict:
    """``epochs`` and ``iters_per_epoch`` from ``--epochs`` / ``--iters-per-epoch`` when given."""
    out = {} if args.epochs is None else {"epochs": int(args.epochs)}
    return out if args.iters_per_epoch is None else {**out, "iters_per_epoch": int(args.iters_per_epoch)}


def model_row(part: str, condition: str, model, seconds: float, eval_scores: dict, quality: dict,
              common: dict, **extra: Any) -> dict:
    s = model.summary()
    return record(OUT_NAME, {"part": part, "condition": condition, "sampler": s["sampler"],
                             "k": None if s["sampler"] == "random" else s["k"], "epochs_run": s["epochs_run"],
                             "stopped": s["stopped"], "seconds": round(seconds, 2), **eval_scores, **quality,
                             "config": asdict(model.config), "budget_s": model.config.time_budget_s,
                             "links": s["links"], "history": s["history"], **common, **extra}, out=OUT_NAME)


def error_row(part: str, condition: str, exc: Exception, common: dict, **extra: Any) -> dict:
    return record(OUT_NAME, {"part": part, "condition": condition, "error": f"{type(exc).__name__}: {exc}",
                             **common, **extra}, out=OUT_NAME)


class Split:
    """One seed's split of the crops and what every part of that seed shares."""

    def __init__(self, crops: Crops, X: np.ndarray, seed: int, args: argparse.Namespace) -> None:
        self.seed = seed
        self.split_seed = seed if args.split_seed is None else args.split_seed
        train_ids, held_ids = split_ids(len(crops.names), self.split_seed, args.held_out)
        self.train_rows = np.flatnonzero(np.isin(crops.ids, train_ids))
        self.held_rows = np.flatnonzero(np.isin(crops.ids, held_ids))
        self.crops, self.X = crops, X
        self.train_ids = train_ids
        self.held_names = [crops.names[i] for i in held_ids]

    def common(self, args: argparse.Namespace, before: list[float], **extra: Any) -> dict:
        return {"seed": self.seed, "split_seed": self.split_seed, "n_train": int(len(self.train_rows)),
                "n_train_ids": int(len(self.train_ids)), "n_held_ids": len(self.held_names),
                "data": args.data_name, "loadavg": [before, loadavg()], "threads": args.threads,
                "quick": bool(args.quick), "held_out": self.held_names, **extra}

    def inputs(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """(train (n_train, d), held-out (n_held, d)) features: ``raw`` as cached; ``centred``: L2-normalised,
        then each camera's mean over the **training** crops subtracted from both sets; ``standardised``: the
        model's own per-camera standardisation (:func:`core.models.reid.model.camera_standardise`, the head's
        ``camera_norm`` input) with the training crops' statistics. No identity label is used."""
        train, held = self.X[self.train_rows], self.X[self.held_rows]
        cams_t, cams_h = self.crops.cams[self.train_rows], self.crops.cams[self.held_rows]
        if kind == "raw":
            return train, held
        if kind == "standardised":
            import torch

            from core.models.reid.model import camera_standardise

            t, stats = camera_standardise(torch.as_tensor(train), cams_t)
            h, _ = camera_standardise(torch.as_tensor(held), cams_h, stats)
            return t.numpy(), h.numpy()
        means = camera_means(unit(train), cams_t)
        return camera_centred(unit(train), cams_t, means), camera_centred(unit(held), cams_h, means)

    def evaluate(self, F_held: np.ndarray) -> dict:
        return evaluate(F_held, self.crops.ids[self.held_rows], self.crops.cams[self.held_rows])

    def run_head(self, part: str, condition: str, params: dict, args: argparse.Namespace,
                 links: Any = None, camera_norm: bool = True, **extra: Any) -> dict:
        """Fit the head variant on the cached training features (``camera_norm``: the model standardises them per
        camera, its default), score the held-out ones, record the row."""
        before = loadavg()
        y_train = self.crops.ids[self.train_rows]
        params = {**params, "camera_norm": bool(camera_norm)}
        condition += "" if camera_norm else ", camera_norm off"
        if (part, condition, self.seed) in args.done:
            print(f"  done before: {part} / {condition} / seed {self.seed}", flush=True)
            return {}
        try:
            model, sec = fit_reid(self.X[self.train_rows], self.crops.cams[self.train_rows], links, params, args)
            scores = self.evaluate(model.transform(self.X[self.held_rows], cams=self.crops.cams[self.held_rows]))
        except Exception as exc:  # noqa: BLE001 - the bench records why a configuration failed and goes on
            return error_row(part, condition, exc, self.common(args, before), config=params, **extra)
        return model_row(part, condition, model, sec, scores, label_quality(model.labels_, y_train),
                         self.common(args, before), camera_norm=bool(camera_norm), **extra)


def part_pretrained(split: Split, args: argparse.Namespace) -> list[dict]:
    """(a) the raw features (and, as a reference, the same with each camera's mean removed): held-out scores and
    the Jaccard + DBSCAN clustering of the training features."""
    from core.models.reid.config import ReidConfig
    from core.models.reid.links import Links
    from core.models.reid.model import pseudo_identities

    cfg = ReidConfig()
    empty = Links(*(np.zeros((0, 2), np.int64),) * 3)
    rows = []
    for kind in INPUTS:
        if ("pretrained", f"{args.extractor}{INPUT_NOTE[kind]}", split.seed) in args.done:
            continue
        before = loadavg()
        t0 = time.perf_counter()
        train, held = split.inputs(kind)
        scores = split.evaluate(held)
        pseudo = pseudo_identities(unit(train), cfg, empty)
        quality = label_quality(pseudo.labels, split.crops.ids[split.train_rows])
        rows.append(record(OUT_NAME, {
            "part": "pretrained", "condition": f"{args.extractor}{INPUT_NOTE[kind]}", "sampler": None,
            "k": None, "epochs_run": 0, "seconds": round(time.perf_counter() - t0, 2), **scores, **quality,
            "inputs": kind, "config": {"extractor": args.extractor,
                       "distance": "cosine of L2-normalised features",
                       "clustering": {"eps": cfg.eps, "min_samples": cfg.min_samples, "k1": cfg.k1, "k2": cfg.k2}},
            **split.common(args, before)}, out=OUT_NAME))
    return rows


def camera_means(F: np.ndarray, cams: np.ndarray) -> dict[int, np.ndarray]:
    """The mean row (e,) of ``F`` (n, e) per camera value of ``cams`` (n,) int."""
    cams = np.asarray(cams, np.int64)
    values, inv = np.unique(cams, return_inverse=True)
    sums = np.zeros((len(values), F.shape[1]), np.float64)
    np.add.at(sums, inv, F)
    return {int(v): sums[j] / np.count_nonzero(inv == j) for j, v in enumerate(values)}


def camera_centred(F: np.ndarray, cams: np.ndarray, means: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """``F`` (n, e) minus the mean row of each item's camera (cams (n,)): a camera's shared colour and background
    taken out, with no identity label used (the project knows each item's camera, its group). ``means``
    (:func:`camera_means`, e.g. of the training crops) default to ``F``'s own; a camera they lack uses ``F``'s."""
    cams = np.asarray(cams, np.int64)
    own = camera_means(F, cams)
    means = {**own, **(means or {})}
    values, inv = np.unique(cams, return_inverse=True)
    M = np.stack([means[int(v)] for v in values])
    return (F - M[inv]).astype(np.float32)


def part_unsupervised(split: Split, args: argparse.Namespace) -> list[dict]:
    """(b) the head variant with no labels, default config, with each of ``--camera-norm``."""
    return [split.run_head("unsupervised", "head, no labels", head_params(args, split.seed), args, camera_norm=norm)
            for norm in args.camera_norm]


def confirmed_ids(split: Split, fraction: float, seed: int) -> np.ndarray:
    """``round(fraction * n_train_ids)`` training identities (at least 2) drawn with ``seed``, sorted."""
    m = max(2, int(round(fraction * len(split.train_ids))))
    return np.sort(np.random.default_rng((seed, 20)).choice(split.train_ids, m, replace=False))


def part_confirmed(split: Split, args: argparse.Namespace) -> list[dict]:
    """(c) the head variant with a fraction of the training identities confirmed (must- / cannot-links)."""
    from core.models.reid.links import combine_links

    chosen = confirmed_ids(split, args.confirmed, split.seed)
    y_train = split.crops.ids[split.train_rows]
    labelled = np.flatnonzero(np.isin(y_train, chosen))
    links = combine_links(len(split.train_rows), labelled, y_train[labelled].astype(str), None)
    condition = f"head, {args.confirmed:.0%} of the training ids confirmed ({len(chosen)} of {len(split.train_ids)})"
    return [split.run_head("confirmed", condition, head_params(args, split.seed), args, links=links, camera_norm=norm,
                           confirmed_ids=[split.crops.names[i] for i in chosen],
                           n_confirmed_items=int(len(labelled)))
            for norm in args.camera_norm]


def sampler_steps(args: argparse.Namespace, n_train: int) -> int | None:
    """Steps per epoch of the samplers part: ``--sampler-iters``, where 0 means one pass of the training items
    (``round(n_train / batch_size)``) and -1 the sampler's own epoch (ReidConfig's None)."""
    if args.sampler_iters < 0:
        return None
    return args.sampler_iters or max(1, int(round(n_train / args.batch_size)))


def part_samplers(split: Split, args: argparse.Namespace) -> list[dict]:
    """The four samplers, K varied for the three that use it (random once), the same steps per epoch for all."""
    rows = []
    steps = sampler_steps(args, len(split.train_rows))
    for sampler in SAMPLER_NAMES:
        for k in ([4] if sampler == "random" else args.ks):
            params = head_params(args, split.seed, sampler=sampler, k=int(k), batch_size=args.batch_size,
                                 iters_per_epoch=steps)
            name = ("random" if sampler == "random" else f"{sampler} K={k}") + \
                (f", {steps} steps/epoch" if steps else ", one sampler pass/epoch")
            rows.extend(split.run_head("samplers", name, params, args, camera_norm=norm)
                        for norm in args.sampler_camera_norm)
    return rows


def part_finetune(split: Split, args: argparse.Namespace) -> list[dict]:
    """The backbone variant on the decoded crops, one seed, a time budget, for each of ``--finetune-iters``."""
    name = f"finetune {args.finetune_backbone} {args.crop_height}x{args.crop_width}"
    before = loadavg()
    try:
        from core.features.base import ItemRef
        from core.models.reid.inputs import load_crops
        from core.models.reid.nets import build_embedding_net  # noqa: F401 - the variant's network must import
    except ImportError as exc:
        return [record(OUT_NAME, {"part": "finetune", "condition": name,
                                  "note": f"skipped: core.models.reid.nets / inputs do not import ({exc})",
                                  **split.common(args, before)}, out=OUT_NAME)]
    todo = [(steps, name + ("" if steps is None else f", {steps} steps/epoch")) for steps in args.finetune_iters]
    todo = [(steps, condition) for steps, condition in todo if ("finetune", condition, split.seed) not in args.done]
    if not todo:
        return []
    crops = load_crops([ItemRef(int(i), split.crops.paths[i]) for i in range(len(split.crops.paths))],
                       args.crop_height, args.crop_width)
    y_train = split.crops.ids[split.train_rows]
    rows = []
    for steps, condition in todo:
        before = loadavg()
        params = {"variant": "finetune", "backbone": args.finetune_backbone, "height": args.crop_height,
                  "width": args.crop_width, "seed": split.seed, "time_budget_s": float(args.finetune_budget_s),
                  **({} if args.epochs is None else {"epochs": int(args.epochs)}),
                  **({} if steps is None else {"iters_per_epoch": steps})}
        try:
            model, sec = fit_reid(crops[split.train_rows], split.crops.cams[split.train_rows], None, params, args)
            scores = split.evaluate(model.transform(crops[split.held_rows], cams=split.crops.cams[split.held_rows]))
        except Exception as exc:  # noqa: BLE001 - recorded
            rows.append(error_row("finetune", condition, exc, split.common(args, before), config=params))
            continue
        rows.append(model_row("finetune", condition, model, sec, scores, label_quality(model.labels_, y_train),
                              split.common(args, before)))
    return rows


RUNNERS = {"pretrained": part_pretrained, "unsupervised": part_unsupervised, "confirmed": part_confirmed,
           "samplers": part_samplers, "finetune": part_finetune}


def run(args: argparse.Namespace) -> int:
    """Every selected part for its seeds; returns the number of failed runs."""
    import faiss
    import torch

    from core.device import resolve_device

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    args.device = resolve_device(args.device)
    crops = load_folder(args.data)
    if args.quick:
        crops = crops.subset(np.flatnonzero(crops.ids < QUICK_IDS))  # the first identities; cache ids unchanged
    t0 = time.perf_counter()
    X = features(crops, args.extractor, args.cache, args.device)
    print(f"features {X.shape} in {time.perf_counter() - t0:.1f} s (cache {args.cache})", flush=True)
    crops = Crops(crops.paths, np.unique(crops.ids, return_inverse=True)[1].astype(np.int64), crops.cams,
                  [crops.names[i] for i in np.unique(crops.ids)])
    args.done = done_runs(args) if args.resume else set()
    failed = 0
    for part in args.part:
        seeds = {"samplers": args.sampler_seeds, "finetune": args.seeds[:1]}.get(part, args.seeds)
        for seed in seeds:
            print(f"== part {part} seed {seed}", flush=True)
            rows = RUNNERS[part](Split(crops, X, seed, args), args)
            failed += sum("error" in r for r in rows)
    return failed


def done_runs(args: argparse.Namespace) -> set[tuple]:
    """(part, condition, seed) of the rows already in the results file without an error (``--resume``)."""
    path = Path(os.environ.get("BENCH_OUT", RESULTS)) / f"{OUT_NAME}.jsonl"
    return {(r["part"], r["condition"], r.get("seed")) for r in load_rows(path, quick=args.quick) if "error" not in r}


# ------------------------------------------------------------------------------------------------ tables
def _fmt(values: list, digits: int = 3) -> str:
    """Mean, or mean ± population std, of the finite values; "-" when there are none."""
    v = [float(x) for x in values if x is not None and np.isfinite(x)]
    if not v:
        return "-"
    return f"{np.mean(v):.{digits}f}" if len(v) == 1 else f"{np.mean(v):.{digits}f} ± {np.std(v):.{digits}f}"


def _groups(rows: list[dict], key) -> dict[Any, list[dict]]:
    out: dict[Any, list[dict]] = {}
    for r in rows:
        out.setdefault(key(r), []).append(r)
    return out


def condition_table(rows: list[dict]) -> list[str]:
    """One line per (part, condition): mean ± std over seeds of the scores, pseudo-label quality and seconds."""
    lines = ["| part | condition | seeds | mAP | rank-1 | rank-5 | rank-10 | train ARI | clusters | outliers | "
             "epochs | seconds | budget s |", "|" + "---|" * 13]
    groups = _groups(rows, lambda r: (r["part"], r["condition"]))
    for (part, condition), rs in sorted(groups.items(), key=lambda g: PARTS.index(g[0][0])):
        ok = [r for r in rs if "error" not in r and "note" not in r]
        if not ok:
            why = rs[-1].get("error") or rs[-1].get("note")
            lines.append(f"| {part} | {condition} | {','.join(str(r.get('seed')) for r in rs)} | {why} |"
                         + " |" * 9)
            continue
        seeds = ",".join(str(r.get("seed")) for r in ok)
        cells = " | ".join(_fmt([r.get(m) for r in ok]) for m in ("mAP", "rank1", "rank5", "rank10", "ari"))
        counts = " | ".join(_fmt([r.get(m) for r in ok], 1) for m in ("n_clusters", "n_outliers", "epochs_run"))
        budget = ok[0].get("budget_s")
        lines.append(f"| {part} | {condition} | {seeds} | {cells} | {counts} | {_fmt([r['seconds'] for r in ok], 1)} "
                     f"| {'-' if budget is None else f'{budget:g}'} |")
    return lines


def sampler_setting(r: dict) -> str:
    """The camera_norm and steps per epoch of a samplers row, e.g. "camera_norm on, 20 steps/epoch"."""
    config = r.get("config") or {}
    steps = config.get("iters_per_epoch")
    norm = "on" if config.get("camera_norm") else "off"
    return f"camera_norm {norm}, " + (f"{steps} steps/epoch" if steps else "one sampler pass/epoch")


def sampler_table(rows: list[dict], metric: str) -> list[str]:
    """Sampler x K of ``metric`` (mean ± std over seeds) for rows of one setting; random has one K-free column."""
    mine = [r for r in rows if r.get("part") == "samplers" and "error" not in r]
    ks = sorted({r["k"] for r in mine if r.get("k") is not None})
    if not mine or not ks:
        return []
    lines = [f"| {metric} | " + " | ".join(f"K={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for sampler in SAMPLER_NAMES:
        rs = [r for r in mine if r["sampler"] == sampler]
        if not rs:
            continue
        if sampler == "random":
            lines.append(f"| random (K unused) | {_fmt([r[metric] for r in rs])} |" + " |" * (len(ks) - 1))
            continue
        cells = [_fmt([r[metric] for r in rs if r["k"] == k]) for k in ks]
        lines.append(f"| {sampler} | " + " | ".join(cells) + " |")
    return lines


def tables(rows: list[dict]) -> str:
    """Markdown: the per-condition table, then sampler x K for mAP, rank-1 and train ARI, with the loads seen."""
    if not rows:
        return "(no rows)"
    out = ["### reid_col780: held-out identities (query = gallery, same id + same camera removed)", "",
           *condition_table(rows), ""]
    samplers = [r for r in rows if r.get("part") == "samplers"]
    for setting, rs in _groups(samplers, sampler_setting).items():
        for metric in ("mAP", "rank1", "ari"):
            lines = sampler_table(rs, metric)
            if lines:
                out += [f"### samplers ({setting}): {metric}", "", *lines, ""]
    loads = [x for r in rows for x in (r.get("loadavg") or []) if x]
    if loads:
        one = [x[0] for x in loads]
        out.append(f"Load average (1 min) during the runs: {min(one):.2f}-{max(one):.2f}; threads "
                   f"{sorted({r['threads'] for r in rows if r.get('threads') is not None})}; "
                   f"machine {rows[-1].get('machine', {}).get('cpus')} CPUs.")
    return "\n".join(out)


def load_rows(path: Path, since: str | None = None, quick: bool = False) -> list[dict]:
    """Rows of ``path`` (JSON lines): dated ``since`` or later when given; quick rows only with ``quick``."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if (since is None or str(r.get("date", "")) >= since) and bool(r.get("quick")) == quick]


# ------------------------------------------------------------------------------------------------ command line
def int_list(value: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of ints, got {value!r}") from None
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(f"a non-empty list of ints >= 0, got {value!r}")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", nargs="+", default=list(PARTS), choices=PARTS)
    ap.add_argument("--data", type=Path, default=None,
                    help="folder of <identity>/<CC>_<V>.png crops (default ../shared/datasets/reid_col780/train)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="feature cache folder (default bench/out/cache/reid/<data folder>-<hash>)")
    ap.add_argument("--extractor", default="efficientnet_lite0", help="image feature extractor of the head variant")
    ap.add_argument("--seeds", type=int_list, default=[0, 1, 2], help="pretrained / unsupervised / confirmed seeds")
    ap.add_argument("--sampler-seeds", type=int_list, default=[0], help="seeds of the samplers part")
    ap.add_argument("--split-seed", type=int, default=None,
                    help="seed of the identity split (default: each run's own seed)")
    ap.add_argument("--held-out", type=float, default=1 / 3, help="fraction of the identities held out")
    ap.add_argument("--confirmed", type=float, default=0.2, help="fraction of the training identities confirmed")
    ap.add_argument("--camera-norm", default="on,off",
                    help="unsupervised / confirmed: ReidConfig.camera_norm, a comma list of on (the default config: "
                         "the features standardised per camera) and off (the cached features as they are)")
    ap.add_argument("--sampler-camera-norm", default="on", help="samplers part: camera_norm (on, off)")
    ap.add_argument("--sampler-iters", type=int, default=0,
                    help="samplers part: steps per epoch for every sampler; 0 (default): one pass of the training "
                         "items (n_train / batch size); -1: the sampler's own epoch (a P x K epoch visits each "
                         "cluster or proxy once: a few steps)")
    ap.add_argument("--ks", type=int_list, default=[2, 4, 8, 16], help="K of the P x K and group samplers")
    ap.add_argument("--batch-size", type=int, default=32, help="samplers part: batch size (a multiple of every K)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of every run (default: ReidConfig's)")
    ap.add_argument("--iters-per-epoch", type=int, default=None,
                    help="unsupervised / confirmed: steps per epoch (default: ReidConfig's None, one "
                         "pass of the sampler: with pk_proxy K 4 that is one visit per proxy, a few steps)")
    ap.add_argument("--budget-s", type=float, default=600.0, help="time_budget_s of each head-variant run")
    ap.add_argument("--finetune-budget-s", type=float, default=600.0, help="time_budget_s of the finetune run")
    ap.add_argument("--finetune-iters", default="default,20",
                    help="finetune: a run per entry, its steps per epoch: 'default' (ReidConfig's None: one pass of "
                         "the sampler, a few steps with pk_proxy K 4) or an int")
    ap.add_argument("--finetune-backbone", default="efficientnet_lite0",
                    help="backbone of the finetune part (efficientnet_lite0; tiny for tests)")
    ap.add_argument("--crop-height", type=int, default=128)
    ap.add_argument("--crop-width", type=int, default=64)
    ap.add_argument("--resume", action="store_true",
                    help="skip the (part, condition, seed) runs the results file already holds without an error "
                         "(to finish a run that was stopped)")
    ap.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_IDS} identities, 2 epochs")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch and faiss threads")
    ap.add_argument("--out", help="write the rows into this folder instead of bench/results")
    ap.add_argument("--table", action="store_true", help="print the markdown tables of the recorded rows")
    ap.add_argument("--results", type=Path, default=None, help="rows for --table (default: <out>/reid.jsonl)")
    ap.add_argument("--since", default=None, help="--table: only rows dated at or after this 'YYYY-MM-DD HH:MM'")
    args = ap.parse_args(argv)
    args.data = args.data or shared_dir() / "reid_col780" / "train"
    args.data_name = args.data.parent.name if args.data.name == "train" else args.data.name
    args.cache = args.cache or default_cache(args.data)
    args.camera_norm = [NORMS[v] for v in check_list("--camera-norm", args.camera_norm, tuple(NORMS))]
    args.sampler_camera_norm = [NORMS[v] for v in check_list("--sampler-camera-norm", args.sampler_camera_norm,
                                                          tuple(NORMS))]
    args.done = set()
    try:
        args.finetune_iters = [None if v == "default" else int(v) for v in args.finetune_iters.split(",") if v]
    except ValueError:
        raise SystemExit(f"--finetune-iters: a comma list of 'default' and ints >= 1; got {args.finetune_iters!r}")
    if not args.finetune_iters or any(v is not None and v < 1 for v in args.finetune_iters):
        raise SystemExit(f"--finetune-iters: a comma list of 'default' and ints >= 1; got {args.finetune_iters}")
    bad_k = [k for k in args.ks if k < 1 or args.batch_size % k]
    if bad_k:
        raise SystemExit(f"--ks: every K must be >= 1 and divide --batch-size {args.batch_size}; got {bad_k}")
    if args.quick:
        args.epochs = 2 if args.epochs is None else min(args.epochs, 2)
        args.seeds, args.sampler_seeds = args.seeds[:1], args.sampler_seeds[:1]
        args.ks = [k for k in args.ks if k in (2, 16)] or args.ks[:1]
        args.budget_s = min(args.budget_s, 60.0)
        args.finetune_budget_s = min(args.finetune_budget_s, 60.0)
        args.finetune_iters = args.finetune_iters[:1]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.out:
        os.environ["BENCH_OUT"] = args.out
    if args.table:
        path = args.results or Path(os.environ.get("BENCH_OUT", RESULTS)) / f"{OUT_NAME}.jsonl"
        print(tables(load_rows(path, args.since, quick=args.quick)))
        return 0
    if not args.data.is_dir():
        print(f"skip: {args.data} is absent", flush=True)
        return 0
    t0 = time.perf_counter()
    failed = run(args)
    print(f"bench_reid: {time.perf_counter() - t0:.1f} s, {failed} failed run(s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
