"""Single-file export: the written script gives tinylm's text exactly, and needs only torch.

Golden-output style: a checkpoint is exported, the script is run (as a program and as an
imported module), and its text is compared with `tinylm generate` / `LoadedModel.generate`
byte for byte, across sampler settings, prompts longer than the context and continuations that
overflow it (the cache-rebuild rule). The BPE encoder, rewritten without `tokenizers`, is
compared with `tokenizers` on real text.
"""

from __future__ import annotations

import ast
import gzip
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tinylm
from tests.conftest import run_cli
from tinylm.errors import TinyLMError
from tinylm.export.single_file import (
    HEADER_IMPORTS,
    MARKER,
    PARTS,
    export_single_file,
    import_exported,
    part_source,
    tokenizer_data,
)
from tinylm.infer.generate import generate_ids
from tinylm.infer.sampling import SamplingConfig
from tinylm.models import build_model
from tinylm.tokenizers import BPETokenizer, ByteTokenizer, UnigramTokenizer
from tinylm.train.checkpoint import save_checkpoint

# (prompt, n, temperature, top_k, top_p, repetition_penalty, seed)
SETTINGS = [
    ("Once upon a time", 200, 0.8, 0, 1.0, 1.0, 0),     # tinylm generate's defaults
    ("the ", 120, 0.5, 5, 1.0, 1.1, 0),                  # Blink's recommended decoding
    ("Café 東京, naïve ", 90, 0.2, 10, 1.0, 1.5, 3),     # non-ASCII prompt
    ("Tom and Sue", 100, 1.3, 0, 0.9, 1.0, 7),           # top-p
    ("Lily saw a dog", 80, 0.0, 0, 1.0, 1.3, 0),         # greedy, penalised
    ("x" * 40 + " long prompt, longer than the context " * 3, 70, 1.0, 50, 0.95, 1.2, 11),
]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread, in this process and in the scripts it runs: on a busy 2-core
    machine a second thread mostly spins, and a tiny model's decoding step gets 40x slower.
    Both sides of every comparison run with the same setting."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


