"""Round trips and the shared interface of the three tokenizer kinds."""

import os
import random

import pytest

from tinylm.data.pack import tokenizer_training_texts
from tinylm.errors import TinyLMError
from tinylm.tokenizers import (BPETokenizer, ByteTokenizer, UnigramTokenizer, load_tokenizer,
                               train_tokenizer)


@pytest.fixture(scope="module")
def stories(data_dir):
    texts = list(tokenizer_training_texts("tinystories", data_dir, max_chars=400_000))
    return texts


@pytest.fixture(scope="module")
def bpe(stories):
    return train_tokenizer("bpe", stories, 500)


@pytest.fixture(scope="module")
def unigram(stories):
    return train_tokenizer("unigram", stories, 192)


def random_byte_strings(count=200, seed=0):
    rng = random.Random(seed)
    yield b""
    yield b"\xff\xfe\x00\x80\xc3"  # invalid UTF-8, NUL, truncated sequence
    yield "héllo wörld “quoted” 日本語 🙂".encode() + b"\xe2\x82"
    for _ in range(count):
        yield bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))


def test_bytes_round_trip_any_bytes():
    tok = ByteTokenizer()
    assert tok.vocab_size == 257 and tok.eos_id == 256
    for data in random_byte_strings():
        ids = tok.encode(data)
        assert ids == list(data)
        assert tok.decode_bytes(ids) == data
    assert tok.decode_bytes([72, 256, 105]) == b"Hi"  # EOS decodes to nothing


def test_bpe_round_trip_text_and_arbitrary_bytes(bpe, stories):
    assert bpe.vocab_size == 500
    for text in stories[:200]:
        assert bpe.decode(bpe.encode(text)) == text
    for data in random_byte_strings():
        assert bpe.decode_bytes(bpe.encode(data)) == data
    assert bpe.decode_bytes(bpe.encode(os.urandom(5000))) is not None


def test_bpe_compresses_and_treats_marker_as_text(bpe, stories):
    text = stories[0]
    assert len(bpe.encode(text)) < 0.6 * len(text.encode())
    ids = bpe.encode("a<|endoftext|>b")
    assert bpe.eos_id not in ids
    assert bpe.decode(ids) == "a<|endoftext|>b"


def test_bpe_batch_equals_single(bpe, stories):
    assert bpe.encode_batch(stories[:50]) == [bpe.encode(t) for t in stories[:50]]


def test_unigram_round_trip_within_coverage(unigram, stories):
    assert unigram.vocab_size == 192
    for text in stories[:200]:
        assert unigram.decode(unigram.encode(text)) == text
    assert unigram.decode(unigram.encode("Hello\n\nworld  x")) == "Hello\n\nworld  x"


def test_unigram_unknown_characters_and_bad_utf8(unigram):
    assert unigram.decode(unigram.encode("a\u4e2db")) == "a\ufffdb"  # unseen CJK -> U+FFFD
    with pytest.raises(TinyLMError, match="UTF-8"):
        unigram.encode(b"\xff\xfe")


@pytest.mark.parametrize("kind", ["bytes", "bpe", "unigram"])
def test_save_load_keeps_ids_and_hash(kind, tmp_path, bpe, unigram, stories):
    tok = {"bytes": ByteTokenizer(), "bpe": bpe, "unigram": unigram}[kind]
    tok.save(tmp_path / "tok.json")
    again = load_tokenizer(tmp_path / "tok.json")
    assert type(again) is type(tok)
    assert again.content_hash() == tok.content_hash()
    for text in stories[:20]:
        assert again.encode(text) == tok.encode(text)


def test_training_is_deterministic(stories):
    a = train_tokenizer("bpe", stories[:300], 400)
    b = train_tokenizer("bpe", stories[:300], 400)
    assert a.content_hash() == b.content_hash()
    assert isinstance(a, BPETokenizer)
    assert isinstance(train_tokenizer("unigram", stories[:300], 100), UnigramTokenizer)


def test_bad_tokenizer_files_are_refused(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(TinyLMError, match="not a tokenizer"):
        load_tokenizer(tmp_path / "x.json")
    (tmp_path / "y.json").write_text('{"format": "other"}')
    with pytest.raises(TinyLMError, match="not a tinylm tokenizer"):
        load_tokenizer(tmp_path / "y.json")
    with pytest.raises(TinyLMError, match="not found"):
        load_tokenizer(tmp_path / "missing.json")
    with pytest.raises(TinyLMError, match="unknown tokenizer kind"):
        train_tokenizer("wordpiece", [], 10)
