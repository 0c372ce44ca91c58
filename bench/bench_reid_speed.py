"""Re-identification training speed (issue 14): iterations per second of the proxy contrastive step.

One step of :func:`core.models.reid.model.train_one_epoch` on ``--batch`` crops: forward through the embedding
network (``--variant finetune``: EfficientNet-Lite0 on ``--height x --width`` crops with the crop augmentation;
``head``: the projection head on 1280-d features), the camera-aware proxy loss against a memory bank of
``--proxies`` proxies with 50 hard negatives, backward, Adam, and the memory update. The inputs are synthetic
(random crops / features and a random assignment of items to proxies: speed does not depend on the pixels);
``--warmup`` steps are run first and not timed. The issue asks for this figure at batch 256 on a GPU
(``bench/gpu_session.sh reid_speed``); on the CPU it runs at a small batch for reference.

Each row (``bench/results/reid_speed.jsonl``; ``--out`` or ``$BENCH_OUT``): variant, backbone, device, batch,
height, width, proxies, steps, seconds, it_per_s, items_per_s, amp (none), threads, loadavg.

    python bench/bench_reid_speed.py --device cuda --batch 256 --height 256 --width 128
    python bench/bench_reid_speed.py --quick --out DIR
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import record  # noqa: E402


def measure(args: argparse.Namespace) -> dict:
    """Time ``args.steps`` training steps after ``args.warmup`` untimed ones; the row's measurements."""
    import torch

    from core.models.context import Canceller
    from core.models.reid.config import ReidConfig
    from core.models.reid.model import ReidModel, train_one_epoch
    from core.models.reid.proxies import build_proxies

    torch.manual_seed(0)
    n = args.batch * 4
    cfg = ReidConfig(variant=args.variant, backbone=args.backbone, height=args.height, width=args.width,
                     batch_size=args.batch, k=4, sampler="random").validate()
    if args.variant == "finetune":
        data = torch.randint(0, 256, (n, 3, args.height, args.width), dtype=torch.uint8)
    else:
        data = torch.randn(n, 1280)
    model = ReidModel(cfg, device=args.device)
    net = model._network(data).to(args.device)
    augment = model._augment()
    rng = np.random.default_rng(0)
    pseudo = rng.integers(0, args.proxies // 2, n)
    cams = rng.integers(0, 2, n)
    with torch.no_grad():
        F = torch.nn.functional.normalize(torch.randn(n, net.out_dim), dim=1).numpy()
    bank = build_proxies(F, pseudo, cams).to(args.device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches = [rng.choice(n, args.batch, replace=False) for _ in range(args.warmup + args.steps)]
    cancel = Canceller(None, "bench")
    train_one_epoch(net, opt, data, bank, batches[:args.warmup], cfg, augment, args.device, cancel)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    train_one_epoch(net, opt, data, bank, batches[args.warmup:], cfg, augment, args.device, cancel)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"variant": args.variant, "backbone": args.backbone if args.variant == "finetune" else None,
            "device": args.device, "batch": args.batch, "height": args.height, "width": args.width,
            "proxies": int(bank.n_proxies), "steps": args.steps, "seconds": round(seconds, 3),
            "it_per_s": round(args.steps / seconds, 3), "items_per_s": round(args.steps * args.batch / seconds, 1),
            "amp": "none", "threads": torch.get_num_threads()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default="finetune", choices=["finetune", "head"])
    ap.add_argument("--backbone", default="efficientnet_lite0", choices=["efficientnet_lite0", "resnet50", "tiny"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--proxies", type=int, default=200)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (tiny backbone, 2 steps)")
    ap.add_argument("--out", default=None, help="results folder (default bench/results or $BENCH_OUT)")
    args = ap.parse_args(argv)
    if args.quick:
        args.backbone, args.batch, args.steps, args.warmup, args.height, args.width = "tiny", 8, 2, 1, 32, 16
    return args


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.out:
        os.environ["BENCH_OUT"] = args.out
    before = list(os.getloadavg())
    row = measure(args)
    record("reid_speed", {**row, "quick": bool(args.quick), "loadavg": [before, list(os.getloadavg())]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