ONE_THREAD = {"OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}


def _save_random(path: Path, tokenizer, saved_extra: dict | None = None, **config) -> Path:
    """A random llama checkpoint. init_std 0.3 (not 0.02) makes the logits peaked enough that
    temperature, top-k/p and the penalty all change which ids are drawn. `saved_extra` goes
    into the saved config only (a setting this tinylm does not have)."""
    torch.manual_seed(0)
    config = {"vocab_size": tokenizer.vocab_size, "dim": 32, "n_layers": 2, "n_heads": 4,
              "n_kv_heads": 2, "ffn_hidden": 64, "context_len": 64, "init_std": 0.3, **config}
    model = build_model("llama", config)
    return save_checkpoint(path, family="llama", model_config={**config, **(saved_extra or {})},
                           model_state=model.state_dict(), tokenizer=tokenizer,
                           extra_meta={"step": 0})


def _tinystories(data_dir: Path, chars: int) -> str:
    return (data_dir / "tinystories" / "TinyStories-train-prefix.txt").read_text(
        encoding="utf-8")[:chars]


@pytest.fixture(scope="module")
def bpe_tokenizer(data_dir) -> BPETokenizer:
    return BPETokenizer.train([_tinystories(data_dir, 300_000)], 500)


@pytest.fixture(scope="module")
def unigram_tokenizer(data_dir) -> UnigramTokenizer:
    return UnigramTokenizer.train([_tinystories(data_dir, 300_000)], 192)


@pytest.fixture(scope="module")
def byte_export(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("byte")
    ckpt = _save_random(folder / "ckpt", ByteTokenizer())
    return ckpt, export_single_file(ckpt, folder / "infer.py")


@pytest.fixture(scope="module")
def bpe_export(tmp_path_factory, bpe_tokenizer) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("bpe")
    ckpt = _save_random(folder / "ckpt", bpe_tokenizer, context_len=32, tie_embeddings=False)
    return ckpt, export_single_file(ckpt, folder / "infer.py")


@pytest.fixture(scope="module")
def unigram_export(tmp_path_factory, unigram_tokenizer) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("unigram")
    ckpt = _save_random(folder / "ckpt", unigram_tokenizer, context_len=48, n_kv_heads=4)
    return ckpt, export_single_file(ckpt, folder / "infer.py")


def _run_script(script: Path, *args: str) -> bytes:
    proc = subprocess.run([sys.executable, str(script), *args], check=False, capture_output=True,
                          timeout=300, env={**os.environ, **ONE_THREAD})
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def _cli_args(prompt, n, temperature, top_k, top_p, penalty, seed) -> list[str]:
    return [f"--prompt={prompt}", "-n", str(n), "--temperature", str(temperature),
            "--top-k", str(top_k), "--top-p", str(top_p), "--repetition-penalty", str(penalty),
            "--seed", str(seed)]


def _tinylm_text(ckpt: Path, prompt, n, temperature, top_k, top_p, penalty, seed) -> str:
    return tinylm.load(ckpt).generate(prompt, n, temperature, top_k, top_p, penalty, seed)


# --------------------------------------------------------------------------- same text

def test_script_prints_what_tinylm_generate_prints(byte_export, tmp_path):
    """Both programs, as a user runs them: 150 new ids overflow the 64-id context twice."""
    ckpt, script = byte_export
    args = _cli_args("the ", 150, 0.5, 5, 1.0, 1.1, 0)
    ours = run_cli("generate", str(ckpt), *args, env=ONE_THREAD).stdout
    assert _run_script(script, *args) == ours.encode("utf-8")


@pytest.mark.parametrize("setting", SETTINGS[:2], ids=["defaults", "blink"])
def test_bpe_script_matches_tinylm(bpe_export, setting):
    ckpt, script = bpe_export
    expected = setting[0] + _tinylm_text(ckpt, *setting) + "\n"
    assert _run_script(script, *_cli_args(*setting)).decode("utf-8") == expected


@pytest.mark.parametrize("which", ["byte_export", "bpe_export", "unigram_export"])
def test_imported_generate_matches_tinylm_across_settings(which, request):
    ckpt, script = request.getfixturevalue(which)
    module = import_exported(script)
    model, config = module.load_model()
    assert config.context_len in (32, 48, 64) and hasattr(model, "tokenizer")
    for prompt, n, temperature, top_k, top_p, penalty, seed in SETTINGS:
        expected = _tinylm_text(ckpt, prompt, n, temperature, top_k, top_p, penalty, seed)
        streamed = []
        got = module.generate(model, prompt, temperature, top_k, penalty, seed,
                              max_new_tokens=n, top_p=top_p, stream=streamed.append)
        assert got == expected and "".join(streamed) == got, (prompt, seed)


def test_eos_stops_both_at_the_same_place(bpe_export):
    ckpt, script = bpe_export
    loaded, module = tinylm.load(ckpt), import_exported(script)
    exported, _ = module.load_model()
    prompt = loaded.tokenizer.encode("Once upon a time")
    free = generate_ids(loaded.model, [prompt], 40, SamplingConfig(1.0), seed=5)[0]
    eos = free[12]  # pretend a token drawn mid-way is EOS: both must stop right before it
    ours = generate_ids(loaded.model, [prompt], 40, SamplingConfig(1.0), seed=5, eos_id=eos)[0]
    theirs = module.generate_ids(exported, prompt, 40, 1.0, seed=5, eos_id=eos)
    assert ours == theirs == free[:free.index(eos)]


def test_logits_equal_bit_for_bit(bpe_export):
    ckpt, script = bpe_export
    model = tinylm.load(ckpt).model
    exported, _ = import_exported(script).load_model()
    idx = torch.randint(0, 500, (3, 32), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(exported(idx), model(idx))
        cache_a, cache_b = exported.new_cache(3, 32), model.new_cache(3, 32)
        exported(idx[:, :20], cache_a, 0), model(idx[:, :20], cache_b, 0)
        assert torch.equal(exported(idx[:, 20:], cache_a, 20), model(idx[:, 20:], cache_b, 20))


def test_think_steps_model_exports(tmp_path):
    """llama's continuous-thought passes (think_steps) are part of the exported forward."""
    from tinylm.models.llama import LlamaConfig

    if "think_steps" not in LlamaConfig.__dataclass_fields__:
        pytest.skip("this tinylm's llama has no think_steps")
    ckpt = _save_random(tmp_path / "ckpt", ByteTokenizer(), think_steps=2, context_len=16)
    script = export_single_file(ckpt, tmp_path / "think.py")  # the self-check compares logits
    module = import_exported(script)
    model, _ = module.load_model()
    setting = ("abc", 40, 0.9, 0, 1.0, 1.0, 2)
    assert module.generate(model, "abc", 0.9, 0, 1.0, 2, 40) == _tinylm_text(ckpt, *setting)


# --------------------------------------------------------------------------- looped family

def _save_random_looped(path: Path, config: dict) -> Path:
    """A looped checkpoint with every weight N(0, 0.5): LoRA deltas and loop embeddings start at
    zero in a fresh model, which would leave the per-loop paths untested."""
    from tinylm.models import families

    if "looped" not in families():
        pytest.skip("this tinylm has no looped family")
    model = build_model("looped", config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return save_checkpoint(path, family="looped", model_config=config,
                           model_state=model.state_dict(), tokenizer=ByteTokenizer(),
                           extra_meta={"step": 0})


def _blink_shape(**changes) -> dict:
    from tinylm.config import load_preset

    return {**load_preset("blink-1")["model"], "vocab_size": 257, **changes}


@pytest.mark.parametrize("shape", ["blink", "prelude_coda_factorized"])
def test_looped_exports_match_tinylm(shape, tmp_path):
    """Blink's shape (dim 3: odd head dim, partial RoPE; per-loop LoRA; block-sparse attention
    with routing once the context passes 48), and a shape with the other options on."""
    if shape == "blink":
        config, n = _blink_shape(context_len=96), 200
    else:
        config, n = {"vocab_size": 257, "dim": 32, "n_heads": 4, "n_kv_heads": 2,
                     "ffn_hidden": 48, "context_len": 32, "n_prelude": 1, "n_coda": 1,
                     "loops": 3, "max_loops": 4, "lora_rank": 2, "emb_dim": 16,
                     "lora_targets": ["wqkv", "wo", "w13", "w2"], "tie_embeddings": False,
                     "think_steps": 1,
                     "sparse_attention": {"block_size": 4, "top_k": 1, "window": 6}}, 50
    ckpt = _save_random_looped(tmp_path / "ckpt", config)
    module = import_exported(export_single_file(ckpt, tmp_path / "looped.py"))
    exported, _ = module.load_model()
    loaded = tinylm.load(ckpt)
    prompt = list(b"the quick brown fox")
    for loops in (config["loops"], config["max_loops"]):  # Blink's card samples at 8 loops
        loaded.model.set_loops(loops)
        exported.loops = loops
        ours = generate_ids(loaded.model, [prompt], n, SamplingConfig(0.9, 0, 1.0, 1.1),
                            seed=4)[0]
        assert module.generate_ids(exported, prompt, n, 0.9, 0, 1.0, 1.1, seed=4) == ours
        assert len(ours) == n  # no EOS given: the context overflows and the cache is rebuilt
    loaded.model.set_loops(config["loops"])
    exported.loops = config["loops"]
    assert module.generate(exported, "the ", 0.5, 5, 1.1, 0, 60) == \
        loaded.generate("the ", 60, 0.5, 5, 1.0, 1.1, 0)


# --------------------------------------------------------------------------- weights, CLI, errors

def test_weights_beside_and_other_weights(byte_export, tmp_path):
    ckpt, embedded = byte_export
    script = export_single_file(ckpt, tmp_path / "small.py", weights="beside")
    side = tmp_path / "small.safetensors"
    assert side.read_bytes() == (ckpt / "model.safetensors").read_bytes()
    assert script.stat().st_size < embedded.stat().st_size / 2
    module = import_exported(script)
    setting = SETTINGS[1]
    text = _tinylm_text(ckpt, *setting)
    model, _ = module.load_model()
    assert module.generate(model, "the ", 0.5, 5, 1.1, 0, 120) == text
    model, _ = module.load_model(ckpt)  # a checkpoint folder (or its model.safetensors) loads
    assert module.generate(model, "the ", 0.5, 5, 1.1, 0, 120) == text
    side.write_bytes(side.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ValueError, match="sha256"):
        module.load_model()


def test_foreign_or_changed_weights_are_refused_with_one_line(byte_export, bpe_tokenizer,
                                                              tmp_path):
    """The exported file checks what it is pointed at: a checkpoint's weights against the
    sha256 its meta.json records, its tokenizer against the file's own, shapes against the
    model; each refusal is one line from the script's command line, no traceback."""
    import shutil

    ckpt, script = byte_export
    changed = tmp_path / "changed"
    shutil.copytree(ckpt, changed)
    blob = bytearray((changed / "model.safetensors").read_bytes())
    blob[-1] ^= 1
    (changed / "model.safetensors").write_bytes(bytes(blob))
    other_tokenizer = _save_random(tmp_path / "bpe", bpe_tokenizer)
    other_shape = _save_random(tmp_path / "wide", ByteTokenizer(), dim=48)
    cases = {changed: "do not match the sha256", other_tokenizer: "is not this file's",
             other_shape / "model.safetensors": "do not fit this file's model"}
    for weights, message in cases.items():
        proc = subprocess.run([sys.executable, str(script), "--weights", str(weights), "-n", "3"],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, **ONE_THREAD})
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr


def test_cli_command_writes_a_working_file(byte_export, tmp_path):
    ckpt, _ = byte_export
    out = tmp_path / "cli_infer.py"
    proc = run_cli("export", "single-file", str(ckpt), "-o", str(out), env=ONE_THREAD)
    assert "wrote" in proc.stdout and "checked against tinylm" in proc.stdout
    assert out.read_text(encoding="utf-8").startswith("#!/usr/bin/env python3")
    bad = run_cli("export", "single-file", str(tmp_path / "nowhere"), "-o", str(out),
                  check=False)
    assert bad.returncode == 2 and "checkpoint not found" in bad.stderr


def test_settings_the_template_lacks_are_refused(tmp_path):
    ckpt = _save_random(tmp_path / "odd", ByteTokenizer(), {"some_future_setting": 1})
    with pytest.raises(TinyLMError, match="does not know the setting.* some_future_setting"):
        export_single_file(ckpt, tmp_path / "o.py")
    assert not (tmp_path / "o.py").exists()


def test_unknown_family_is_refused(byte_export, tmp_path, monkeypatch):
    import dataclasses

    from tinylm.export import single_file
    from tinylm.models import _FAMILIES, get_family

    monkeypatch.setitem(_FAMILIES, "llama", dataclasses.replace(get_family("llama"), export=None))
    with pytest.raises(TinyLMError, match="export of family 'llama' not supported yet"):
        export_single_file(byte_export[0], tmp_path / "x.py")
    monkeypatch.undo()
    monkeypatch.setattr(single_file, "TOKENIZER_SOURCES", {})
    with pytest.raises(TinyLMError, match="tokenizer kind 'bytes' not supported"):
        export_single_file(byte_export[0], tmp_path / "x.py")


def test_parts_import_only_what_the_header_imports():
    """A part may not import anything the generated file lacks (and nothing but torch and
    the standard library), or the file breaks only when exported."""
    nodes = [n for n in ast.parse(HEADER_IMPORTS).body if isinstance(n, ast.Import | ast.ImportFrom)]
    header = {alias.name for node in nodes for alias in node.names}
    header |= {node.module for node in nodes if isinstance(node, ast.ImportFrom)}
    for path in sorted(PARTS.glob("*.py")):
        if path.name == "__init__.py":
            continue
        head = path.read_text(encoding="utf-8").split(MARKER)[0]
        for node in ast.parse(head).body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert (name in header or name == "__future__"
                        or name.startswith("tinylm.export.standalone")), (path.name, name)
        assert "import " not in part_source(path.name).split("\n", 1)[0]


# --------------------------------------------------------------------------- BPE without tokenizers

def _exported_bpe(tokenizer):
    namespace: dict = {}
    exec("import itertools, unicodedata\n" + part_source("tok_bpe.py"), namespace)  # noqa: S102
    return namespace["Tokenizer"](tokenizer_data(tokenizer)), namespace


def test_bpe_encoder_matches_tokenizers_on_real_text(bpe_tokenizer, data_dir):
    """TinyStories, WikiText-2 and FineWeb-Edu text, in 4,000-character documents."""
    wikitext = (data_dir / "wikitext-2" / "wiki.valid.raw").read_text(encoding="utf-8")
    with gzip.open(data_dir / "fineweb-edu" / "fineweb-edu-sample10BT-stream-first1Mchars.txt.gz",
                   "rt", encoding="utf-8") as f:
        fineweb = f.read(300_000)
    wiki_tok = BPETokenizer.train([wikitext[:400_000]], 2000)  # more merges, other text
    for tokenizer in (bpe_tokenizer, wiki_tok):
        exported, _ = _exported_bpe(tokenizer)
        for text in (_tinystories(data_dir, 400_000), wikitext[:600_000], fineweb):
            docs = [text[i:i + 4000] for i in range(0, len(text), 4000)]
            expected = tokenizer.encode_batch(docs)
            for doc, ids in zip(docs, expected):
                assert exported.encode(doc) == ids, doc[:80]
            assert exported.decode_bytes(expected[0]) == docs[0].encode("utf-8")


def test_bpe_encoder_matches_on_odd_strings_and_bytes(bpe_tokenizer):
    exported, _ = _exported_bpe(bpe_tokenizer)
    alphabet = [" ", "  ", "\n", "\t", "\r\n", "'", "s", "t", "re", "ll", "'S", "The", "1", "23",
                "!", "?!", "é", "東", "😀", "\xa0", "\u2028", "\x1c", "\x85", "\u3000", "٣", "Ⅻ",
                "½", "\u0301", "\u200b", "\ufeff", "\x00", "\U000105c0", "<|endoftext|>"]
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 25)))
        assert exported.encode(text) == bpe_tokenizer.encode(text), repr(text)
    for _ in range(300):  # not valid UTF-8: stray bytes become single-byte tokens
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60)))
        assert exported.encode(data) == bpe_tokenizer.encode(data), data


