"""`tinylm image ...` end to end on tiny images and the debug preset; the SSIM loss against
scikit-image; one-line refusals; no input file destroyed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tinylm.cli import main


@pytest.fixture()
def checkpoint(tmp_path):
    from tests.image.test_qkvae import debug_model
    from tinylm.models.qkvae import save_qkvae

    return str(save_qkvae(tmp_path / "ck", debug_model(spread=30.0)))


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tinylm: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_ssim_loss_matches_scikit_image():
    from pytorch_msssim import ssim
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = rng.random((48, 40, 3))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    ref = structural_similarity(a, b, channel_axis=2, data_range=1.0, gaussian_weights=True,
                                sigma=1.5, use_sample_covariance=False)
    t = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None].float()
    assert abs(float(ssim(t(a), t(b), data_range=1.0)) - ref) < 2e-3


@pytest.mark.slow
def test_encode_decode_strip_gray_rgba(tmp_path, checkpoint, capsys):
    rng = np.random.default_rng(0)
    images = {"strip.png": Image.fromarray(rng.integers(0, 256, (28, 182, 3), dtype=np.uint8)),
              "gray.png": Image.fromarray(np.full((9, 13), 200, np.uint8), "L"),
              "rgba.png": Image.fromarray(np.full((5, 6, 4), 128, np.uint8), "RGBA"),
              "dot.png": Image.fromarray(np.zeros((1, 1, 3), np.uint8))}
    for name, im in images.items():
        src, tok, png = tmp_path / name, tmp_path / f"{name}.qkv", tmp_path / f"out-{name}"
        im.save(src)
        before = src.read_bytes()
        assert main(["image", "encode", checkpoint, str(src), "-o", str(tok), "--budget", "0.8"]) == 0
        assert main(["image", "decode", checkpoint, str(tok), "-o", str(png)]) == 0
        with Image.open(png) as out:
            assert out.size == im.size
            assert out.mode == ("L" if name == "gray.png" else "RGB")
        assert src.read_bytes() == before
    text = capsys.readouterr().out
    assert "grayscale -> 3 channels" in text and "alpha composited onto white" in text
    assert "-> 1 tokens of 12 " in text  # the flat gray 9 x 13 picture (3 x 4 grid) collapses


@pytest.mark.slow
def test_refusals_are_one_line_and_destroy_nothing(tmp_path, checkpoint, capsys):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    assert "not an image Pillow can read" in one_line_error(
        capsys, ["image", "encode", checkpoint, str(junk), "-o", str(tmp_path / "t.qkv")])
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    before = good.read_bytes()
    assert "also an input" in one_line_error(
        capsys, ["image", "encode", checkpoint, str(good), "-o", str(good)])
    assert good.read_bytes() == before
    assert "not a qkvae token stream" in one_line_error(
        capsys, ["image", "decode", checkpoint, str(good), "-o", str(tmp_path / "x.png")])
    assert "not a language model" in one_line_error(
        capsys, ["generate", checkpoint, "--prompt", "hi"])
    assert "not a language model" in one_line_error(
        capsys, ["train", "--preset", "qkvae-1m", "--data", "tinystories",
                 "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_train_then_lab(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    out = tmp_path / "ck"
    assert main(["image", "train", "--preset", "qkvae-debug", "--out", str(out), "--data",
                 str(folder), "--no-skimage", "--steps", "3", "--crop", "16", "--batch-size",
                 "2", "--warmup", "1", "--log-every", "1"]) == 0
    assert "wrote" in capsys.readouterr().out and (out / "model.safetensors").is_file()
    page = tmp_path / "lab.html"
    assert main(["image", "lab", str(out), "--images", str(folder / "p0.png"), "-o",
                 str(page)]) == 0
    text = page.read_text()
    assert text.count("data:image/png;base64,") >= 5 and "JPEG" in text and "<table>" in text
    kodak = tmp_path / "kodak"
    kodak.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(kodak / "kodim01.png")
    assert "held-out" in one_line_error(
        capsys, ["image", "train", "--preset", "qkvae-debug", "--out", str(tmp_path / "k"),
                 "--data", str(kodak), "--no-skimage", "--steps", "1"])
