"""Bad input gets one clear line and a non-zero exit, never a traceback."""

import pytest

from tests.conftest import run_cli

CASES = [
    (["info", "no-such-preset"], "neither a checkpoint folder nor a preset"),
    (["train", "--preset", "nope", "--data", "tinystories", "--out", "{tmp}/r"], "unknown preset"),
    (["train", "--preset", "debug", "--data", "nope", "--out", "{tmp}/r"], "unknown data set"),
    (["train", "--preset", "debug", "--data", "tinystories", "--data-dir", "{tmp}/empty",
      "--out", "{tmp}/r"], "data dir"),
    (["train", "--preset", "debug", "--data", "tinystories", "--lr", "5", "--out", "{tmp}/r"],
     "lr must be in"),
    (["train", "--preset", "debug", "--data", "tinystories", "--batch-size", "0",
      "--out", "{tmp}/r"], "batch_size must be"),
    (["train", "--resume", "--out", "{tmp}/none"], "nothing to resume"),
    (["generate", "{tmp}/none", "--prompt", "x"], "checkpoint not found"),
    (["tokenizer", "train", "--kind", "bpe", "--data", "tinystories"], "vocab size"),
]


@pytest.mark.parametrize("args,message", CASES)
def test_errors_are_one_line(args, message, tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run_cli(*[a.format(tmp=tmp_path) for a in args], check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_generate_prompt_errors(debug_run, tmp_path):
    ckpt = str(debug_run / "checkpoints" / "step_00000040")
    proc = run_cli("generate", ckpt, "--prompt", "", check=False)
    assert proc.returncode == 2 and "empty prompt" in proc.stderr
    bad = tmp_path / "prompts.txt"
    bad.write_bytes(b"caf\xe9\n")
    proc = run_cli("generate", ckpt, "--prompts-file", str(bad), check=False)
    assert proc.returncode == 2 and "not valid UTF-8" in proc.stderr


def test_wrong_tokenizer_for_a_run(debug_run, tmp_path):
    """A run resumed with a tokenizer that is not its own is refused."""
    from tinylm.tokenizers import train_tokenizer

    run = tmp_path / "run"
    import shutil
    shutil.copytree(debug_run, run)
    train_tokenizer("bpe", ["some text to learn from " * 20], 260).save(run / "tokenizer.json")
    proc = run_cli("train", "--out", str(run), "--resume", "--steps", "60", check=False)
    assert proc.returncode == 2 and "another tokenizer" in proc.stderr


def test_help_and_info():
    assert "train" in run_cli("--help").stdout
    out = run_cli("info", "glint-1.3").stdout
    assert "917,120" in out and "size on disk" in out


def test_main_twice_in_one_process(capsys):
    """Extensions register once: a second main() must not add their subcommands again."""
    from tinylm.cli import main

    outputs = []
    for _ in range(2):
        assert main(["data", "list"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and "tinystories" in outputs[0]


def test_help_imports_no_torch():
    """`tinylm --help` (and each subcommand's) must answer without importing torch: the
    parser is built from torch-free modules, and every heavy import waits for the command."""
    import subprocess
    import sys

    for args in (["--help"], ["train", "--help"], ["tournament", "--help"],
                 ["generate", "--help"], ["eval", "--help"]):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "tinylm", *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                    if line.startswith("import time:")}
        assert "torch" not in imported, args
