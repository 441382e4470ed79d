"""`tinylm image train | encode | decode | lab`: the qkvae image tokenizer from the command line.

Registered into the main parser by `tinylm.cli`; nothing here imports torch at module level, so
`tinylm --help` stays instant. Every refusal is one line (TinyLMError); outputs are written to a
temporary sibling and renamed, and an output that names one of the inputs is refused, so no
command destroys a file it reads.
"""

from __future__ import annotations

from pathlib import Path

from tinylm.errors import TinyLMError


def _check_output(out: str, *inputs: str, force: bool = False) -> Path:
    """An output file that is no input, and (tinylm.io's rule) is ours or new, or --force."""
    from tinylm.io import check_output

    path = Path(out)
    for given in inputs:
        if Path(given).exists() and path.exists() and path.resolve() == Path(given).resolve():
            raise TinyLMError(f"output {path} is also an input; choose another -o")
    return check_output(path, "file", inputs=inputs, force=force)


def _codec(checkpoint: str):
    from tinylm.image.codec import Codec
    from tinylm.models.qkvae import load_qkvae

    model, _ = load_qkvae(checkpoint)
    return Codec(model)


# --------------------------------------------------------------------------- train

def cmd_train(args) -> None:
    import torch

    from tinylm.config import from_dict, given_flags, load_preset
    from tinylm.image.settings import ImageTrainConfig
    from tinylm.image.train import train, train_images
    from tinylm.io import check_output
    from tinylm.models import get_family
    from tinylm.models.qkvae import Qkvae, load_qkvae

    preset = load_preset(args.preset)
    if get_family(preset["family"]).model_class is not Qkvae:
        raise TinyLMError(f"preset {args.preset} is a {preset['family']} model; "
                          f"`tinylm image train` trains qkvae presets")
    config = from_dict(ImageTrainConfig, {**preset["train"], **given_flags(args, ImageTrainConfig)},
                       where="image train settings")
    out = check_output(args.out, "checkpoint", inputs=[args.init], force=args.force)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.init:
        model, _ = load_qkvae(args.init)
        model.train()
    else:
        torch.manual_seed(config.seed)
        model = get_family(preset["family"]).build(preset["model"])
    images = train_images(args.data or (), use_skimage=not args.no_skimage)
    params = sum(p.numel() for p in model.parameters())
    print(f"qkvae {args.preset}: {params:,} params, {len(images)} training images, crops "
          f"{config.crop}, batch {config.batch_size}, up to {config.steps} steps"
          + (f" / {config.minutes:g} min" if config.minutes else ""), flush=True)
    result = train(model, images, config, out, log=lambda s: print(s, flush=True))
    print(f"wrote {out} after {result['steps']} steps, {result['seconds'] / 60:.1f} min "
          f"(last window: loss {result['loss']:.4f}, train-crop SSIM {result['ssim']:.4f})")


# --------------------------------------------------------------------------- encode / decode

def cmd_encode(args) -> None:
    from tinylm.image.io import load_image, write_atomic

    out = _check_output(args.out, args.image, args.checkpoint, force=args.force)
    image = load_image(args.image)
    codec = _codec(args.checkpoint)
    enc = codec.encode(image.rgb, image.gray, tau=args.tau, budget=args.budget)
    write_atomic(out, enc.stream)
    h, w = image.rgb.shape[:2]
    note = f" ({image.note})" if image.note else ""
    print(f"{args.image}: {w} x {h}{note} -> {enc.tokens:,} tokens of {enc.full_tokens:,} "
          f"({100 * enc.tokens / enc.full_tokens:.1f}% of the full grid) at tau {enc.tau:.4g}; "
          f"{enc.bits:,} bits ({enc.structure_bits:,} tree + {enc.code_bits:,} codes + header), "
          f"{enc.bpp:.4f} bpp; wrote {out}")


