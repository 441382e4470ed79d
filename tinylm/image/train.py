"""Training a qkvae on local images: random crops, L1 + SSIM loss, AdamW, cosine schedule.

Training images are the photos scikit-image ships inside its wheel (`skimage.data`: astronaut,
coffee, chelsea, rocket, the stereo motorcycle pair, hubble, ...; grayscale ones are replicated
into RGB, the RGBA logo composited onto white) plus any image folder the user names. Kodak-24 is
the held-out evaluation set and is never read here; `train_images` refuses a folder that holds
Kodak file names (kodimNN) so it cannot slip in by accident.

Loss: L1 + `ssim_weight` * (1 - SSIM), SSIM from `pytorch-msssim` (Gaussian window 11, sigma
1.5, the Wang et al. 2004 constants, the same definition as
`skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)`; tests/image checks the two agree). L1 rather than L2 as the pixel
term: it keeps edges sharper at a fixed budget (Zhao et al. 2017, "Loss Functions for Image
Restoration with Neural Networks").
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tinylm.errors import TinyLMError
from tinylm.image.io import image_files, load_image, to_rgb
from tinylm.image.settings import ImageTrainConfig

# (function name, weight): colour photos are drawn three times as often as grayscale textures
SKIMAGE_IMAGES = (("astronaut", 3), ("coffee", 3), ("chelsea", 3), ("rocket", 3),
                  ("stereo_motorcycle", 3), ("hubble_deep_field", 3),
                  ("immunohistochemistry", 3), ("retina", 3), ("colorwheel", 1), ("logo", 1),
                  ("camera", 1), ("coins", 1), ("moon", 1), ("page", 1), ("text", 1),
                  ("brick", 1), ("grass", 1), ("gravel", 1), ("cell", 1), ("clock", 1))
KODAK_NAME = re.compile(r"^kodim\d\d$", re.IGNORECASE)


def skimage_images() -> list[tuple[str, np.ndarray, int]]:
    """(name, RGB uint8, weight) for every scikit-image sample present in the wheel."""
    try:
        from skimage import data
    except ImportError:
        raise TinyLMError("training images come from scikit-image: pip install scikit-image") \
            from None
    found = []
    for name, weight in SKIMAGE_IMAGES:
        try:
            arr = getattr(data, name)()
        except Exception:  # noqa: BLE001, S112 - a sample missing from this wheel is skipped
            continue
        views = arr[:2] if isinstance(arr, tuple) else (arr,)  # stereo pair: both views
        for k, view in enumerate(views):
            found.append((f"{name}{'_' + 'lr'[k] if len(views) > 1 else ''}",
                          to_rgb(view).rgb, weight))
    return found


def train_images(folders=(), use_skimage: bool = True) -> list[tuple[str, np.ndarray, int]]:
    images = skimage_images() if use_skimage else []
    if folders:
        for path in image_files(folders):
            if KODAK_NAME.match(path.stem):
                raise TinyLMError(f"{path}: Kodak-24 is the held-out evaluation set; "
                                  f"not training on it")
            images.append((path.stem, load_image(path).rgb, 3))
    if not images:
        raise TinyLMError("no training images (install scikit-image or name a folder)")
    return images


class CropSampler:
    """Random crops (and horizontal flips) of the images, drawn in proportion to weight x area
    so that large photos are not under-sampled."""

    def __init__(self, images, crop: int, seed: int):
        self.images = [torch.from_numpy(np.array(a, dtype=np.uint8)).permute(2, 0, 1)
                       for _, a, _ in images]
        sizes = np.array([w * a.shape[0] * a.shape[1] for _, a, w in images], dtype=np.float64)
        self.p = sizes / sizes.sum()
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> torch.Tensor:
        out = []
        for i in self.rng.choice(len(self.images), size=n, p=self.p):
            img = self.images[i]
            h, w = img.shape[1:]
            c = self.crop
            if h < c or w < c:  # small image: pad by replication up to the crop
                img = F.pad(img[None].float(), (0, max(0, c - w), 0, max(0, c - h)),
                            mode="replicate")[0]
                h, w = img.shape[1:]
            y, x = self.rng.integers(0, h - c + 1), self.rng.integers(0, w - c + 1)
            patch = img[:, y:y + c, x:x + c].float() / 255.0
            out.append(patch.flip(2) if self.rng.random() < 0.5 else patch)
        return torch.stack(out)                              # (n, 3, crop, crop)


def loss_fn(recon: torch.Tensor, target: torch.Tensor, ssim_weight: float):
    """L1 + ssim_weight * (1 - SSIM); returns (loss, l1, ssim)."""
    from pytorch_msssim import ssim

    l1 = (recon - target).abs().mean()
    s = ssim(recon.clamp(0, 1), target, data_range=1.0, size_average=True)
    return l1 + ssim_weight * (1 - s), l1, s


def lr_at(step: int, config: ImageTrainConfig, elapsed: float = 0.0) -> float:
    """Linear warmup, then cosine down to lr / 10. Progress is the larger of steps done and
    time spent, so a run cut short by `minutes` still ends its schedule."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    if config.minutes:
        progress = max(progress, elapsed / (60 * config.minutes))
    progress = min(1.0, progress)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model, images, config: ImageTrainConfig, out: Path, log=print) -> dict:
    """Train in place; checkpoints go to `out` (a folder, replaced atomically). Returns
    {"steps", "seconds", "loss", "ssim"} of the last log window."""
    from tinylm.models.qkvae import save_qkvae

    torch.manual_seed(config.seed)
    sampler = CropSampler(images, config.crop, config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                            betas=(0.9, 0.99))
    model.train()
    start, window, step = time.time(), [], 0
    for step in range(config.steps):
        if config.minutes and time.time() - start > 60 * config.minutes:
            log(f"time budget of {config.minutes:g} min reached at step {step}")
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step, config, time.time() - start)
        x = sampler.batch(config.batch_size)
        loss, l1, s = loss_fn(model(x), x, config.ssim_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        window.append((loss.item(), l1.item(), s.item()))
        if (step + 1) % config.log_every == 0:
            loss_m, l1_m, s_m = np.mean(window, axis=0)
            log(f"step {step + 1:6d}  loss {loss_m:.4f}  l1 {l1_m:.4f}  ssim {s_m:.4f}  "
                f"{time.time() - start:7.1f}s")
            window = []
        if config.save_every and (step + 1) % config.save_every == 0:
            save_qkvae(out, model, {"step": step + 1, "seconds": time.time() - start})
    else:
        step = config.steps
    seconds = time.time() - start
    save_qkvae(out, model, {"step": step, "seconds": seconds,
                            "train_images": len(images), "crop": config.crop})
    model.eval()
    last = np.mean(window, axis=0) if window else (float("nan"),) * 3
    return {"steps": step, "seconds": seconds, "loss": float(last[0]), "ssim": float(last[2])}
