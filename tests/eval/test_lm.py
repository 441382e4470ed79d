"""The scoring core: windows cover every token once with as much context as allowed, batched and
prefix-shared scoring equals plain full-context scoring, and requests are tokenized as lm-eval
tokenizes them."""

import random

import numpy as np
import pytest
import torch

from tests.eval.conftest import planted, tiny_llama
from tinylm.eval.lm import (
    LMScorer,
    continuation_windows,
    group_by_prefix,
    rolling_windows,
    score_windows,
    span_windows,
    supports_prefix_cache,
)
from tinylm.tokenizers import ByteTokenizer


def scored_targets(windows):
    """(target index, left context length) of every scored target."""
    out = []
    for w in windows:
        end = w.start + len(w.tokens)            # targets run up to end - 1
        for j in range(end - w.n_scored, end):
            out.append((j, j - w.start))
    return out


@pytest.mark.parametrize("n,width,stride,first", [
    (1, 8, 8, 1), (5, 8, 8, 1), (9, 8, 8, 1), (40, 8, 8, 1), (40, 8, 3, 1), (40, 8, 1, 1),
    (41, 16, 5, 1), (100, 7, 7, 30), (100, 7, 2, 99), (33, 32, 16, 1), (12, 4, 4, 11)])
def test_every_target_scored_once_with_the_context_allowed(n, width, stride, first):
    tokens = list(range(n + 1))
    windows = span_windows(tokens, first, width, stride)
    seen = scored_targets(windows)
    assert sorted(j for j, _ in seen) == list(range(first, n + 1))  # each exactly once
    for w in windows:
        assert 2 <= len(w.tokens) <= width + 1 and w.n_scored >= 1
        assert list(w.tokens) == tokens[w.start:w.start + len(w.tokens)]
    for j, context in seen:
        assert context >= min(j, width - stride + 1)      # at least what the stride leaves
        if stride == 1:
            assert context == min(j, width)               # stride 1: the most the window allows


def test_stride_equal_to_context_reproduces_lm_eval_rolling_windows():
    lm_utils = pytest.importorskip("lm_eval.utils")
    rng = random.Random(0)
    for n, width in [(1, 4), (4, 4), (5, 4), (17, 4), (100, 16), (257, 64)]:
        tokens = [rng.randrange(1000) for _ in range(n)]
        ours = [(list(w.tokens[:-1]), list(w.tokens[-w.n_scored:]))
                for w in rolling_windows(tokens, 9999, width, width)]
        theirs = [lm_utils.make_disjoint_window(x) for x in lm_utils.get_rolling_token_windows(
            token_list=tokens, prefix_token=9999, max_seq_len=width, context_len=1)]
        for (inp, pred), (ctx, cont) in zip(ours, theirs):
            assert pred == cont and inp == (ctx + cont)[:-1][-len(inp):]
            assert len(inp) == len((ctx + cont)[:-1])  # the same input window, not a shorter one
        assert len(ours) == len(theirs)


