"""The tournament's pool, searches and baselines, fast: real checkpoints of a tiny model, and a
synthetic scorer (the distance of a model's weights from a fixed target) instead of the
benchmarks, so every outcome is known in advance."""

import json
from pathlib import Path

import pytest
import torch

from tinylm.merge.recipe import parse_recipe
from tinylm.merge.tournament import (BASELINE, CHECKPOINT, Tournament, TournamentConfig,
                                     build_merge)
from tinylm.models import build_model
from tinylm.tokenizers.bytes import ByteTokenizer
from tinylm.train.checkpoint import load_checkpoint, save_checkpoint

CONFIG = dict(vocab_size=257, dim=16, n_layers=2, n_heads=2, n_kv_heads=1, ffn_hidden=32,
              context_len=16)
CALLS: list[str] = []


def target() -> dict:
    torch.manual_seed(99)
    return build_model("llama", CONFIG).state_dict()


def fake_scorer(path: Path) -> dict:
    """composite = mean squared distance to the target; wikitext2_ce from the attention
    tensors alone, blimp_acc from the MLP alone, so the per-metric bests can differ."""
    CALLS.append(str(path))
    state, goal = load_checkpoint(path).model_state, target()

    def dist(keep) -> float:
        parts = [(state[k] - goal[k]).pow(2).mean().item() for k in goal if keep(k)]
        return sum(parts) / len(parts)

    return {"composite": dist(lambda k: True), "wikitext2_ce": dist(lambda k: ".attn." in k),
            "blimp_acc": 1.0 - dist(lambda k: ".mlp." in k), "arc_easy_acc": 0.25}


def make_run(folder: Path, with_ema: bool = False) -> Path:
    """Five checkpoints at different distances from the target; the 4th gets the target's MLP
    (best BLiMP-like metric) but far-off attention, so it is not in the top 2 by composite."""
    goal = target()
    for i, scale in enumerate((0.9, 0.5, 0.7, 1.0, 0.6), start=1):
        torch.manual_seed(i)
        noise = build_model("llama", CONFIG).state_dict()
        state = {k: goal[k] + scale * noise[k] for k in goal}
        if i == 4:
            state = {k: (goal[k] if ".mlp." in k else goal[k] + 3 * noise[k]) for k in goal}
        train_state = {f"ema.{k}": goal[k] + 0.05 * noise[k] for k in goal} if with_ema else None
        save_checkpoint(folder / "checkpoints" / f"step_{i * 10:08d}", family="llama",
                        model_config=CONFIG, model_state=state, tokenizer=ByteTokenizer(),
                        extra_meta={"step": i * 10, "tokens_seen": i * 100},
                        train_state=train_state)
    return folder


def run(folder: Path, **changes) -> Tournament:
    config = TournamentConfig(**{"top_k": 2, "generations": 1, "workers": 1, **changes})
    tournament = Tournament(folder, config, fake_scorer, log=lambda *a: None)
    tournament.run()
    return tournament


def test_pool_holds_the_best_checkpoint_on_each_metric(tmp_path):
    tournament = run(make_run(tmp_path / "run"), baselines=False)
    pool = [e.name for e in tournament.pool(0)]
    by_composite = [e.name for e in tournament.ranked() if e.generation == CHECKPOINT][:2]
    assert pool[:2] == by_composite and "step_00000040" in pool  # the MLP-best seed joins
    without = Tournament(tmp_path / "run", TournamentConfig(top_k=2, per_metric_seeds=False),
                         fake_scorer, log=lambda *a: None)
    without.score_checkpoints()  # other settings: the bracket starts again
    assert [e.name for e in without.pool(0)] == by_composite


@pytest.mark.parametrize("search", ["cmaes", "tpe"])
def test_search_over_group_t_is_seeded_budgeted_and_resumable(search, tmp_path):
    folder = make_run(tmp_path / "run")
    tournament = run(folder, search=search, budget=6, baselines=False)
    merges = [e for e in tournament.entries.values() if e.generation == 0]
    assert len(merges) == 6
    for entry in merges:
        tree = parse_recipe(entry.name)
        assert {g for g, _ in tree.groups} == {"attention", "embeddings", "mlp", "norms"}
        assert all(0 <= t <= 1 for _, t in tree.groups)
    # a recipe with per-group t rebuilds to the same weights
    again = build_merge(merges[0].name, folder / "checkpoints", tmp_path / "again")
    original = load_checkpoint(merges[0].path).model_state
    assert all(torch.equal(load_checkpoint(again).model_state[k], v) for k, v in
               original.items())
    # same seed, fresh folder: the same trials; a second run in the same folder scores nothing
    twin = run(make_run(tmp_path / "twin"), search=search, budget=6, baselines=False)
    assert sorted(twin.entries) == sorted(tournament.entries)
    CALLS.clear()
    run(folder, search=search, budget=6, baselines=False)
    assert CALLS == []


def test_baselines_are_scored_and_compete(tmp_path):
    tournament = run(make_run(tmp_path / "run", with_ema=True))
    baselines = {e.name: e for e in tournament.entries.values() if e.generation == BASELINE}
    assert {"soup_uniform", "soup_greedy", "lawa_3", "ema_step_00000050"} <= set(baselines)
    uniform = load_checkpoint(baselines["soup_uniform"].path)
    members = uniform.meta["baseline"]["members"]
    assert members == [e.name for e in tournament.pool(0)]
    states = [load_checkpoint(tmp_path / "run" / "checkpoints" / m).model_state
              for m in members]
    name = "layers.0.attn.wqkv.weight"
    torch.testing.assert_close(uniform.model_state[name], sum(s[name] for s in states) / len(
        states))
    lawa = load_checkpoint(baselines["lawa_3"].path).meta["baseline"]["members"]
    assert lawa == ["step_00000030", "step_00000040", "step_00000050"]
    # the EMA weights sit 0.05 from the target: they win, and the champion says what it is
    assert tournament.ranked()[0].name == "ema_step_00000050"
    state = json.loads((tmp_path / "run" / "tournament" / "state.json").read_text())
    assert sum(e["generation"] == BASELINE for e in state["entries"]) == len(baselines)
