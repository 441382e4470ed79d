"""The scoring core: log-probabilities of continuations, for any causal LM, in big batches.

Benchmarks talk to the model only through lm-evaluation-harness's three request types
(`lm_eval/api/model.py`), never through family-specific hooks:

    loglikelihood([(context, continuation), ...])   -> [(logprob, is_greedy), ...]
    loglikelihood_rolling([text, ...], stride)      -> [logprob of the whole text, ...]
    generate_until([(context, {"until", "max_gen_toks"}), ...]) -> [text, ...]   (greedy)

A model is anything with `forward(idx (B, T) long) -> logits (B, T, V)` and
`config.context_len`; a tokenizer is a `tinylm.tokenizers.Tokenizer`. That covers the Llama
family today and any later family that keeps the same forward.

Every request becomes one or more `Window`s: a row of at most context_len + 1 token ids whose
inputs are `tokens[:-1]`, whose targets are `tokens[1:]`, and of which only the last `n_scored`
targets count. Windows are de-duplicated, sorted by length (longest first) and packed into
right-padded batches under a token budget; padding sits after every scored position, so a causal
model gives padded rows the same numbers as unpadded ones. Only the scored positions go through
log-softmax (a gather, then logsumexp), so prompt tokens cost a forward pass and nothing more.
For models with the generation engine's KV cache, windows with a long common prefix (ARC's
choices after one question) run that prefix once (`group_by_prefix`); any other model is scored
the plain way, with the same numbers.

Conventions kept from lm-eval, so that scores agree with it:
- an empty context conditions on the prefix token (EOS: tinylm tokenizers have no BOS);
- trailing whitespace of a context moves to the continuation, and the continuation's ids are
  `encode(context + continuation)` minus the ids of `encode(context)`;
- a row longer than the context is truncated from the left (`left truncation`), keeping the
  continuation; callers get a flag per request to count how often that happened;
- rolling scores with stride == context reproduce lm-eval's `get_rolling_token_windows`
  (context_len=1): disjoint windows, the last one given full context.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from tinylm.errors import TinyLMError

DEFAULT_BATCH_TOKENS = 1024         # rows x padded length per forward pass (CPU)
MAX_LOGIT_ELEMENTS = 1 << 26        # (B, T, V) floats per forward pass: 256 MB in fp32


class Window(NamedTuple):
    """`tokens` (n + 1 ids): inputs tokens[:-1], targets tokens[1:]; the last `n_scored` targets
    are scored. `start` is where the window sits in the full sequence (for checks only)."""
    tokens: tuple[int, ...]
    n_scored: int
    start: int = 0


# --------------------------------------------------------------------------- windows

def span_windows(tokens: Sequence[int], first: int, context_len: int,
                 stride: int | None = None) -> list[Window]:
    """Windows that score every target tokens[first:] exactly once.

    Target j is predicted from tokens[:j], cut to the window. The first window reaches as far as
    it can; each next window moves `stride` targets on and scores only those, with the window's
    remaining room (at least context_len - stride + 1 tokens) as left context. stride ==
    context_len gives lm-eval's disjoint rolling windows; stride 1 gives every target a full
    context (min(j, context_len) tokens) at context_len times the cost.
    """
    n, width = len(tokens), int(context_len)
    stride = width if stride is None else int(stride)
    if not 1 <= stride <= width:
        raise TinyLMError(f"stride must be in [1, {width}] (the context), got {stride}")
    if not 1 <= first <= n:
        raise ValueError(f"first scored position {first} outside [1, {n}]")
    windows: list[Window] = []
    scored = first
    end = min(n, max(width + 1, first + stride))
    while scored < n:
        start = max(0, end - width - 1)
        windows.append(Window(tuple(tokens[start:end]), end - scored, start))
        scored, end = end, min(n, end + stride)
    return windows


def rolling_windows(tokens: Sequence[int], prefix_id: int, context_len: int,
                    stride: int | None = None) -> list[Window]:
    """Score all of `tokens`, the first one conditioned on `prefix_id` (EOS)."""
    if not tokens:
        return []
    return span_windows([prefix_id, *tokens], 1, context_len, stride)


def continuation_windows(context: Sequence[int], continuation: Sequence[int],
                         context_len: int) -> list[Window]:
    """Score `continuation` after `context`: one left-truncated window unless the continuation
    alone is longer than the model's context (then rolling windows over it)."""
    if not continuation:
        return []
    if not context:
        raise ValueError("a continuation needs at least one context token (use the prefix)")
    return span_windows([*context, *continuation], len(context), context_len, context_len)


