"""A tinylm model inside lm-evaluation-harness, and lm-eval task configs for the local data.

    from tinylm.eval.lm_eval_adapter import TinyLMEvalLM, run_lm_eval
    lm = TinyLMEvalLM(pretrained="runs/x/checkpoints/step_00000300")
    results = run_lm_eval(lm, ["tinylm_blimp", "tinylm_arc_easy", "tinylm_wikitext2"])

`TinyLMEvalLM` is an lm-eval `TemplateLM`: lm-eval tokenizes the requests (its own
context/continuation split and empty-context rule) and calls `_loglikelihood_tokens`,
`loglikelihood_rolling` and `generate_until` here. Two engines score the tokens:

- "reference" (default): the algorithm of lm-eval's HFLM, written out for a tinylm model:
  requests sorted longest first, `batch_size` rows right-padded, log-softmax over the whole
  vocabulary, continuation slices picked row by row. It shares no scoring code with tinylm's
  harness, which is what makes the cross-check worth something, and it is what an lm-eval
  user's run costs.
- "tinylm": the same token requests handed to tinylm's scoring core (`lm.py`).

lm-eval cannot reach a hub here, so the task configs in `lm_eval_tasks/` read the local files
(`dataset_path: json` / `text` with `data_files`). Their data paths are written as
@DATA_DIR@; `task_dir()` renders them with the real data dir into the eval cache and returns
the folder to pass as lm-eval's `include_path`. Task names: tinylm_blimp (group of the 67
tinylm_blimp_* paradigms), tinylm_arc_easy, tinylm_arc_challenge, tinylm_wikitext2.

lm-eval is optional (`pip install lm-eval`); importing this module without it raises a
TinyLMError that says so.
"""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F

from tinylm.errors import TinyLMError

try:
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model
except ImportError as err:  # pragma: no cover - depends on the environment
    raise TinyLMError(f"the lm-eval adapter needs lm-evaluation-harness (pip install lm-eval): "
                      f"{err}") from None

ENGINES = ("reference", "tinylm")
TASKS = ("tinylm_blimp", "tinylm_arc_easy", "tinylm_wikitext2")


