"""Giving a base checkpoint the ChatML markers: a tokenizer that has them, and a model whose
embedding and output rows were grown to match.

For `bytes` there is nothing to do: the markers are eleven and nine plain bytes, as Blink-1
writes them. A `bpe` or `unigram` tokenizer gets `<|im_start|>` and `<|im_end|>` appended as
special tokens (`tinylm.tokenizers.specials`), and every tensor with a vocabulary axis gets new
rows there.

Which tensors have a vocabulary axis is asked of the family itself, without a name pattern:
the model is built once more with `vocab_size + k`, and the tensors whose shape changed (by k,
on one axis) are the ones to grow. That covers a tied or untied head, a factorized embedding
and any plugin family alike.

New rows are the mean of the existing rows of that tensor (Hewitt 2021, "Initializing New Word
Embeddings for Pretrained Language Models"): zero or random rows can give the new token a logit
far above the others and so an output distribution far from the base model's; the mean row
keeps the new logit at the average of the old ones, so the extended model's predictions over the
old vocabulary stay close to the base model's (Hewitt bounds the KL). With a tied head the
same row serves as input embedding, and the mean embedding is a neutral start for it. SFT then
learns what the markers mean.
"""

from __future__ import annotations

from tinylm.errors import TinyLMError
from tinylm.infer.chatml import MARKERS

INIT_NOTE = "mean of the tensor's existing rows (Hewitt 2021)"


def chat_tokenizer(tokenizer):
    """(tokenizer that encodes each ChatML marker the way SFT trains it, markers it added)."""
    if tokenizer.kind == "bytes":
        return tokenizer, []
    with_specials = getattr(tokenizer, "with_specials", None)
    if with_specials is None:
        raise TinyLMError(f"a {tokenizer.kind} tokenizer cannot take the ChatML markers as "
                          f"special tokens")
    added = [m for m in MARKERS if m not in tokenizer.specials]
    return (with_specials(added) if added else tokenizer), added


def vocab_axes(family: str, model_config: dict, added: int) -> dict[str, int]:
    """Tensor name -> the axis that grows by `added` rows when vocab_size does."""
    from tinylm.models import build_model

    old = {k: tuple(v.shape) for k, v in build_model(family, model_config).state_dict().items()}
    new_config = {**model_config, "vocab_size": model_config["vocab_size"] + added}
    new = {k: tuple(v.shape) for k, v in build_model(family, new_config).state_dict().items()}
    axes = {}
    for name, shape in new.items():
        if shape == old.get(name):
            continue
        diff = [i for i, (a, b) in enumerate(zip(old.get(name, ()), shape)) if a != b]
        if name not in old or len(shape) != len(old[name]) or len(diff) != 1 \
                or shape[diff[0]] - old[name][diff[0]] != added:
            raise TinyLMError(f"cannot grow the vocabulary of a {family} model: tensor {name} "
                              f"changes from {old.get(name)} to {shape}")
        axes[name] = diff[0]
    if not axes:
        raise TinyLMError(f"a {family} model has no tensor sized by vocab_size")
    return axes


def extend_vocab(family: str, model_config: dict, state: dict, added: int
                 ) -> tuple[dict, dict, dict]:
    """(new model config, new state, the note for meta.json) with `added` ids at the end."""
    import torch

    if added == 0:
        return model_config, state, {}
    axes = vocab_axes(family, model_config, added)
    grown = dict(state)
    for name, axis in axes.items():
        old = state[name]
        mean = old.float().mean(dim=axis, keepdim=True).to(old.dtype)
        grown[name] = torch.cat([old, mean.expand(*[added if i == axis else s
                                                    for i, s in enumerate(old.shape)])],
                                dim=axis).contiguous()
    new_config = {**model_config, "vocab_size": model_config["vocab_size"] + added}
    note = {"from": model_config["vocab_size"], "to": new_config["vocab_size"],
            "tensors": sorted(axes), "init": INIT_NOTE}
    return new_config, grown, note
