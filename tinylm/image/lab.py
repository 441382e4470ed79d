"""The efficiency lab: sweep tau for each model on each image, and write one self-contained HTML
page (images inline as base64 PNG, plots from matplotlib) comparing them with JPEG.

Per image: original, each model's reconstruction at 80% of its full grid, its token map (merged
blocks outlined and tinted over the reconstruction) and Pillow's JPEG at the nearest bits per
pixel; curves of SSIM and PSNR against bits per pixel (JPEG's quality swept on the same axes)
and of SSIM against the fraction of the full grid; a table with the efficiency grade.

Metrics are scikit-image's (`structural_similarity` with its defaults: 7 x 7 uniform window,
channel_axis=2, data_range=255; `peak_signal_noise_ratio`), on the 8-bit images as written.
Efficiency ("quality kept per token", the blog's lab): the area under SSIM against the token
fraction (0 to 1, the curve held flat beyond its ends), so a model that keeps its quality while
merging scores high even if its full-grid SSIM is lower.
"""

from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path

import numpy as np

from tinylm.errors import TinyLMError
from tinylm.image.io import (
    image_files,
    jpeg_roundtrip,
    load_image,
    png_bytes,
    write_atomic,
)

JPEG_QUALITIES = (2, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
BUDGETS = (1.0, 0.8, 0.6, 0.4, 0.2, 0.1, 0.05)


def ssim_psnr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """scikit-image SSIM and PSNR (dB) of two RGB uint8 images; SSIM is nan below 3 px."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    side = min(a.shape[:2])
    if side < 3:
        ssim = float("nan")
    else:
        ssim = float(structural_similarity(a, b, channel_axis=2, data_range=255,
                                           win_size=min(7, side - (1 - side % 2))))
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    psnr = float("inf") if mse == 0 else float(peak_signal_noise_ratio(a, b, data_range=255))
    return ssim, psnr


def jpeg_curve(rgb: np.ndarray) -> list[dict]:
    pixels = rgb.shape[0] * rgb.shape[1]
    points = []
    for q in JPEG_QUALITIES:
        out, size = jpeg_roundtrip(rgb, q)
        ssim, psnr = ssim_psnr(rgb, out)
        points.append({"quality": q, "bpp": 8 * size / pixels, "ssim": ssim, "psnr": psnr,
                       "image": out})
    return points


def jpeg_at(points: list[dict], bpp: float, key: str) -> float:
    """JPEG's metric interpolated at this bpp (bpp sorted; clamped at the ends)."""
    pts = sorted(points, key=lambda p: p["bpp"])
    return float(np.interp(bpp, [p["bpp"] for p in pts], [p[key] for p in pts]))


def sweep(codec, rgb: np.ndarray, taus=None) -> dict:
    """Every point of one model's tau sweep on one image, and its 80% point."""
    from tinylm.image.quadtree import Header, block_map, tau_for_budget, write_stream

    t0 = time.time()
    tree, _ = codec.analyse(rgb)
    h, w = rgb.shape[:2]
    header = Header(h, w, False, codec.factor, codec.fsq.levels)
    chosen = sorted(set(taus) if taus else {tau_for_budget(tree, max(1, int(b * tree.full_tokens)))
                                            for b in BUDGETS} | {0.0})
    points = []
    for tau in chosen:
        stream = write_stream(header, tree, tau)
        recon = codec.reconstruct(tree, tau, h, w)
        ssim, psnr = ssim_psnr(rgb, recon)
        points.append({"tau": tau, "tokens": stream.tokens, "bits": stream.bits,
                       "bpp": stream.bits / (h * w), "ssim": ssim, "psnr": psnr})
    tau80 = tau_for_budget(tree, max(1, int(0.8 * tree.full_tokens)))
    recon80 = codec.reconstruct(tree, tau80, h, w)
    s80 = write_stream(header, tree, tau80)
    ssim80, psnr80 = ssim_psnr(rgb, recon80)
    return {"points": points, "full_tokens": tree.full_tokens, "tau80": tau80,
            "recon80": recon80, "blocks80": block_map(tree, tau80), "tokens80": s80.tokens,
            "bpp80": s80.bits / (h * w), "ssim80": ssim80, "psnr80": psnr80,
            "seconds": time.time() - t0}


def efficiency(result: dict) -> float:
    """Area under SSIM against token fraction over [0, 1]."""
    pts = sorted(result["points"], key=lambda p: p["tokens"])
    x = [p["tokens"] / result["full_tokens"] for p in pts]
    y = [p["ssim"] for p in pts]
    grid = np.linspace(0, 1, 201)
    return float(np.trapezoid(np.interp(grid, x, y), grid))


# --------------------------------------------------------------------------- drawing

def token_map(recon: np.ndarray, blocks, factor: int) -> np.ndarray:
    """The reconstruction, dimmed, with every merged block tinted and outlined."""
    from PIL import Image, ImageDraw

    base = Image.fromarray(recon, "RGB").convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for r, c, side in blocks:
        box = (c * factor, r * factor, (c + side) * factor - 1, (r + side) * factor - 1)
        draw.rectangle(box, fill=(255, 80, 0, 70), outline=(255, 220, 0, 230))
    return np.asarray(Image.alpha_composite(base, layer).convert("RGB"))


def _img_tag(rgb: np.ndarray, caption: str) -> str:
    data = base64.b64encode(png_bytes(rgb)).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _plot(name: str, results: dict, jpeg: list[dict]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for label, res in results.items():
        pts = sorted(res["points"], key=lambda p: p["bpp"])
        axes[0].plot([p["bpp"] for p in pts], [p["ssim"] for p in pts], "o-", label=label)
        axes[1].plot([p["bpp"] for p in pts], [p["psnr"] for p in pts], "o-", label=label)
        axes[2].plot([p["tokens"] / res["full_tokens"] for p in pts], [p["ssim"] for p in pts],
                     "o-", label=label)
    for ax, key in ((axes[0], "ssim"), (axes[1], "psnr")):
        ax.plot([p["bpp"] for p in jpeg], [p[key] for p in jpeg], "s--", color="gray",
                label="JPEG (Pillow, quality swept)")
        ax.set_xlabel("bits per pixel")
        ax.set_xscale("log")
        ax.set_ylabel("SSIM" if key == "ssim" else "PSNR (dB)")
    axes[2].set_xlabel("tokens / full grid")
    axes[2].set_ylabel("SSIM")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(name)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="plot" src="data:image/png;base64,{data}">'


# --------------------------------------------------------------------------- page

def _downscale(rgb: np.ndarray, max_side: int) -> np.ndarray:
    from PIL import Image

    h, w = rgb.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return rgb
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.LANCZOS))


