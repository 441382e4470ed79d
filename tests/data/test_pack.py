"""Packed token caches: built once, reused, rebuilt when stale; splits never overlap."""

import json
import shutil

import numpy as np
import pytest

from tinylm.data.pack import load_or_build, split_documents
from tinylm.data.sampler import train_batch, validation_batches
from tinylm.data.sources import resolve_dataset
from tinylm.errors import TinyLMError
from tinylm.tokenizers import ByteTokenizer, train_tokenizer


@pytest.fixture()
def small_corpus(tmp_path, data_dir):
    """A private copy of one small data set, so the test may edit it."""
    folder = tmp_path / "data" / "fineweb-edu"
    folder.mkdir(parents=True)
    name = "fineweb-edu-sample10BT-150docs-annotated.csv"
    shutil.copy(data_dir / "fineweb-edu" / name, folder / name)
    return tmp_path / "data"


def test_pack_contents_and_sidecar(small_corpus, tmp_path):
    tok = ByteTokenizer()
    packed = load_or_build("fineweb-edu", "train", tok, small_corpus, tmp_path / "cache")
    docs = list(split_documents(resolve_dataset("fineweb-edu", small_corpus), "train", 50))
    expected = [t for d in docs for t in (*d.encode(), tok.eos_id)]
    assert packed.tokens.dtype == np.uint16
    assert np.array_equal(np.asarray(packed.tokens), np.array(expected, dtype=np.uint16))
    meta = packed.meta
    assert meta["documents"] == len(docs) and meta["tokens"] == len(expected)
    assert meta["tokenizer_hash"] == tok.content_hash()
    assert meta["eos_between_documents"] is True


def test_cache_reused_then_rebuilt_when_stale(small_corpus, tmp_path):
    cache, logs = tmp_path / "cache", []
    tok = ByteTokenizer()
    first = load_or_build("fineweb-edu", "train", tok, small_corpus, cache, log=logs.append)
    bin_file = next(cache.glob("*.bin"))
    stamp = bin_file.stat().st_mtime_ns
    load_or_build("fineweb-edu", "train", tok, small_corpus, cache, log=logs.append)
    assert bin_file.stat().st_mtime_ns == stamp and logs == []  # reused, silently

    source = small_corpus / "fineweb-edu" / "fineweb-edu-sample10BT-150docs-annotated.csv"
    source.write_bytes(source.read_bytes().replace(b"the", b"THE", 50))
    again = load_or_build("fineweb-edu", "train", tok, small_corpus, cache, log=logs.append)
    assert any("source_sha256 changed" in m for m in logs)
    assert not np.array_equal(np.asarray(again.tokens[:len(first.tokens)]),
                              np.asarray(first.tokens[:len(again.tokens)]))

    sidecar = next(cache.glob("*.json"))
    meta = json.loads(sidecar.read_text())
    meta["tokens"] += 1  # the .bin no longer matches its sidecar
    sidecar.write_text(json.dumps(meta))
    load_or_build("fineweb-edu", "train", tok, small_corpus, cache, log=logs.append)
    assert any("wrong size" in m for m in logs)


def test_other_tokenizer_gets_its_own_cache(small_corpus, tmp_path):
    cache = tmp_path / "cache"
    byte_pack = load_or_build("fineweb-edu", "train", ByteTokenizer(), small_corpus, cache)
    texts = list(split_documents(resolve_dataset("fineweb-edu", small_corpus), "train", 50))
    bpe = train_tokenizer("bpe", texts, 300)
    bpe_pack = load_or_build("fineweb-edu", "train", bpe, small_corpus, cache)
    assert bpe_pack.meta["tokenizer_hash"] == bpe.content_hash()
    assert len(bpe_pack) < len(byte_pack)
    assert len(list(cache.glob("*.bin"))) == 2


def test_train_and_validation_never_share_a_document(data_dir):
    dataset = resolve_dataset("tinystories", data_dir)
    train = set(split_documents(dataset, "train", 50))
    val = set(split_documents(dataset, "val", 50))
    assert train and val and not (train & val)
    assert 0.02 < len(val) / (len(train) + len(val)) < 0.09


def test_sampler_is_a_pure_function_of_seed_and_step():
    tokens = np.arange(10_000, dtype=np.uint16)
    a = train_batch(tokens, 32, 8, seed=1, step=5)
    b = train_batch(tokens, 32, 8, seed=1, step=5)
    c = train_batch(tokens, 32, 8, seed=1, step=6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert np.array_equal(a[1][:, :-1], a[0][:, 1:])  # targets are inputs shifted by one
    halves = [train_batch(tokens, 32, 8, seed=1, step=5, rank=r, world=2)[0] for r in (0, 1)]
    assert np.array_equal(np.concatenate(halves), a[0])  # ranks split one global batch


def test_validation_batches_are_fixed_and_disjoint():
    tokens = np.arange(1000, dtype=np.uint16)
    batches = list(validation_batches(tokens, 16, 4, 3))
    assert len(batches) == 3
    starts = [int(x[i, 0]) for x, _ in batches for i in range(x.shape[0])]
    assert starts == [16 * i for i in range(12)]


def test_unknown_and_missing_data_sets_are_clear(tmp_path):
    with pytest.raises(TinyLMError, match="unknown data set"):
        resolve_dataset("nope")
    with pytest.raises(TinyLMError, match="not found"):
        resolve_dataset("tinystories", tmp_path)
