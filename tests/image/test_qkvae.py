"""qkvae: FSQ facts, exact sizes in and out, presets, the family record, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from tinylm.errors import TinyLMError
from tinylm.models import get_family
from tinylm.models.fsq import FSQ
from tinylm.models.qkvae import LEVELS, Qkvae, QkvaeConfig, load_qkvae, save_qkvae

DEBUG = {"channels": (8, 8, 16), "enc_blocks": (0, 0, 1), "dec_blocks": (0, 0, 1)}


def debug_model(seed: int = 0, spread: float = 1.0) -> Qkvae:
    torch.manual_seed(seed)
    model = Qkvae(QkvaeConfig(**DEBUG)).eval()
    with torch.no_grad():  # a fresh net codes nearly everything alike; spread its latents
        model.encoder.out.weight.mul_(spread)
    return model


def test_fsq_levels_and_indices_round_trip():
    fsq = FSQ(LEVELS)
    assert fsq.codebook_size == 1000 and fsq.bits_per_code == 10
    z = torch.randn(2, 4, 5, 6) * 3
    codes = fsq(z)
    # each channel takes exactly L_i values, codes inside [-1, 1]
    for i, n in enumerate(LEVELS):
        assert len(torch.unique(fsq(torch.linspace(-20, 20, 4001).view(1, 1, -1, 1)
                                     .expand(1, 4, -1, 1))[0, i])) == n
    assert codes.abs().max() <= 1
    idx = fsq.codes_to_indices(codes)
    assert idx.shape == (2, 5, 6) and idx.min() >= 0 and idx.max() < 1000
    torch.testing.assert_close(fsq.indices_to_codes(idx), codes)
    every = torch.arange(1000).view(1, 1000, 1)
    assert torch.equal(fsq.codes_to_indices(fsq.indices_to_codes(every)), every)


def test_fsq_straight_through_gradient():
    fsq = FSQ(LEVELS)
    z = torch.zeros(1, 4, 1, 1, requires_grad=True)
    fsq(z).sum().backward()
    assert (z.grad > 0).all()  # rounding does not block the gradient


@pytest.mark.parametrize("h,w", [(28, 182), (512, 768), (1, 1), (5, 7), (13, 1), (3, 33)])
def test_any_size_in_same_size_out(h, w):
    model = debug_model()
    x = torch.rand(1, 3, h, w)
    with torch.no_grad():
        codes = model.encode(x)
        assert codes.shape == (1, 4, math.ceil(h / 4), math.ceil(w / 4))
        assert model(x).shape == x.shape


def test_flat_image_gives_one_code_everywhere():
    model = debug_model(spread=50.0)
    with torch.no_grad():
        idx = model.fsq.codes_to_indices(model.encode(torch.full((1, 3, 37, 45), 0.3)))
    assert idx.unique().numel() == 1  # replicate padding: borders are coded like the middle


def test_bad_input_refused_with_one_line():
    model = debug_model()
    with pytest.raises(TinyLMError, match="takes images"):
        model(torch.rand(1, 4, 8, 8))
    with pytest.raises(TinyLMError, match="one count per level"):
        QkvaeConfig(channels=(8, 16), enc_blocks=(0,), dec_blocks=(0, 0))


def test_presets_share_codebook_and_grid_and_1m_is_the_blogs_size():
    record = get_family("qkvae")
    assert not record.language_model
    counts = {}
    for name in ("qkvae-1m", "qkvae-5m", "qkvae-20m"):
        config = record.config_from(record.presets[name].model)
        assert config.levels == LEVELS and config.factor == 4
        # parameter count from the shapes alone (no weights allocated for the big ones)
        with torch.device("meta"):
            model = record.model_class(config)
        counts[name] = sum(p.numel() for p in model.parameters())
        assert sum(record.breakdown(model).values()) == counts[name]
    assert counts["qkvae-1m"] == 1_062_791  # the blog: 1.06M
    assert 4.5e6 < counts["qkvae-5m"] < 5.5e6 and 19e6 < counts["qkvae-20m"] < 21e6


def test_checkpoint_round_trip_and_lm_commands_refuse_it(tmp_path):
    from tinylm.train.checkpoint import load_checkpoint

    model = debug_model(seed=3)
    save_qkvae(tmp_path / "ck", model, {"step": 7})
    loaded, meta = load_qkvae(tmp_path / "ck")
    assert meta["step"] == 7 and not (tmp_path / "ck" / "tokenizer.json").exists()
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(TinyLMError, match="not a language model"):
        load_checkpoint(tmp_path / "ck")
    from tinylm.train.info import describe

    assert "4 x 4 pixels per code" in describe(str(tmp_path / "ck"))  # info reads its shapes


def test_info_prints_params_and_code_grid():
    from tinylm.train.info import describe

    text = describe("qkvae-1m")
    assert "1,062,791" in text and "768 x 512" in text and "128 x 192 = 24,576 tokens" in text
    assert "not a language model" in text
