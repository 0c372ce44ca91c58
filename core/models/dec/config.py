"""Configuration of the "dec" model: a frozen dataclass validated with the engine's one error template."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from core.errors import check_choice, check_param, is_int

SCALINGS = ("dec", "standard", "none")
INITS = ("concat", "first")
PRIOR_SOURCES = ("auto", "labels", "uniform")
INIT_METHODS = ("kmeans", "umap_gmm")
WEIGHT_INITS = ("glorot", "torch")
#: config fields that do not change the model a warm start would reuse
WARM_IGNORED = ("warm_start", "max_iter", "tol", "update_interval", "seed", "oof_folds")


@dataclass(frozen=True)
class DECConfig:
    """Configuration of :class:`MultiModalDEC`.

    Attributes
    ----------
    n_clusters : int | None       clusters; None = the number of classes
    dims : tuple[int, ...]        hidden widths then the latent width of each branch's encoder
    alpha : float                 degrees of freedom of the Student's t kernel (1 in DEC)
    input_scaling : str           "dec": one factor per view so that mean ||x||^2 / d = 1 (DEC's MNIST recipe);
                                  "standard": per-feature z-score; "none"
    pretrain_epochs, pretrain_lr  autoencoder pretraining (Adam, MSE)
    pretrain_batch_size : int | None  its mini-batch size; None = ``batch_size``
    pretrain_dropout : float      input corruption while pretraining: each input value is zeroed with this
                                  probability (a denoising autoencoder; DEC pretrains with 20% dropout)
    weight_init : str             "glorot": Xavier-uniform weights, zero biases (DEC's Keras/IDEC code);
                                  "torch": PyTorch's default Linear init
    batch_size : int              mini-batch size of every phase (256 in the papers)
    lr, momentum : float          SGD of the clustering phases (DEC: 0.01, 0.9)
    max_iter : int                upper bound on unsupervised clustering steps
    update_interval : int         unsupervised steps between target updates (DEC's MNIST value: 140)
    tol : float                   stop when fewer than this fraction of assignments change between updates
    kappa : float                 unsupervised learning rate = kappa * lr when there are labels (seed: 0.2)
    sup_epochs : int              passes over the labelled items per supervised phase ...
    sup_min_steps : int           ... and at least this many mini-batch steps (few labels = one batch)
    prior_weight, prior_smoothing weight of KL(h || w); pseudo-count of the class prior w
    prior_source : str            where w comes from: "labels" (the seed: class frequencies of the confirmed
                                  labels), "uniform", or "auto": the labels when every class has at least
                                  ``prior_min_per_class`` confirmed items, else uniform (labels confirmed in
                                  file order or for one class would otherwise pull every item into few clusters)
    prior_min_per_class : int     see ``prior_source``
    idec : bool                   keep the reconstruction loss during clustering (IDEC)
    gamma : float                 IDEC's clustering-loss coefficient: minimise (L_rec + gamma L_clu) / gamma
    init : str                    "concat": k-means on the concatenated latents; "first": on the first view's
    kmeans_n_init : int           k-means restarts (DEC: 20)
    init_method : str             initial partition of the pretrained latent: "kmeans" (DEC) or "umap_gmm"
                                  (default; N2D, McConville et al. 2020: UMAP of the latent to ``umap_dim``
                                  dimensions, then a full-covariance Gaussian mixture; +20 points ACC on
                                  MNIST-5k, docs/dec.md); the centroids are the latent means of its clusters
                                  either way. Falls back to k-means below 50 items.
    umap_dim, umap_neighbors      the UMAP of "umap_gmm"
    collapse_fraction : float     report a collapse when one cluster holds more than this fraction of items
    min_effective_fraction : float  ... or the effective number of clusters (exp entropy) falls below this x k
    seed : int
    warm_start : bool             start from the previous DEC run when it is compatible
    oof_folds : int               out-of-fold fits for calibration (0: none; else >= 2): the labelled items in
                                  this many stratified parts, one extra clustering phase per part from the
                                  run's label-free start (:mod:`core.models.dec.out_of_fold`)
    """

    n_clusters: int | None = None
    dims: tuple[int, ...] = (500, 500, 2000, 10)
    alpha: float = 1.0
    input_scaling: str = "dec"
    pretrain_epochs: int = 100
    pretrain_lr: float = 1e-3
    pretrain_batch_size: int | None = None
    pretrain_dropout: float = 0.2
    weight_init: str = "glorot"
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    max_iter: int = 4000
    update_interval: int = 140
    tol: float = 0.001
    kappa: float = 0.2
    sup_epochs: int = 1
    sup_min_steps: int = 20
    prior_weight: float = 1.0
    prior_smoothing: float = 1.0
    prior_source: str = "auto"
    prior_min_per_class: int = 3
    idec: bool = False
    gamma: float = 0.1
    init: str = "concat"
    kmeans_n_init: int = 20
    init_method: str = "umap_gmm"
    umap_dim: int = 10
    umap_neighbors: int = 20
    collapse_fraction: float = 0.5
    min_effective_fraction: float = 0.5
    seed: int = 0
    warm_start: bool = True
    oof_folds: int = 2

    def validate(self) -> None:
        """Raise :class:`ValidationError` naming the first bad field, its value and what is allowed."""
        check_param("DEC", "n_clusters", self.n_clusters, self.n_clusters is None or (is_int(self.n_clusters)
                    and self.n_clusters >= 2), "None or an int >= 2")
        check_param("DEC", "dims", self.dims, isinstance(self.dims, tuple) and len(self.dims) >= 1
                    and all(is_int(d) and d >= 1 for d in self.dims), "a non-empty tuple of ints >= 1")
        for name in ("pretrain_epochs", "max_iter", "sup_min_steps", "prior_min_per_class"):
            v = getattr(self, name)
            check_param("DEC", name, v, is_int(v) and v >= 0, "an int >= 0")
        check_param("DEC", "pretrain_batch_size", self.pretrain_batch_size, self.pretrain_batch_size is None
                    or (is_int(self.pretrain_batch_size) and self.pretrain_batch_size >= 1), "None or an int >= 1")
        for name in ("batch_size", "sup_epochs", "kmeans_n_init", "update_interval", "umap_dim"):
            v = getattr(self, name)
            check_param("DEC", name, v, is_int(v) and v >= 1, "an int >= 1")
        for name in ("alpha", "pretrain_lr", "lr", "gamma"):
            v = getattr(self, name)
            check_param("DEC", name, v, isinstance(v, (int, float)) and v > 0, "a number > 0")
        for name in ("momentum", "tol", "prior_weight", "prior_smoothing"):
            v = getattr(self, name)
            check_param("DEC", name, v, isinstance(v, (int, float)) and v >= 0, "a number >= 0")
        check_param("DEC", "kappa", self.kappa, isinstance(self.kappa, (int, float)) and 0 < self.kappa <= 1,
                    "a number in (0, 1]")
        for name in ("collapse_fraction", "min_effective_fraction"):
            v = getattr(self, name)
            check_param("DEC", name, v, isinstance(v, (int, float)) and 0 < v <= 1, "a number in (0, 1]")
        check_choice("DEC", "input_scaling", self.input_scaling, SCALINGS)
        check_choice("DEC", "init", self.init, INITS)
        check_choice("DEC", "prior_source", self.prior_source, PRIOR_SOURCES)
        check_choice("DEC", "init_method", self.init_method, INIT_METHODS)
        check_choice("DEC", "weight_init", self.weight_init, WEIGHT_INITS)
        check_param("DEC", "pretrain_dropout", self.pretrain_dropout, isinstance(self.pretrain_dropout, (int, float))
                    and 0 <= self.pretrain_dropout < 1, "a number in [0, 1)")
        check_param("DEC", "oof_folds", self.oof_folds, is_int(self.oof_folds) and self.oof_folds != 1
                    and self.oof_folds >= 0, "0 (no out-of-fold fits) or an int >= 2")
        check_param("DEC", "umap_neighbors", self.umap_neighbors, is_int(self.umap_neighbors)
                    and self.umap_neighbors >= 2, "an int >= 2")

    @classmethod
    def from_params(cls, params: dict, **defaults: Any) -> "DECConfig":
        """A config from job parameters (lists become tuples); an unknown name lists the allowed ones."""
        allowed = [f.name for f in fields(cls)]
        kwargs = dict(defaults)
        for key, value in params.items():
            check_choice("DEC", "parameter name", key, allowed)
            kwargs[key] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)