def test_pre_tokenizer_classes_match_tokenizers_over_unicode():
    """Letters, numbers and white space as `tokenizers` sees them: every 37th code point,
    plus every code point of the newer-Unicode table (both ends of each range)."""
    from tokenizers import pre_tokenizers

    hf = pre_tokenizers.ByteLevel(add_prefix_space=False)
    _, namespace = _exported_bpe(BPETokenizer.train(["ab"], 260))
    codes = [c for c in range(0, 0x110000, 37) if not 0xD800 <= c <= 0xDFFF]
    codes += [c for first, last, _ in namespace["NEWER_UNICODE"] for c in (first, last)]
    for start in range(0, len(codes), 1000):
        text = "".join(f"{chr(c)}a{chr(c)}{chr(c)}1 {chr(c)}  {chr(c)}\n{chr(c)}'s"
                       for c in codes[start:start + 1000])
        expected = [text[a:b] for _, (a, b) in hf.pre_tokenize_str(text)]
        assert namespace["pre_tokenize"](text) == expected


# --------------------------------------------------------------------------- unigram without sentencepiece

def test_unigram_encoder_matches_sentencepiece(unigram_tokenizer, data_dir):
    """Viterbi over the pieces, as SentencePiece scores it: TinyStories (what it was trained
    on) and WikiText (characters it never saw: runs of unknowns), plus odd strings."""
    namespace: dict = {}
    exec("import struct\n" + part_source("tok_unigram.py"), namespace)  # noqa: S102
    exported = namespace["Tokenizer"](tokenizer_data(unigram_tokenizer))
    wikitext = (data_dir / "wikitext-2" / "wiki.valid.raw").read_text(encoding="utf-8")
    for text in (_tinystories(data_dir, 200_000), wikitext[:300_000]):
        docs = [text[i:i + 3000] for i in range(0, len(text), 3000)]
        for doc, ids in zip(docs, unigram_tokenizer.encode_batch(docs)):
            assert exported.encode(doc) == ids, doc[:80]
    alphabet = [" ", "  ", "\n", "\t", "\r\n", "'", "s", "the", "1", "!", "é", "東", "京", "😀",
                "\x00", "\u2581", "a b", "<unk>", "</s>"]
    rng = random.Random(0)
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 25)))
        assert exported.encode(text) == unigram_tokenizer.encode(text), repr(text)
    assert all(exported.decode_bytes([i]) == unigram_tokenizer.decode_bytes([i])
               for i in range(unigram_tokenizer.vocab_size))


