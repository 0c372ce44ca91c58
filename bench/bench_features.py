"""Feature extraction throughput (images per second) on real photos, on the CPU and on CUDA when present.

Reads CIFAR-10 images from ../shared/datasets/cifar10_half (or scikit-learn's digits when absent), runs each
extractor through the project's cache path (compute_features) into a fresh folder, and appends the figures,
with date and machine, to bench/results/features.jsonl (and the cached second call to features_cached.jsonl).

    python bench/bench_features.py [--n 2000] [--extractors efficientnet_lite0,pixels_pca] [--devices cpu,cuda]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import record, shared_dir  # noqa: E402
from core.features import compute_features  # noqa: E402
from core.features.base import ItemRef  # noqa: E402


def image_refs(n: int, tmp: Path) -> tuple[list[ItemRef], str]:
    cifar = shared_dir() / "cifar10_half"
    if cifar.is_dir():
        paths = sorted(cifar.rglob("*.jpg"))[:n]
        return [ItemRef(i + 1, p, None) for i, p in enumerate(paths)], "cifar10_half (32x32 JPEG)"
    from tests.helpers import digits_folder

    root = digits_folder(tmp / "digits", per_class=n // 10 + 1, classes=tuple(range(10)), size=32)
    paths = sorted(root.rglob("*.png"))[:n]
    return [ItemRef(i + 1, p, None) for i, p in enumerate(paths)], "sklearn digits (32x32 PNG)"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--extractors", default="efficientnet_lite0,pixels_pca")
    ap.add_argument("--devices", default="cpu,cuda")
    a = ap.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        refs, data = image_refs(a.n, Path(tmp))
        for device in a.devices.split(","):
            if device == "cuda" and not torch.cuda.is_available():
                print("no CUDA here: skipping the GPU figures")
                continue
            for name in a.extractors.split(","):
                # warm-up on a few items (model load, cuDNN autotune), then a cold cache for the timed run
                compute_features(refs[:64], name, Path(tmp) / f"warm-{device}-{name}", device=device)
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                ids, X = compute_features(refs, name, Path(tmp) / f"cache-{device}-{name}", device=device)
                if device == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t0
                record("features", {"extractor": name, "device": device, "n_images": len(ids), "dim": int(X.shape[1]),
                                    "seconds": round(dt, 3), "images_per_s": round(len(ids) / dt, 1), "data": data})
                # a second call must compute nothing: the cache serves it
                t1 = time.perf_counter()
                compute_features(refs, name, Path(tmp) / f"cache-{device}-{name}", device=device)
                record("features_cached", {"extractor": name, "device": device, "n_images": len(ids),
                                           "seconds": round(time.perf_counter() - t1, 3)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
