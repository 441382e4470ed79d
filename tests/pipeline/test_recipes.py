"""Every shipped recipe: the seed models' recipes exist, say what hardware they are for and how
long they take, and every section parses into the real settings dataclasses."""

from tinylm.config import load_preset
from tinylm.eval.settings import ScoringConfig
from tinylm.infer.settings import SamplingConfig
from tinylm.merge.tournament import TournamentConfig
from tinylm.pipeline.recipe import builtin_recipes, load_recipe
from tinylm.train.config import TrainConfig
from tinylm.train.session import build_train_config


def test_the_seed_models_have_recipes_with_hardware_and_time():
    assert {"default", "blink-1", "glint-1.3", "shard-50m"} <= set(builtin_recipes())
    for name in builtin_recipes():
        recipe = load_recipe(name)
        assert recipe.hardware and recipe.time, name
        assert isinstance(recipe.eval, ScoringConfig)
        assert recipe.report is None or isinstance(recipe.report, ScoringConfig)
        assert isinstance(recipe.tournament, TournamentConfig)
        assert isinstance(recipe.samples.sampling, SamplingConfig)
        preset = load_preset(recipe.model.preset)
        preset["model"].update(recipe.model.config)
        config = build_train_config(preset, None, recipe.train_flags)
        assert isinstance(config, TrainConfig)
        assert (config.seq_len or preset["model"]["context_len"]) <= \
            preset["model"]["context_len"], name
        if recipe.control:
            build_train_config(preset, None, {**recipe.train_flags, **recipe.control})


def test_cards_settings_are_in_the_recipes():
    blink = load_recipe("blink-1")
    assert blink.train["optimizer"] == "nadamw" and blink.train["schedule"] == "wsd"
    assert blink.train["lr"] == 1.5e-3 and blink.train["seq_len"] == 4096
    assert blink.eval.settings.shots == 5
    glint = load_recipe("glint-1.3").train
    assert (glint["lr"], glint["warmup_steps"], glint["weight_decay"], glint["grad_clip"],
            glint["beta1"], glint["beta2"], glint["seq_len"]) == (8e-4, 200, 0.05, 0.5, 0.9,
                                                                  0.95, 256)
    default = load_recipe("default")
    assert default.train["schedule"] == "constant" and default.control == {"schedule": "cosine"}