def run_lab(checkpoints, images, out: Path, taus=None, max_side: int = 0, log=print) -> Path:
    from tinylm.image.codec import Codec
    from tinylm.models.qkvae import load_qkvae

    codecs = {}
    for ckpt in checkpoints:
        model, _ = load_qkvae(ckpt)
        params = sum(p.numel() for p in model.parameters())
        codecs[f"{Path(ckpt).name} ({params / 1e6:.2f}M)"] = Codec(model)
    if taus is not None and any(t < 0 for t in taus):
        raise TinyLMError("taus must be >= 0")
    sections, rows = [], []
    for path in image_files(images):
        rgb = _downscale(load_image(path).rgb, max_side)
        h, w = rgb.shape[:2]
        jpeg = jpeg_curve(rgb)
        results = {label: sweep(codec, rgb, taus) for label, codec in codecs.items()}
        best = max(results, key=lambda k: efficiency(results[k]))
        figs = [_img_tag(rgb, f"original {w} x {h}")]
        for label, res in results.items():
            codec = codecs[label]
            near = min(jpeg, key=lambda p: abs(p["bpp"] - res["bpp80"]))
            figs.append(_img_tag(res["recon80"], f"{label}: {res['tokens80']:,}/"
                                 f"{res['full_tokens']:,} tokens, {res['bpp80']:.3f} bpp, "
                                 f"SSIM {res['ssim80']:.4f}, {res['psnr80']:.2f} dB"))
            figs.append(_img_tag(token_map(res["recon80"], res["blocks80"], codec.factor),
                                 f"{label}: token map at tau {res['tau80']:.3g} "
                                 f"({len(res['blocks80']):,} merged blocks)"))
            figs.append(_img_tag(near["image"], f"JPEG q{near['quality']}: {near['bpp']:.3f} "
                                 f"bpp, SSIM {near['ssim']:.4f}, {near['psnr']:.2f} dB"))
            full = max(res["points"], key=lambda p: p["tokens"])
            rows.append((path.name, label, full, res, jpeg, label == best))
            log(f"{path.name} {label}: full {full['ssim']:.4f}/{full['psnr']:.2f} dB, 80% "
                f"{res['ssim80']:.4f}/{res['psnr80']:.2f} dB at {res['bpp80']:.3f} bpp "
                f"(JPEG {jpeg_at(jpeg, res['bpp80'], 'ssim'):.4f}), {res['seconds']:.1f}s")
        sections.append(f"<section><h2>{html.escape(path.name)} ({w} x {h})</h2>"
                        f"<div class=row>{''.join(figs)}</div>{_plot(path.name, results, jpeg)}"
                        f"</section>")
    write_atomic(out, _page(sections, rows).encode("utf-8"))
    log(f"wrote {out}")
    return out