def cmd_decode(args) -> None:
    from tinylm.image.io import png_bytes, write_atomic

    out = _check_output(args.out, args.tokens, args.checkpoint, force=args.force)
    path = Path(args.tokens)
    if not path.is_file():
        raise TinyLMError(f"token file not found: {path}")
    codec = _codec(args.checkpoint)
    rgb, gray, tokens = codec.decode(path.read_bytes())
    write_atomic(out, png_bytes(rgb, gray))
    print(f"{path}: {tokens:,} tokens -> {rgb.shape[1]} x {rgb.shape[0]}"
          f"{' grayscale' if gray else ''} PNG; wrote {out}")


# --------------------------------------------------------------------------- lab

def cmd_lab(args) -> None:
    from tinylm.image.lab import run_lab

    out = _check_output(args.out, *args.checkpoints, force=args.force)
    run_lab(args.checkpoints, args.images, out, taus=args.taus, max_side=args.max_side,
            log=lambda s: print(s, flush=True))


# --------------------------------------------------------------------------- parser

def register(subparsers) -> None:
    from tinylm.config import add_dataclass_flags
    from tinylm.image.settings import ImageTrainConfig

    p = subparsers.add_parser("image", help="qkvae image tokenizer: train, encode, decode, lab")
    sub = p.add_subparsers(dest="image_command", required=True)

    t = sub.add_parser("train", help="train a qkvae preset on local images (random crops)")
    t.add_argument("--preset", default="qkvae-1m", help="qkvae-1m | qkvae-5m | qkvae-20m")
    t.add_argument("--out", required=True, help="checkpoint folder to write")
    t.add_argument("--data", nargs="*", help="extra image folders or files (Kodak refused)")
    t.add_argument("--no-skimage", action="store_true",
                   help="skip scikit-image's sample photos (train on --data only)")
    t.add_argument("--init", help="start from this qkvae checkpoint instead of fresh weights")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    add_dataclass_flags(t, ImageTrainConfig)
    t.add_argument("--force", action="store_true", help="replace an existing output that "
                   "tinylm did not write (never an input)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("encode", help="an image -> a token stream (quadtree + codes)")
    e.add_argument("checkpoint", help="a qkvae checkpoint folder")
    e.add_argument("image")
    e.add_argument("-o", "--out", required=True, help="token file to write")
    e.add_argument("--tau", type=float, default=0.0, help="merge budget: largest mean change "
                   "(8-bit levels) a merged block may cause (default 0: lossless merges only)")
    e.add_argument("--budget", type=float, help="instead of tau: at most this fraction of the "
                   "full grid's tokens (e.g. 0.8)")
    e.add_argument("--force", action="store_true", help="replace an existing output that "
                   "tinylm did not write (never an input)")
    e.set_defaults(func=cmd_encode)

    d = sub.add_parser("decode", help="a token stream -> a PNG of the original size")
    d.add_argument("checkpoint")
    d.add_argument("tokens")
    d.add_argument("-o", "--out", required=True, help="PNG to write")
    d.add_argument("--force", action="store_true", help="replace an existing output that "
                   "tinylm did not write (never an input)")
    d.set_defaults(func=cmd_decode)

    lab = sub.add_parser("lab", help="sweep tau per model on images; an HTML page with "
                         "reconstructions, token maps and SSIM/PSNR curves against JPEG")
    lab.add_argument("checkpoints", nargs="+", help="qkvae checkpoint folders (one per size)")
    lab.add_argument("--images", nargs="+", required=True, help="image files or folders")
    lab.add_argument("-o", "--out", default="qkvae-lab.html")
    lab.add_argument("--taus", type=float, nargs="*", help="taus to sweep (default: chosen "
                     "per image from the block costs, full grid to a few tokens)")
    lab.add_argument("--max-side", type=int, default=0,
                     help="downscale images whose longer side exceeds this (0: native size)")
    lab.add_argument("--force", action="store_true", help="replace an existing output that "
                   "tinylm did not write (never an input)")
    lab.set_defaults(func=cmd_lab)
