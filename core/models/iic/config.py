"""Configuration of the "iic" model: a frozen dataclass validated with the engine's one error template.

``None`` fields are resolved per backbone by :meth:`IICConfig.resolved` (the CPU defaults): ``backbone="auto"``
is the MLP on the cached features, whose pairs are faiss neighbours (SCAN); the CNNs default to augmentation
pairs (IIC).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from core.errors import check_choice, check_param, is_int, is_number

OWNER = "IIC"
BACKBONES = ("auto", "mlp", "small_cnn", "resnet18")
PAIRS = ("auto", "neighbours", "augment")
OBJECTIVES = ("auto", "iic", "scan")
CNN_BACKBONES = ("small_cnn", "resnet18")
#: per resolved backbone: (epochs, batch_size, lr, image_size, lamb, cnn_width). small_cnn's were measured on
#: MNIST-5k (bench_iic --part mnist, docs/iic.md): lamb 1.5, both sides augmented, 30 epochs at width 16 gave
#: ACC 0.854 +- 0.096 over 3 seeds, none flagged, where lamb 1.0 with a plain-image side gave 0.280 (3/3 flagged)
DEFAULTS: dict[str, tuple[int, int, float, int | None, float, int]] = {
    "mlp": (50, 256, 1e-3, None, 1.0, 16),
    "small_cnn": (30, 256, 1e-3, 28, 1.5, 16),
    "resnet18": (10, 128, 1e-3, 32, 1.0, 16),
}
#: config fields that do not change the network a warm start would reuse
WARM_IGNORED = ("warm_start", "epochs", "batch_size", "min_steps_per_epoch", "lr", "lamb", "ce_weight",
                "calibration_fraction", "seed", "collapse_fraction", "min_effective_fraction", "time_budget_s",
                "n_neighbours", "pairs", "objective", "entropy_weight", "hflip", "feature_noise", "feature_dropout",
                "repeats", "augment_both", "restarts")



@dataclass(frozen=True)
class IICConfig:
    """Configuration of :class:`core.models.iic.model.IICModel`.

    Attributes
    ----------
    k : int | None                  clusters of the main head; None = the number of classes
    overcluster_factor : int        the overclustering head has ``factor * k`` clusters; 0 disables it
    n_sub_heads : int               linear + softmax sub-heads per head (the best main one is published)
    lamb : float | None             weight of the marginal-entropy terms of the IIC loss (1 = mutual information;
                                    None: 1.5 for small_cnn, 1.0 otherwise)
    backbone : str                  "mlp" on the cached features, "small_cnn" (MNIST-sized images),
                                    "resnet18" (torchvision, from scratch, small-image stem); "auto" = "mlp"
    pairs : str                     "neighbours": an item and one of its ``n_neighbours`` faiss nearest
                                    neighbours in the cached features (SCAN); "augment": an item and a random
                                    augmentation of it (IIC); "auto": neighbours for the MLP, augment for CNNs
    objective : str                 "iic": the mutual information of the pairs (IIC's loss, weight ``lamb``);
                                    "scan": SCAN's consistency + entropy loss (weight ``entropy_weight``), for
                                    neighbour pairs; "auto": scan for neighbour pairs, iic for augmentation
                                    pairs (CIFAR-10 half, no labels: scan 0.553 +- 0.004 ACC against iic's
                                    0.511 +- 0.037 on the same pairs, docs/iic.md)
    entropy_weight : float          SCAN's weight of the entropy of the mean assignment (5 in the paper)
    n_neighbours : int              k of the k-NN graph of neighbour pairs
    view : str | None               which cached view (extractor) the MLP and the k-NN graph use; None = all
    image_size : int | None         side of the decoded images (None: 28 for small_cnn, 32 for resnet18)
    sobel : bool                    CNNs see the Sobel gradients of the grey image (IIC's preprocessing)
    hflip : float | None            probability of a horizontal flip in image augmentations (None: 0 for
                                    small_cnn, as digits and characters are not mirror-symmetric; 0.5 for resnet18)
    feature_noise, feature_dropout  the MLP's views: Gaussian noise (in feature standard deviations) and
                                    dropout on both items of a pair (:class:`~core.models.iic.pairs.FeatureAugment`;
                                    0.3 noise gave +5-10 points ACC over none on the demo's pixels_pca)
    epochs : int | None             passes over the items, each one per head (None: per backbone)
    batch_size : int | None         items per mini-batch (None: per backbone)
    repeats : int                   augmentation pairs: each item of a mini-batch appears this many times, each
                                    time with its own random views (IIC's ``num_dataloaders``; a batch holds
                                    ``batch_size x repeats`` pairs); neighbour pairs ignore it
    augment_both : bool | None      augmentation pairs: both sides are random views (True) or the plain image
                                    and a view (False); None: True (the MLP's views are always both)
    min_steps_per_epoch : int       a small project's epoch still makes this many steps per head (random
                                    batches of min(batch_size, n) rows), so that a few hundred items train
    lr : float | None               Adam's learning rate (None: 1e-3)
    hidden : int                    hidden width of the MLP trunk
    cnn_width : int | None          channels of small_cnn's first block (then 2x and 4x; None: 16, several
                                    times cheaper per step than 32 on the CPU, so more epochs fit a budget)
    embed_dim : int                 width of the trunk's output (the run's embedding for the map)
    ce_weight : float               weight of the cross-entropy of the labelled items on the main head
    calibration_fraction : float    share of each class's labels held out of the CE and the mapping; their
                                    predictions are the run's out-of-sample probabilities (calibration)
    seed : int
    restarts : int                  train this many networks from seeds ``seed``, ``seed + 1``, ... and keep the
                                    one whose best main sub-head ends with the lowest loss (IIC's own criterion;
                                    like k-means' n_init); ``time_budget_s`` is shared equally; a warm start
                                    trains once
    warm_start : bool               start from the previous IIC run's weights when compatible
    collapse_fraction : float       collapse when one cluster holds more than this fraction of the items
    min_effective_fraction : float  ... or the effective number of clusters falls below this x k
    time_budget_s : float | None    stop after the epoch that passes this many seconds
    """

    k: int | None = None
    overcluster_factor: int = 5
    n_sub_heads: int = 5
    lamb: float | None = None
    backbone: str = "auto"
    pairs: str = "auto"
    objective: str = "auto"
    entropy_weight: float = 5.0
    n_neighbours: int = 20
    view: str | None = None
    image_size: int | None = None
    sobel: bool = False
    hflip: float | None = None
    feature_noise: float = 0.3
    feature_dropout: float = 0.0
    epochs: int | None = None
    batch_size: int | None = None
    repeats: int = 1
    augment_both: bool | None = None
    min_steps_per_epoch: int = 10
    lr: float | None = None
    hidden: int = 512
    cnn_width: int | None = None
    embed_dim: int = 128
    ce_weight: float = 1.0
    calibration_fraction: float = 0.2
    seed: int = 0
    restarts: int = 1
    warm_start: bool = True
    collapse_fraction: float = 0.5
    min_effective_fraction: float = 0.5
    time_budget_s: float | None = None

    def validate(self) -> "IICConfig":
        """Raise :class:`core.errors.ValidationError` naming the first bad field, its value and what is allowed;
        return self."""
        check_param(OWNER, "k", self.k, self.k is None or (is_int(self.k) and self.k >= 2), "None or an int >= 2")
        for name in ("overcluster_factor",):
            v = getattr(self, name)
            check_param(OWNER, name, v, is_int(v) and (v == 0 or v >= 2), "0 (no overclustering head) or an int >= 2")
        for name in ("n_sub_heads", "n_neighbours", "hidden", "embed_dim", "min_steps_per_epoch", "repeats",
                     "restarts"):
            v = getattr(self, name)
            check_param(OWNER, name, v, is_int(v) and v >= 1, "an int >= 1")
        check_param(OWNER, "lamb", self.lamb, self.lamb is None or (is_number(self.lamb) and self.lamb > 0),
                    "None or a number > 0")
        check_param(OWNER, "cnn_width", self.cnn_width, self.cnn_width is None
                    or (is_int(self.cnn_width) and self.cnn_width >= 1), "None or an int >= 1")
        check_choice(OWNER, "backbone", self.backbone, BACKBONES)
        check_choice(OWNER, "pairs", self.pairs, PAIRS)
        check_choice(OWNER, "objective", self.objective, OBJECTIVES)
        check_param(OWNER, "entropy_weight", self.entropy_weight, is_number(self.entropy_weight)
                    and self.entropy_weight >= 0, "a number >= 0")
        check_param(OWNER, "view", self.view, self.view is None or isinstance(self.view, str),
                    "None or an extractor name")
        check_param(OWNER, "image_size", self.image_size, self.image_size is None
                    or (is_int(self.image_size) and 8 <= self.image_size <= 512), "None or an int in [8, 512]")
        check_param(OWNER, "sobel", self.sobel, isinstance(self.sobel, bool), "a bool")
        check_param(OWNER, "hflip", self.hflip, self.hflip is None or (is_number(self.hflip) and 0 <= self.hflip <= 1),
                    "None or a probability in [0, 1]")
        check_param(OWNER, "augment_both", self.augment_both, self.augment_both is None
                    or isinstance(self.augment_both, bool), "None, True or False")
        check_param(OWNER, "feature_noise", self.feature_noise, is_number(self.feature_noise) and self.feature_noise >= 0,
                    "a number >= 0")
        check_param(OWNER, "feature_dropout", self.feature_dropout, is_number(self.feature_dropout)
                    and 0 <= self.feature_dropout < 1, "a number in [0, 1)")
        check_param(OWNER, "epochs", self.epochs, self.epochs is None or (is_int(self.epochs) and self.epochs >= 1),
                    "None or an int >= 1")
        check_param(OWNER, "batch_size", self.batch_size, self.batch_size is None
                    or (is_int(self.batch_size) and self.batch_size >= 2), "None or an int >= 2")
        check_param(OWNER, "lr", self.lr, self.lr is None or (is_number(self.lr) and self.lr > 0), "None or a number > 0")
        check_param(OWNER, "ce_weight", self.ce_weight, is_number(self.ce_weight) and self.ce_weight >= 0,
                    "a number >= 0")
        check_param(OWNER, "calibration_fraction", self.calibration_fraction, is_number(self.calibration_fraction)
                    and 0 <= self.calibration_fraction < 1, "a number in [0, 1)")
        check_param(OWNER, "seed", self.seed, is_int(self.seed), "an int")
        check_param(OWNER, "warm_start", self.warm_start, isinstance(self.warm_start, bool), "a bool")
        for name in ("collapse_fraction", "min_effective_fraction"):
            v = getattr(self, name)
            check_param(OWNER, name, v, is_number(v) and 0 < v <= 1, "a number in (0, 1]")
        check_param(OWNER, "time_budget_s", self.time_budget_s, self.time_budget_s is None
                    or (is_number(self.time_budget_s) and self.time_budget_s > 0), "None or a number > 0 (seconds)")
        return self

    def resolved(self, n_classes: int | None = None) -> "IICConfig":
        """The config with ``backbone``, ``pairs``, ``objective``, ``k`` (from ``n_classes``), ``epochs``,
        ``batch_size``, ``lr``, ``image_size``, ``lamb``, ``cnn_width`` and ``augment_both`` filled in from the
        per-backbone defaults (:data:`DEFAULTS`)."""
        backbone = "mlp" if self.backbone == "auto" else self.backbone
        pairs = self.pairs if self.pairs != "auto" else ("neighbours" if backbone == "mlp" else "augment")
        epochs, batch_size, lr, size, lamb, width = DEFAULTS[backbone]
        k = self.k if self.k is not None else (max(2, int(n_classes)) if n_classes else None)
        objective = self.objective if self.objective != "auto" else ("scan" if pairs == "neighbours" else "iic")
        return replace(self, backbone=backbone, pairs=pairs, objective=objective, k=k, epochs=self.epochs or epochs,
                       batch_size=self.batch_size or batch_size, lr=self.lr or lr,
                       image_size=self.image_size or size, lamb=self.lamb or lamb, cnn_width=self.cnn_width or width,
                       hflip=self.hflip if self.hflip is not None else (0.0 if backbone == "small_cnn" else 0.5),
                       augment_both=True if backbone == "mlp" or self.augment_both is None else self.augment_both)

    @property
    def k_over(self) -> int:
        """Clusters of the overclustering head (0: no such head); needs a resolved ``k``."""
        return int(self.overcluster_factor * (self.k or 0))

    @classmethod
    def from_params(cls, params: dict | None, **defaults: Any) -> "IICConfig":
        """A config from job parameters (lists become tuples); an unknown name lists the allowed ones."""
        allowed = [f.name for f in fields(cls)]
        kwargs = dict(defaults)
        for key, value in (params or {}).items():
            check_choice(OWNER, "parameter name", key, allowed)
            kwargs[key] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)
