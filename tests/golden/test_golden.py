"""Golden outputs: numbers recorded once and stored beside this file, so that a refactor which
changes what tinylm computes fails here, even when every other test still passes (the habit of
karpathy/llama2.c's test_all.py and torchtitan's loss-curve checks).

- `loss_curve.json`: the per-step training loss of the first 20 optimizer steps of the `debug`
  preset on the local TinyStories data (seed 1337, CPU, float32, one thread), through the real
  trainer (`tinylm.train.session.new_run`, `log_every 1`, read back from metrics.jsonl). Checked
  per step at rel 1e-4: the run is deterministic on one machine, the tolerance allows for BLAS
  summing in another order on another CPU.
- `greedy.json`: `temperature 0` generation of 32 tokens from "Once upon a time" with the step-20
  checkpoint of that run (`tinylm.load(ckpt).generate`), stored as ids and text, checked
  exactly; plus the prompt's next-token logits (first 8 and the sum), checked at 1e-4, since 20
  steps of training only teach the model to write spaces, and a run of spaces alone would hide
  many changes. Greedy decoding is exact on one machine; on this 2-core machine it gave the same
  ids with 1 and with 2 threads (decoding that small runs on one thread anyway, see
  `tinylm.infer.generate.decode_threads`).
- `looped_logits.json`: a Blink-1-shaped `looped` model (the blink-1 preset's model config, byte
  vocab 257) built after `torch.manual_seed(0)`, run on a fixed 96-token input (three 32-token
  blocks, so the block-sparse attention path is taken): the first 8 logits of the last position,
  the sum and the sum of absolute values of all logits, checked at 1e-5.

Regenerating is a deliberate act, never a side effect of a failing run:

    TINYLM_REGEN_GOLDEN=1 PYTHONPATH=. python -m pytest -q tests/golden

rewrites the three JSON files and skips every check (so a regeneration cannot pass as a test
run); review `git diff tests/golden` and say in the commit why the numbers moved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
REGEN = os.environ.get("TINYLM_REGEN_GOLDEN") == "1"

PROMPT = "Once upon a time"
NEW_TOKENS = 32
TRAIN_FLAGS = {"steps": 20, "log_every": 1, "eval_every": 0, "ckpt_every": 20, "seed": 1337,
               "device": "cpu", "dtype": "float32", "threads": 1}
LOOPED_SEED, LOOPED_TOKENS = 0, 96


def check_or_regen(name: str, measured: dict, check) -> None:
    """With TINYLM_REGEN_GOLDEN=1 write `measured` as the golden file and skip; else compare."""
    path = HERE / name
    if REGEN:
        record = {"torch": torch.__version__, **measured}  # one key a line, for readable diffs
        path.write_text("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}"
                                            for k, v in record.items()) + "\n}\n")
        pytest.skip(f"regenerated {path}; review the diff before committing")
    if not path.is_file():
        pytest.fail(f"{path} is missing; create it with TINYLM_REGEN_GOLDEN=1")
    check(json.loads(path.read_text()), measured)


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory):
    """One 20-step `debug` run shared by the module: (metrics rows, last checkpoint folder)."""
    from tinylm.train.session import new_run

    out = tmp_path_factory.mktemp("golden") / "run"
    threads = torch.get_num_threads()
    try:
        ckpt = new_run("debug", "tinystories", None, out, dict(TRAIN_FLAGS), progress=False)
    finally:
        torch.set_num_threads(threads)  # the trainer set one thread for the whole process
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows, ckpt


def test_loss_curve(debug_run):
    rows, _ = debug_run
    losses = [row["loss"] for row in rows if "loss" in row]
    assert [row["step"] for row in rows if "loss" in row] == list(range(1, 21))

    def check(golden, measured):
        assert golden["settings"] == measured["settings"]
        assert measured["loss"] == pytest.approx(golden["loss"], rel=1e-4)

    check_or_regen("loss_curve.json", {"preset": "debug", "data": "tinystories",
                                       "settings": TRAIN_FLAGS, "loss": losses}, check)


def test_greedy_continuation(debug_run):
    import tinylm
    from tinylm.infer.generate import generate_ids
    from tinylm.infer.sampling import SamplingConfig

    _, ckpt = debug_run
    assert ckpt.name == "step_00000020"
    model = tinylm.load(ckpt)
    text = model.generate(PROMPT, max_new_tokens=NEW_TOKENS, temperature=0)
    prompt_ids = model.encode_prompt(PROMPT)
    ids = generate_ids(model.model, [prompt_ids], NEW_TOKENS, SamplingConfig(temperature=0),
                       eos_id=model.tokenizer.eos_id)[0]
    assert model.tokenizer.decode(ids) == text
    with torch.no_grad():
        logits = model.model(torch.tensor([prompt_ids]))[0, -1].float()  # (vocab,)

    def check(golden, measured):
        assert measured["ids"] == golden["ids"]
        assert measured["text"] == golden["text"]
        assert measured["next_logits_first8"] == pytest.approx(golden["next_logits_first8"],
                                                               rel=1e-4, abs=1e-4)
        assert measured["next_logits_sum"] == pytest.approx(golden["next_logits_sum"],
                                                            rel=1e-4, abs=1e-4)

    check_or_regen("greedy.json", {"checkpoint": "debug run above, step 20", "prompt": PROMPT,
                                   "max_new_tokens": NEW_TOKENS, "ids": ids, "text": text,
                                   "next_logits_first8": logits[:8].tolist(),
                                   "next_logits_sum": logits.sum().item()}, check)


def test_looped_logits():
    from tinylm.config import load_preset
    from tinylm.models import build_model

    config = {**load_preset("blink-1")["model"], "vocab_size": 257}
    torch.manual_seed(LOOPED_SEED)
    model = build_model("looped", config).eval()
    tokens = torch.tensor([(b"Once upon a time there was a tiny looped model. " * 2)
                           [:LOOPED_TOKENS]], dtype=torch.long)  # (1, 96), three 32-blocks
    with torch.no_grad():
        logits = model(tokens).float()  # (1, 96, 257)

    def check(golden, measured):
        assert golden["config"] == measured["config"]
        for key in ("last_first8", "sum", "abs_sum"):
            assert measured[key] == pytest.approx(golden[key], rel=1e-5, abs=1e-5), key

    check_or_regen("looped_logits.json", {
        "family": "looped", "config": config, "seed": LOOPED_SEED,
        "input": "bytes of 'Once upon a time there was a tiny looped model. ' x2, first 96",
        "last_first8": logits[0, -1, :8].tolist(), "sum": logits.sum().item(),
        "abs_sum": logits.abs().sum().item()}, check)
