"""Packed BitNet files: every ternary value and odd sizes through both packings, file sizes
from the formula for tiny-tiny-stories, logits of the loaded model equal to the fake-quantized
model's, and damaged files refused with one line."""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.conftest import run_cli
from tinylm.errors import TinyLMError
from tinylm.export.bitnet_pack import (PackedTernaryLinear, export_packed, load_packed,
                                       pack_trits, packed_size, unpack_trits)
from tinylm.models import get_family
from tinylm.models.bitnet import BitNet, BitNetConfig
from tinylm.tokenizers import ByteTokenizer
from tinylm.train.checkpoint import save_checkpoint

DEBUG = {"vocab_size": 257, "dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
         "ffn_hidden": 40, "context_len": 32}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is faster, and on a busy machine far faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("packing,per_byte", [("2bit", 4), ("base3", 5)])
def test_every_group_of_ternary_values_round_trips(packing, per_byte):
    groups = torch.tensor(list(itertools.product([-1, 0, 1], repeat=per_byte)))  # 81 or 243
    data = pack_trits(groups, packing)
    assert data.dtype == torch.uint8 and data.numel() == len(groups)  # one byte per group
    assert len(set(data.tolist())) == len(groups)  # distinct codes
    assert torch.equal(unpack_trits(data, groups.numel(), packing).view_as(groups),
                       groups.to(torch.int8))


def test_byte_codes_are_the_documented_ones():
    values = torch.tensor([-1, 0, 1, 1])
    assert pack_trits(values, "2bit").tolist() == [0 | 1 << 2 | 2 << 4 | 2 << 6]
    assert pack_trits(torch.tensor([1, -1, 0, 0, 1]), "base3").tolist() == [2 + 0 + 9 + 27 + 162]


@pytest.mark.parametrize("packing", ["2bit", "base3"])
@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 6, 7, 11, 13, 97, 336 * 7 + 1])
def test_odd_sizes_round_trip(packing, count):
    trits = torch.randint(-1, 2, (count,), generator=torch.Generator().manual_seed(count))
    data = pack_trits(trits, packing)
    assert data.numel() == packed_size(count, packing) == -(-count // (4 if packing == "2bit"
                                                                        else 5))
    assert torch.equal(unpack_trits(data, count, packing), trits.to(torch.int8))


def test_codes_no_trit_packs_to_are_refused():
    with pytest.raises(TinyLMError, match="codes"):
        unpack_trits(torch.tensor([0b11], dtype=torch.uint8), 4, "2bit")
    with pytest.raises(TinyLMError, match="codes"):
        unpack_trits(torch.tensor([243], dtype=torch.uint8), 5, "base3")
    with pytest.raises(TinyLMError, match="codes"):  # padding must be zero trits
        unpack_trits(pack_trits(torch.tensor([1, 1, 1, 1]), "base3"), 3, "base3")


def _checkpoint(tmp_path, config: dict, tokenizer=None, seed=0):
    torch.manual_seed(seed)
    model = BitNet(BitNetConfig(**config))
    with torch.no_grad():  # norm gains away from 1, so a mix-up of tensors would show
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.uniform_(0.5, 1.5)
    path = save_checkpoint(tmp_path / f"ckpt{seed}", family="bitnet", model_config=config,
                           model_state=model.state_dict(),
                           tokenizer=tokenizer or ByteTokenizer())
    return path, model.eval()


