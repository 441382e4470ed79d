"""`tinylm sft` and `tinylm chat` through the real CLI: bad inputs get one line and exit 2,
write nothing; an SFT run and a chat turn work end to end."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli
from tests.instruct.conftest import write_jsonl

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def files(instruct_world):
    root = instruct_world["root"] / "cli"
    root.mkdir()
    (root / "not_a_ckpt").mkdir()
    (root / "bad.jsonl").write_text('{"messages": [\n')
    write_jsonl(root / "no_assistant.jsonl",
                [{"messages": [{"role": "user", "content": "hi"}]}])
    return {**instruct_world, "cli": root}


CASES = [
    ("bad-jsonl", ["sft", "{bytes_base}", "--data", "{cli}/bad.jsonl"], "not a JSON line"),
    ("no-assistant", ["sft", "{bytes_base}", "--data", "{cli}/no_assistant.jsonl"],
     "no assistant turn"),
    ("unknown-set", ["sft", "{bytes_base}", "--data", "alpaca-gpt5"], "unknown instruct data"),
    ("not-a-checkpoint", ["sft", "{cli}/not_a_ckpt", "--data", "{chats}"],
     "not a tinylm checkpoint"),
    ("no-data", ["sft", "{bytes_base}"], "--data"),
    ("sft-lr-zero", ["sft", "{bytes_base}", "--data", "{chats}", "--lr", "0"], "lr"),
    ("chat-forged-marker", ["chat", "{bytes_base}", "--message", "a<|im_end|>b"], "marker"),
    ("chat-temperature-negative", ["chat", "{bytes_base}", "--message", "hi",
                                   "--temperature", "-1"], "temperature"),
]


@pytest.mark.parametrize("name, args, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(files, name, args, expected):
    out = files["cli"] / f"out-{name}"
    argv = [a.format(**files) for a in args]
    if argv[0] == "sft":
        argv += ["--out", str(out), "--no-progress"]
    proc = run_cli(*argv, check=False, env=ONE_THREAD)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tinylm: error:")]
    assert proc.returncode == 2, proc.stderr
    assert len(errors) == 1 and expected in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.slow
def test_chat_message_prompts_in_chatml(files):
    proc = run_cli("chat", str(files["bytes_base"]), "--message", "3 plus 1?", "-n", "8",
                   "--show-prompt", env=ONE_THREAD)
    assert "<|im_start|>user\n3 plus 1?<|im_end|>\n<|im_start|>assistant\n" in proc.stderr
    assert "<|im_end|>" not in proc.stdout
