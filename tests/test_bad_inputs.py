"""Bad inputs through the real CLI, as a hostile new user would type them (issue 17).

Every case runs `python -m tinylm ...` in a child process and must: exit non-zero, print
exactly one `tinylm: error:` line on stderr, print no traceback, and leave every file that
existed before byte-identical (the whole fixture tree is hashed before and after; no file
appears either, so a failed start leaves no run.json behind). The fixture (one tiny
`debug`-preset run with two checkpoints, a merge, broken copies of a checkpoint, malformed
files) is built once for the module.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import run_cli

ONE_THREAD = {"OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}


# --------------------------------------------------------------------------- the fixture

@pytest.fixture(scope="module")
def world(tmp_path_factory, data_dir) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("bad-inputs")
    w = SimpleNamespace(root=root, data=data_dir)
    w.run = root / "run"
    run_cli("train", "--preset", "debug", "--data", "tinystories", "--steps", "4",
            "--ckpt-every", "2", "--eval-every", "2", "--log-every", "1", "--out", str(w.run),
            "--no-progress", env=ONE_THREAD)
    w.a = w.run / "checkpoints" / "step_00000002"
    w.b = w.run / "checkpoints" / "step_00000004"
    w.merged = root / "merged"
    run_cli("merge", str(w.a), str(w.b), "--t", "0.5", "-o", str(w.merged), env=ONE_THREAD)
    # a checkpoint scored once, then its weights changed by hand
    w.scored = _copy(w.b, root / "scored")
    run_cli("eval", str(w.scored), "--bench", "arc_easy", "--limit", "2", "--no-isolation",
            env=ONE_THREAD)
    weights = w.scored / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0x01
    weights.write_bytes(bytes(blob))
    # meta.json with an edited dim; one whose tokenizer hash is not the file's
    w.edited_dim = _copy(w.b, root / "edited_dim")
    _edit_meta(w.edited_dim, lambda m: m["model_config"].__setitem__("dim", 48))
    w.other_tok = _copy(w.b, root / "other_tok")
    _edit_meta(w.other_tok, lambda m: m["tokenizer"].__setitem__("hash", "0" * 64))
    # a run folder whose checkpoints/ is empty (nothing to rank)
    w.empty_run = root / "empty_run"
    (w.empty_run / "checkpoints").mkdir(parents=True)
    (w.empty_run / "run.json").write_text((w.run / "run.json").read_text())
    # things that are not ours
    w.foreign = root / "foreign"
    w.foreign.mkdir()
    (w.foreign / "notes.txt").write_text("my notes\n")
    w.file = root / "file.txt"
    w.file.write_text("a plain file\n")
    w.foreign_py = root / "mine.py"
    w.foreign_py.write_text("print('my own script')\n")
    w.empty_dir = root / "empty_data"
    w.empty_dir.mkdir()
    # malformed inputs
    w.empty_txt = root / "empty.txt"
    w.empty_txt.write_text("")
    w.few_docs = root / "few.txt"
    w.few_docs.write_text("One story.\n\nAnother story.\n\nA third.\n")
    w.list_json = root / "list.json"
    w.list_json.write_text("[1, 2, 3]")
    w.binary_toml = root / "binary.toml"
    w.binary_toml.write_bytes(bytes(range(256)) * 4)
    w.binary_json = root / "binary.json"
    w.binary_json.write_bytes(b"\xff\xfe\x00garbage")
    for name, body in RECIPES.items():
        (root / f"{name}.toml").write_text(body)
    return w


RECIPES = {
    "topk0": 'name = "x"\n[model]\npreset = "debug"\n[tournament]\ntop_k = 0\n',
    "limitneg": 'name = "x"\n[model]\npreset = "debug"\n[eval]\nlimit = -1\n',
    "tempnan": 'name = "x"\n[model]\npreset = "debug"\n[samples]\ntemperature = nan\n',
    "stepsfloat": 'name = "x"\n[model]\npreset = "debug"\n[train]\nsteps = 3.7\n',
    "tgrid": 'name = "x"\n[model]\npreset = "debug"\n[tournament]\nt_grid = [0.5, 1.5]\n',
    "nobench": 'name = "x"\n[model]\npreset = "debug"\n[eval]\nbench = "blimp,arc_easy"\n',
    "section": 'name = "x"\nmodel = 3\n',
}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / "eval.json").unlink(missing_ok=True)
    return dst


def _edit_meta(folder: Path, edit) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    edit(meta)
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def snapshot(root: Path) -> dict[str, str]:
    """Every file's sha256 and every folder, under root."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir():
            found[rel] = "<dir>"
        else:
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


