"""The "pseudo_label" model: transfer learning plus rounds of confident pseudo-labels (images and audio).

After the seed paper (Venkateswaran et al., pseudo-labelling and transfer learning for speech emotion
recognition):

1. Round 1: fine-tune a pretrained CNN on the confirmed labels only (class-weighted cross-entropy, Adam,
   learning rate / 10 on a 5-epoch plateau down to 1e-5, early stopping after 10 epochs; the score is the
   macro-F1 of a stratified validation split of the confirmed labels; see :mod:`core.models.pseudo_label.finetune`).
2. Predict every unlabelled item; those whose top probability is >= ``threshold`` (0.99; 0.9 for the head
   variant) are the pseudo-labels of this round (optionally capped per class: ``pseudo_growth``).
3. Round r > 1: train again (from the same pretrained start) on the confirmed labels plus the previous
   round's pseudo-labels, and recompute the pseudo-labels of every unlabelled item from the new model
   (they replace the previous set: nothing is accumulated blindly). 3 rounds by default.

The pseudo-labels of every round are returned in ``TrainOutput.pseudo_labels`` (with their round and
confidence); the store keeps them as machine annotations of the run, never confirmed until a person
accepts them. Each round's validation macro-F1, pseudo-label counts per class and churn go to
``metrics["rounds"]``.

Inputs
------
* Images: decoded once with :func:`core.features.image.decode_image` at ``image_size`` into a uint8 tensor
  kept on the device; random flip and crop in training.
* Audio: clips cut into 1-second blocks of spectrogram images by :mod:`core.audio` at each maximum
  frequency of ``audio_f_max`` (the paper's augmentation: 7000, 7500 and 8000 Hz); a clip's prediction
  is the mean of its blocks' probabilities.
* ``variant="head"``: the light variant, a linear or one-hidden-layer head on the cached features
  ``ctx.X`` (for audio, the ``mfcc_profile`` features by default) with the same rounds and schedule and a
  lower threshold (a head on fixed features is confident on fewer items than a fine-tuned CNN: at 0.99 its
  rounds add only what round 1 already knew, measured on FSDD); fast enough to run after every few labels.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from core.errors import TrainingError, ValidationError, check_choice, check_param
from core.models.pseudo_label.finetune import (AMP, BACKBONES, BatchTransform, Inputs, build_head, build_network,
                       feature_inputs, fit_network, predict_items)

VARIANTS = ("finetune", "head")
#: the "head" variant's default pseudo-label threshold: best of 0.99 / 0.95 / 0.9 / 0.8 on FSDD (issue 16)
HEAD_THRESHOLD = 0.9
MODALITIES = ("auto", "image", "audio")
AUDIO_KINDS = ("mel", "log")
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aif", ".aiff", ".au"})
Progress = Callable[[dict], None]


def _int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _num(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


@dataclass(frozen=True)
class PseudoLabelConfig:
    """Settings of :class:`PseudoLabeler` (stored with the run).

    Attributes
    ----------
    variant : {"finetune", "head"}
        Fine-tune a CNN on the media, or train a head on the cached features (the light variant).
    rounds : int
        Training rounds; pseudo-labels from round r are used in round r + 1 (3 in the paper).
    threshold : float or None
        Minimum top probability of a pseudo-label (None: 0.99 for "finetune", as in the paper; 0.9 for "head",
        measured best on FSDD's speaker-independent folds, see docs/pseudo_label.md).
    pseudo_growth : float
        Class-balanced curriculum: round r pseudo-labels at most ``r * pseudo_growth`` of the candidates,
        the same number per predicted class, most confident first (:func:`pseudo_label_quota`); 0: every
        candidate above ``threshold``, as in the paper.
    val_fraction : float
        Share of each class's confirmed labels held out for validation (early stopping, LR schedule,
        reported macro-F1); classes with one label keep it in training.
    max_epochs : int or None
        Upper bound on epochs per round (None: 30 for "finetune", 50 for "head").
    patience, lr_patience, lr_factor, min_lr : early stopping after ``patience`` epochs without a better
        validation macro-F1; learning rate * ``lr_factor`` after ``lr_patience`` such epochs, down to ``min_lr``.
    lr : float or None
        Adam's initial learning rate (None: 3e-4 for "finetune", 1e-3 for "head").
    weight_decay : float
    batch_size : int or None
        Mini-batch size (None: 64 for "finetune", 256 for "head").
    min_steps_per_epoch : int
        An epoch passes over the training items as often as needed for this many optimiser steps, so
        that a few dozen labels still train between two validation checks.
    seed : int
    backbone : str
        One of :data:`core.models.pseudo_label.finetune.BACKBONES` ("finetune").
    weights : str or None
        Explicit weights file of the backbone.
    image_size : int
        Side of the network input in pixels (224 as pretrained; 96-128 is much faster).
    augment : bool
        Random flip + crop for images, random crop (time/frequency shift) for spectrograms.
    amp : {"bf16", "fp16", "none"}
        Mixed precision on CUDA.
    dropout : float
        Before the new linear head.
    modality : {"auto", "image", "audio"}
        "auto" reads the items' file suffixes.
    audio_kind : {"mel", "log"}
        Spectrogram scale of the audio images (log was best in the paper).
    audio_f_max : tuple of float
        Maximum frequencies of the audio images; every clip yields blocks at each (augmentation), and a
        clip's prediction averages over all of its blocks.
    audio_vad : bool
        Keep only the voiced segments.
    audio_block_seconds : float
    head_hidden : int
        Hidden width of the "head" variant (0: a linear head).
    head_view : str or None
        Which extractor's columns of ``ctx.X`` the head uses (None: all).
    """

    variant: str = "finetune"
    rounds: int = 3
    threshold: float | None = None
    pseudo_growth: float = 0.0
    val_fraction: float = 0.2
    max_epochs: int | None = None
    patience: int = 10
    lr_patience: int = 5
    lr_factor: float = 0.1
    min_lr: float = 1e-5
    lr: float | None = None
    weight_decay: float = 0.0
    batch_size: int | None = None
    min_steps_per_epoch: int = 10
    seed: int = 0
    backbone: str = "efficientnet_lite0"
    weights: str | None = None
    image_size: int = 224
    augment: bool = True
    amp: str = "bf16"
    dropout: float = 0.2
    modality: str = "auto"
    audio_kind: str = "log"
    audio_f_max: tuple[float, ...] = (7000.0, 7500.0, 8000.0)
    audio_vad: bool = True
    audio_block_seconds: float = 1.0
    head_hidden: int = 256
    head_view: str | None = None

    @classmethod
    def from_params(cls, params: dict | None) -> "PseudoLabelConfig":
        """A validated config from a job's parameters; an unknown name lists the allowed ones."""
        allowed = [f.name for f in fields(cls)]
        kwargs = {}
        for key, value in (params or {}).items():
            check_choice("pseudo_label", "parameter name", key, allowed)
            kwargs[key] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs).validate()

    def validate(self) -> "PseudoLabelConfig":
        """Raise :class:`core.errors.ValidationError` naming the bad value; return self."""
        own = "pseudo_label"
        check_choice(own, "variant", self.variant, VARIANTS)
        check_param(own, "rounds", self.rounds, _int(self.rounds) and 1 <= self.rounds <= 20, "an int in [1, 20]")
        check_param(own, "threshold", self.threshold, self.threshold is None or (_num(self.threshold)
                    and 0 < self.threshold <= 1), "a number in (0, 1] or None")
        check_param(own, "pseudo_growth", self.pseudo_growth,
                    _num(self.pseudo_growth) and 0 <= self.pseudo_growth <= 1, "a number in [0, 1] (0: no cap)")
        check_param(own, "val_fraction", self.val_fraction, _num(self.val_fraction) and 0 <= self.val_fraction < 1,
                    "a number in [0, 1)")
        check_param(own, "max_epochs", self.max_epochs, self.max_epochs is None or (_int(self.max_epochs)
                    and self.max_epochs >= 1), "an int >= 1 or None")
        check_param(own, "patience", self.patience, _int(self.patience) and self.patience >= 1, "an int >= 1")
        check_param(own, "lr_patience", self.lr_patience, _int(self.lr_patience) and self.lr_patience >= 1,
                    "an int >= 1")
        check_param(own, "lr_factor", self.lr_factor, _num(self.lr_factor) and 0 < self.lr_factor < 1,
                    "a number in (0, 1)")
        check_param(own, "min_lr", self.min_lr, _num(self.min_lr) and self.min_lr >= 0, "a number >= 0")
        check_param(own, "lr", self.lr, self.lr is None or (_num(self.lr) and self.lr > 0), "a number > 0 or None")
        check_param(own, "weight_decay", self.weight_decay, _num(self.weight_decay) and self.weight_decay >= 0,
                    "a number >= 0")
        check_param(own, "batch_size", self.batch_size, self.batch_size is None or (_int(self.batch_size)
                    and self.batch_size >= 2), "an int >= 2 or None")
        check_param(own, "min_steps_per_epoch", self.min_steps_per_epoch,
                    _int(self.min_steps_per_epoch) and self.min_steps_per_epoch >= 1, "an int >= 1")
        check_param(own, "seed", self.seed, _int(self.seed), "an int")
        check_choice(own, "backbone", self.backbone, BACKBONES)
        check_param(own, "weights", self.weights, self.weights is None or isinstance(self.weights, str),
                    "a path or None")
        check_param(own, "image_size", self.image_size, _int(self.image_size) and 16 <= self.image_size <= 1024,
                    "an int in [16, 1024]")
        check_param(own, "augment", self.augment, isinstance(self.augment, bool), "a bool")
        check_choice(own, "amp", self.amp, AMP)
        check_param(own, "dropout", self.dropout, _num(self.dropout) and 0 <= self.dropout < 1, "a number in [0, 1)")
        check_choice(own, "modality", self.modality, MODALITIES)
        check_choice(own, "audio_kind", self.audio_kind, AUDIO_KINDS)
        check_param(own, "audio_f_max", self.audio_f_max, isinstance(self.audio_f_max, tuple) and len(self.audio_f_max) > 0
                    and all(_num(f) and f > 0 for f in self.audio_f_max), "a non-empty tuple of frequencies > 0 (Hz)")
        check_param(own, "audio_vad", self.audio_vad, isinstance(self.audio_vad, bool), "a bool")
        check_param(own, "audio_block_seconds", self.audio_block_seconds,
                    _num(self.audio_block_seconds) and 0.1 <= self.audio_block_seconds <= 10, "a number in [0.1, 10]")
        check_param(own, "head_hidden", self.head_hidden, _int(self.head_hidden) and self.head_hidden >= 0,
                    "an int >= 0 (0: linear)")
        check_param(own, "head_view", self.head_view, self.head_view is None or isinstance(self.head_view, str),
                    "an extractor name or None")
        return self

    def resolved(self) -> "PseudoLabelConfig":
        """The config with the per-variant defaults (``threshold``, ``max_epochs``, ``lr``, ``batch_size``) filled in."""
        head = self.variant == "head"
        threshold = self.threshold if self.threshold is not None else (HEAD_THRESHOLD if head else 0.99)
        return replace(self, threshold=threshold, max_epochs=self.max_epochs or (50 if head else 30),
                       lr=self.lr or (1e-3 if head else 3e-4), batch_size=self.batch_size or (256 if head else 64))

    def audio_config(self):
        """The :class:`core.audio.AudioConfig` of this run's spectrogram images."""
        from core.audio import AudioConfig

        f_max = tuple(float(f) for f in self.audio_f_max)
        return AudioConfig(kind=self.audio_kind, vad=self.audio_vad, block_seconds=float(self.audio_block_seconds),
                           image_size=self.image_size, f_max=max(f_max), augment_f_max=f_max).validate()