# --------------------------------------------------------------------------- batched scoring

def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def default_batch_tokens(model) -> int:
    """Tokens per forward pass. On a CPU a tiny model's activations should stay in cache: on
    the 2-core test machine (glint-1.3 shape, one thread) 256-2048 tokens ran at ~38K tokens/s
    and 4096 at ~29K; a GPU wants far bigger batches."""
    return DEFAULT_BATCH_TOKENS if _device(model).type == "cpu" else 32 * DEFAULT_BATCH_TOKENS


@torch.inference_mode()
def score_windows(model, windows: Sequence[Window], batch_tokens: int | None = None,
                  share_prefixes: bool = True, need_greedy: bool = True
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Sum of scored log-probs (float64) and 'every scored target is the argmax' per window
    (all False when `need_greedy` is off: one pass over the logits saved).

    Identical windows are scored once. With `share_prefixes` and a model that has a KV cache
    (see `supports_prefix_cache`), windows that start with the same tokens (ARC's choices after
    one question) run that prefix once.
    """
    index: dict[tuple, int] = {}
    slot = np.empty(len(windows), dtype=np.int64)
    for i, w in enumerate(windows):
        slot[i] = index.setdefault((w.tokens, w.n_scored), len(index))
    unique = list(index)
    logprob = np.zeros(len(unique))
    greedy = np.zeros(len(unique), dtype=bool)
    if not unique:
        return logprob[slot], greedy[slot]
    if min(len(t) for t, _ in unique) < 2:
        raise ValueError("a window needs at least one input and one target token")
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 0) or 1)
    budget = max(1, min(int(batch_tokens or default_batch_tokens(model)),
                        MAX_LOGIT_ELEMENTS // vocab))
    device = _device(model)
    groups, singles = (group_by_prefix(unique) if share_prefixes and
                       supports_prefix_cache(model) else ([], list(range(len(unique)))))
    for members, prefix in groups_in_batches(groups, unique, budget):
        lp, ok = _score_group_batch(model, [[unique[m] for m in g] for g in members], prefix,
                                    device, need_greedy)
        rows = np.concatenate([np.asarray(g) for g in members])
        logprob[rows], greedy[rows] = lp, ok
    if singles:
        singles = np.asarray(singles)
        lengths = np.array([len(unique[i][0]) - 1 for i in singles])
        order = singles[np.argsort(-lengths, kind="stable")]
        for rows in _batches([len(unique[i][0]) - 1 for i in order], budget):
            picked = order[rows]
            lp, ok = _score_batch(model, [unique[r] for r in picked], device, need_greedy)
            logprob[picked], greedy[picked] = lp, ok
    return logprob[slot], greedy[slot]


def _batches(lengths: Sequence[int], budget: int):
    """Slices of consecutive rows (longest first) whose count x longest row fits the budget."""
    begin = 0
    while begin < len(lengths):
        rows = max(1, budget // max(1, int(lengths[begin])))
        yield slice(begin, begin + rows)
        begin += rows


def _scored_positions(rows_n: np.ndarray, rows_k: np.ndarray):
    """Flat (row, input position) of every scored prediction; position p predicts p + 1."""
    row_of = np.repeat(np.arange(len(rows_n)), rows_k)
    first = np.cumsum(rows_k) - rows_k
    pos = np.repeat(rows_n - rows_k, rows_k) + (np.arange(len(row_of)) - np.repeat(first, rows_k))
    return row_of, pos, first


def _logprobs_at(logits: torch.Tensor, rows, pos, targets, need_greedy: bool):
    """log p(target) at (rows, pos) of logits (B, T, V), and whether the target is the argmax.
    When most positions are scored (BLiMP, rolling text) the log-normaliser is taken over the
    whole tensor in place; otherwise (long prompts) only the scored rows are copied out."""
    if 2 * len(pos) >= logits.shape[0] * logits.shape[1]:
        lse = torch.logsumexp(logits.float(), dim=-1)[rows, pos]
        lp = logits[rows, pos, targets].float() - lse
        hit = logits.argmax(dim=-1)[rows, pos] == targets if need_greedy else None
    else:
        picked = logits[rows, pos].float()                                     # (M, V)
        lp = picked.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(picked, dim=-1)
        hit = picked.argmax(dim=-1) == targets if need_greedy else None
    return lp, hit


def _sums(lp: torch.Tensor, hit, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-window sums of token log-probs (float64) and all-greedy flags (False if unknown)."""
    sums = np.add.reduceat(lp.double().cpu().numpy(), first)
    if hit is None:
        return sums, np.zeros(len(first), dtype=bool)
    return sums, np.logical_and.reduceat(hit.cpu().numpy(), first)


def _score_batch(model, rows: list[tuple], device, need_greedy: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(tokens) for tokens, _ in rows)
    full = np.zeros((len(rows), width), dtype=np.int64)  # right padding with id 0
    for r, (tokens, _) in enumerate(rows):
        full[r, :len(tokens)] = tokens
    rows_n = np.array([len(t) - 1 for t, _ in rows])
    rows_k = np.array([k for _, k in rows])
    row_of, pos, first = _scored_positions(rows_n, rows_k)
    targets = torch.from_numpy(full[row_of, pos + 1]).to(device)
    logits = model(torch.from_numpy(full[:, :-1]).to(device))  # (B, T, V)
    lp, hit = _logprobs_at(logits, torch.from_numpy(row_of).to(device),
                           torch.from_numpy(pos).to(device), targets, need_greedy)
    return _sums(lp, hit, first)


# --------------------------------------------------------------------------- shared prefixes

MAX_GROUP = 64
MIN_SAVING = 0.7   # share only when a group costs at most 70% of its windows scored alone


def supports_prefix_cache(model) -> bool:
    """True for models with the generation engine's cache protocol: `new_cache(batch, max_len)`
    returning per-layer keys/values as `.k`/`.v` (layers, batch, heads, max_len, head_dim), and
    `forward(idx, cache, pos)`. Anything else is scored without sharing, just as exactly."""
    if not callable(getattr(model, "new_cache", None)):
        return False
    try:
        cache = model.new_cache(2, 3)
        k, v = cache.k, cache.v
    except Exception:  # noqa: BLE001 - any other cache design: no sharing
        return False
    return all(isinstance(t, torch.Tensor) and t.dim() == 5 and t.shape[1] == 2 and
               t.shape[3] == 3 for t in (k, v))


def _lcp(a: tuple, b: tuple) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def group_by_prefix(unique: list[tuple]) -> tuple[list[tuple[list[int], int]], list[int]]:
    """Greedy groups of windows (in token order) sharing the first p tokens of their inputs.

    p leaves every member at least one input of its own; scored positions inside the prefix
    are fine (their logits come from the prefix pass, the same for every member). A group costs
    p + members x (longest input - p) tokens, padding included; a window joins only if that
    grows by no more than the window would cost on its own. ARC's choices after one long
    question share a lot; BLiMP's pairs, which differ early, mostly stay alone.
    """
    order = sorted(range(len(unique)), key=lambda i: unique[i][0])
    groups, singles = [], []
    begin = 0
    while begin < len(order):
        members = [order[begin]]
        longest = len(unique[members[0]][0]) - 1
        prefix, cost = longest - 1, longest
        nxt = begin + 1
        while nxt < len(order) and len(members) < MAX_GROUP:
            cand = unique[order[nxt]][0]
            alone = len(cand) - 1
            shared = min(prefix, alone - 1, _lcp(unique[members[-1]][0], cand))
            grown = max(longest, alone)
            new_cost = shared + (len(members) + 1) * (grown - shared)
            if shared < 2 or new_cost - cost > alone:
                break
            members.append(order[nxt])
            prefix, longest, cost = shared, grown, new_cost
            nxt += 1
        alone = sum(len(unique[m][0]) - 1 for m in members)
        if len(members) > 1 and cost <= MIN_SAVING * alone:
            groups.append((members, prefix))
        else:  # too little to gain for a second forward pass and a cache copy
            singles += members
        begin = nxt
    return groups, singles


def groups_in_batches(groups, unique, budget: int):
    """Groups with equal prefix length, batched so prefix + suffix tokens fit the budget."""
    by_prefix: dict[int, list] = {}
    for members, prefix in groups:
        by_prefix.setdefault(prefix, []).append(members)
    for prefix, members_list in sorted(by_prefix.items()):
        tails = sorted(((max(len(unique[i][0]) - 1 for i in m) - prefix, m)
                        for m in members_list), key=lambda pair: -pair[0])
        batch, rows, longest = [], 0, 0
        for tail, members in tails:
            grown = max(longest, tail)
            if batch and (rows + len(members)) * grown + (len(batch) + 1) * prefix > budget:
                yield batch, prefix
                batch, rows, grown = [], 0, tail
            batch.append(members)
            rows, longest = rows + len(members), grown
        if batch:
            yield batch, prefix


def _score_group_batch(model, groups: list[list[tuple]], prefix: int, device,
                       need_greedy: bool = True):
    """Run each group's prefix once, copy its keys/values to one cache row per member, run the
    members' own tokens after it, and score as `_score_batch` would."""
    members = [w for g in groups for w in g]
    sizes = [len(g) for g in groups]
    owner = np.repeat(np.arange(len(groups)), sizes)
    rows_n = np.array([len(t) - 1 for t, _ in members])
    rows_k = np.array([k for _, k in members])
    full = np.zeros((len(members), int(rows_n.max()) + 1), dtype=np.int64)
    for r, (tokens, _) in enumerate(members):
        full[r, :len(tokens)] = tokens
    firsts = np.cumsum(sizes) - sizes
    heads = torch.from_numpy(full[firsts, :prefix]).to(device)                  # (G, p)
    small = model.new_cache(len(groups), prefix)
    head_logits = model(heads, small, 0)                                         # (G, p, V)
    big = model.new_cache(len(members), full.shape[1] - 1)
    rep = torch.from_numpy(owner).to(device)
    big.k[:, :, :, :prefix] = small.k[:, rep]
    big.v[:, :, :, :prefix] = small.v[:, rep]
    tails = torch.from_numpy(full[:, prefix:-1]).to(device)
    tail_logits = model(tails, big, prefix)                                      # (R, w, V)
    row_of, pos, first = _scored_positions(rows_n, rows_k)
    targets = torch.from_numpy(full[row_of, pos + 1]).to(device)
    lp = torch.empty(len(pos), dtype=torch.float32, device=device)
    hit = torch.zeros(len(pos), dtype=torch.bool, device=device) if need_greedy else None
    for part, logits, rows, shift in ((pos < prefix, head_logits, owner[row_of], 0),
                                      (pos >= prefix, tail_logits, row_of, prefix)):
        if not part.any():
            continue
        sel = torch.from_numpy(np.flatnonzero(part)).to(device)
        part_lp, part_hit = _logprobs_at(logits, torch.from_numpy(rows[part]).to(device),
                                         torch.from_numpy(pos[part] - shift).to(device),
                                         targets[sel], need_greedy)
        lp[sel] = part_lp
        if need_greedy:
            hit[sel] = part_hit
    return _sums(lp, hit, first)


# --------------------------------------------------------------------------- the scorer

class LMScorer:
    """A model and its tokenizer, answering lm-eval's request types."""

    def __init__(self, model, tokenizer, batch_tokens: int | None = None,
                 share_prefixes: bool = True):
        if not hasattr(getattr(model, "config", None), "context_len"):
            raise TinyLMError("the scoring core needs a model with config.context_len")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.context_len = int(model.config.context_len)
        self.prefix_id = int(tokenizer.eos_id)
        self.batch_tokens = batch_tokens
        self.share_prefixes = share_prefixes

    # ------------------------------------------------------------------ tokens

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many strings; each distinct string once (BPE encodes batches in Rust)."""
        distinct = list(dict.fromkeys(texts))
        encoded = dict(zip(distinct, self.tokenizer.encode_batch(distinct)))
        return [list(encoded[t]) for t in texts]

    def tokenize_requests(self, requests: Sequence[tuple[str, str]]
                          ) -> list[tuple[list[int], list[int]]]:
        """(context, continuation) strings -> (context ids, continuation ids), as lm-eval's
        `TemplateLM.loglikelihood` does it (see the module docstring)."""
        moved = []
        for context, continuation in requests:
            spaces = len(context) - len(context.rstrip())
            if spaces:
                context, continuation = context[:-spaces], context[-spaces:] + continuation
            moved.append((context, continuation))
        texts = [c for c, _ in moved if c] + [c + x if c else x for c, x in moved]
        ids = dict(zip(texts, self.encode_batch(texts)))
        out = []
        for context, continuation in moved:
            if not context:
                cont = ids[continuation]
                if cont and cont[0] == self.prefix_id:  # lm-eval's corner case, kept as is
                    out.append((cont[:1], cont[1:]))
                else:
                    out.append(([self.prefix_id], cont))
                continue
            ctx, whole = ids[context], ids[context + continuation]
            out.append((ctx, whole[len(ctx):]))
        return out

    # ------------------------------------------------------------------ request types

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        logprob, greedy, _ = self.loglikelihood_tokens(self.tokenize_requests(requests))
        return [(float(lp), bool(g)) for lp, g in zip(logprob, greedy)]

    def loglikelihood_tokens(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
                             need_greedy: bool = True
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token-level loglikelihood: (logprob, is_greedy, left-truncated) per pair."""
        windows, owner = [], []
        truncated = np.zeros(len(pairs), dtype=bool)
        for i, (context, continuation) in enumerate(pairs):
            truncated[i] = len(context) + len(continuation) > self.context_len + 1
            for w in continuation_windows(context, continuation, self.context_len):
                windows.append(w)
                owner.append(i)
        return (*self._gather(windows, owner, len(pairs), need_greedy), truncated)

    def loglikelihood_rolling(self, texts: Sequence[str], stride: int | None = None
                              ) -> list[float]:
        return [float(x) for x in self.rolling_tokens(self.encode_batch(texts), stride)]

    def rolling_tokens(self, token_lists: Sequence[Sequence[int]], stride: int | None = None
                       ) -> np.ndarray:
        """Total log-prob of each token list, conditioned on the prefix token, scored with
        sliding windows of the model's context moving by `stride` (default: the context)."""
        windows, owner = [], []
        for i, tokens in enumerate(token_lists):
            for w in rolling_windows(tokens, self.prefix_id, self.context_len, stride):
                windows.append(w)
                owner.append(i)
        return self._gather(windows, owner, len(token_lists), False)[0]

    def _gather(self, windows, owner, count, need_greedy) -> tuple[np.ndarray, np.ndarray]:
        logprob, greedy = score_windows(self.model, windows, self.batch_tokens,
                                        self.share_prefixes, need_greedy)
        total = np.zeros(count)
        all_greedy = np.ones(count, dtype=bool)
        owner = np.asarray(owner, dtype=np.int64)
        if len(owner):
            np.add.at(total, owner, logprob)
            np.logical_and.at(all_greedy, owner, greedy)
        return total, all_greedy

    @torch.inference_mode()
    def generate_until(self, requests: Sequence[tuple[str, dict]]) -> list[str]:
        """Greedy continuation of each context until a stop string, EOS or max_gen_toks, through
        the generation engine's decode loop (KV cache when the model has one)."""
        from tinylm.infer.generate import decode_batch
        from tinylm.infer.sampling import SamplingConfig

        greedy, results = SamplingConfig(temperature=0.0), []
        for context, kwargs in requests:
            until = [s for s in (kwargs or {}).get("until") or [] if s]
            budget = int((kwargs or {}).get("max_gen_toks", 256))
            new: list[int] = []

            def reached_stop(row: int, token: int) -> bool:
                new.append(token)
                text = self.tokenizer.decode(new)
                return any(stop in text for stop in until)

            ids = self.tokenizer.encode(context) or [self.prefix_id]
            decode_batch(self.model, [ids], budget, greedy, eos_id=self.prefix_id,
                         on_token=reached_stop)
            text = self.tokenizer.decode(new)
            for stop in until:
                text = text.split(stop)[0]
            results.append(text)
        return results