def _page(sections: list[str], rows) -> str:
    head = ("<tr><th>image</th><th>model</th><th>full grid tokens</th><th>SSIM full</th>"
            "<th>PSNR full</th><th>tokens at 80%</th><th>SSIM 80%</th><th>PSNR 80%</th>"
            "<th>bpp 80%</th><th>JPEG SSIM same bpp</th><th>JPEG PSNR same bpp</th>"
            "<th>efficiency</th></tr>")
    body = "".join(
        f"<tr{' class=best' if best else ''}><td>{html.escape(name)}</td>"
        f"<td>{html.escape(label)}</td><td>{res['full_tokens']:,}</td><td>{full['ssim']:.4f}</td>"
        f"<td>{full['psnr']:.2f}</td><td>{res['tokens80']:,}</td><td>{res['ssim80']:.4f}</td>"
        f"<td>{res['psnr80']:.2f}</td><td>{res['bpp80']:.3f}</td>"
        f"<td>{jpeg_at(jpeg, res['bpp80'], 'ssim'):.4f}</td>"
        f"<td>{jpeg_at(jpeg, res['bpp80'], 'psnr'):.2f}</td><td>{efficiency(res):.4f}</td></tr>"
        for name, label, full, res, jpeg, best in rows)
    style = ("body{font-family:sans-serif;margin:20px;background:#fafafa}"
             "figure{display:inline-block;margin:4px;vertical-align:top}"
             "figure img{max-width:380px;image-rendering:pixelated;border:1px solid #ccc}"
             "figcaption{font-size:12px;max-width:380px}.plot{max-width:100%}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #bbb;"
             "padding:3px 6px}tr.best{background:#e6ffe6}")
    return (f"<!doctype html><html><head><meta charset=utf-8><title>qkvae lab</title>"
            f"<style>{style}</style></head><body><h1>qkvae efficiency lab</h1>"
            f"<p>Reconstructions at 80% of each model's full grid; token maps tint the merged "
            f"blocks. SSIM/PSNR: scikit-image. JPEG: Pillow, same bits per pixel (interpolated "
            f"over its quality sweep). Efficiency: area under SSIM against token fraction "
            f"(green: the best model on that image).</p><table>{head}{body}</table>"
            f"{''.join(sections)}</body></html>")
