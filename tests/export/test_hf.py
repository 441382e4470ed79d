"""`tinylm export hf` / `tinylm import hf`: transformers computes tinylm's logits (to 1e-5) and
writes the same greedy text, AutoTokenizer gives tinylm's ids, an HF Llama made by
transformers imports exactly, tinylm -> HF -> tinylm keeps every tensor, and bad inputs get one
line through the real CLI."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli
from tinylm.errors import TinyLMError
from tinylm.export.hf import check_hf_output, export_hf, import_hf
from tinylm.export.hf_tokenizer import tokenizer_files
from tinylm.models import build_model
from tinylm.models.llama import LlamaConfig
from tinylm.tokenizers import BPETokenizer, ByteTokenizer, UnigramTokenizer
from tinylm.train.checkpoint import load_checkpoint, save_checkpoint

TEXTS = ["Once upon a time, there was a little girl.", "héllo wörld — naïve café 日本語 🙂",
         "two\nlines\n\nand  double  spaces ", "a literal <|endoftext|> stays text", "x"]
TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is faster, and on a busy machine far faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def story(data_dir: Path, chars: int) -> str:
    return (data_dir / "tinystories" / "TinyStories-train-prefix.txt").read_text(
        encoding="utf-8")[:chars]


def trained_checkpoint(path: Path, tokenizer, text: str, steps: int = 12, **config) -> Path:
    """A llama checkpoint trained `steps` AdamW steps on `text` in-process (so its greedy text
    is not a random model's), saved as tinylm saves one."""
    torch.manual_seed(0)
    config = {"vocab_size": tokenizer.vocab_size, "dim": 32, "n_layers": 2, "n_heads": 4,
              "n_kv_heads": 2, "ffn_hidden": 64, "context_len": 64, **config}
    model = build_model("llama", config)
    batch = torch.tensor(tokenizer.encode(text)[:64 * 8 + 1])
    x, y = batch[:-1].view(8, 64), batch[1:].view(8, 64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return save_checkpoint(path, family="llama", model_config=config,
                           model_state=model.state_dict(), tokenizer=tokenizer,
                           extra_meta={"step": steps, "data": "tinystories", "preset": "debug",
                                       "metrics": {"train_loss": loss.item()}})


@pytest.fixture(scope="module")
def bpe_tokenizer(data_dir) -> BPETokenizer:
    return BPETokenizer.train([story(data_dir, 200_000)], 400)


@pytest.fixture(scope="module")
def byte_checkpoint(tmp_path_factory, data_dir) -> Path:
    return trained_checkpoint(tmp_path_factory.mktemp("cli") / "ckpt", ByteTokenizer(),
                              story(data_dir, 4000), steps=2)


@pytest.fixture(scope="module", params=["bytes", "bpe"])
def exported(request, tmp_path_factory, data_dir, bpe_tokenizer):
    """(checkpoint, HF folder): bytes with tied embeddings; BPE untied, GQA 4/2."""
    folder = tmp_path_factory.mktemp(f"hf-{request.param}")
    if request.param == "bytes":
        ckpt = trained_checkpoint(folder / "ckpt", ByteTokenizer(), story(data_dir, 4000))
    else:
        ckpt = trained_checkpoint(folder / "ckpt", bpe_tokenizer, story(data_dir, 8000),
                                  tie_embeddings=False, rope_base=500.0, norm_eps=1e-6)
    done = export_hf(ckpt, folder / "hf")  # checks its own logits too
    assert done["max_abs_diff"] is not None and done["max_abs_diff"] <= TOLERANCE
    return ckpt, folder / "hf"


@functools.cache
def load_transformers(folder: Path):
    """(model, tokenizer) as transformers loads them from the folder, offline; loaded once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval(),
            AutoTokenizer.from_pretrained(folder, local_files_only=True))


def hf_greedy(model, tokenizer, prompt: str, n: int) -> str:
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=n, do_sample=False,
                         attention_mask=torch.ones_like(ids))
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


# --------------------------------------------------------------------------- export

def test_transformers_gives_tinylm_logits_and_text(exported):
    import tinylm

    ckpt, folder = exported
    ours = tinylm.load(ckpt)
    model, tokenizer = load_transformers(folder)
    ids = torch.tensor([ours.tokenizer.encode(TEXTS[0] + " " + TEXTS[1])[:60]])
    with torch.no_grad():
        diff = (ours.model(ids) - model(input_ids=ids).logits).abs().max().item()
    assert diff <= TOLERANCE
    for prompt in ("Once upon a time", "The dog"):
        assert hf_greedy(model, tokenizer, prompt, 24) == \
            ours.generate(prompt, max_new_tokens=24, temperature=0)


def test_autotokenizer_gives_tinylm_ids(exported):
    ckpt, folder = exported
    ours = load_checkpoint(ckpt).tokenizer
    _, theirs = load_transformers(folder)
    for text in TEXTS:
        assert theirs(text).input_ids == ours.encode(text), text
    assert theirs.eos_token_id == ours.eos_id
    assert theirs.decode(ours.encode(TEXTS[1])) == TEXTS[1]


def test_unigram_tokenizer_converts_with_the_same_ids(data_dir):
    from tokenizers import Tokenizer as HFTokenizer

    ours = UnigramTokenizer.train([story(data_dir, 200_000)], 192)
    files = tokenizer_files(ours, 64)
    theirs = HFTokenizer.from_str(files["tokenizer.json"])
    text = story(data_dir, 300_000)[250_000:260_000]  # not all of it seen in training
    for chunk in [*TEXTS, *text.split("\n\n")[:40]]:
        assert theirs.encode(chunk, add_special_tokens=False).ids == ours.encode(chunk), chunk
    assert theirs.token_to_id(json.loads(files["special_tokens_map.json"])["eos_token"]) == \
        ours.eos_id


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_chatml_markers_keep_their_ids_in_autotokenizer(kind, data_dir, tmp_path):
    """An SFT'd tokenizer's appended markers are one id each in tinylm; AutoTokenizer must
    give the same ids on ChatML text (and still keep a literal EOS string as text)."""
    from transformers import AutoTokenizer

    from tinylm.infer.chatml import MARKERS, render

    cls = BPETokenizer if kind == "bpe" else UnigramTokenizer
    ours = cls.train([story(data_dir, 100_000)], 300).with_specials(MARKERS)
    for name, text in tokenizer_files(ours, 64).items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    theirs = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    chat = render([{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": "Où est Tom? <|endoftext|> stays text"}])
    for text in [chat, "a<|im_end|>b", *TEXTS]:
        assert theirs(text).input_ids == ours.encode(text), text
    assert ours.encode("<|im_end|>") == [theirs.convert_tokens_to_ids("<|im_end|>")]


def test_model_card_and_config(exported):
    ckpt, folder = exported
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: transformers\n") and "\n---\n" in card
    assert "| training data | tinystories |" in card and "| steps | 12 |" in card
    config = json.loads((folder / "config.json").read_text())
    meta = load_checkpoint(ckpt).meta
    assert config["tie_word_embeddings"] == meta["model_config"].get("tie_embeddings", True)
    assert config["architectures"] == ["LlamaForCausalLM"]


def test_round_trip_keeps_every_tensor(exported, tmp_path):
    ckpt, folder = exported
    import_hf(folder, tmp_path / "back")
    before, after = load_checkpoint(ckpt), load_checkpoint(tmp_path / "back")
    assert LlamaConfig(**after.meta["model_config"]) == LlamaConfig(**before.meta["model_config"])
    assert before.model_state.keys() == after.model_state.keys()
    for name, tensor in before.model_state.items():
        assert torch.equal(tensor, after.model_state[name]), name
    assert after.tokenizer.content_hash() == before.tokenizer.content_hash()


# --------------------------------------------------------------------------- import

@pytest.fixture(scope="module")
def random_hf_llama(tmp_path_factory, bpe_tokenizer) -> Path:
    """A randomly initialised LlamaForCausalLM (tiny, untied, GQA) saved by transformers, with a
    byte-level BPE tokenizer.json beside it, as a hub download would hold."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=bpe_tokenizer.vocab_size, hidden_size=48,
                         intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
                         num_key_value_heads=2, max_position_embeddings=96, rope_theta=1000.0,
                         rms_norm_eps=1e-6, tie_word_embeddings=False, initializer_range=0.2,
                         eos_token_id=bpe_tokenizer.eos_id)
    folder = tmp_path_factory.mktemp("random-llama") / "hf"
    LlamaForCausalLM(config).save_pretrained(folder)
    for name, text in tokenizer_files(bpe_tokenizer, 96).items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.mark.slow
def test_import_of_a_transformers_llama_is_exact(random_hf_llama, tmp_path):
    import tinylm

    run_cli("import", "hf", str(random_hf_llama), "-o", str(tmp_path / "ckpt"))
    ours = tinylm.load(tmp_path / "ckpt")
    model, tokenizer = load_transformers(random_hf_llama)
    ids = torch.randint(0, ours.model.config.vocab_size, (2, 90),
                        generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (ours.model(ids) - model(input_ids=ids).logits).abs().max().item() <= TOLERANCE
    assert hf_greedy(model, tokenizer, "Once upon a time", 30) == \
        ours.generate("Once upon a time", max_new_tokens=30, temperature=0)  # what generate runs


# --------------------------------------------------------------------------- bad inputs

def test_bad_inputs_get_one_line(byte_checkpoint, random_hf_llama, tmp_path):
    ckpt = byte_checkpoint
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((random_hf_llama / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not unpickled")
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    for file in random_hf_llama.iterdir():
        (gpt2 / file.name).write_bytes(file.read_bytes())
    config = json.loads((gpt2 / "config.json").read_text())
    (gpt2 / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"],
                                                  "model_type": "gpt2"}))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    rows = [(["import", "hf", str(pickled), "-o", str(tmp_path / "a")], "never unpickles"),
            (["import", "hf", str(gpt2), "-o", str(tmp_path / "b")], "has no tinylm family"),
            (["export", "hf", str(ckpt), "-o", str(foreign)], "never replaced")]
    for args, message in rows:
        proc = run_cli(*args, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert (foreign / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_dry_run_needs_push_to_hub(byte_checkpoint, tmp_path, capsys):
    """The command's own parser and error path, in this process (no subprocess needed)."""
    from tinylm.cli import main

    assert main(["export", "hf", str(byte_checkpoint), "-o", str(tmp_path / "d"),
                 "--dry-run"]) == 2
    assert "--dry-run goes with --push-to-hub" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_families_without_an_exact_llama_are_refused(tmp_path):
    from tinylm.models.bitnet import BitNetConfig

    config = {"vocab_size": 257, "dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
              "ffn_hidden": 40, "context_len": 32}
    model = build_model("bitnet", config)
    assert isinstance(model.config, BitNetConfig)
    ckpt = save_checkpoint(tmp_path / "bitnet", family="bitnet", model_config=config,
                           model_state=model.state_dict(), tokenizer=ByteTokenizer(),
                           extra_meta={"step": 0})
    with pytest.raises(TinyLMError, match="ternary"):
        export_hf(ckpt, tmp_path / "out")
    thinking = {**config, "think_steps": 1}
    ckpt = save_checkpoint(tmp_path / "think", family="llama", model_config=thinking,
                           model_state=build_model("llama", thinking).state_dict(),
                           tokenizer=ByteTokenizer(), extra_meta={"step": 0})
    with pytest.raises(TinyLMError, match="think_steps"):
        export_hf(ckpt, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_push_to_hub_dry_run_lists_the_folder(byte_checkpoint, tmp_path):
    ckpt = byte_checkpoint
    proc = run_cli("export", "hf", str(ckpt), "-o", str(tmp_path / "hf"), "--no-check",
                   "--push-to-hub", "someone/tiny", "--dry-run")
    assert "would upload" in proc.stdout and "https://huggingface.co/someone/tiny" in proc.stdout
    assert "model.safetensors" in proc.stdout and "README.md" in proc.stdout
    check_hf_output(tmp_path / "hf", inputs=[ckpt])  # a folder it wrote may be replaced
    export_hf(ckpt, tmp_path / "hf", check=False)
    assert (tmp_path / "hf" / "model.safetensors").is_file()


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(TinyLMError, match="not a folder"):
        import_hf(tmp_path / "missing", tmp_path / "out")


def test_tokenizers_tinylm_cannot_hold_are_refused(bpe_tokenizer):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models

    from tinylm.export.hf_tokenizer import tinylm_tokenizer

    word_level = HFTokenizer(models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>"))
    with pytest.raises(TinyLMError, match="byte-level BPE tokenizers only"):
        tinylm_tokenizer(word_level.to_str(), None, "tokenizer.json")
    bpe_json = tokenizer_files(bpe_tokenizer, 64)["tokenizer.json"]
    with pytest.raises(TinyLMError, match="its EOS token is '</s>'"):
        tinylm_tokenizer(bpe_json, "</s>", "tokenizer.json")
    with pytest.raises(TinyLMError, match="unreadable tokenizer.json"):
        tinylm_tokenizer("{not json", None, "tokenizer.json")
    assert tinylm_tokenizer(bpe_json, "<|endoftext|>", "t").content_hash() == \
        bpe_tokenizer.content_hash()