@pytest.mark.parametrize("act_quant", [True, False])
@pytest.mark.parametrize("packing", ["2bit", "base3"])
def test_loaded_model_gives_the_fake_quantized_logits(tmp_path, act_quant, packing):
    path, model = _checkpoint(tmp_path, {**DEBUG, "act_quant": act_quant})
    idx = torch.randint(0, 257, (3, 32))
    for float_dtype in ("fp32", "fp16"):
        packed = load_packed(export_packed(path, tmp_path / "m.tlm", packing, float_dtype))
        reference = model
        if float_dtype == "fp16":  # the reference with its fp tensors rounded as stored
            reference = BitNet(model.config).eval()
            reference.load_state_dict({n: t.half().float() if not n.endswith(
                ("wqkv.weight", "wo.weight", "w13.weight", "w2.weight")) else t
                for n, t in model.state_dict().items()})
        with torch.no_grad():
            torch.testing.assert_close(packed(idx), reference(idx), atol=2e-5, rtol=1e-5)
            cache = packed.new_cache(3)
            step = torch.cat([packed(idx[:, :20], cache, 0)]
                             + [packed(idx[:, t:t + 1], cache, t) for t in range(20, 32)], 1)
            torch.testing.assert_close(step, reference(idx), atol=2e-5, rtol=1e-5)
    assert packed.tokenizer.content_hash() == ByteTokenizer().content_hash()
    # nothing ternary is held as floats: int8 trits, floats only for embedding and norms
    linears = [m for m in packed.modules() if isinstance(m, PackedTernaryLinear)]
    assert len(linears) == 8 and all(m.trits.dtype == torch.int8 for m in linears)
    assert sum(p.numel() for p in packed.parameters()) == 257 * 32 + 5 * 32


def test_preset_file_sizes_follow_the_formula(tmp_path, data_dir):
    from tinylm.data.pack import tokenizer_training_texts
    from tinylm.tokenizers import train_tokenizer

    tok = train_tokenizer("unigram", tokenizer_training_texts("tinystories", data_dir,
                                                              max_chars=300_000), 192)
    preset = get_family("bitnet").presets["tiny-tiny-stories"]
    path, _ = _checkpoint(tmp_path, {**preset.model, "vocab_size": 192}, tok)
    # 5 layers x (wqkv 384x128, wo 128x128, w13 672x128, w2 128x336); 7 scales a layer
    ternary = [384 * 128, 128 * 128, 672 * 128, 128 * 336] * 5
    floats = 192 * 128 + 11 * 128  # tied embedding, 11 RMSNorm gains
    scales = 4 * 7 * 5
    assert sum(ternary) == 972_800
    for packing, per_byte, float_dtype, item, bound in [("2bit", 4, "fp32", 4, None),
                                                        ("base3", 5, "fp16", 2, 250_000)]:
        out = export_packed(path, tmp_path / f"{packing}.tlm", packing, float_dtype)
        blob = out.read_bytes()
        header_len = int.from_bytes(blob[12:16], "little")
        tokenizer_len = len(blob) - 16 - header_len - 32 - (
            sum(-(-n // per_byte) for n in ternary) + scales + floats * item)
        assert 0 < tokenizer_len < 3000  # what is left is the zlib'd tokenizer
        if bound:
            assert len(blob) <= bound, len(blob)
        else:  # the card: "~350 KB quantized"
            assert 243_200 + 140 + 103_936 < len(blob) < 352_000
        assert load_packed(out).config.vocab_size == 192


def test_damaged_or_wrong_files_are_refused_with_one_line(tmp_path):
    path, _ = _checkpoint(tmp_path, DEBUG)
    good = export_packed(path, tmp_path / "m.tlm").read_bytes()
    cases = {"truncated.tlm": good[:-100], "flipped.tlm": good[:400] + bytes([good[400] ^ 1])
             + good[401:], "magic.tlm": b"NOTATLMB" + good[8:], "tiny.tlm": b"TLM"}
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(TinyLMError, match="packed bitnet file"):
            load_packed(tmp_path / name)
    proc = run_cli("export", "bitnet", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x.tlm"),
                   check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    llama = save_checkpoint(tmp_path / "llama", family="llama", model_config={
        "vocab_size": 257, "dim": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 2,
        "ffn_hidden": 32, "context_len": 16},
        model_state=get_family("llama").build({"vocab_size": 257, "dim": 16, "n_layers": 1,
                                                "n_heads": 2, "n_kv_heads": 2, "ffn_hidden": 32,
                                                "context_len": 16}).state_dict(),
        tokenizer=ByteTokenizer())
    with pytest.raises(TinyLMError, match="bitnet checkpoints only"):
        export_packed(llama, tmp_path / "l.tlm")
