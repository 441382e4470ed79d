"""qkvae: an FSQ image autoencoder whose codes any token model can read (the `qkvae` family).

Built from the Glint Research blog (2026, "the qkvae works now"): "a small conv net on each
end, a finite scalar quantizer in the middle ... three sizes (1M, 5M, 20M) that all share the
same codebook"; the 1M has "1.06 million parameters". The quantizer is FSQ (Mentzer et al.
2023, `tinylm.models.fsq`).

    image (B, 3, H, W) in [0, 1]
      -> pad (replicate) to multiples of `factor`    any size in, cropped back at the end
      -> encoder: stem conv, per level [res blocks, stride-2 conv], res blocks, 1x1 -> d
      -> FSQ (levels [8, 5, 5, 5]: 1,000 codes, d = 4)          code grid (B, d, H/f, W/f)
      -> decoder: 1x1/3x3 in, res blocks, per level [2x nearest up, 3x3 conv, res blocks]
      -> 3x3 conv out, + 0.5                                     (B, 3, H, W)

Notable choices:
- Fully convolutional and without normalization layers: nothing depends on the image size or
  on statistics of the whole image, so a 182 x 28 strip and a 768 x 512 photo go through the
  same weights and a merged code grid (quadtree, `tinylm.image.quadtree`) decodes locally.
- Downsampling factor 4 (two stride-2 levels) for every preset, so one code covers 4 x 4 pixels
  and the three sizes share the code grid as well as the codebook: 10 bits per 16 pixels,
  0.625 bits per pixel at the full grid, before quadtree merging.
- Every conv pads by replication, not zeros: a constant image then gives a constant code grid
  (each conv maps a constant input to a constant output), so a flat picture merges to one
  token even at tau = 0, and borders are not coded differently from the interior.
- Upsampling is nearest-neighbour then a 3x3 conv (no transposed conv, so no checkerboard).
- Residual blocks are conv3x3-SiLU-conv3x3 with the second conv scaled down at init, so a fresh
  network starts close to the identity through each block.
- Sizes are set by `channels` (per resolution level, full resolution first) and the number of
  residual blocks per level on each side; the decoder gets more blocks than the encoder, as
  reconstruction is the harder half.

How the family record handles a non-language model: `Family(language_model=False)`. The config
has no `vocab_size` / `context_len` (its codebook size is `prod(levels)`); `tinylm info` builds
presets without a vocabulary and prints the code grid from `describe_extra`; `tinylm train`,
`eval` and `generate` refuse a qkvae preset or checkpoint with one line (the check sits where
the CLI loads a checkpoint: `tinylm.train.checkpoint.load_checkpoint`). A qkvae checkpoint is
a tinylm checkpoint folder (model.safetensors + meta.json with sha256s, written atomically by
`save_checkpoint`) that holds no tokenizer.json; it is loaded by `load_qkvae` here, and trained,
used and compared with `tinylm image train | encode | decode | lab`. Merge groups and depths are
given so the merge tools could treat it like any record, but no merge of image models is tested.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tinylm.errors import TinyLMError
from tinylm.models.family import Family, Preset
from tinylm.models.fsq import FSQ

LEVELS = (8, 5, 5, 5)  # shared by every preset: one codebook of 1,000 codes


@dataclass
class QkvaeConfig:
    levels: tuple[int, ...] = LEVELS
    """FSQ levels per latent channel; the codebook has prod(levels) codes."""
    channels: tuple[int, ...] = (32, 64, 112)
    """Conv width per resolution level, full resolution first; len - 1 stride-2 steps."""
    enc_blocks: tuple[int, ...] = (0, 1, 1)
    """Residual blocks per level in the encoder (same order as channels)."""
    dec_blocks: tuple[int, ...] = (0, 1, 2)
    """Residual blocks per level in the decoder."""
    image_channels: int = 3

    def __post_init__(self):
        self.levels = tuple(int(x) for x in self.levels)
        self.channels = tuple(int(x) for x in self.channels)
        self.enc_blocks = tuple(int(x) for x in self.enc_blocks)
        self.dec_blocks = tuple(int(x) for x in self.dec_blocks)
        if len(self.channels) < 1 or any(c < 1 for c in self.channels):
            raise TinyLMError(f"qkvae channels must be positive, got {list(self.channels)}")
        for name in ("enc_blocks", "dec_blocks"):
            if len(getattr(self, name)) != len(self.channels):
                raise TinyLMError(f"qkvae {name} needs one count per level "
                                  f"({len(self.channels)}), got {list(getattr(self, name))}")
        if any(n < 2 for n in self.levels):
            raise TinyLMError(f"qkvae FSQ levels must each be >= 2, got {list(self.levels)}")

    @property
    def factor(self) -> int:
        """Pixels per code along each side."""
        return 2 ** (len(self.channels) - 1)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Code grid (rows, cols) of an image of this size (padded up to the factor)."""
        f = self.factor
        return -(-height // f), -(-width // f)


# --------------------------------------------------------------------------- blocks

def conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    """A conv that pads by replication (see the module docstring); k = 4, stride 2 halves."""
    return nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2 if k % 2 else 1,
                     padding_mode="replicate")


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = conv(ch, ch)
        self.conv2 = conv(ch, ch)
        with torch.no_grad():  # start near the identity: each block adds a small correction
            self.conv2.weight.mul_(0.1)
            self.conv2.bias.zero_()

    def forward(self, x):
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class Up(nn.Module):
    """2x nearest-neighbour upsampling, then a 3x3 conv."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = conv(cin, cout)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Encoder(nn.Module):
    def __init__(self, c: QkvaeConfig):
        super().__init__()
        ch = c.channels
        self.stem = conv(c.image_channels, ch[0])
        self.levels = nn.ModuleList()
        for i, n in enumerate(c.enc_blocks):
            layers = [ResBlock(ch[i]) for _ in range(n)]
            if i + 1 < len(ch):  # stride-2 conv to the next level
                layers.append(conv(ch[i], ch[i + 1], 4, stride=2))
            self.levels.append(nn.Sequential(*layers))
        self.out = nn.Conv2d(ch[-1], len(c.levels), 1)

    def forward(self, x):                                   # (B, 3, H, W), H, W % factor == 0
        x = self.stem(x)
        for level in self.levels:
            x = level(x)                                    # halves H, W except the last
        return self.out(F.silu(x))                          # (B, d, H/f, W/f)


class Decoder(nn.Module):
    def __init__(self, c: QkvaeConfig):
        super().__init__()
        ch = c.channels
        self.inp = conv(len(c.levels), ch[-1])
        self.levels = nn.ModuleList()
        for i in reversed(range(len(ch))):
            layers = [ResBlock(ch[i]) for _ in range(c.dec_blocks[i])]
            if i > 0:
                layers.append(Up(ch[i], ch[i - 1]))
            self.levels.append(nn.Sequential(*layers))
        self.out = conv(ch[0], c.image_channels)

    def forward(self, q):                                   # (B, d, h, w)
        x = self.inp(q)
        for level in self.levels:
            x = level(x)                                    # doubles h, w except the last
        return self.out(F.silu(x)) + 0.5                    # (B, 3, h*f, w*f), ~[0, 1]


# --------------------------------------------------------------------------- model

class Qkvae(nn.Module):
    """Encoder -> FSQ -> decoder. Images are float (B, 3, H, W) in [0, 1], any H, W >= 1."""

    family = "qkvae"

    def __init__(self, config: QkvaeConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.fsq = FSQ(config.levels)
        self.decoder = Decoder(config)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Replicate-pad the bottom and right edges up to multiples of the factor (replicate,
        not reflect: reflect needs the image to be larger than the pad, and 1 x 1 is not)."""
        if x.ndim != 4 or x.shape[1] != self.config.image_channels:
            raise TinyLMError(f"qkvae takes images (B, {self.config.image_channels}, H, W), "
                              f"got shape {tuple(x.shape)}")
        if x.shape[2] < 1 or x.shape[3] < 1:
            raise TinyLMError(f"empty image: {x.shape[2]} x {x.shape[3]} pixels")
        f = self.config.factor
        ph, pw = -x.shape[2] % f, -x.shape[3] % f
        return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> bounded, unrounded latent (B, d, h, w); round it to get the codes."""
        return self.fsq.bound(self.encoder(self._pad(x) * 2 - 1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, H, W) -> codes (B, d, ceil(H/f), ceil(W/f)) in [-1, 1]."""
        return self.fsq(self.encoder(self._pad(x) * 2 - 1))

    def decode(self, codes: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Codes (B, d, h, w) -> image (B, 3, h*f, w*f), cropped to `size` (H, W) if given."""
        x = self.decoder(codes)
        if size is not None:
            x = x[:, :, :size[0], :size[1]]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of x, exactly x's size (values unclamped, for the loss)."""
        return self.decode(self.encode(x), size=(x.shape[2], x.shape[3]))

    def parameter_breakdown(self) -> dict[str, int]:
        count = lambda m: sum(p.numel() for p in m.parameters())
        parts = {"encoder.stem": count(self.encoder.stem)}
        for i, level in enumerate(self.encoder.levels):
            parts[f"encoder.level{i} ({self.config.channels[i]} ch)"] = count(level)
        parts["encoder.out (to FSQ)"] = count(self.encoder.out)
        parts["decoder.inp (from FSQ)"] = count(self.decoder.inp)
        n = len(self.config.channels)
        for j, level in enumerate(self.decoder.levels):
            parts[f"decoder.level{n - 1 - j} ({self.config.channels[n - 1 - j]} ch)"] = count(level)
        parts["decoder.out"] = count(self.decoder.out)
        return parts

    @staticmethod
    def parameter_group(name: str) -> str:
        return name.split(".", 1)[0]  # encoder | decoder


# --------------------------------------------------------------------------- checkpoints

def save_qkvae(path: str | Path, model: Qkvae, extra_meta: dict | None = None) -> Path:
    """A tinylm checkpoint folder without a tokenizer (atomic, sha256-checked)."""
    from tinylm.train.checkpoint import save_checkpoint

    return save_checkpoint(path, family="qkvae", model_config=config_dict(model.config),
                           model_state=model.state_dict(), tokenizer=None,
                           extra_meta=extra_meta)


def load_qkvae(path: str | Path, device: str = "cpu") -> tuple[Qkvae, dict]:
    """(model in eval mode, meta) from a folder written by `save_qkvae`; anything else is
    refused with one line."""
    from tinylm.train.checkpoint import _load_tensors, _verified, read_meta

    path = Path(path)
    meta = read_meta(path)
    if meta["family"] != "qkvae":
        raise TinyLMError(f"{path}: a {meta['family']} checkpoint, not a qkvae image model")
    state = _load_tensors(_verified(path, meta, "model.safetensors"))
    model = FAMILY.build(meta["model_config"], where=f"{path} model config")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise TinyLMError(f"{path}: weights do not fit this qkvae config (missing "
                          f"{missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(device).eval(), meta


def config_dict(config: QkvaeConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


# --------------------------------------------------------------------------- presets + record

PRESETS = {
    "qkvae-debug": Preset("tiny qkvae for the tests", {
        "channels": (8, 8, 16), "enc_blocks": (0, 0, 1), "dec_blocks": (0, 0, 1)}),
    "qkvae-1m": Preset("qkvae 1M: the blog's 1.06M image tokenizer, FSQ [8,5,5,5], 4x4 px/code", {
        "channels": (32, 64, 112), "enc_blocks": (0, 1, 1), "dec_blocks": (0, 1, 2)},
        # what trained the CPU checkpoint in the notes (28 min, 1,055 steps on a shared 2-core CPU)
        train={"crop": 32, "batch_size": 8, "lr": 2e-3, "warmup": 20, "steps": 100_000,
               "minutes": 28.0, "save_every": 50}),
    "qkvae-5m": Preset("qkvae 5M: same codebook and grid, wider", {
        "channels": (48, 128, 256), "enc_blocks": (0, 1, 1), "dec_blocks": (1, 1, 2)},
        train={"crop": 96, "batch_size": 16, "lr": 1e-3}),
    "qkvae-20m": Preset("qkvae 20M: same codebook and grid, wider and deeper", {
        "channels": (64, 192, 416), "enc_blocks": (1, 1, 2), "dec_blocks": (1, 2, 3)},
        train={"crop": 128, "batch_size": 16, "lr": 5e-4}),
}


def describe_extra(config: QkvaeConfig) -> list[str]:
    """Lines for `tinylm info`: codebook and the code grid of a few image sizes."""
    f, bits = config.factor, max(1, math.ceil(math.log2(config.codebook_size)))
    lines = [(f"FSQ levels {list(config.levels)}: {config.codebook_size:,} codes ({bits} bits "
              f"each), {f} x {f} pixels per code ({bits / f / f:.3f} bpp at the full grid)"),
             "code grid (rows x cols = tokens at the full grid; quadtree merging spends fewer):"]
    for w, h in ((182, 28), (256, 256), (768, 512), (1920, 1080)):
        rows, cols = config.grid(h, w)
        lines.append(f"  {w:5d} x {h:<5d} -> {rows} x {cols} = {rows * cols:,} tokens")
    return lines


def depth_of(names, config) -> dict[str, float]:
    """Encoder levels from 0 toward 0.5, decoder levels from 0.5 to 1 (for depth gradients)."""
    depths = {}
    for name in names:
        parts = name.split(".")
        if parts[1] == "levels":
            n = len(config.channels) if config is not None else 3
            k = int(parts[2])
            depths[name] = (k + 1) / (2 * n + 1) if parts[0] == "encoder" else (n + 1 + k) / (2 * n + 1)
    return depths


FAMILY = Family(
    name="qkvae", config_class=QkvaeConfig, model_class=Qkvae, presets=PRESETS,
    groups=("encoder", "decoder"), group_of=Qkvae.parameter_group, depth_of=depth_of,
    align=None, export=None, language_model=False, describe_extra=describe_extra)
