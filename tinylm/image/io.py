"""Image files <-> arrays, with the colour conversions qkvae applies to what it is given.

qkvae codes RGB. Other inputs are converted, and the conversion is reported, never silent:
- grayscale (L, I, I;16, F, 1) is replicated into three channels; the stream remembers that it
  was grayscale, so `decode` writes a grayscale PNG back (the mean of the three channels);
- an alpha channel (RGBA, LA, P with transparency) is composited onto white and dropped: the
  alpha plane is not coded;
- palette, CMYK, YCbCr and the rest go through Pillow's RGB conversion.
Anything Pillow cannot open is refused with one line.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinylm.errors import TinyLMError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".gif")


@dataclass
class LoadedImage:
    rgb: np.ndarray          # (H, W, 3) uint8
    gray: bool               # the source had no colour
    note: str                # "" or what was converted ("alpha composited onto white", ...)


def to_rgb(array: np.ndarray) -> LoadedImage:
    """An array as scikit-image or Pillow gives it -> RGB uint8, with what was converted."""
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = np.clip(a.astype(np.float64) * (255.0 if a.max() <= 1.0 else 1.0), 0, 255)
        a = np.round(a).astype(np.uint8)
    if a.ndim == 2:
        return LoadedImage(np.repeat(a[:, :, None], 3, axis=2), True, "grayscale -> 3 channels")
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise TinyLMError(f"not an image array: shape {a.shape}")
    if a.shape[2] in (2, 4):  # with alpha: composite onto white, then drop it
        alpha = a[:, :, -1:].astype(np.float64) / 255.0
        colour = a[:, :, :-1].astype(np.float64)
        a = np.round(colour * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
        out = to_rgb(a[:, :, 0] if a.shape[2] == 1 else a)
        return LoadedImage(out.rgb, out.gray, "alpha composited onto white"
                           + (", grayscale -> 3 channels" if out.gray else ""))
    if a.shape[2] == 1:
        return to_rgb(a[:, :, 0])
    return LoadedImage(np.ascontiguousarray(a), False, "")


def load_image(path: str | Path) -> LoadedImage:
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise TinyLMError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("L", "LA", "RGB", "RGBA"):
                arr = np.asarray(im)
            elif mode == "P" and "transparency" in im.info:
                arr = np.asarray(im.convert("RGBA"))
            elif mode == "1":
                arr = np.asarray(im.convert("L"))
            elif mode.startswith("I"):  # 16- or 32-bit integer gray: scale 16-bit to 8-bit
                arr = np.clip(np.asarray(im).astype(np.float64) / 257.0, 0, 255).astype(np.uint8)
            elif mode == "F":
                arr = np.asarray(im)  # float gray; to_rgb reads <= 1 as [0, 1]
            else:
                arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise TinyLMError(f"{path}: not an image Pillow can read ({err})") from None
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise TinyLMError(f"{path}: empty image")
    return to_rgb(arr)


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write bytes to a temporary sibling, then rename: a failed write leaves any old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def png_bytes(rgb: np.ndarray, gray: bool = False) -> bytes:
    import io

    from PIL import Image

    im = Image.fromarray(rgb, "RGB")
    if gray:
        im = Image.fromarray(np.round(rgb.astype(np.float64).mean(axis=2)).astype(np.uint8), "L")
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", "tinylm qkvae")  # marks the file as ours (tinylm.io.owns_file)
    buf = io.BytesIO()
    im.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> tuple[np.ndarray, int]:
    """(decoded image, size in bytes) of a Pillow JPEG at this quality (4:2:0, baseline)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="JPEG", quality=int(quality))
    size = buf.tell()
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB")), size


def image_files(paths) -> list[Path]:
    """Image files named directly or found (sorted) in the named folders."""
    found: list[Path] = []
    for entry in paths:
        p = Path(entry)
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            found.append(p)
        else:
            raise TinyLMError(f"no such image or folder: {p}")
    if not found:
        raise TinyLMError(f"no images found in {', '.join(map(str, paths))}")
    return found


def to_tensor(rgb: np.ndarray):
    """(H, W, 3) uint8 -> (1, 3, H, W) float in [0, 1]."""
    import torch

    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0


def to_uint8(x) -> np.ndarray:
    """(1, 3, H, W) float -> (H, W, 3) uint8 (clamped, rounded)."""
    return (x[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