@register_model("tinylm")
class TinyLMEvalLM(TemplateLM):
    """lm_eval LM for a tinylm checkpoint folder (`pretrained`) or an in-memory model."""

    def __init__(self, pretrained: str | None = None, model=None, tokenizer=None,
                 batch_size: int | str = 64, engine: str = "reference", device: str = "cpu",
                 **_ignored):
        super().__init__()
        if pretrained is not None:
            from tinylm.train.checkpoint import load_checkpoint

            ckpt = load_checkpoint(pretrained)
            model, tokenizer = ckpt.build_model(device), ckpt.tokenizer
        if model is None or tokenizer is None:
            raise TinyLMError("TinyLMEvalLM needs `pretrained` (a checkpoint folder) or both "
                              "`model` and `tokenizer`")
        if engine not in ENGINES:
            raise TinyLMError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.model, self.tinylm_tokenizer = model.eval(), tokenizer
        self.batch_size = 64 if str(batch_size) == "auto" else int(batch_size)
        self.engine = engine
        self._scorer = None

    # ------------------------------------------------------------------ what TemplateLM needs

    @property
    def eot_token_id(self) -> int:
        return self.tinylm_tokenizer.eos_id

    @property
    def max_length(self) -> int:
        return int(self.model.config.context_len)

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def tokenizer_name(self) -> str:
        return f"tinylm-{self.tinylm_tokenizer.kind}-{self.tinylm_tokenizer.content_hash()[:12]}"

    def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> list[int]:
        return self.tinylm_tokenizer.encode(string)

    def tok_decode(self, tokens, **kwargs) -> str:
        return self.tinylm_tokenizer.decode(tokens)

    @property
    def scorer(self):
        if self._scorer is None:
            from tinylm.eval.lm import LMScorer

            self._scorer = LMScorer(self.model, self.tinylm_tokenizer)
        return self._scorer

    # ------------------------------------------------------------------ request types

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None,
                              **kwargs) -> list[tuple[float, bool]]:
        pairs = [(list(ctx), list(cont)) for _, ctx, cont in requests]
        if self.engine == "tinylm":
            logprob, greedy, _ = self.scorer.loglikelihood_tokens(pairs)
            results = [(float(lp), bool(g)) for lp, g in zip(logprob, greedy)]
        else:
            results = self._reference(pairs, override_bs or self.batch_size)
        for (key, _, _), result in zip(requests, results):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    @torch.inference_mode()
    def _reference(self, pairs, batch_size: int) -> list[tuple[float, bool]]:
        """HFLM's way: longest first, fixed-size right-padded batches, full log-softmax.

        HFLM refuses a continuation longer than the context; those few (a byte model's long
        BLiMP sentence) are scored by tinylm's core instead, with rolling windows."""
        width = self.max_length
        results: list = [None] * len(pairs)
        too_long = [i for i, (_, cont) in enumerate(pairs) if len(cont) > width]
        if too_long:
            logprob, greedy, _ = self.scorer.loglikelihood_tokens([pairs[i] for i in too_long])
            for i, lp, g in zip(too_long, logprob, greedy):
                results[i] = (float(lp), bool(g))
        order = sorted((i for i in range(len(pairs)) if results[i] is None),
                       key=lambda i: (-len(pairs[i][0]) - len(pairs[i][1]),
                                      tuple(pairs[i][0] + pairs[i][1])))
        for begin in range(0, len(order), batch_size):
            chunk = order[begin:begin + batch_size]
            inputs = [(pairs[i][0] + pairs[i][1])[-(width + 1):][:-1] for i in chunk]
            longest = max(len(x) for x in inputs)
            batch = torch.zeros(len(chunk), longest, dtype=torch.long)
            for row, x in enumerate(inputs):
                batch[row, :len(x)] = torch.tensor(x, dtype=torch.long)
            logprobs = F.log_softmax(self.model(batch.to(self.device)).float(), dim=-1)
            for row, i in enumerate(chunk):
                cont = pairs[i][1]
                end = len(inputs[row])
                picked = logprobs[row, end - len(cont):end]                 # (len(cont), V)
                target = torch.tensor(cont, dtype=torch.long, device=picked.device)
                greedy = bool((picked.argmax(dim=-1) == target).all())
                results[i] = (float(picked.gather(1, target[:, None]).sum()), greedy)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """lm-eval's rolling windows (context_len=1: disjoint windows, the last one with full
        context), scored as loglikelihood token requests."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        windows, owner = [], []
        for i, (text,) in enumerate(req.args for req in requests):
            for context, continuation in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, context, continuation))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (logprob, _) in zip(owner, self._loglikelihood_tokens(windows)):
            totals[i] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", (req.args[0],), total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        return self.scorer.generate_until([req.args for req in requests])


# --------------------------------------------------------------------------- task configs

def task_dir(data_dir=None, out: Path | None = None) -> Path:
    """Render the task configs with the data dir filled in; returns lm-eval's include_path."""
    from tinylm.data.sources import resolve_data_dir
    from tinylm.eval.results import default_cache_dir
    from tinylm.io import write_text_atomic

    data_dir = resolve_data_dir(data_dir)
    source = resources.files("tinylm.eval") / "lm_eval_tasks"
    names = sorted(p.name for p in source.iterdir() if p.name.endswith((".yaml", "_yaml", ".py")))
    texts = {name: (source / name).read_text(encoding="utf-8") for name in names}
    digest = hashlib.sha256(repr((str(data_dir), sorted(texts.items()))).encode()).hexdigest()
    out = Path(out) if out else default_cache_dir() / "lm_eval_tasks" / digest[:16]
    for name, text in texts.items():
        target = out / name
        rendered = text.replace("@DATA_DIR@", data_dir.as_posix())
        if not target.is_file() or target.read_text(encoding="utf-8") != rendered:
            write_text_atomic(target, rendered)
    return out


def run_lm_eval(lm, tasks=TASKS, limit: int | None = None, data_dir=None,
                num_fewshot: int | None = None, log_samples: bool = False, **kwargs) -> dict:
    """lm_eval.simple_evaluate on the local task configs only (no hub, no built-in tasks)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(task_dir(data_dir)), include_defaults=False)
    return simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit,
                           num_fewshot=num_fewshot, log_samples=log_samples, bootstrap_iters=0,
                           **kwargs)