# --------------------------------------------------------------------------- the table

NEW = "{root}/new_run"
TRAIN = ["train", "--preset", "debug", "--data", "tinystories", "--out", NEW, "--no-progress"]
GEN = ["generate", "{b}", "--prompt", "Once"]
EVAL = ["eval", "{b}", "--no-isolation", "--bench", "arc_easy", "--limit", "1"]
SOUP = ["soup", "{run}", "--limit", "1", "--workers", "1"]

# (id, argv with {placeholders}, extra environment, a fragment the error line must hold)
CASES = [
    # numeric flags: zero, negative, NaN, infinity, overflow, floats where ints are meant
    ("train-steps-zero", TRAIN + ["--steps", "0"], {}, "steps"),
    ("train-steps-negative", TRAIN + ["--steps", "-5"], {}, "steps"),
    ("train-grad-accum-zero", TRAIN + ["--grad-accum", "0"], {}, "grad_accum"),
    ("train-lr-nan", TRAIN + ["--lr", "nan"], {}, "lr"),
    ("train-lr-inf", TRAIN + ["--lr", "inf"], {}, "lr"),
    ("train-batch-overflow", TRAIN + ["--batch-size", "99999999999999"], {}, "batch_size"),
    ("train-log-every-zero", TRAIN + ["--log-every", "0"], {}, "log_every"),
    ("train-val-permille-zero", TRAIN + ["--val-permille", "0"], {}, "val_permille"),
    ("train-config-float-steps", TRAIN + ["--config", '{{"steps": 3.7}}'], {}, "whole number"),
    ("train-warmup-negative", TRAIN + ["--warmup-steps", "-1"], {}, "warmup"),
    ("train-eps-zero", TRAIN + ["--eps", "0"], {}, "eps"),
    ("train-threads-negative", TRAIN + ["--threads", "-2"], {}, "threads"),
    ("generate-n-zero", GEN + ["-n", "0"], {}, "-n"),
    ("generate-temperature-nan", GEN + ["--temperature", "nan"], {}, "temperature"),
    ("generate-top-p-zero", GEN + ["--top-p", "0"], {}, "top-p"),
    ("generate-top-k-negative", GEN + ["--top-k", "-1"], {}, "top-k"),
    ("generate-penalty-zero", GEN + ["--repetition-penalty", "0"], {}, "penalty"),
    ("merge-t-nan", ["merge", "{a}", "{b}", "--t", "nan", "-o", "{root}/m1"], {}, "--t"),
    ("merge-t-above-one", ["merge", "{a}", "{b}", "--t", "1.5", "-o", "{root}/m1"], {}, "--t"),
    ("merge-t-group-nan", ["merge", "{a}", "{b}", "--t-group", "attention=nan", "-o",
                           "{root}/m1"], {}, "t-group"),
    ("merge-method-unknown", ["merge", "{a}", "{b}", "--method", "cubic", "-o", "{root}/m1"],
     {}, "method"),
    ("eval-limit-negative", ["eval", "{b}", "--limit", "-1"], {}, "limit"),
    ("eval-limit-zero", ["eval", "{b}", "--limit", "0"], {}, "limit"),
    ("eval-timeout-zero", EVAL + ["--timeout", "0"], {}, "timeout"),
    ("eval-jobs-negative", EVAL + ["--jobs", "-1"], {}, "jobs"),
    ("soup-top-k-zero", SOUP + ["--top-k", "0"], {}, "top_k"),
    ("soup-limit-negative", ["soup", "{run}", "--limit", "-1"], {}, "limit"),
    ("soup-t-nan", SOUP + ["--t", "nan"], {}, "--t"),
    ("soup-workers-zero", SOUP + ["--workers", "0"], {}, "workers"),
    ("leaderboard-limit-negative", ["leaderboard", "{run}", "--limit", "-3"], {}, "limit"),
    ("tokenizer-vocab-zero", ["tokenizer", "train", "--kind", "bpe", "--vocab", "0", "--data",
                              "tinystories", "-o", "{root}/t.json"], {}, "vocab"),
    ("tokenizer-kind-unknown", ["tokenizer", "train", "--kind", "nope", "--data",
                                "tinystories"], {}, "kind"),
    # devices that are not there, or not devices
    ("train-device-mps", TRAIN + ["--device", "mps"], {}, "mps"),
    ("train-device-cuda", TRAIN + ["--device", "cuda:7"], {}, "cuda"),
    ("train-device-bogus", TRAIN + ["--device", "tpu"], {}, "device"),
    ("generate-device-cuda", GEN + ["--device", "cuda:7"], {}, "cuda"),
    ("generate-device-bogus", GEN + ["--device", "gpu0"], {}, "device"),
    # outputs that are run folders, inputs, foreign folders, files, or inside a checkpoint
    ("merge-out-run-folder", ["merge", "{a}", "{b}", "-o", "{run}"], {}, "run folder"),
    ("merge-out-run-folder-force", ["merge", "{a}", "{b}", "-o", "{run}", "--force"], {},
     "run folder"),
    ("merge-out-is-input", ["merge", "{a}", "{b}", "-o", "{a}", "--force"], {}, "input"),
    ("merge-out-foreign-folder", ["merge", "{a}", "{b}", "-o", "{foreign}"], {}, "did not"),
    ("merge-out-foreign-folder-force", ["merge", "{a}", "{b}", "-o", "{foreign}", "--force"],
     {}, "did not"),
    ("merge-out-file", ["merge", "{a}", "{b}", "-o", "{file}"], {}, "file"),
    ("merge-recipe-out-run", ["merge", "--recipe", "gen0_step_00000002+step_00000004@t0.50",
                              "--run", "{run}", "-o", "{run}/checkpoints"], {}, "input"),
    ("eval-out-meta-json", ["eval", "{b}", "-o", "{b}/meta.json"], {}, "input"),
    ("eval-out-inside-checkpoint", EVAL + ["-o", "{merged}/report.json"], {}, "inside"),
    ("eval-out-folder", EVAL + ["-o", "{foreign}"], {}, "folder"),
    ("eval-out-foreign-file", EVAL + ["-o", "{file}"], {}, "not written by tinylm"),
    ("export-out-foreign", ["export", "single-file", "{merged}", "-o", "{foreign_py}"], {},
     "not written by tinylm"),
    ("export-out-folder", ["export", "single-file", "{merged}", "-o", "{foreign}"], {},
     "folder"),
    ("export-out-inside-checkpoint", ["export", "single-file", "{merged}", "-o",
                                      "{merged}/infer.py"], {}, "input"),
    ("tokenizer-out-run-file", ["tokenizer", "train", "--kind", "bytes", "--data",
                                "tinystories", "-o", "{run}/tokenizer.json", "--force"], {},
     "run folder"),
    ("tokenizer-out-in-checkpoint", ["tokenizer", "train", "--kind", "bytes", "--data",
                                     "tinystories", "-o", "{merged}/tokenizer.json"], {},
     "checkpoint"),
    ("train-out-existing-run", TRAIN[:-3] + ["--out", "{run}", "--no-progress"], {}, "already"),
    ("train-out-checkpoint", TRAIN[:-3] + ["--out", "{merged}", "--no-progress"], {},
     "checkpoint"),
    ("train-out-foreign", TRAIN[:-3] + ["--out", "{foreign}", "--no-progress"], {},
     "did not write"),
    ("train-out-file", TRAIN[:-3] + ["--out", "{file}", "--no-progress"], {}, "file"),
    ("train-resume-changes-lr", ["train", "--resume", "--out", "{run}", "--lr", "0.5"], {},
     "cannot change"),
    ("train-resume-nothing", ["train", "--resume", "--out", "{foreign}"], {}, "nothing"),
    ("run-out-foreign", ["run", "--out", "{foreign}"], {}, "did not write"),
    # malformed config, recipe and tokenizer files
    ("train-config-json-list", TRAIN + ["--config", "{list_json}"], {}, "object"),
    ("train-config-binary-toml", TRAIN + ["--config", "{binary_toml}"], {}, "config"),
    ("train-tokenizer-json-list", TRAIN + ["--tokenizer", "{list_json}"], {}, "tokenizer"),
    ("train-tokenizer-binary", TRAIN + ["--tokenizer", "{binary_json}"], {}, "tokenizer"),
    ("run-recipe-binary-toml", ["run", "{binary_toml}", "--out", NEW], {}, "TOML"),
    ("run-recipe-top-k-zero", ["run", "{root}/topk0.toml", "--out", NEW], {}, "top_k"),
    ("run-recipe-limit-negative", ["run", "{root}/limitneg.toml", "--out", NEW], {}, "limit"),
    ("run-recipe-temperature-nan", ["run", "{root}/tempnan.toml", "--out", NEW], {},
     "temperature"),
    ("run-recipe-steps-float", ["run", "{root}/stepsfloat.toml", "--out", NEW], {},
     "whole number"),
    ("run-recipe-t-grid", ["run", "{root}/tgrid.toml", "--out", NEW], {}, "t of the grid"),
    ("run-recipe-no-composite", ["run", "{root}/nobench.toml", "--out", NEW], {}, "composite"),
    ("run-recipe-section-not-table", ["run", "{root}/section.toml", "--out", NEW], {},
     "table"),
    # data: empty, too few documents, unknown, offline hub, missing benchmark data, bad dirs
    ("train-data-empty-file", TRAIN[:3] + ["--data", "{empty_txt}", "--out", NEW], {},
     "no text"),
    ("train-data-split-empty", TRAIN[:3] + ["--data", "{few_docs}", "--out", NEW], {},
     "empty"),
    ("train-data-unknown", TRAIN[:3] + ["--data", "nosuchset", "--out", NEW], {}, "unknown"),
    ("train-data-hf-offline", TRAIN[:3] + ["--data", "hf:nobody/nothing", "--out", NEW],
     {"HF_HUB_OFFLINE": "1"}, "hub"),
    ("eval-benchmark-data-missing", ["eval", "{b}", "--bench", "arc_easy", "--data-dir",
                                     "{empty_dir}"], {}, "no data for benchmark"),
    ("eval-arc-challenge-absent", ["eval", "{b}", "--bench", "arc_challenge"], {},
     "--data-dir"),
    ("soup-benchmark-data-missing", ["soup", "{run}", "--data-dir", "{empty_dir}"], {},
     "no data for benchmark"),
    ("data-list-bad-env", ["data", "list"], {"TINYLM_DATA": "{root}/nowhere"},
     "TINYLM_DATA"),
    ("eval-bad-env", EVAL, {"TINYLM_DATA": "{root}/nowhere"}, "TINYLM_DATA"),
    ("data-list-bad-data-dir", ["data", "list", "--data-dir", "{root}/nowhere"], {},
     "data-dir"),
    ("leaderboard-empty", ["leaderboard", "{empty_run}"], {}, "no checkpoints"),
    # checkpoints changed after the fact
    ("eval-bytes-changed-after-scoring", ["eval", "{scored}", "--bench", "arc_easy", "--limit",
                                          "2", "--no-isolation"], {}, "sha256"),
    ("generate-bytes-changed", ["generate", "{scored}", "--prompt", "Once", "-n", "5"], {},
     "sha256"),
    ("generate-edited-dim", ["generate", "{edited_dim}", "--prompt", "Once", "-n", "5"], {},
     "config"),
    ("eval-edited-dim", EVAL[:1] + ["{edited_dim}"] + EVAL[2:], {}, "config"),
    ("merge-edited-dim", ["merge", "{a}", "{edited_dim}", "-o", "{root}/m1"], {}, "config"),
    ("generate-tokenizer-hash", ["generate", "{other_tok}", "--prompt", "Once", "-n", "5"], {},
     "tokenizer hash"),
    ("export-tokenizer-hash", ["export", "single-file", "{other_tok}", "-o",
                               "{root}/x.py"], {}, "tokenizer hash"),
    # tinylm serve: refused before it binds a port or loads a model
    ("serve-missing-checkpoint", ["serve", "{root}/nowhere"], {}, "not found"),
    ("serve-port-negative", ["serve", "{b}", "--port", "-1"], {}, "--port"),
    ("serve-port-too-big", ["serve", "{b}", "--port", "70000"], {}, "--port"),
    ("serve-max-batch-zero", ["serve", "{b}", "--max-batch", "0"], {}, "--max-batch"),
    ("serve-empty-api-key", ["serve", "{b}", "--api-key", ""], {}, "--api-key"),
    ("serve-bytes-changed", ["serve", "{scored}", "--port", "0"], {}, "sha256"),
]


