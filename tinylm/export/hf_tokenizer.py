"""tinylm tokenizers <-> Hugging Face `tokenizers` files, so `AutoTokenizer.from_pretrained` gives
tinylm's ids offline (and `tinylm import hf` reads a byte-level BPE back).

What each kind becomes (all through the `tokenizers` library, as `tokenizer.json`):
- `bpe` is a `tokenizers` byte-level BPE already: its own JSON is written as it is;
- `bytes` (ids 0..255 = the bytes, 256 = EOS) becomes a byte-level BPE with no merges whose
  vocabulary is the 256 byte symbols in byte order (GPT-2's byte-to-unicode table), so text
  encodes to exactly its UTF-8 bytes, plus `<|endoftext|>` as id 256;
- `unigram` (SentencePiece) becomes a `tokenizers` Unigram model with the same pieces and
  scores: spaces are replaced by U+2581 as SentencePiece escapes them, `\\n` is an added token as
  it is a user-defined symbol there, no dummy prefix (tinylm trains without one).
A literal `<|endoftext|>` in text is text to tinylm, so `tokenizer_config.json` sets
`split_special_tokens` (transformers then encodes it piece by piece, as tinylm does).
"""

from __future__ import annotations

import json

from tinylm.errors import TinyLMError
from tinylm.tokenizers import BPETokenizer, ByteTokenizer, Tokenizer, UnigramTokenizer
from tinylm.tokenizers.bpe import EOS_TOKEN, byte_to_char_table

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


# --------------------------------------------------------------------------- tinylm -> HF

def hf_tokenizer(tokenizer: Tokenizer):
    """A `tokenizers.Tokenizer` giving the same ids as `tokenizer` on text; and its EOS and
    unknown-token strings (unk None where every text encodes)."""
    from tokenizers import Tokenizer as HFTokenizer

    if isinstance(tokenizer, BPETokenizer):
        tok, eos, unk = HFTokenizer.from_str(tokenizer.to_dict()["hf_json"]), EOS_TOKEN, None
    elif isinstance(tokenizer, ByteTokenizer):
        tok, eos, unk = _bytes_as_bpe(), EOS_TOKEN, None
    elif isinstance(tokenizer, UnigramTokenizer):
        tok, eos, unk = _unigram(tokenizer)
    else:
        raise TinyLMError(f"no Hugging Face tokenizer for the {tokenizer.kind!r} kind")
    _add_appended(tok, tokenizer.specials)
    return tok, eos, unk


def _add_appended(tok, specials) -> None:
    """tinylm's appended one-id tokens (the ChatML markers of `tinylm sft`) as added tokens
    with the same ids. They are added as *non-special* tokens: transformers then matches them
    in text even with `split_special_tokens` (which keeps a literal EOS string as text, as
    tinylm does), and tinylm matches its markers in text too."""
    from tokenizers import AddedToken

    for token in specials:
        want = tok.get_vocab_size(with_added_tokens=True)
        tok.add_tokens([AddedToken(token, normalized=False, special=False)])
        if tok.token_to_id(token) != want:
            raise TinyLMError(f"the appended token {token!r} would not keep its id {want} in "
                              f"the Hugging Face tokenizer; not exported")


def _bytes_as_bpe():
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    vocab = {symbol: byte for byte, symbol in enumerate(byte_to_char_table())}
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=[]))
    # no regex split: with no merges it would change nothing, and this keeps the file minimal
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS_TOKEN])  # id 256, tinylm's EOS
    return tok


