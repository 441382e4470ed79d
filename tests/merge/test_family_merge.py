"""Merges that ask the family record: per-depth t for the looped family, recipe flags refused,
soups through `tinylm merge --soup`."""

import pytest
import torch

from tests.conftest import run_cli
from tinylm.merge.slerp import family_layout, merge_state_dicts
from tinylm.models import build_model, get_family
from tinylm.tokenizers.bytes import ByteTokenizer
from tinylm.train.checkpoint import load_checkpoint, save_checkpoint

LOOPED = dict(vocab_size=257, dim=8, n_heads=2, n_kv_heads=2, ffn_hidden=16, context_len=32,
              n_prelude=1, n_coda=1, loops=2, max_loops=4, lora_rank=2,
              lora_targets=["wqkv", "w2"])


def _filled(model, value: float) -> dict:
    return {k: torch.full_like(v, value) for k, v in model.state_dict().items()}


def test_looped_gradient_gives_each_depth_its_t():
    """slots: prelude.0 = 0, loops 1..4, coda.0 = 5 (of 0..5); the shared block's own weights sit
    in the middle of the loops (2.5), each loop's adapter row at its loop, outside tensors at
    the gradient's first value. lerp of all-ones and all-twos gives 1 + t everywhere."""
    record = get_family("looped")
    model = build_model("looped", LOOPED)
    layout = family_layout(record, model.config)
    merged = merge_state_dicts(_filled(model, 1.0), _filled(model, 2.0), method="lerp",
                               depth_gradient=[0.0, 1.0], **layout)
    expected_t = {"prelude.0.attn.wqkv.weight": 0.0, "prelude.0.mlp_norm.weight": 0.0,
                  "coda.0.mlp.w2.weight": 1.0, "shared.attn.wqkv.weight": 2.5 / 5,
                  "shared.mlp.w13.weight": 2.5 / 5, "tok_emb.weight": 0.0, "norm.weight": 0.0}
    for name, t in expected_t.items():
        torch.testing.assert_close(merged[name], torch.full_like(merged[name], 1 + t))
    for name in ("shared.attn.wqkv.lora_A", "shared.attn.wqkv.lora_B", "shared.mlp.w2.lora_A",
                 "loop_emb.weight"):
        for loop in range(LOOPED["max_loops"]):
            t = (1 + loop) / 5
            torch.testing.assert_close(merged[name][loop], torch.full_like(merged[name][loop],
                                                                           1 + t), msg=name)
    # a per-group gradient reaches the adapters per loop too, and groups stay the record's
    per_group = merge_state_dicts(_filled(model, 1.0), _filled(model, 2.0), 0.5, method="lerp",
                                  t_by_group={"loop_adapters": [1.0, 0.0]}, **layout)
    assert per_group["loop_emb.weight"][0, 0].item() == pytest.approx(2.0 - 1 / 5)
    assert per_group["shared.attn.wqkv.weight"].unique().tolist() == [1.5]


def _save(path, family, config, state):
    return save_checkpoint(path, family=family, model_config=config, model_state=state,
                           tokenizer=ByteTokenizer(), extra_meta={"step": 1, "tokens_seen": 1})


def test_gradient_merge_of_looped_checkpoints_through_the_cli(tmp_path):
    model = build_model("looped", LOOPED)
    a = _save(tmp_path / "a", "looped", LOOPED, _filled(model, 1.0))
    b = _save(tmp_path / "b", "looped", LOOPED, _filled(model, 2.0))
    run_cli("merge", str(a), str(b), "--gradient", "0,1", "--method", "lerp",
            "-o", str(tmp_path / "m"))
    merged = load_checkpoint(tmp_path / "m").model_state
    assert merged["coda.0.attn.wo.weight"].unique().tolist() == [2.0]  # not A: t follows depth
    assert merged["prelude.0.attn.wo.weight"].unique().tolist() == [1.0]
    assert merged["loop_emb.weight"][:, 0].tolist() == pytest.approx([1.2, 1.4, 1.6, 1.8])
    refused = run_cli("merge", str(a), str(b), "--align", "-o", str(tmp_path / "x"), check=False)
    assert refused.returncode == 2 and "--align is not available for the looped family" in \
        refused.stderr and not (tmp_path / "x").exists()


@pytest.mark.parametrize("flags", [["--t", "0.3"], ["--t-group", "attention=0.3"],
                                   ["--gradient", "0,1"], ["--align"], ["--soup", "uniform"]])
def test_recipe_with_merge_flags_is_refused(flags, tmp_path):
    proc = run_cli("merge", "--recipe", "step_00000010+step_00000020@t0.5", "--run",
                   str(tmp_path), *flags, "-o", str(tmp_path / "out"), check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "cannot be combined with" in lines[0]
    assert flags[0] in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_uniform_soup_is_the_mean(tmp_path):
    config = dict(vocab_size=257, dim=16, n_layers=1, n_heads=2, n_kv_heads=1, ffn_hidden=32,
                  context_len=16)
    states = []
    for seed in range(3):
        torch.manual_seed(seed)
        states.append(build_model("llama", config).state_dict())
    paths = [_save(tmp_path / f"c{i}", "llama", config, sd) for i, sd in enumerate(states)]
    proc = run_cli("merge", *map(str, paths), "--soup", "uniform", "-o", str(tmp_path / "soup"))
    assert "uniform soup of 3 of 3" in proc.stdout
    soup = load_checkpoint(tmp_path / "soup")
    for name, tensor in soup.model_state.items():
        torch.testing.assert_close(tensor, sum(sd[name] for sd in states) / 3)
    assert soup.meta["soup"]["members"] == [str(p) for p in paths]


def test_soups_copy_a_frozen_part_and_refuse_one_that_differs():
    """A BLT's patcher is never trained: a soup must give it back bit for bit (an average of
    three equal float tensors need not), and refuse models whose patchers differ."""
    from tinylm.errors import TinyLMError
    from tinylm.merge.soup import greedy_soup, uniform_soup

    frozen = get_family("blt").frozen_prefixes
    assert frozen == ("patcher.",)
    torch.manual_seed(0)
    patcher = torch.randn(64, 7) * 0.1 + 1e-3  # values whose /3 of a sum of 3 is inexact
    states = [{"patcher.w": patcher.clone(), "w": torch.randn(4)} for _ in range(3)]
    soup = uniform_soup(states, frozen)
    assert torch.equal(soup["patcher.w"], patcher)
    assert torch.allclose(soup["w"], sum(s["w"] for s in states) / 3)
    soup, kept = greedy_soup({str(i): s for i, s in enumerate(states)},
                             lambda sd: -float(sd["w"].abs().sum()), frozen=frozen)
    assert torch.equal(soup["patcher.w"], patcher) and kept
    states[2]["patcher.w"][0, 0] += 1e-3
    with pytest.raises(TinyLMError, match="frozen part"):
        uniform_soup(states, frozen)
