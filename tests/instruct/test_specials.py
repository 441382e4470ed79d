"""ChatML markers as special tokens of bpe and unigram tokenizers (tokenizers/specials.py)."""

from __future__ import annotations

import pytest

from tinylm.infer.chatml import IM_END, IM_START, render
from tinylm.instruct.vocab import chat_tokenizer
from tinylm.tokenizers import ByteTokenizer, tokenizer_from_dict, train_tokenizer
from tinylm.tokenizers.base import FORMAT

CHAT = render([{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi!"}],
              add_generation_prompt=True)


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def trained(request):
    texts = [f"hello world {i}, hi there! user assistant <| |> im_start" for i in range(80)]
    return train_tokenizer(request.param, texts, 300 if request.param == "bpe" else 40)


def test_markers_are_single_new_ids_and_round_trip(trained):
    tok, added = chat_tokenizer(trained)
    assert added == [IM_START, IM_END]
    assert tok.vocab_size == trained.vocab_size + 2
    assert tok.encode(IM_START) == [trained.vocab_size]
    assert tok.encode(IM_END) == [trained.vocab_size + 1]
    ids = tok.encode(CHAT)
    assert ids.count(trained.vocab_size) == 3 and ids.count(trained.vocab_size + 1) == 2
    assert tok.decode(ids) == CHAT
    assert tok.encode(CHAT.encode()) == ids           # bytes in, same ids
    assert tok.encode_batch([CHAT, "plain"]) == [ids, tok.encode("plain")]
    # text between markers is encoded as the base tokenizer encodes it
    assert tok.encode("hello world") == trained.encode("hello world")


def test_old_tokenizer_files_load_with_the_same_hash_and_specials_persist(trained):
    plain = {"format": FORMAT, "kind": trained.kind, **trained.to_dict()}
    assert "specials" not in plain
    assert tokenizer_from_dict(plain).content_hash() == trained.content_hash()
    tok, _ = chat_tokenizer(trained)
    again = tokenizer_from_dict({"format": FORMAT, "kind": tok.kind, **tok.to_dict()})
    assert again.specials == (IM_START, IM_END) and again.encode(CHAT) == tok.encode(CHAT)
    assert again.content_hash() != trained.content_hash()
    assert chat_tokenizer(again) == (again, [])  # nothing added twice


def test_bytes_keeps_markers_as_plain_bytes():
    tok, added = chat_tokenizer(ByteTokenizer())
    assert added == [] and tok.encode(IM_END) == list(IM_END.encode())
