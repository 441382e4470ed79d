"""qkvae on Kodak-24 (held out, never trained on), one row per model, against JPEG.

    python benchmarks/bench_qkvae.py CKPT [CKPT ...] [--kodak DIR] [--limit N] [--threads 2]
                                     [--max-level 5] [--json out.json]

Per model, means over the images at their native 768 x 512 / 512 x 768:
- SSIM and PSNR (scikit-image: `structural_similarity` defaults, channel_axis=2,
  data_range=255) at the full grid and at 80% of it (tau chosen per image with
  `tau_for_budget`), with the tokens per image and the stream's bits per pixel;
- JPEG (Pillow, quality swept) at the same bits per pixel, interpolated on each image's curve;
- the efficiency grade of the lab (area under SSIM against token fraction) is not repeated
  here: `tinylm image lab` shows it per image;
- encode and decode images/s on this CPU (encoder + FSQ; decoder of the full grid), and the
  seconds a quadtree analysis takes (one decode per level; `--max-level` caps the block size
  merged, 2^L cells a side, to bound that cost).

Measured (2026-12-01, qkvae-1m trained 28 min / 1,055 steps of 8 x 32 x 32 crops on a shared
2-core CPU, `--max-level 4`, timings under load from other jobs):

    model     params     | full grid: SSIM  PSNR   bpp   JPEG same bpp | 80%: tokens SSIM  PSNR   bpp   JPEG same bpp | enc/s dec/s
    qkvae-1m  1,062,791  |           0.7758 23.93 0.646  0.8590/30.64  |     19,643 0.7642 23.86 0.519  0.8295/29.54  |  0.69  0.46

(24,576 tokens per image at the full grid.) JPEG wins at these rates; below ~0.3 bpp, where
Pillow's JPEG cannot go, the merged qkvae stream keeps SSIM that JPEG only reaches at more bits
(see `tinylm image lab`). The 5m and 20m presets are untrained here.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from tinylm.image.io import image_files, load_image, to_tensor, to_uint8
from tinylm.image.lab import jpeg_at, jpeg_curve, ssim_psnr
from tinylm.image.quadtree import (
    Header,
    analyse,
    merged_grid,
    tau_for_budget,
    write_stream,
)
from tinylm.models.qkvae import load_qkvae


def bench_image(model, rgb: np.ndarray, max_level: int | None) -> dict:
    fsq, h, w = model.fsq, rgb.shape[0], rgb.shape[1]
    x = to_tensor(rgb)
    with torch.no_grad():
        t0 = time.perf_counter()
        latent = model.encode_latent(x)
        t1 = time.perf_counter()
        reference = model.decode(fsq.quantize_values(latent), (h, w))
        t2 = time.perf_counter()
        tree = analyse(latent, fsq, lambda q: model.decode(q, (h, w)), reference,
                       model.config.factor, max_level=max_level)
        t3 = time.perf_counter()
        tau = tau_for_budget(tree, int(0.8 * tree.full_tokens))
        codes = fsq.indices_to_codes(torch.from_numpy(merged_grid(tree, tau))[None])
        recon80 = to_uint8(model.decode(codes, (h, w)))
    header = Header(h, w, False, model.config.factor, fsq.levels)
    full, s80 = write_stream(header, tree, -1.0), write_stream(header, tree, tau)
    jpeg = jpeg_curve(rgb)
    ssim_f, psnr_f = ssim_psnr(rgb, to_uint8(reference))
    ssim_8, psnr_8 = ssim_psnr(rgb, recon80)
    bpp_f, bpp_8 = full.bits / (h * w), s80.bits / (h * w)
    return {"ssim_full": ssim_f, "psnr_full": psnr_f, "tokens_full": full.tokens,
            "bpp_full": bpp_f, "ssim_80": ssim_8, "psnr_80": psnr_8, "tokens_80": s80.tokens,
            "bpp_80": bpp_8, "tau_80": tau,
            "jpeg_ssim_full": jpeg_at(jpeg, bpp_f, "ssim"),
            "jpeg_psnr_full": jpeg_at(jpeg, bpp_f, "psnr"),
            "jpeg_ssim_80": jpeg_at(jpeg, bpp_8, "ssim"),
            "jpeg_psnr_80": jpeg_at(jpeg, bpp_8, "psnr"),
            "encode_s": t1 - t0, "decode_s": t2 - t1, "analyse_s": t3 - t2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--kodak", default="/work/shared/data/images/kodak")
    ap.add_argument("--limit", type=int, default=0, help="first N images only (0: all 24)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-level", type=int, default=5)
    ap.add_argument("--json", help="write the per-image rows here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    files = image_files([args.kodak])[: args.limit or None]
    rows, dump = [], {}
    for ckpt in args.checkpoints:
        model, meta = load_qkvae(ckpt)
        params = sum(p.numel() for p in model.parameters())
        per = []
        for path in files:
            per.append(bench_image(model, load_image(path).rgb, args.max_level))
            r = per[-1]
            print(f"  {Path(ckpt).name} {path.name}: full {r['ssim_full']:.4f} {r['psnr_full']:.2f}"
                  f" dB | 80% {r['tokens_80']}/{r['tokens_full']} {r['ssim_80']:.4f} "
                  f"{r['psnr_80']:.2f} dB {r['bpp_80']:.3f} bpp | JPEG {r['jpeg_ssim_80']:.4f}",
                  flush=True)
        mean = {k: float(np.mean([r[k] for r in per])) for k in per[0]}
        rows.append((Path(ckpt).name, params, meta.get("step", 0), mean))
        dump[str(ckpt)] = per
    print(f"\nKodak-24 ({len(files)} images, native size), means per image; JPEG = Pillow at "
          f"the same bpp (interpolated over quality)")
    head = (f"{'model':14s} {'params':>10s} {'step':>6s} | {'SSIM':>6s} {'PSNR':>6s} {'bpp':>5s} "
            f"{'JPEG':>13s} | {'tokens':>7s} {'SSIM':>6s} {'PSNR':>6s} {'bpp':>5s} {'JPEG':>13s}"
            f" | {'enc/s':>6s} {'dec/s':>6s} {'merge s':>7s}")
    print(f"{'':33s} | {'full grid':^34s} | {'80% of the full grid':^41s} |")
    print(head)
    print("-" * len(head))
    for name, params, step, m in rows:
        print(f"{name:14s} {params:10,d} {step:6d} | {m['ssim_full']:6.4f} {m['psnr_full']:6.2f} "
              f"{m['bpp_full']:5.3f} {m['jpeg_ssim_full']:6.4f}/{m['jpeg_psnr_full']:5.2f} | "
              f"{m['tokens_80']:7.0f} {m['ssim_80']:6.4f} {m['psnr_80']:6.2f} {m['bpp_80']:5.3f} "
              f"{m['jpeg_ssim_80']:6.4f}/{m['jpeg_psnr_80']:5.2f} | {1 / m['encode_s']:6.2f} "
              f"{1 / m['decode_s']:6.2f} {m['analyse_s']:7.1f}")
        print(f"{'':14s} tokens per image at the full grid: {m['tokens_full']:.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(dump, indent=1))


if __name__ == "__main__":
    main()
