"""Spectrogram images per second: 1-second blocks -> 64-band mel images, torchaudio (batched, CPU and CUDA)
against librosa on the CPU, in the same run, on the FSDD spoken digits (../shared/datasets/fsdd).

The clips are loaded, resampled to 16 kHz and passed through the VAD once (timed apart, as files per
second); then each pipeline turns the same blocks into (3, S, S) images in [0, 1]:

- ``torchaudio`` on a device: :func:`core.audio.batch_blocks` (one batched pass per chunk of blocks);
- ``librosa_loop``: per block, ``librosa.feature.melspectrogram`` + ``power_to_db`` + a PIL bilinear
  resize, as a per-file script would do it;
- ``librosa_batched``: ``librosa.feature.melspectrogram`` on the (b, 16000) block matrix at once, then
  the same resize per block.

Each timing is the best of ``--repeats`` after a warm-up. Figures go to bench/results/spectrogram.jsonl
(or ``--out DIR``/spectrogram.jsonl).

    python bench/bench_spectrogram.py [--device cuda] [--out DIR] [--n 3000] [--image-size 128] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import record, shared_dir  # noqa: E402
from core.audio import AudioConfig, batch_blocks, block_starts, load_clips  # noqa: E402


def fsdd_paths(n: int) -> list[Path]:
    root = shared_dir() / "fsdd" / "recordings"
    paths = sorted(root.glob("*.wav"))[:n]
    if not paths:
        raise SystemExit(f"no FSDD clips under {root}: set LABELTOOL_SHARED to the folder holding datasets/")
    return paths


def cut_blocks(signals: list[np.ndarray], config: AudioConfig) -> np.ndarray:
    """The (b, block_len) matrix of all blocks, cut as batch_blocks cuts them (zero-padded short clips)."""
    L, rows = config.block_len, []
    for y in signals:
        z = y if len(y) >= L else np.concatenate([y, np.zeros(L - len(y), np.float32)])
        rows.extend(z[s:s + L] for s in block_starts(len(y), config))
    return np.stack(rows)


def librosa_images(blocks: np.ndarray, config: AudioConfig, *, batched: bool) -> np.ndarray:
    """librosa mel -> dB -> [0, 1] -> PIL bilinear resize -> 3 channels: (b, 3, S, S) float32."""
    import librosa
    from PIL import Image

    kw = dict(sr=config.sample_rate, n_fft=config.n_fft, hop_length=config.hop, win_length=config.n_fft,
              window="hamming", center=True, pad_mode="reflect", power=2.0, n_mels=config.n_mels, fmax=config.f_max)
    S = config.image_size
    out = np.empty((len(blocks), 3, S, S), np.float32)
    mels = librosa.feature.melspectrogram(y=blocks, **kw) if batched else None
    for i, block in enumerate(blocks):
        mel = mels[i] if batched else librosa.feature.melspectrogram(y=block, **kw)
        db = librosa.power_to_db(mel, ref=np.max, top_db=config.top_db)
        img = ((db + config.top_db) / config.top_db)[::-1].astype(np.float32)
        img = np.asarray(Image.fromarray(img, mode="F").resize((S, S), Image.BILINEAR))
        out[i] = np.clip(img, 0, 1)[None]
    return out


def best_of(fn, repeats: int, sync=lambda: None) -> float:
    fn()  # warm-up: filterbank, numba, cuFFT plans
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto", help="torchaudio device besides the CPU: auto, cpu, cuda")
    ap.add_argument("--out", default=None, help="folder for spectrogram.jsonl (default bench/results)")
    ap.add_argument("--n", type=int, default=3000, help="FSDD clips")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--chunk", type=int, default=512, help="blocks per torchaudio pass")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--librosa-n", type=int, default=1000, help="blocks timed with librosa (it is slow)")
    a = ap.parse_args()
    if a.out:
        os.environ["BENCH_OUT"] = a.out
    import torch

    from core.device import resolve_device

    device = resolve_device(a.device)
    config = AudioConfig(image_size=a.image_size).validate()
    paths = fsdd_paths(a.n)
    t0 = time.perf_counter()
    signals, ok, failures = load_clips(paths, config, num_workers=min(8, os.cpu_count() or 1))
    load_s = time.perf_counter() - t0
    blocks = cut_blocks(signals, config)
    n_blocks = len(blocks)
    common = {"data": f"fsdd ({len(signals)} clips, 8 kHz -> 16 kHz, VAD)", "n_clips": len(signals),
              "n_blocks": n_blocks, "image_size": a.image_size, "kind": config.kind, "n_mels": config.n_mels,
              "torch_threads": torch.get_num_threads()}
    record("spectrogram_load", {"clips_per_s": round(len(paths) / load_s, 1), "seconds": round(load_s, 3),
                                "failures": len(failures), **common}, out="spectrogram")

    devices = ["cpu"] + ([device] if device != "cpu" else [])
    for dev in devices:
        sync = (lambda: torch.cuda.synchronize()) if dev.startswith("cuda") else (lambda: None)
        dt = best_of(lambda: batch_blocks(signals, config, device=dev, chunk=a.chunk), a.repeats, sync)
        row = {"pipeline": "torchaudio", "device": dev, "chunk": a.chunk, "seconds": round(dt, 4),
               "blocks_per_s": round(n_blocks / dt, 1), **common}
        if dev.startswith("cuda"):
            row["gpu"] = torch.cuda.get_device_name(0)
            # the paper's augmentation: the three f_max values in one run
            dt3 = best_of(lambda: [batch_blocks(signals, config, device=dev, chunk=a.chunk, f_max=f)
                                   for f in config.augment_f_max], a.repeats, sync)
            row["augment3_blocks_per_s"] = round(3 * n_blocks / dt3, 1)
        record("spectrogram", row, out="spectrogram")

    sub = blocks[: a.librosa_n]
    for batched in (False, True):
        dt = best_of(lambda: librosa_images(sub, config, batched=batched), a.repeats)
        record("spectrogram", {"pipeline": "librosa_batched" if batched else "librosa_loop", "device": "cpu",
                               "n_blocks_timed": len(sub), "seconds": round(dt, 4),
                               "blocks_per_s": round(len(sub) / dt, 1), **common}, out="spectrogram")
    return 0


if __name__ == "__main__":
    sys.exit(main())
