"""The "iic" model: Invariant Information Clustering (Ji, Henriques, Vedaldi 2019), optionally semi-supervised.

Training (:meth:`IICModel.fit`)
-------------------------------
* Inputs are pre-decoded once onto the device (:class:`core.models.pseudo_label.finetune.Inputs`): cached
  feature vectors (one row per item, for the MLP trunk) or uint8 images / spectrogram blocks (for the CNNs; an
  audio clip owns several rows). Mini-batches are index slices of a ``torch.randperm`` made on the device; no
  DataLoader, no per-sample Python loop.
* Pairs: ``"augment"``, a row and a random view of it (:class:`~core.models.iic.pairs.ImageAugment` for images,
  :class:`~core.models.iic.pairs.SpectrogramAugment` for spectrograms, :class:`~core.models.iic.pairs.FeatureAugment`
  for features); ``"neighbours"``, a row and one of the ``n_neighbours`` faiss nearest neighbours of its item in
  the cached features (SCAN, Van Gansbeke et al. 2020).
* Every epoch trains the main head (``k`` clusters) over all rows, then the overclustering head (``k_over``)
  over all rows, as IIC alternates its heads; the loss of a step is the sum over the head's sub-heads of
  :func:`~core.models.iic.losses.iic_loss`. With confirmed labels, each main-head step adds ``ce_weight`` x the
  (consensus-weighted) cross-entropy of a labelled mini-batch, cluster ``j`` standing for class ``j`` (needs
  ``k >= C``).
* Per epoch: every sub-head's mean loss (main and over), the mean cross-entropy, and for the best main
  sub-head the cluster-size entropy, effective number of clusters and largest-cluster share of the argmax
  assignments the main-head steps produced in that epoch (no extra pass).
* After training: the best sub-head of each head is the one of lowest loss in the last epoch; the clusters are
  mapped to classes by the Hungarian algorithm on the labelled items given to ``fit`` (the trainer keeps its
  calibration split out), and the collapse report (:func:`core.models.cluster_report.collapse_report`) gets
  ``advice``: what to try when the main head degenerated.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict
from typing import Any, Callable, Sequence

import numpy as np

from core.errors import ValidationError, check_param
from core.models.cluster_report import cluster_class_matrix, collapse_report, confusion_matrix, match_clusters
from core.models.context import Canceller
from core.models.iic.config import CNN_BACKBONES, OWNER, IICConfig

__all__ = ["IICModel", "IICConfig", "collapse_advice", "as_inputs"]

Progress = Callable[[dict], None]
CHUNK_FEATURES = 16384
CHUNK_IMAGES = 512
FORMAT = "iic-v1"


def as_inputs(X: np.ndarray, *, device: str = "cpu"):
    """Feature vectors ``X`` (n, d) as :class:`~core.models.pseudo_label.finetune.Inputs` (one row per item,
    unscaled: :class:`IICModel` scales them itself and keeps the scaling for prediction)."""
    from core.models.pseudo_label.finetune import feature_inputs

    X = np.asarray(X, np.float32)
    check_param(OWNER, "inputs", f"an array of shape {X.shape}", X.ndim == 2 and X.shape[0] >= 2 and X.shape[1] >= 1,
                "a 2-D (n, d) array with n >= 2")
    check_param(OWNER, "inputs", "features with NaN or inf", bool(np.isfinite(X).all()), "finite features")
    return feature_inputs(X, device=device, standardise=False)


class IICModel:
    """IIC on pre-decoded inputs; an estimator with ``fit`` / ``predict_proba`` / ``transform`` / ``state_dict``.

    Attributes (after ``fit`` or ``from_state``)
    --------------------------------------------
    config : IICConfig                the resolved config (backbone, pairs, k, epochs, ... filled in)
    classes_ : ndarray (C,)           the label set, the order of probability columns
    k_, k_over_ : int                 clusters of the main and overclustering heads (k_over_ = 0: no such head)
    net_ : core.models.iic.nets.IICNet
    best_sub_head_, best_over_head_ : int
    mapping_ : ndarray (k,) int64     class index of each cluster (-1: none)
    cluster_class_ : ndarray (k, C)   how a cluster's probability goes to classes (rows sum to 1)

    After ``fit`` only, per item of the training inputs (rows in item order):
    soft_ (n, k), clusters_ (n,) int64, over_soft_ (n, k_over) / overclusters_ (n,) int64 (or None),
    embedding_ (n, embed_dim), confusion_ (k, C) over the labelled items, collapse_ (dict with ``advice``),
    history_ (list of per-epoch dicts), sub_head_losses_ {"main": [...], "over": [...]}, info_ (dict).
    """

    def __init__(self, config: IICConfig = IICConfig(), *, device: str = "cpu"):
        self.config = config
        self.device = device

    # ------------------------------------------------------------------------------------------------ fit
    def fit(
        self,
        inputs: Any,
        *,
        labelled_idx: np.ndarray | None = None,
        y: np.ndarray | None = None,
        classes: Sequence[Any] | None = None,
        init_from: "dict | IICModel | None" = None,
        sample_weight: np.ndarray | None = None,
        pair_features: np.ndarray | None = None,
        progress: Progress | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> "IICModel":
        """Train the trunk and heads with the IIC objective (plus the labelled cross-entropy).

        Parameters
        ----------
        inputs : Inputs or ndarray (n, d)
            Pre-decoded inputs of ``n`` items (:class:`~core.models.pseudo_label.finetune.Inputs`: float features
            (r, d) for the MLP, uint8 (r, 3, s, s) images or spectrogram blocks for the CNNs); an array is
            taken as features.
        labelled_idx : ndarray (m,) int, optional
            Items (indices in ``0..n-1``) with a confirmed label: the cross-entropy and the mapping use them.
        y : ndarray (m,), optional
            Their labels.
        classes : sequence (C,), optional
            The label set (default: the sorted distinct ``y``).
        init_from : state dict or IICModel, optional
            Warm start: its weights (and feature scaling) are the starting point; shapes must match.
        sample_weight : ndarray (m,), optional
            Weight of each labelled item in the cross-entropy (the consensus confidence); all 1 when omitted.
        pair_features : ndarray (n, d'), optional
            Features of the k-NN graph of ``pairs="neighbours"`` (default: the inputs themselves, for features).
        progress : callable(dict), optional
            Called once per epoch with ``{"phase": "iic", "step", "total", "loss"}``.
        should_cancel : callable() -> bool, optional
            Polled between steps; :class:`core.errors.JobCancelled` is raised when it returns True.
        """
        import torch

        # small dense layers on a CPU run fastest on one thread (thread hand-offs dominate otherwise, and much
        # more so on a busy machine: 18 ms against 50-500 ms a step); convolutions keep the process's setting
        threads = torch.get_num_threads()
        mlp = isinstance(inputs, np.ndarray) or getattr(inputs, "kind", None) == "features"
        if mlp and not str(self.device).startswith("cuda"):
            torch.set_num_threads(1)
        try:
            return self._fit(inputs, labelled_idx, y, classes, init_from, sample_weight, pair_features, progress,
                             should_cancel)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, inputs, labelled_idx, y, classes, init_from, sample_weight, pair_features, progress,
             should_cancel) -> "IICModel":
        import torch

        data = as_inputs(inputs, device=self.device) if isinstance(inputs, np.ndarray) else inputs.to(self.device)
        cfg = self.config.validate()
        lab, y_cls = self._check_labels(data.n_items, labelled_idx, y, classes)
        cfg = self.config = cfg.resolved(len(self.classes_))
        check_param(OWNER, "k", cfg.k, cfg.k is not None, "an int >= 2 (or None with at least 2 classes)")
        check_param(OWNER, "k", cfg.k, cfg.k <= data.n_items, f"at most the number of items ({data.n_items})")
        kind_ok = (data.kind == "features") == (cfg.backbone == "mlp")
        check_param(OWNER, "backbone", cfg.backbone, kind_ok,
                    "'mlp' for feature inputs, 'small_cnn' or 'resnet18' for images and spectrograms")
        weight = _check_weight(sample_weight, len(lab))
        self.k_, self.k_over_ = int(cfg.k), cfg.k_over
        cancel, report = Canceller(should_cancel, "IIC"), progress or (lambda info: None)
        torch.manual_seed(cfg.seed)
        t0 = time.perf_counter()
        self._setup(data, init_from)
        x = self._device_rows(data)
        n_rows = int(x.shape[0])
        check_param(OWNER, "inputs", f"{n_rows} usable rows", n_rows >= 2, "at least 2 decodable items")
        partner = self._partners(data, pair_features)
        lab_rows, y_rows, w_rows, ce_note = self._labelled_rows(data, lab, y_cls, weight)
        restarts = 1 if init_from is not None else int(cfg.restarts)
        self.info_: dict[str, Any] = {"warm_start": init_from is not None, "n_rows": n_rows, "ce": ce_note,
                                      "n_neighbours": None if partner is None else int(partner.shape[1]),
                                      "n_media_failures": len(data.failures)}
        budget = None if cfg.time_budget_s is None else float(cfg.time_budget_s) / restarts
        tried: list[dict] = []
        kept: tuple | None = None
        E = int(cfg.epochs)
        for r in range(restarts):
            seed = int(cfg.seed) + r
            if r:  # a fresh network from the next seed (the first one was built above)
                torch.manual_seed(seed)
                self._setup(data, None)
            gen = torch.Generator(device=self.device).manual_seed(seed)

            def report_r(info: dict, r: int = r) -> None:
                report({**info, "step": r * E + info["step"], "total": E * restarts,
                        **({"restart": r + 1} if restarts > 1 else {})})
            self._train(x, gen, partner, lab_rows, y_rows, w_rows, report_r, cancel, time.perf_counter(), budget)
            loss = float(min(self.history_[-1]["main_loss"]))
            tried.append({"seed": seed, "loss": round(loss, 5), "epochs_run": len(self.history_),
                          "stopped": self.stopped_})
            if restarts > 1 and (kept is None or loss < kept[0]):  # one run keeps its network as it is
                kept = (loss, copy.deepcopy(self.net_.state_dict()), self.history_, self.stopped_, r)
        if restarts > 1:  # the restart whose best main sub-head ended with the lowest loss (IIC's own criterion)
            _, weights, self.history_, self.stopped_, chosen = kept
            self.net_.load_state_dict(weights)
            self.info_["restarts"] = {"tried": tried, "kept": chosen}
        elif init_from is not None and cfg.restarts > 1:
            self.info_["restarts"] = {"tried": tried, "kept": 0, "note": "a warm start trains once"}
        self._finish(data, x, lab, y_cls, weight, use_ce=lab_rows is not None)
        self.info_["seconds"] = round(time.perf_counter() - t0, 3)
        return self

    def _check_labels(self, n: int, labelled_idx, y, classes) -> tuple[np.ndarray, np.ndarray]:
        """Set ``classes_``; return labelled items (m,) and their class indices (m,)."""
        lab = np.zeros(0, np.int64) if labelled_idx is None else np.asarray(labelled_idx, np.int64).reshape(-1)
        yy = np.zeros(0, object) if y is None else np.asarray(y).reshape(-1)
        check_param(OWNER, "y", f"{len(yy)} labels", len(yy) == len(lab), f"one label per labelled row ({len(lab)})")
        check_param(OWNER, "labelled_idx", lab.tolist()[:5], len(lab) == 0 or (lab.min() >= 0 and lab.max() < n),
                    f"item indices in [0, {n})")
        if classes is not None:
            self.classes_ = np.asarray(list(classes), dtype=object)
        elif len(yy):
            self.classes_ = np.asarray(sorted(set(yy.tolist()), key=str), dtype=object)
        else:
            self.classes_ = np.asarray([str(j) for j in range(self.config.k or 0)], dtype=object)
        index = {c: i for i, c in enumerate(self.classes_.tolist())}
        unknown = sorted({str(v) for v in yy.tolist() if v not in index})
        if unknown:
            raise ValidationError(f"The 'y' parameter of {OWNER} must hold labels of 'classes' "
                                  f"({', '.join(map(str, self.classes_.tolist()))}). Got {', '.join(unknown)}.")
        return lab, np.array([index[v] for v in yy.tolist()], dtype=np.int64)

    # ---------------------------------------------------------------------------------------------- setup
    def _in_shape(self, data) -> tuple[int, ...]:
        """Input shape of the network without the batch axis: (d,) or (channels, s, s)."""
        cfg = self.config
        if cfg.backbone == "mlp":
            return (int(data.x.shape[1]),)
        c = 2 if cfg.sobel else (1 if cfg.backbone == "small_cnn" else 3)
        return (c, int(data.x.shape[2]), int(data.x.shape[3]))

    def _setup(self, data, init_from) -> None:
        """Build the network and the feature scaling, fresh or from ``init_from``."""
        cfg = self.config
        self.kind_ = data.kind
        self.in_shape_ = self._in_shape(data)
        self.net_ = _build(cfg, self.in_shape_, self.k_, self.k_over_, self.device)
        if init_from is None:
            self.shift_, self.scale_ = _feature_scaling(data) if cfg.backbone == "mlp" else (None, 1.0)
            return
        state = init_from.state_dict() if isinstance(init_from, IICModel) else init_from
        for name, mine in (("input_shape", list(self.in_shape_)), ("k", self.k_), ("k_over", self.k_over_),
                           ("backbone", cfg.backbone)):
            theirs = list(state[name]) if name == "input_shape" else state[name]
            check_param(OWNER, "init_from", f"{name} {theirs}", theirs == mine, f"a state with {name} {mine}")
        self._load_weights(state)

    def _load_weights(self, state: dict) -> None:
        import torch

        self.shift_ = None if state.get("shift") is None else np.asarray(state["shift"], np.float32)
        self.scale_ = float(state.get("scale", 1.0))
        self.net_.load_state_dict({k: torch.as_tensor(v) for k, v in state["weights"].items()})

    def _device_rows(self, data):
        """The input rows on the device: scaled float features (r, d), or the uint8 images (r, 3, s, s)."""
        import torch

        if self.config.backbone != "mlp":
            return data.x.to(self.device)
        x = data.x.to(self.device).float()
        return (x - torch.as_tensor(self.shift_, device=self.device)) * self.scale_

    def _views(self):
        """(plain view, augmented view): callables (rows of ``x``, generator) -> network input."""
        import torch

        from core.models.iic.pairs import FeatureAugment, ImageAugment, SpectrogramAugment, sobel

        cfg = self.config
        if cfg.backbone == "mlp":
            feat = FeatureAugment(noise=float(cfg.feature_noise), dropout=float(cfg.feature_dropout))
            return (lambda x, gen: x), (lambda x, gen: feat(x, gen))

        def prep(x: torch.Tensor) -> torch.Tensor:  # float [0, 1] (b, 3, s, s) -> network input
            if cfg.sobel:
                return sobel(x)
            if cfg.backbone == "small_cnn":
                x = x.mean(1, keepdim=True)
            return (x - 0.5) / 0.5

        aug = SpectrogramAugment() if self.kind_ == "audio" else ImageAugment(hflip=float(cfg.hflip))
        return (lambda x, gen: prep(x.float() / 255.0)), (lambda x, gen: prep(aug(x.float() / 255.0, gen)))

    def _partners(self, data, pair_features: np.ndarray | None):
        """Row-level neighbour graph (r, k') on the device for ``pairs="neighbours"``, else None.

        The k-NN graph (faiss, cosine on centred features) is built over the items that have input rows; a
        row's partners are the first rows of its item's neighbours.
        """
        import torch

        from core.models.iic.pairs import neighbour_graph

        cfg = self.config
        if cfg.pairs != "neighbours":
            return None
        if pair_features is None:
            check_param(OWNER, "pair_features", None, data.kind == "features",
                        "the cached features of the items (neighbour pairs of images or audio need them)")
            feats = data.x.cpu().numpy().astype(np.float32)
        else:
            feats = np.asarray(pair_features, np.float32)
            check_param(OWNER, "pair_features", f"an array of shape {feats.shape}",
                        feats.ndim == 2 and feats.shape[0] == data.n_items, f"a (n, d) array with n = {data.n_items}")
        owner = data.owner.cpu().numpy()
        ok_items, first_row = np.unique(owner, return_index=True)  # items with rows, the first row of each
        check_param(OWNER, "inputs", f"{len(ok_items)} usable items", len(ok_items) >= 2,
                    "at least 2 items for neighbour pairs")
        feats = feats[ok_items]
        # centred before the cosine graph: pooled CNN features share a large positive mean direction that
        # dominates their cosines (CIFAR-10 half, EfficientNet-Lite0: k-NN label purity 0.587 vs 0.573 at k=20,
        # bench_iic.py --part purity)
        graph = neighbour_graph(feats - feats.mean(0), min(cfg.n_neighbours, len(ok_items) - 1))  # (n_ok, k')
        pos = np.searchsorted(ok_items, owner)  # position of each row's item among ok_items
        rows = first_row[graph[pos]].astype(np.int64)  # (r, k'): the first row of each neighbour item
        return torch.as_tensor(rows, device=self.device)

    def _labelled_rows(self, data, lab, y_cls, weight):
        """Rows of the labelled items, their class index and weight on the device (None when no CE), and why."""
        import torch

        cfg, C = self.config, len(self.classes_)
        if not len(lab):
            return None, None, None, "off: no confirmed labels"
        if cfg.ce_weight == 0:
            return None, None, None, "off: ce_weight=0"
        if self.k_ < C:
            return None, None, None, f"off: k={self.k_} is below the number of classes ({C})"
        owner = data.owner.cpu().numpy()
        item_pos = np.full(data.n_items, -1, np.int64)
        item_pos[lab] = np.arange(len(lab))
        rows = np.flatnonzero(item_pos[owner] >= 0)
        if not len(rows):
            return None, None, None, "off: no labelled item could be decoded"
        p = item_pos[owner[rows]]
        w = None if weight is None else torch.as_tensor(weight[p], device=self.device)
        return (torch.as_tensor(rows, device=self.device), torch.as_tensor(y_cls[p], device=self.device), w,
                f"on: {len(np.unique(owner[rows]))} labelled items, weight {cfg.ce_weight}")

    # ------------------------------------------------------------------------------------------- training
    def _train(self, x, gen, partner, lab_rows, y_rows, w_rows, report: Progress, cancel: Canceller,
               t0: float, budget_s: float | None) -> None:
        """The epochs: main head over all rows, then the overclustering head; records the history. Stops after
        the epoch that passes ``budget_s`` seconds since ``t0``."""
        import torch

        from core.models.iic.losses import iic_loss, scan_loss, supervised_ce
        from core.models.iic.pairs import neighbour_partners

        cfg, n_rows, S = self.config, int(x.shape[0]), self.config.n_sub_heads
        plain, augmented = self._views()
        # the MLP's pairs are two noisy views (of an item and its neighbour, or of the item twice); the CNNs
        # pair two augmentations of an image (augment_both; else the plain image and one augmentation), or an
        # image with its neighbour (both plain or both augmented, the same rule)
        first = augmented if cfg.augment_both else plain
        repeats = int(cfg.repeats) if partner is None else 1
        if cfg.objective == "scan":
            def pair_loss(p, q):
                return scan_loss(p, q, entropy_weight=float(cfg.entropy_weight))
        else:
            def pair_loss(p, q):
                return iic_loss(p, q, lamb=float(cfg.lamb))
        opt = torch.optim.Adam(self.net_.parameters(), lr=float(cfg.lr))
        heads = ["main"] + (["over"] if self.k_over_ else [])
        self.history_: list[dict] = []
        self.stopped_ = "epochs"
        self.net_.train()
        for epoch in range(cfg.epochs):
            record: dict[str, Any] = {"epoch": epoch + 1}
            counts = torch.zeros(S, self.k_, device=self.device)
            for head in heads:
                totals = torch.zeros(S, device=self.device)
                ce_total, steps = torch.zeros((), device=self.device), 0
                for idx in _epoch_batches(n_rows, int(cfg.batch_size), int(cfg.min_steps_per_epoch), gen):
                    if partner is None:
                        idx = idx.repeat(repeats) if repeats > 1 else idx
                        xa, xb = first(x[idx], gen), augmented(x[idx], gen)
                    else:
                        xa, xb = first(x[idx], gen), first(x[neighbour_partners(partner, idx, gen)], gen)
                    outs = self.net_(torch.cat([xa, xb]), head)  # one pass: BatchNorm sees both views
                    b = len(idx)
                    losses = torch.stack([pair_loss(o[:b], o[b:]) for o in outs])
                    loss = losses.sum()
                    if head == "main":
                        for s, o in enumerate(outs):
                            counts[s] += torch.bincount(o[:b].detach().argmax(1), minlength=self.k_).float()
                        if lab_rows is not None:
                            j = torch.randint(len(lab_rows), (min(cfg.batch_size, len(lab_rows)),),
                                              device=self.device, generator=gen)
                            view = augmented if partner is None or cfg.backbone == "mlp" else plain
                            xl = view(x[lab_rows[j]], gen)
                            yl, wl = y_rows[j], None if w_rows is None else w_rows[j]
                            ce = self._ce(xl, yl, wl, supervised_ce)
                            loss = loss + float(cfg.ce_weight) * ce
                            ce_total += ce.detach()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    totals += losses.detach()
                    steps += 1
                    cancel(f"epoch {epoch + 1} ({head} head)")
                record[f"{head}_loss"] = [round(float(v), 5) for v in (totals / max(steps, 1)).tolist()]
                if head == "main" and lab_rows is not None:
                    record["ce"] = round(float(ce_total) / max(steps, 1), 5)
            best = int(np.argmin(record["main_loss"]))
            record.update(_size_stats(counts[best].cpu().numpy()), best_sub_head=best,
                          seconds=round(time.perf_counter() - t0, 3))
            self.history_.append(record)
            report({"phase": "iic", "step": epoch + 1, "total": cfg.epochs, "loss": record["main_loss"][best]})
            over_budget = budget_s is not None and time.perf_counter() - t0 > budget_s
            if over_budget and epoch + 1 < cfg.epochs:
                self.stopped_ = f"time budget ({budget_s:g} s) after epoch {epoch + 1}"
                break

    def _ce(self, xl, yl, wl, supervised_ce):
        """Cross-entropy of a labelled batch on every main sub-head, summed. BatchNorm needs >= 2 rows."""
        import torch

        if len(xl) < 2:
            xl, yl = torch.cat([xl, xl]), torch.cat([yl, yl])
            wl = None if wl is None else torch.cat([wl, wl])
        return sum(supervised_ce(o, yl, wl) for o in self.net_(xl, "main"))

    # ----------------------------------------------------------------------------------------- finishing
    def _forward_all(self, data, x=None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Per item: the best main sub-head (n, k), the best over sub-head (n, k_over) or None, the trunk
        output (n, e); an item's value is the mean over its rows, an item without rows gets the uniform
        assignment and the mean embedding."""
        import torch

        if x is None:
            x = self._device_rows(data.to(self.device))
        plain, _ = self._views()
        chunk = CHUNK_FEATURES if self.config.backbone == "mlp" else CHUNK_IMAGES
        self.net_.eval()
        mains, overs, embs = [], [], []
        with torch.no_grad():
            for s in range(0, int(x.shape[0]), chunk):
                m, o, z = self.net_.heads_and_embedding(plain(x[s:s + chunk], None))
                mains.append(m[self.best_sub_head_])
                overs.append(None if o is None else o[self.best_over_head_])
                embs.append(z)
        owner = data.owner.to(self.device)
        n = data.n_items

        def per_item(rows: list) -> np.ndarray:
            r = torch.cat(rows).float()
            out = torch.zeros(n, r.shape[1], device=self.device).index_add_(0, owner, r)
            cnt = torch.bincount(owner, minlength=n).float()
            out = out / cnt.clamp_min(1).unsqueeze(1)
            return out.cpu().numpy(), (cnt > 0).cpu().numpy()

        soft, ok = per_item(mains)
        soft[~ok] = 1.0 / soft.shape[1]
        over = None
        if overs[0] is not None:
            over, _ = per_item(overs)
            over[~ok] = 1.0 / over.shape[1]
        emb, _ = per_item(embs)
        if (~ok).any() and ok.any():
            emb[~ok] = emb[ok].mean(0)
        return soft, over, emb

    def _finish(self, data, x, lab: np.ndarray, y_cls: np.ndarray, weight: np.ndarray | None, *, use_ce: bool) -> None:
        """Best sub-heads, final assignments, the cluster -> class mapping and the collapse report."""
        cfg, k, C = self.config, self.k_, len(self.classes_)
        last = self.history_[-1]
        self.sub_head_losses_ = {"main": last["main_loss"], "over": last.get("over_loss", [])}
        self.best_sub_head_ = int(np.argmin(last["main_loss"]))
        self.best_over_head_ = int(np.argmin(last["over_loss"])) if self.k_over_ else 0
        self.soft_, self.over_soft_, self.embedding_ = self._forward_all(data, x)
        self.clusters_ = self.soft_.argmax(1).astype(np.int64)
        self.overclusters_ = None if self.over_soft_ is None else self.over_soft_.argmax(1).astype(np.int64)
        self.confusion_ = confusion_matrix(self.clusters_[lab], y_cls, k, C)
        if len(lab):
            table = confusion_matrix(self.clusters_[lab], y_cls, k, C, weight)
            if use_ce:  # cluster j was trained as class j: that breaks ties (half the smallest item weight)
                tie = 0.5 if weight is None or not (weight > 0).any() else 0.5 * float(weight[weight > 0].min())
                table = table + tie * np.eye(k, C)
            self.mapping_ = match_clusters(table)
        else:  # no labels: cluster j is named after class j (arbitrary names, in the classes' order)
            self.mapping_ = np.array([j if j < C else -1 for j in range(k)], np.int64)
        self.cluster_class_ = cluster_class_matrix(self.mapping_, self.confusion_, C)
        report = collapse_report(self.clusters_, k, cfg.collapse_fraction, cfg.min_effective_fraction)
        n_lab_classes = len(np.unique(y_cls)) if len(y_cls) else 0
        self.collapse_ = {**report, "advice": collapse_advice(cfg, report, n_lab_classes, C, self.kind_)}
        if self.overclusters_ is not None:
            over = collapse_report(self.overclusters_, self.k_over_, cfg.collapse_fraction, cfg.min_effective_fraction)
            self.over_collapse_ = {key: over[key] for key in ("collapsed", "reasons", "largest_fraction",
                                                              "n_empty", "effective_clusters")}
        else:
            self.over_collapse_ = None

    # ------------------------------------------------------------------------------------------ predict
    def _inputs(self, inputs):
        data = as_inputs(inputs, device=self.device) if isinstance(inputs, np.ndarray) else inputs.to(self.device)
        shape = self._in_shape(data) if data.kind == self.kind_ else None
        check_param(OWNER, "inputs", f"{data.kind} inputs of shape {shape}", shape == tuple(self.in_shape_),
                    f"{self.kind_} inputs of shape {tuple(self.in_shape_)}")
        return data

    def soft_assign(self, inputs, head: str = "main") -> np.ndarray:
        """Soft assignment (n, k) of the best main sub-head, or (n, k_over) of the best over sub-head."""
        soft, over, _ = self._forward_all(self._inputs(inputs))
        check_param(OWNER, "head", head, head == "main" or (head == "over" and over is not None),
                    "'main', or 'over' when the model has an overclustering head")
        return soft if head == "main" else over

    def predict_proba(self, inputs) -> np.ndarray:
        """Class probabilities (n, C), columns in the order of ``classes_``: ``soft_assign @ cluster_class_``."""
        return (self.soft_assign(inputs) @ self.cluster_class_).astype(np.float32)

    def predict(self, inputs) -> np.ndarray:
        """Mapped label of each item (n,)."""
        return self.classes_[self.predict_proba(inputs).argmax(1)]

    def transform(self, inputs) -> np.ndarray:
        """Trunk output (n, embed_dim) of each item (the mean over its rows)."""
        return self._forward_all(self._inputs(inputs))[2]

    # ---------------------------------------------------------------------------------- state and report
    def state_dict(self) -> dict:
        """Everything needed to predict or warm-start, as NumPy arrays and plain values (device-free)."""
        return {
            "format": FORMAT, "config": asdict(self.config), "backbone": self.config.backbone, "kind": self.kind_,
            "k": self.k_, "k_over": self.k_over_, "input_shape": list(self.in_shape_),
            "shift": None if self.shift_ is None else np.asarray(self.shift_), "scale": float(self.scale_),
            "weights": {k: v.detach().cpu().numpy().copy() for k, v in self.net_.state_dict().items()},
            "classes": [str(c) for c in self.classes_.tolist()],
            "best_sub_head": self.best_sub_head_, "best_over_head": self.best_over_head_,
            "mapping": self.mapping_.tolist(), "cluster_class": np.asarray(self.cluster_class_),
        }

    @classmethod
    def from_state(cls, state: dict, *, device: str = "cpu") -> "IICModel":
        """A fitted model from :meth:`state_dict` (predicts, transforms, and warm-starts a new fit)."""
        check_param(OWNER, "state", state.get("format"), state.get("format") == FORMAT, f"an {FORMAT} state")
        model = cls(IICConfig(**state["config"]), device=device)
        cfg = model.config
        model.k_, model.k_over_, model.kind_ = int(state["k"]), int(state["k_over"]), state["kind"]
        model.in_shape_ = tuple(state["input_shape"])
        model.net_ = _build(cfg, model.in_shape_, model.k_, model.k_over_, device)
        model._load_weights(state)
        model.classes_ = np.asarray(state["classes"], dtype=object)
        model.best_sub_head_, model.best_over_head_ = int(state["best_sub_head"]), int(state["best_over_head"])
        model.mapping_ = np.asarray(state["mapping"], np.int64)
        model.cluster_class_ = np.asarray(state["cluster_class"], np.float64)
        return model

    def summary(self) -> dict:
        """The run's ``metrics["iic"]`` (without the trainer's warm-start fields): heads, losses, history,
        mapping, cluster/label confusion and the collapse report with its advice."""
        cfg, names = self.config, [str(c) for c in self.classes_.tolist()]
        return {
            "k": self.k_, "k_over": self.k_over_, "backbone": cfg.backbone, "pairs": cfg.pairs,
            "n_sub_heads": cfg.n_sub_heads, "objective": cfg.objective, "lamb": cfg.lamb,
            "entropy_weight": cfg.entropy_weight if cfg.objective == "scan" else None,
            "epochs_run": len(self.history_),
            "stopped": self.stopped_, "sub_head_losses": self.sub_head_losses_, "best_sub_head": self.best_sub_head_,
            "best_over_head": self.best_over_head_ if self.k_over_ else None, "history": self.history_,
            "mapping": {str(j): (names[c] if c >= 0 else None) for j, c in enumerate(self.mapping_.tolist())},
            "confusion": {"rows": [str(j) for j in range(self.k_)], "cols": names,
                          "counts": self.confusion_.tolist(), "row_name": "cluster", "col_name": "label"},
            "cluster_sizes": np.bincount(self.clusters_, minlength=self.k_).tolist(),
            "collapse": self.collapse_, "over_collapse": self.over_collapse_, **self.info_,
        }


# ----------------------------------------------------------------------------------------------- helpers
def collapse_advice(config: IICConfig, report: dict, n_labelled_classes: int, n_classes: int,
                    kind: str = "features") -> list[str]:
    """What to try when the main head degenerated (empty when ``report["collapsed"]`` is False).

    Parameters
    ----------
    config : IICConfig (resolved)
    report : dict        :func:`core.models.cluster_report.collapse_report` of the main head
    n_labelled_classes : int   classes with at least one confirmed label the model trained on
    n_classes : int
    kind : str           the inputs: "features", "image" or "audio"
    """
    if not report.get("collapsed"):
        return []
    advice = []
    if config.backbone in CNN_BACKBONES:
        advice.append("train on pretrained features instead: backbone='mlp' with pairs='neighbours' (a network "
                      "trained from scratch on few images often collapses, as in the seed study)")
        if kind == "image" and not config.sobel:
            advice.append("sobel=True: IIC clusters the Sobel gradients so colour cannot be the easy shortcut")
    elif config.pairs != "neighbours":
        advice.append("pairs='neighbours': pairs of faiss nearest neighbours in the cached features (SCAN)")
    if config.objective == "scan":
        advice.append(f"a larger entropy_weight (now {config.entropy_weight:g}; SCAN uses 5) spreads the items "
                      "over more clusters")
    elif config.lamb <= 1.0:
        advice.append(f"a larger lamb (now {config.lamb:g}; e.g. 1.5-2) weighs the cluster-size entropy more "
                      "and pushes against one dominant cluster")
    advice.append(f"more epochs (now {config.epochs}) or a lower learning rate (now {config.lr:g})")
    if config.overcluster_factor < 5:
        advice.append(f"a larger overcluster_factor (now {config.overcluster_factor}; IIC uses 5-10): the "
                      "overclustering head shapes the trunk with finer groups")
    if n_classes and n_labelled_classes < n_classes:
        advice.append(f"confirm labels of more classes ({n_labelled_classes} of {n_classes} have one): the "
                      "cross-entropy term then anchors one cluster per class")
    return advice


def _build(cfg: IICConfig, in_shape: tuple[int, ...], k: int, k_over: int, device: str):
    """The :class:`~core.models.iic.nets.IICNet` of a resolved config, on ``device``."""
    from core.models.iic.nets import build_net

    return build_net(cfg.backbone, in_shape, k=k, k_over=k_over, n_sub_heads=cfg.n_sub_heads, hidden=cfg.hidden,
                     embed_dim=cfg.embed_dim, cnn_width=cfg.cnn_width).to(device)


def _epoch_batches(n: int, batch_size: int, min_steps: int, gen) -> list:
    """Row indices of one epoch's mini-batches (Tensors on ``gen``'s device).

    ``n // batch_size >= min_steps``: one permutation in near-equal batches of at least ``batch_size`` rows
    (none of size 1, which BatchNorm refuses). Otherwise ``min_steps`` batches of ``min(batch_size, n)`` rows
    from consecutive permutations.
    """
    import torch

    dev = gen.device
    if n // batch_size >= min_steps:
        return list(torch.tensor_split(torch.randperm(n, device=dev, generator=gen), n // batch_size))
    b = min(batch_size, n)
    reps = math.ceil(min_steps * b / n)
    order = torch.cat([torch.randperm(n, device=dev, generator=gen) for _ in range(reps)])
    return [order[i * b:(i + 1) * b] for i in range(min_steps)]


def _size_stats(counts: np.ndarray) -> dict:
    """Cluster-size entropy (nats), effective clusters (exp entropy) and the largest share of ``counts`` (k,)."""
    total = max(float(counts.sum()), 1.0)
    frac = counts / total
    nz = frac[frac > 0]
    entropy = float(-(nz * np.log(nz)).sum())
    return {"size_entropy": round(entropy, 4), "effective_clusters": round(math.exp(entropy), 3),
            "largest_share": round(float(frac.max()), 4)}


def _feature_scaling(data) -> tuple[np.ndarray, float]:
    """(shift (d,), scale) for features: centred, one global factor so that mean ||x||^2 / d = 1 (keeps the
    relative spread of e.g. PCA components, unlike a per-column z-score)."""
    X = data.x.detach().cpu().numpy().astype(np.float64)
    shift = X.mean(0)
    ms = float(((X - shift) ** 2).sum(1).mean()) / max(X.shape[1], 1)
    return shift.astype(np.float32), (1.0 / math.sqrt(ms)) if ms > 0 else 1.0


def _check_weight(sample_weight: np.ndarray | None, m: int) -> np.ndarray | None:
    """``sample_weight`` as float32 (m,), or None; refuses a wrong length and negative or non-finite values."""
    if sample_weight is None:
        return None
    v = np.asarray(sample_weight, np.float32).reshape(-1)
    check_param(OWNER, "sample_weight", f"{len(v)} weights", len(v) == m, f"one weight per labelled row ({m})")
    check_param(OWNER, "sample_weight", "weights with a negative, NaN or inf value",
                bool(np.isfinite(v).all() and (v >= 0).all()), "finite weights >= 0")
    return v