# --------------------------------------------------------------------------- fresh venv

@pytest.mark.slow
def test_runs_in_a_fresh_venv_with_only_torch(bpe_export, tmp_path):
    """The file's promise: a virtual environment with torch alone (no tinylm, tokenizers,
    safetensors or numpy) runs it and prints tinylm's text. Installs torch from the local
    wheel cache (~25 s)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", f"torch=={_torch_release()}"],
                             check=False, capture_output=True, text=True, timeout=600)
    if install.returncode != 0:
        pytest.skip(f"cannot install torch into a fresh venv here: {install.stderr[-300:]}")
    for module in ("tinylm", "tokenizers", "safetensors", "numpy"):
        probe = subprocess.run([python, "-c", f"import {module}"], check=False,
                               capture_output=True, cwd=tmp_path)  # not where tinylm/ is
        assert probe.returncode != 0, f"{module} is importable in the fresh venv"
    ckpt, script = bpe_export
    setting = SETTINGS[1]
    expected = setting[0] + _tinylm_text(ckpt, *setting) + "\n"
    proc = subprocess.run([python, str(script), *_cli_args(*setting)], check=False,
                          capture_output=True, cwd=tmp_path, timeout=300,
                          env={"PATH": os.environ.get("PATH", ""), **ONE_THREAD})
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode("utf-8") == expected
    assert proc.stderr == b""  # not even torch's "Failed to initialize NumPy" warning


def _torch_release() -> str:
    return torch.__version__.split("+")[0]