def manual_logprobs(model, ids: list[int]) -> torch.Tensor:
    """Per-token log-probs of ids[1:] given everything before, in one plain forward."""
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]]))[0]
    return torch.log_softmax(logits.double(), -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


def test_sliding_window_equals_full_context_when_the_text_fits():
    model = tiny_llama()
    scorer = LMScorer(model, ByteTokenizer())
    text = "The cat sat on the mat, twice."          # 30 bytes < context 64
    ids = scorer.encode_batch([text])[0]
    expected = float(manual_logprobs(model, [256, *ids]).sum())
    for stride in (1, 7, 32, 64):
        got = scorer.rolling_tokens([ids], stride)[0]
        assert got == pytest.approx(expected, abs=1e-4)
    assert scorer.loglikelihood_rolling([text])[0] == pytest.approx(expected, abs=1e-4)


def test_long_text_stride_one_gives_every_token_a_full_window():
    model = tiny_llama(context_len=16)
    scorer = LMScorer(model, ByteTokenizer())
    ids = list(b"A longer text than one sixteen-byte window can hold at once.")
    seq = [256, *ids]
    expected = sum(float(manual_logprobs(model, seq[max(0, j - 16):j + 1])[-1])
                   for j in range(1, len(seq)))
    assert scorer.rolling_tokens([ids], stride=1)[0] == pytest.approx(expected, abs=1e-4)


def test_batching_padding_and_prefix_sharing_do_not_change_scores():
    model = tiny_llama(context_len=24)
    assert supports_prefix_cache(model) and not supports_prefix_cache(planted())
    rng = random.Random(1)
    windows = []
    for _ in range(20):  # ARC-like: one context, several continuations; some too long to fit
        context = [rng.randrange(256) for _ in range(rng.randrange(1, 22))]
        for _ in range(rng.randrange(1, 5)):
            continuation = [rng.randrange(256) for _ in range(rng.randrange(1, 8))]
            windows += continuation_windows(context, continuation, 24)
    groups, _ = group_by_prefix(list(dict.fromkeys((w.tokens, w.n_scored) for w in windows)))
    assert len(groups) > 5  # the shared path really runs
    one_by_one = score_windows(model, windows, 1, share_prefixes=False)[0]  # no padding at all
    for share in (False, True):
        for budget in (50, 4096):
            logprob, _ = score_windows(model, windows, budget, share)
            np.testing.assert_allclose(logprob, one_by_one, atol=1e-4)
    plain = score_windows(model, windows, share_prefixes=False)
    shared = score_windows(model, windows, share_prefixes=True)
    assert (plain[1] == shared[1]).all()


def test_requests_are_tokenized_as_lm_eval_does():
    scorer = LMScorer(tiny_llama(), ByteTokenizer())
    (ctx, cont), (ctx2, cont2) = scorer.tokenize_requests([("", " Hi"), ("Q: x\nA: ", "yes")])
    assert ctx == [256] and cont == list(b" Hi")                 # empty context: EOS prefix
    assert ctx2 == list(b"Q: x\nA:") and cont2 == list(b" yes")  # trailing space moves over
    lm_eval_model = pytest.importorskip("lm_eval.api.model")
    from tinylm.eval.lm_eval_adapter import TinyLMEvalLM

    seen = {}
    lm = TinyLMEvalLM(model=tiny_llama(), tokenizer=ByteTokenizer())
    lm._loglikelihood_tokens = lambda reqs, **kw: seen.setdefault("r", reqs) and [(0.0, True)]
    lm_eval_model.TemplateLM.loglikelihood(
        lm, [type("I", (), {"args": ("Q: x\nA: ", "yes")})()], disable_tqdm=True)
    assert (seen["r"][0][1], seen["r"][0][2]) == (ctx2, cont2)


def test_left_truncation_is_counted_and_keeps_the_continuation():
    model = tiny_llama(context_len=16)
    scorer = LMScorer(model, ByteTokenizer())
    context, continuation = list(range(30)), [40, 41, 42]
    logprob, _, truncated = scorer.loglikelihood_tokens([(context, continuation),
                                                         (context[:5], continuation)])
    assert truncated.tolist() == [True, False]
    kept = (context + continuation)[-17:]
    expected = float(manual_logprobs(model, kept)[-3:].sum())
    assert logprob[0] == pytest.approx(expected, abs=1e-4)


def test_planted_preference_through_loglikelihood():
    model = planted(favour=b"a")
    scorer = LMScorer(model, ByteTokenizer())
    (good, greedy), (bad, _) = scorer.loglikelihood([("", " aaa"), ("", " bbb")])
    assert good == pytest.approx(model.logprob(b" aaa"), abs=1e-5) and good > bad
    assert not greedy  # ' ' is not the favoured byte
    assert scorer.loglikelihood([("x", "aa")])[0][1]  # every target is the argmax


def test_generate_until_stops_at_the_stop_string():
    model = planted(favour=b"a", strength=20.0)
    model.bias.data[ord("a")] = 21.0  # 'a' always wins
    scorer = LMScorer(model, ByteTokenizer())
    assert scorer.generate_until([("go", {"until": ["aaa"], "max_gen_toks": 10})]) == [""]
    assert scorer.generate_until([("go", {"max_gen_toks": 4})]) == ["aaaa"]
