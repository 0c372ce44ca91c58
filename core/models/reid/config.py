"""Configuration of the "reid" model: a frozen dataclass validated with the engine's one error template.

Defaults follow the seed paper (Cao et al., section IV.B: DBSCAN eps 0.5, temperature 0.09 in their runs, batch
32, "other settings are following" CAP: k-reciprocal k1 20 / k2 6, min_samples 4, 50 hard negatives, momentum 0.2,
inter-camera weight 0.5, Adam 3.5e-4 with weight decay 5e-4), with CPU-sized inputs: the light variant (a
projection head on the cached backbone features) is the default, the fine-tuned backbone sees 128 x 64 crops
(256 x 128 in the literature).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from core.errors import check_choice, check_param, is_int, is_number
from core.models.reid.losses import DEFAULT_INTER_WEIGHT, DEFAULT_K_NEG, DEFAULT_TAU
from core.models.reid.proxies import DEFAULT_MOMENTUM
from core.models.reid.samplers import SAMPLERS

OWNER = "reid"
VARIANTS = ("head", "finetune")
BACKBONES = ("efficientnet_lite0", "resnet50", "tiny")
POOLINGS = ("avg", "gem")
#: config fields that do not change the network a warm start reuses
WARM_IGNORED = ("warm_start", "epochs", "iters_per_epoch", "batch_size", "sampler", "k", "tau", "k_neg",
                "intra_weight", "inter_weight", "momentum", "eps", "min_samples", "k1", "k2", "lr", "weight_decay",
                "use_cameras", "seed", "time_budget_s", "weights", "feature_dropout")


@dataclass(frozen=True)
class ReidConfig:
    """Configuration of :class:`core.models.reid.model.ReidModel`.

    Attributes
    ----------
    variant : str                   "head": a projection head (linear + BN + L2) on the cached backbone features,
                                    a retrain in about a minute on the CPU; "finetune": the backbone itself on
                                    the decoded crops
    backbone : str                  finetune: "efficientnet_lite0" (offline ImageNet weights), "resnet50" (a
                                    local torchvision weights file, ``weights``), "tiny" (random init, tests)
    pooling : str                   finetune: "avg" or "gem" (generalised mean, learnable p)
    weights : str | None            finetune: path of the backbone's weights file (resnet50)
    embed_dim : int | None          width of the embedding; None = the features' width (head) or the trunk's
    height, width : int             finetune: crops are resized to height x width (256 x 128 in the literature)
    camera_norm : bool              head: standardise the cached features per camera (the item's group) before
                                    the head (camera-based normalisation; one camera: plain standardisation)
    feature_dropout : float         head: dropout on the cached features of a training batch (the head's only
                                    augmentation; the crops' augmentation is flip, pad-crop, random erasing)
    epochs : int                    epochs; each re-clusters the embeddings of every item first
    iters_per_epoch : int | None    steps per epoch; None = one pass of the sampler's batches for the head, one
                                    pass of the items (``round(n / batch_size)`` steps) for the fine-tuned backbone
    batch_size : int                items per step (32 in the seed)
    sampler : str                   "random", "pk_cluster", "pk_proxy" or "group" (:mod:`core.models.reid.samplers`)
    k : int                         items per cluster / proxy (P x K samplers) or group size N (group)
    tau : float                     temperature of the proxy contrastive loss (0.05-0.09 in the literature)
    k_neg : int                     hard negative proxies per item
    intra_weight, inter_weight : float   weights of the intra- and inter-camera terms
    momentum : float                memory bank momentum (the weight the old centroid keeps)
    eps : float                     DBSCAN radius on the Jaccard distance
    min_samples : int               DBSCAN core size
    k1, k2 : int                    k-reciprocal neighbourhood and query expansion of the Jaccard distance
    lr, weight_decay : float        Adam
    use_cameras : bool              split clusters into camera-aware proxies by the items' group (camera) column;
                                    False (or no item has a group): one proxy per cluster
    seed : int
    warm_start : bool               start from the previous reid run's weights when the network is unchanged
    time_budget_s : float | None    stop after the epoch that passes this many seconds
    """

    variant: str = "head"
    backbone: str = "efficientnet_lite0"
    pooling: str = "avg"
    weights: str | None = None
    embed_dim: int | None = None
    height: int = 128
    width: int = 64
    camera_norm: bool = True
    feature_dropout: float = 0.1
    epochs: int = 20
    iters_per_epoch: int | None = None
    batch_size: int = 32
    sampler: str = "pk_proxy"
    k: int = 4
    tau: float = DEFAULT_TAU
    k_neg: int = DEFAULT_K_NEG
    intra_weight: float = 1.0
    inter_weight: float = DEFAULT_INTER_WEIGHT
    momentum: float = DEFAULT_MOMENTUM
    eps: float = 0.5
    min_samples: int = 4
    k1: int = 20
    k2: int = 6
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    use_cameras: bool = True
    seed: int = 0
    warm_start: bool = True
    time_budget_s: float | None = None

    def validate(self) -> "ReidConfig":
        """Raise :class:`core.errors.ValidationError` naming the first bad field, its value and what is allowed;
        return self."""
        check_choice(OWNER, "variant", self.variant, VARIANTS)
        check_choice(OWNER, "backbone", self.backbone, BACKBONES)
        check_choice(OWNER, "pooling", self.pooling, POOLINGS)
        check_choice(OWNER, "sampler", self.sampler, list(SAMPLERS))
        check_param(OWNER, "weights", self.weights, self.weights is None or isinstance(self.weights, str),
                    "None or the path of a weights file")
        check_param(OWNER, "embed_dim", self.embed_dim, self.embed_dim is None
                    or (is_int(self.embed_dim) and self.embed_dim >= 2), "None or an int >= 2")
        for name in ("height", "width"):
            v = getattr(self, name)
            check_param(OWNER, name, v, is_int(v) and 16 <= v <= 512, "an int in [16, 512] (pixels)")
        for name in ("epochs", "k", "k_neg", "min_samples", "k1", "k2"):
            v = getattr(self, name)
            check_param(OWNER, name, v, is_int(v) and v >= 1, "an int >= 1")
        check_param(OWNER, "k2", self.k2, self.k2 <= self.k1 + 1, f"an int <= k1 + 1 = {self.k1 + 1}")
        check_param(OWNER, "batch_size", self.batch_size, is_int(self.batch_size) and self.batch_size >= 2,
                    "an int >= 2 (batch norm needs two items)")
        if self.sampler in ("pk_cluster", "pk_proxy"):
            check_param(OWNER, "batch_size", self.batch_size, self.batch_size % self.k == 0,
                        f"a multiple of k={self.k} for the P x K sampler {self.sampler!r}")
        check_param(OWNER, "iters_per_epoch", self.iters_per_epoch, self.iters_per_epoch is None
                    or (is_int(self.iters_per_epoch) and self.iters_per_epoch >= 1), "None or an int >= 1")
        check_param(OWNER, "feature_dropout", self.feature_dropout, is_number(self.feature_dropout)
                    and 0 <= self.feature_dropout < 1, "a number in [0, 1)")
        for name in ("tau", "eps", "lr"):
            v = getattr(self, name)
            check_param(OWNER, name, v, is_number(v) and v > 0, "a number > 0")
        for name in ("intra_weight", "inter_weight", "weight_decay"):
            v = getattr(self, name)
            check_param(OWNER, name, v, is_number(v) and v >= 0, "a number >= 0")
        check_param(OWNER, "intra_weight", self.intra_weight, self.intra_weight + self.inter_weight > 0,
                    "a number > 0 when inter_weight is 0 (one loss term must be on)")
        check_param(OWNER, "momentum", self.momentum, is_number(self.momentum) and 0 <= self.momentum <= 1,
                    "a number in [0, 1]")
        for name in ("use_cameras", "warm_start", "camera_norm"):
            check_param(OWNER, name, getattr(self, name), isinstance(getattr(self, name), bool), "a bool")
        check_param(OWNER, "seed", self.seed, is_int(self.seed) and self.seed >= 0, "an int >= 0")
        check_param(OWNER, "time_budget_s", self.time_budget_s, self.time_budget_s is None
                    or (is_number(self.time_budget_s) and self.time_budget_s > 0), "None or a number > 0 (seconds)")
        return self

    @classmethod
    def from_params(cls, params: dict | None) -> "ReidConfig":
        """A config from job parameters; an unknown name lists the allowed ones."""
        allowed = [f.name for f in fields(cls)]
        for key in (params or {}):
            check_choice(OWNER, "parameter name", key, allowed)
        return cls(**dict(params or {}))