# ---------------------------------------------------------------------------------------------- rounds logic
def split_validation(y: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of labelled positions into training and validation.

    Each class with ``n_c >= 2`` labels gives ``max(1, round(fraction * n_c))`` of them (at most
    ``n_c - 1``) to validation; a class with one label keeps it in training.

    Parameters
    ----------
    y : ndarray (m,) class indices
    fraction : float in [0, 1)

    Returns
    -------
    train_pos, val_pos : ndarray of positions into ``y``, sorted
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    val = []
    if fraction > 0:
        for c in np.unique(y):
            pos = np.flatnonzero(y == c)
            if len(pos) < 2:
                continue
            n_val = int(min(len(pos) - 1, max(1, round(fraction * len(pos)))))
            val.append(rng.permutation(pos)[:n_val])
    val_pos = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    train_pos = np.setdiff1d(np.arange(len(y)), val_pos)
    return train_pos.astype(np.int64), val_pos.astype(np.int64)


def select_pseudo_labels(proba: np.ndarray, candidates: np.ndarray, threshold: float, *,
                         per_class: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidates whose top probability reaches ``threshold`` (at most ``per_class`` per class).

    With ``per_class``, each predicted class keeps only its ``per_class`` most confident candidates
    (ties: the lower row first), so that a class the model finds easy cannot flood the next round's
    training set while a hard class adds nothing (class-balanced selection, see
    :func:`pseudo_label_quota`).

    Parameters
    ----------
    proba : ndarray (n, k)       probabilities of every item
    candidates : ndarray (c,)    rows eligible for a pseudo-label (unlabelled, decodable)
    threshold : float
    per_class : int or None      cap per predicted class (None: no cap)

    Returns
    -------
    rows : ndarray (p,) int64     selected rows, ascending
    labels : ndarray (p,) int64   their class index (argmax)
    confidence : ndarray (p,) float32
    """
    candidates = np.sort(np.asarray(candidates, dtype=np.int64))
    p = np.asarray(proba)[candidates]
    if len(p) == 0:
        return candidates, np.zeros(0, np.int64), np.zeros(0, np.float32)
    lab = p.argmax(1)
    conf = p[np.arange(len(p)), lab]
    keep = conf >= threshold
    if per_class is not None:
        order = np.lexsort((np.arange(len(conf)), -conf, lab))  # by class, most confident first
        sorted_lab = lab[order]
        first = np.searchsorted(sorted_lab, sorted_lab)  # first position of each row's class in ``order``
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order)) - first
        keep &= rank < per_class
    return candidates[keep], lab[keep].astype(np.int64), conf[keep].astype(np.float32)


def pseudo_label_quota(round_: int, n_candidates: int, n_classes: int, growth: float) -> int | None:
    """Per-class cap of round ``round_``'s pseudo-labels under the curriculum (``growth`` > 0).

    Round r may label at most ``r * growth`` of the candidates, split evenly over the classes: the model
    first labels what it is surest of, and later rounds, trained on those, reach further (after
    curriculum labelling, Cascante-Bonilla et al. 2021, with a per-class split). ``growth`` 0 means no
    cap (the seed paper's plain threshold).
    """
    if growth <= 0:
        return None
    return max(1, int(np.ceil(min(1.0, round_ * growth) * n_candidates / n_classes)))


def _churn(prev_rows: np.ndarray, prev_lab: np.ndarray, rows: np.ndarray, lab: np.ndarray) -> dict:
    """How the pseudo-label set changed from one round to the next: added, dropped, relabelled rows."""
    a = dict(zip(prev_rows.tolist(), prev_lab.tolist()))
    b = dict(zip(rows.tolist(), lab.tolist()))
    return {"added": sum(1 for r in b if r not in a), "dropped": sum(1 for r in a if r not in b),
            "relabelled": sum(1 for r in b if r in a and a[r] != b[r])}


# ---------------------------------------------------------------------------------------------- decoding
def detect_modality(paths: Sequence[Any]) -> str:
    """"audio" when most items' files have an audio suffix, else "image"."""
    suffixes = [Path(p).suffix.lower() for p in paths if p is not None]
    if not suffixes:
        raise TrainingError("pseudo_label fine-tunes on the media files, but no item has a file; "
                            "use variant='head' on the features instead.")
    n_audio = sum(s in AUDIO_SUFFIXES for s in suffixes)
    return "audio" if n_audio * 2 > len(suffixes) else "image"


def decode_images(paths: Sequence[Any], size: int, *, device: str = "cpu", threads: int = 2) -> Inputs:
    """Decode every image once into a uint8 tensor on ``device``.

    Parameters
    ----------
    paths : sequence of n paths (None for an item without a file)
    size : int   images are squashed to size x size (:func:`core.features.image.decode_image`)

    Returns
    -------
    Inputs with x (r, 3, size, size) uint8, owner (r,) and the undecodable items in ``failures``
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from core.features.base import ItemError
    from core.features.image import decode_image

    def load(p):
        try:
            return decode_image(None if p is None else Path(p), size)
        except ItemError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        decoded = list(pool.map(load, paths, chunksize=32))
    ok = [i for i, d in enumerate(decoded) if not isinstance(d, Exception)]
    failures = {i: str(d) for i, d in enumerate(decoded) if isinstance(d, Exception)}
    if ok:
        arr = np.stack([decoded[i] for i in ok])  # (r, S, S, 3)
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    else:
        x = torch.zeros((0, 3, size, size), dtype=torch.uint8)
    return Inputs(x.to(device), torch.as_tensor(ok, dtype=torch.long).to(device), len(paths), "image", failures)


def decode_audio(paths: Sequence[Any], config, f_max: Sequence[float], *, device: str = "cpu",
                 chunk: int = 256, num_workers: int = 2, progress: Progress | None = None) -> Inputs:
    """Cut every clip into spectrogram-image blocks once, at each maximum frequency, as uint8 on ``device``.

    Clips are loaded, resampled and (when ``config.vad``) reduced to their voiced part by
    :func:`core.audio.load_clips`, then cut into blocks by :func:`core.audio.batch_blocks`, ``chunk`` clips at a
    time: memory holds the uint8 blocks decoded so far plus one chunk's signals and float images, never every
    decoded clip. ``progress`` gets ``{"phase": "decode inputs", "step": clips done, "total": n}`` per chunk.

    Parameters
    ----------
    paths : sequence of n audio files (None for an item without a file)
    config : core.audio.AudioConfig
    f_max : maximum frequencies (Hz); each clip yields its blocks once per value

    Returns
    -------
    Inputs with x (r, 1, S, S) uint8 (the [0, 1] images * 255, one channel), owner (r,) = the clip of each
    block, and the clips that could not be used in ``failures``
    """
    import torch

    from core.audio import batch_blocks, load_clips

    present = [i for i, p in enumerate(paths) if p is not None]
    failures = {i: "item has no media file" for i, p in enumerate(paths) if p is None}
    xs, owners = [], []
    for c0 in range(0, len(present), chunk):
        part = present[c0 : c0 + chunk]
        signals, ok_pos, fails = load_clips([Path(paths[i]) for i in part], config, num_workers=num_workers)
        failures.update({part[pos]: reason for pos, reason in fails})
        ok_arr = np.asarray([part[pos] for pos in ok_pos], dtype=np.int64)
        for f in f_max:
            if not len(signals):
                break
            blocks, clip_index = batch_blocks(list(signals), config, device=device, f_max=float(f))
            xs.append((blocks[:, :1].clamp(0, 1) * 255).round().to(torch.uint8))
            owners.append(torch.as_tensor(ok_arr[np.asarray(clip_index, dtype=np.int64)], device=blocks.device))
            del blocks
        del signals
        if progress is not None:
            progress({"phase": "decode inputs", "step": min(c0 + chunk, len(present)), "total": len(present)})
    size = config.image_size
    x = torch.cat(xs) if xs else torch.zeros((0, 1, size, size), dtype=torch.uint8)
    owner = torch.cat(owners) if owners else torch.zeros(0, dtype=torch.long)
    return Inputs(x.to(device), owner.to(device), len(paths), "audio", failures)


# ---------------------------------------------------------------------------------------------- estimator
class PseudoLabeler:
    """Rounds of training and confident pseudo-labels on pre-decoded inputs (estimator contract).

    Parameters
    ----------
    config : PseudoLabelConfig
    device : str

    Attributes (after ``fit``)
    --------------------------
    classes_ : ndarray (k,)           the labels trained on (sorted)
    proba_ : ndarray (n, k) float32   the last round's probabilities of every item (0 rows for items
                                      without inputs)
    embeddings_ : ndarray (n, d) | None  the fine-tuned network's pooled features (mean over blocks)
    rounds_ : list[dict]              per round: metrics plus the arrays ``pseudo_rows`` (p,),
                                      ``pseudo_labels`` (p,) class indices and ``pseudo_confidence`` (p,)
                                      (and ``proba`` (n, k) with ``record_proba``)
    val_items_ : ndarray              validation rows (confirmed labels held out)
    model_ : torch.nn.Module          the last round's network (best epoch)
    checkpoint_ : dict                the served weights (best epoch of the last round), config, epoch, classes,
                                      round, kind, and ``resume``: the last round's resumable training state
                                      (:func:`core.models.pseudo_label.finetune.checkpoint`)
    """

    def __init__(self, config: PseudoLabelConfig = PseudoLabelConfig(), *, device: str = "cpu"):
        self.config = config
        self.device = device

    # the network of one round, always from the same start (pretrained body, seeded head)
    def _new_model(self, data: Inputs, k: int):
        import torch

        cfg = self.config
        if getattr(self, "_init", None) is None:
            torch.manual_seed(cfg.seed)
            if data.kind == "features":
                net = build_head(int(data.x.shape[1]), k, hidden=cfg.head_hidden, dropout=cfg.dropout)
            else:
                net = build_network(cfg.backbone, k, weights=cfg.weights, dropout=cfg.dropout)
            net = net.to(self.device)
            if self.device.startswith("cuda") and data.kind != "features":
                net = net.to(memory_format=torch.channels_last)
            self._init = {k_: v.detach().clone() for k_, v in net.state_dict().items()}
            return net
        net = self._net
        net.load_state_dict(self._init)
        return net

    def _transform(self, data: Inputs) -> BatchTransform:
        cfg = self.config
        return BatchTransform(data.kind, augment=cfg.augment, flip=data.kind == "image",
                              pad_fraction=0.125 if data.kind == "image" else 0.0625, seed=cfg.seed,
                              channels_last=self.device.startswith("cuda") and data.kind != "features")

    def fit(self, data: Inputs, labelled: np.ndarray, y: np.ndarray, *, candidates: np.ndarray | None = None,
            sample_weight: np.ndarray | None = None, progress: Progress | None = None,
            should_cancel: Callable[[], bool] | None = None, record_proba: bool = False) -> "PseudoLabeler":
        """Run the rounds.

        Parameters
        ----------
        data : Inputs                 pre-decoded inputs of all n items
        labelled : ndarray (m,)       rows of the confirmed items
        y : ndarray (m,)              their labels (any hashable type)
        candidates : ndarray (c,), optional
            Rows that may receive a pseudo-label (default: every decodable row not in ``labelled``).
        sample_weight : ndarray (m,), optional   per confirmed label (consensus confidence)
        record_proba : bool
            Keep each round's probabilities (n, k) in ``rounds_[i]["proba"]`` (for benchmarks).

        Raises
        ------
        TrainingError
            Fewer than 2 classes or 4 labels among the decodable confirmed items.
        """
        import torch

        # small dense layers on a CPU run fastest on one thread (thread hand-offs dominate otherwise,
        # and much more so on a busy machine); convolutions keep the process's setting
        threads = torch.get_num_threads()
        if data.kind == "features" and not self.device.startswith("cuda"):
            torch.set_num_threads(1)
        try:
            return self._fit(data, labelled, y, candidates, sample_weight, progress, should_cancel, record_proba)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, data, labelled, y, candidates, sample_weight, progress, should_cancel, record_proba):
        cfg = self.config.validate().resolved()
        self.config_ = cfg
        labelled = np.asarray(labelled, dtype=np.int64)
        y = np.asarray(y)
        if len(labelled) != len(y):
            raise ValidationError(f"labelled and y must have the same length; got {len(labelled)} and {len(y)}.")
        ok = data.ok
        keep = ok[labelled] if len(labelled) else np.zeros(0, bool)
        sw = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float32)[keep]
        labelled, y = labelled[keep], y[keep]
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        k = len(self.classes_)
        if k < 2:
            raise TrainingError(f"pseudo_label needs confirmed labels of at least 2 classes (with readable media); "
                                f"got {k} ({', '.join(map(str, self.classes_)) or 'none'}). Label more items first.")
        if len(y) < 4:
            raise TrainingError(f"pseudo_label needs at least 4 confirmed labels; got {len(y)}.")
        if candidates is None:
            mask = ok.copy()
            mask[labelled] = False
            candidates = np.flatnonzero(mask)
        else:
            candidates = np.asarray(candidates, dtype=np.int64)
            candidates = candidates[ok[candidates] & ~np.isin(candidates, labelled)]
        tr_pos, va_pos = split_validation(y_idx, cfg.val_fraction, cfg.seed)
        self.val_items_ = labelled[va_pos]
        transform = self._transform(data)
        self._init = None
        prows = np.zeros(0, np.int64)
        plab = np.zeros(0, np.int64)
        self.rounds_ = []
        last_fit = None
        for r in range(1, cfg.rounds + 1):
            t0 = time.perf_counter()
            train_items = np.concatenate([labelled[tr_pos], prows])
            train_y = np.concatenate([y_idx[tr_pos], plab])
            weights = None
            if sw is not None:
                weights = np.concatenate([sw[tr_pos], np.ones(len(prows), np.float32)])
            if r > 1 and len(prows) == 0 and last_fit is not None:
                # nothing new to learn from: the round would repeat the previous one exactly
                info = dict(self.rounds_[-1], round=r, skipped=True, seconds=0.0, churn=_churn(prows, plab, prows, plab))
                self.rounds_.append(info)
                continue
            self._net = self._new_model(data, k)
            phase = f"round {r} {'head' if data.kind == 'features' else 'fine-tune'}"
            fit = fit_network(
                self._net, data, train_items, train_y, val_items=self.val_items_, val_y=y_idx[va_pos],
                n_classes=k, item_weight=weights, lr=cfg.lr, weight_decay=cfg.weight_decay, max_epochs=cfg.max_epochs,
                patience=cfg.patience, lr_patience=cfg.lr_patience, lr_factor=cfg.lr_factor, min_lr=cfg.min_lr,
                batch_size=cfg.batch_size, min_steps=cfg.min_steps_per_epoch, transform=transform, amp=cfg.amp, seed=cfg.seed + r,
                progress=progress, should_cancel=should_cancel, phase=phase)
            last_fit = fit
            out = predict_items(fit.model, data, None, batch_size=max(256, 4 * cfg.batch_size), transform=transform,
                                amp=cfg.amp, return_features=data.kind != "features")
            proba, emb = out if isinstance(out, tuple) else (out, None)
            quota = pseudo_label_quota(r, len(candidates), k, cfg.pseudo_growth)
            new_rows, new_lab, new_conf = select_pseudo_labels(proba, candidates, cfg.threshold, per_class=quota)
            counts = np.bincount(new_lab, minlength=k)
            info = {
                "round": r, "n_train_confirmed": int(len(tr_pos)), "n_train_pseudo": int(len(prows)),
                "n_val": int(len(va_pos)), "val_macro_f1": fit.best_score, "epochs": fit.epochs,
                "best_epoch": fit.best_epoch, "stopped_early": fit.stopped_early, "final_lr": fit.final_lr,
                "n_pseudo": int(len(new_rows)), "n_candidates": int(len(candidates)),
                "pseudo_per_class": {str(c): int(n) for c, n in zip(self.classes_, counts)},
                "mean_pseudo_confidence": float(new_conf.mean()) if len(new_conf) else None,
                "churn": _churn(prows, plab, new_rows, new_lab), "skipped": False,
                "seconds": round(time.perf_counter() - t0, 3), "history": fit.history,
                "pseudo_rows": new_rows, "pseudo_labels": new_lab, "pseudo_confidence": new_conf,
            }
            if record_proba:
                info["proba"] = proba.astype(np.float32)
            self.rounds_.append(info)
            self.proba_ = proba.astype(np.float32)
            self.embeddings_ = None if emb is None else emb.astype(np.float32)
            prows, plab = new_rows, new_lab
            if progress is not None:
                progress({"phase": f"round {r} pseudo-labels", "step": r, "total": cfg.rounds,
                          "score": fit.best_score, "n_pseudo": int(len(new_rows))})
        self.model_ = last_fit.model
        # the served network (best epoch of the last round) and, to resume or continue that round, the
        # complete training state of its last epoch (weights, optimiser, schedule, random states together)
        self.checkpoint_ = {"model": {k: v.detach().to("cpu", copy=True) for k, v in last_fit.model.state_dict().items()},
                            "config": asdict(cfg), "epoch": int(last_fit.best_epoch),
                            "classes": [str(c) for c in self.classes_], "round": int(cfg.rounds), "kind": data.kind,
                            "resume": last_fit.checkpoint}
        self._init = None
        return self

    def predict_proba(self, data: Inputs) -> np.ndarray:
        """Probabilities (n, k) of new inputs with the last round's network (columns: ``classes_``)."""
        return predict_items(self.model_, data, None, batch_size=max(256, 4 * self.config_.batch_size),
                             transform=self._transform(data), amp=self.config_.amp)

    def predict(self, data: Inputs) -> np.ndarray:
        return self.classes_[self.predict_proba(data).argmax(1)]

    def pseudo_labels(self) -> list[dict]:
        """Every round's pseudo-labels: [{"row", "label", "confidence", "round"}] (the store keeps them all, so
        the Pseudo-labels page can show what each round added; the last round's are the current ones)."""
        return [{"row": int(r), "label": str(self.classes_[c]), "confidence": float(p), "round": int(rd["round"])}
                for rd in self.rounds_
                for r, c, p in zip(rd["pseudo_rows"], rd["pseudo_labels"], rd["pseudo_confidence"])]

    def summary(self) -> dict:
        """What the run records: the final validation macro-F1 and each round's metrics (no arrays)."""
        arrays = ("pseudo_rows", "pseudo_labels", "pseudo_confidence", "proba")
        rounds = [{k: v for k, v in r.items() if k not in arrays} for r in self.rounds_]
        return {"val_macro_f1": self.rounds_[-1]["val_macro_f1"], "n_pseudo_labels": self.rounds_[-1]["n_pseudo"],
                "rounds": rounds, "variant": self.config_.variant, "n_val": int(len(self.val_items_))}


# ---------------------------------------------------------------------------------------------- trainer
def make_inputs(ctx, config: PseudoLabelConfig) -> tuple[Inputs, str]:
    """The pre-decoded inputs of a training context and the modality they came from."""
    if config.variant == "head":
        X = ctx.view(config.head_view) if config.head_view else ctx.X
        if config.head_view and config.head_view not in (ctx.views or {}):
            check_choice("pseudo_label", "head_view", config.head_view, list(ctx.views or {}))
        return feature_inputs(X, device=ctx.device), "features"
    if ctx.items is None:
        raise TrainingError("pseudo_label (variant 'finetune') needs the items' media files; none were given.")
    paths = [getattr(it, "path", None) for it in ctx.items]
    modality = config.modality
    if modality == "auto":
        declared = {getattr(it, "modality", None) for it in ctx.items} - {None}
        if declared == {"audio"}:
            modality = "audio"
        elif declared and declared <= {"image", "image+text"}:
            modality = "image"
        else:  # no or mixed declared modality: read the file suffixes
            modality = detect_modality(paths)
    if modality == "audio":
        workers = min(8, os.cpu_count() or 2)
        data = decode_audio(paths, config.audio_config(), config.audio_f_max, device=ctx.device, num_workers=workers,
                            progress=ctx.progress)
    else:
        data = decode_images(paths, config.image_size, device=ctx.device, threads=min(8, os.cpu_count() or 2))
    if data.failures and len(data.failures) == len(paths):
        first = next(iter(data.failures.values()))
        raise TrainingError(f"No item's media could be decoded as {modality} (first error: {first}).")
    return data, modality


def needs_features(params: dict) -> bool:
    """Whether a job with these parameters reads the project's features: only the "head" variant does (the
    fine-tune decodes the media itself and returns its own embeddings)."""
    return params.get("variant", "finetune") == "head"


def train_pseudo_label(ctx, *, variant: str | None = None):
    """Trainer of the "pseudo_label" family: ``(TrainContext) -> TrainOutput`` (see :mod:`core.models`)."""
    from core.models import TrainOutput

    params = dict(ctx.params)
    if variant is not None:
        params.setdefault("variant", variant)
    config = PseudoLabelConfig.from_params(params)
    t0 = time.perf_counter()
    ctx.progress({"phase": "decode inputs", "step": 0, "total": 1})
    data, modality = make_inputs(ctx, config)
    decode_s = time.perf_counter() - t0
    if config.variant == "finetune":
        config = replace(config, modality=modality)
    est = PseudoLabeler(config, device=ctx.device)
    est.fit(data, ctx.labelled, ctx.y, sample_weight=ctx.sample_weight, progress=ctx.progress,
            should_cancel=ctx.should_cancel)
    n, kp = len(ctx.item_ids), len(ctx.classes)
    proba = np.zeros((n, kp), dtype=np.float32)
    cols = [ctx.classes.index(c) for c in est.classes_]
    ok = data.ok
    proba[:, cols] = est.proba_
    proba[~ok] = 0.0
    proba[np.ix_(~ok, cols)] = 1.0 / len(cols)  # undecodable: uniform over the trained classes
    metrics = {**est.summary(), "modality": modality, "decode_seconds": round(decode_s, 3),
               "n_media_failures": len(data.failures),
               "media_failures": [{"row": int(r), "reason": m} for r, m in list(data.failures.items())[:50]]}
    # out-of-sample probabilities of the labelled rows, for calibration: the validation rows (held out of every
    # round's training; they only chose the early-stopping epoch), NaN for the rows it trained on
    oof = np.full((len(ctx.labelled), kp), np.nan, dtype=np.float32)
    val = np.isin(np.asarray(ctx.labelled, dtype=np.int64), est.val_items_)
    oof[val] = proba[np.asarray(ctx.labelled, dtype=np.int64)[val]]
    metrics["oof_source"] = "validation split"
    emb = est.embeddings_
    if emb is not None and (~ok).any():
        emb = emb.copy()
        emb[~ok] = emb[ok].mean(0)
    return TrainOutput(proba=proba, config=asdict(est.config_), metrics=metrics,
                       artefacts={"checkpoint": est.checkpoint_}, embeddings=emb, pseudo_labels=est.pseudo_labels(),
                       oof_proba=oof)