def _fill(text: str, w: SimpleNamespace) -> str:
    return text.format(**{k: str(v) for k, v in vars(w).items()})


@pytest.mark.parametrize("argv,env,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(world, argv, env, fragment):
    if "cuda" in " ".join(argv) and _has_cuda():
        pytest.skip("this machine has CUDA devices")
    before = snapshot(world.root)
    args = [_fill(a, world) for a in argv]
    full_env = {**os.environ, **ONE_THREAD, **{k: _fill(v, world) for k, v in env.items()}}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tinylm", *args], capture_output=True,
                          text=True, env=full_env, timeout=120, cwd=world.root)
    took = time.perf_counter() - started
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tinylm: error:")]
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert len(errors) == 1, proc.stderr
    assert fragment.lower() in errors[0].lower(), errors[0]
    assert snapshot(world.root) == before, f"files changed by: tinylm {' '.join(args)}"
    assert took < (20 if "hf:" in " ".join(argv) else 60), f"took {took:.0f}s to fail"


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_table_covers_forty_cases_or_more():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


# --------------------------------------------------------------------------- not errors

def test_truncated_metrics_log_resumes_without_traceback(world, tmp_path):
    """A kill mid-write leaves half a line in metrics.jsonl: --resume drops it and goes on."""
    run = tmp_path / "run"
    shutil.copytree(world.run, run)
    (run / ".lock").unlink(missing_ok=True)
    metrics = run / "metrics.jsonl"
    metrics.write_bytes(metrics.read_bytes() + b'{"step": 5, "loss": 1.2')
    proc = run_cli("train", "--resume", "--out", str(run), "--steps", "6", "--no-progress",
                   env=ONE_THREAD)
    assert "dropped 1 unreadable line" in proc.stdout
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert lines[-1]["step"] == 6


def test_merge_over_its_own_output_is_allowed(world, tmp_path):
    """Our own merged checkpoint may be replaced; a file needs --force (never a folder)."""
    out = tmp_path / "m"
    shutil.copytree(world.merged, out)
    run_cli("merge", str(world.a), str(world.b), "--t", "0.3", "-o", str(out), env=ONE_THREAD)
    assert json.loads((out / "meta.json").read_text())["merge"]["t"] == 0.3
    target = tmp_path / "was_a_file"
    target.write_text("x")
    run_cli("merge", str(world.a), str(world.b), "-o", str(target), "--force", env=ONE_THREAD)
    assert (target / "meta.json").is_file() and not list(tmp_path.glob(".was_a_file*"))


def test_data_list_says_which_data_dir_and_why(world):
    proc = run_cli("data", "list", "--data-dir", str(world.data))
    assert f"data dir: {world.data} (from --data-dir)" in proc.stdout
    proc = run_cli("data", "list", env={"TINYLM_DATA": str(world.data)})
    assert "(from $TINYLM_DATA)" in proc.stdout