def _unigram(tokenizer: UnigramTokenizer):
    import sentencepiece as spm
    from tokenizers import AddedToken, decoders, models, normalizers
    from tokenizers import Tokenizer as HFTokenizer

    from tinylm.tokenizers.unigram import EOS_ID, UNK_ID

    sp = spm.SentencePieceProcessor(model_proto=tokenizer._proto)
    pieces = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    tok = HFTokenizer(models.Unigram(pieces, unk_id=UNK_ID, byte_fallback=False))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Replace("\u2581", " ")
    if sp.piece_to_id("\n") != UNK_ID:  # tinylm's one user-defined symbol: always its own
        tok.add_tokens([AddedToken("\n", normalized=False, special=False)])
    eos = sp.id_to_piece(EOS_ID)
    tok.add_special_tokens([AddedToken(eos, special=True)])
    return tok, eos, sp.id_to_piece(UNK_ID)


def tokenizer_files(tokenizer: Tokenizer, context_len: int) -> dict[str, str]:
    """The three files AutoTokenizer reads: name -> text."""
    tok, eos, unk = hf_tokenizer(tokenizer)
    if tok.get_vocab_size(with_added_tokens=True) != tokenizer.vocab_size:
        raise TinyLMError(f"the Hugging Face tokenizer has {tok.get_vocab_size()} ids, tinylm's "
                          f"{tokenizer.vocab_size}; not exported")
    special = {"eos_token": eos, **({"unk_token": unk} if unk else {})}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **special,
              "bos_token": None, "pad_token": None, "add_bos_token": False,
              "add_eos_token": False, "split_special_tokens": True,
              "clean_up_tokenization_spaces": False, "model_max_length": context_len,
              "model_input_names": ["input_ids", "attention_mask"]}
    return {"tokenizer.json": tok.to_str(pretty=True),
            "tokenizer_config.json": json.dumps(config, indent=2),
            "special_tokens_map.json": json.dumps(special, indent=2)}


# --------------------------------------------------------------------------- HF -> tinylm

def tinylm_tokenizer(tokenizer_json: str, eos_token: str | None, where: str) -> Tokenizer:
    """A tinylm tokenizer from a `tokenizer.json`: the byte tokenizer when it is exactly the
    bytes (256 byte symbols in byte order, no merges, EOS at 256, as `export hf` writes it),
    else tinylm's `bpe` for a byte-level BPE whose EOS is `<|endoftext|>`; anything else is
    refused with one line."""
    from tokenizers import Tokenizer as HFTokenizer

    try:
        data = json.loads(tokenizer_json)
        tok = HFTokenizer.from_str(tokenizer_json)
    except Exception as err:  # noqa: BLE001 -- tokenizers raises a bare Exception on a bad file
        raise TinyLMError(f"{where}: unreadable tokenizer.json ({str(err)[:120]})") from None
    model = data.get("model") or {}
    if model.get("type") != "BPE" or not _is_byte_level(data):
        raise TinyLMError(f"{where}: a {model.get('type', '?')} tokenizer without byte-level "
                          f"pre-tokenization; tinylm imports byte-level BPE tokenizers only")
    if eos_token is not None and eos_token != EOS_TOKEN:
        raise TinyLMError(f"{where}: its EOS token is {eos_token!r}; tinylm's bpe tokenizer "
                          f"needs {EOS_TOKEN!r}")
    table = byte_to_char_table()
    vocab = model.get("vocab") or {}
    if not model.get("merges") and len(vocab) == 256 \
            and all(vocab.get(symbol) == byte for byte, symbol in enumerate(table)) \
            and tok.token_to_id(EOS_TOKEN) == 256 and tok.get_vocab_size() == 257:
        return ByteTokenizer()
    try:
        return BPETokenizer(tok)
    except TinyLMError as err:
        raise TinyLMError(f"{where}: {err}") from None


def _is_byte_level(data: dict) -> bool:
    def kinds(part) -> set[str]:
        if not isinstance(part, dict):
            return set()
        inner = part.get("pretokenizers") or part.get("decoders") or []
        return {part.get("type", "")}.union(*(kinds(p) for p in inner))

    return "ByteLevel" in kinds(data.get("pre_tokenizer")) \
        and "ByteLevel" in kinds(data.get("decoder"))
