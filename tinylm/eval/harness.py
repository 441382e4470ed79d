"""Running benchmarks: isolation, timeouts, caching, and the composite score.

    evaluate_checkpoint(path, benches, settings, data_dir, cache_dir, limit=..., isolate=True)
    evaluate_model(model, tokenizer, model_id, benches, settings, limit, cache_dir)
        -> {benchmark: result}        (a result is the JSON document described in results.py)
    summary(results, arc_metric)     -> flat metrics with the composite (lower is better)
    report(results, model, ...)      -> the one JSON document `tinylm eval` writes

Isolation. With `isolate=True` each benchmark runs in a child process, and the parent waits for
its answer at most `timeout` seconds: a benchmark that hangs is killed and reported as
"timeout", one that dies as "crashed", one that raises as "error", and the others still run.
Children come from a fork server that has imported torch once, so a child starts in
milliseconds rather than the seconds a fresh interpreter needs, and is forked from a process
that has never run a torch kernel (forking after OpenMP has started is unsafe). A checkpoint is
loaded (and its hashes checked) by each child; an in-memory model is pickled to it.

Parallelism. `jobs` children run at once (default: one per core), each with cores / jobs torch
threads: on the shared 2-core test machine two one-thread processes beat one two-thread
process by far (OpenMP threads stall whenever another program takes a core). Benchmarks that
can split (BLiMP by paradigm, WikiText-2 by article: `Benchmark.shards`) run as several
children, longest first, so the biggest benchmark does not set the wall time alone; their parts
are merged before caching. `timeout` applies to each child.

Caching. Before anything runs, each benchmark's cache file is looked up (see results.py for the
key); a hit is returned as is, with "cached": true. So a checkpoint scored during training, by
`tinylm eval`, or by an earlier tournament, is never scored again.

The composite is the model cards' score: mean(WikiText-2 CE loss, 1 - BLiMP acc,
1 - ARC-Easy acc), lower is better. Which ARC metric feeds it is `arc_metric`; the shot count is
the ARC result's own setting; both are recorded next to the composite.
"""

from __future__ import annotations

import hashlib
import importlib.util
import multiprocessing
import os
import sys
import time
import traceback
from pathlib import Path

from tinylm.errors import TinyLMError
from tinylm.eval.lm import LMScorer
from tinylm.eval.results import (
    RESULT_FORMAT,
    ModelInfo,
    cache_path,
    checkpoint_info,
    data_sha256,
    default_cache_dir,
    model_info,
    now,
    read_result,
    write_json,
)
from tinylm.eval.settings import (ARC_METRICS, COMPOSITE_BENCHES, DEFAULT_BENCHES,  # noqa: F401
                                  DEFAULT_TIMEOUT, EvalSettings)
from tinylm.eval.tasks import BENCHMARKS, get_benchmark

HARNESS_VERSION = "1.0"
REPORT_FORMAT = "tinylm-eval"


# --------------------------------------------------------------------------- settings

def parse_benches(text: str | list[str] | tuple[str, ...]) -> list[str]:
    names = [b.strip() for b in (text.split(",") if isinstance(text, str) else text)
             if b.strip()]
    if not names:
        raise TinyLMError("no benchmark named")
    for name in names:
        get_benchmark(name)
    return list(dict.fromkeys(names))


def check_request(benches, limit=None, data_dir=None, *, timeout: float | None = None,
                  threads: int | None = None, jobs: int | None = None,
                  batch_tokens: int | None = None) -> list[str]:
    """Refuse, before any work, what would score nothing or the wrong thing: a limit below 1
    (a negative one would slice off the end), a benchmark whose data is not there, and
    counts or times that are not positive. Returns the benchmark names."""
    import math

    from tinylm.data.sources import resolve_data_dir_why

    names = parse_benches(benches)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise TinyLMError(f"--limit must be a whole number >= 1, got {limit}")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise TinyLMError(f"--timeout must be a number of seconds > 0, got {timeout}")
    for flag, value, low in (("--threads", threads, 0), ("--jobs", jobs, 0),
                             ("--batch-tokens", batch_tokens, 1)):
        if value is not None and not low <= value <= 1 << 24:
            raise TinyLMError(f"{flag} must be in [{low}, {1 << 24}], got {value}")
    folder, why = resolve_data_dir_why(data_dir)
    for name in names:
        missing = get_benchmark(name).missing_files(folder)
        if missing:
            raise TinyLMError(f"no data for benchmark {name}: {missing[0]} not found in the "
                              f"data dir {folder} ({why}); pass --data-dir or set "
                              f"$TINYLM_DATA")
    return names


def bench_settings(bench: str, limit: int | None = None, shots: int = 0, seed: int = 1234,
                   stride: int | None = None, mode: str = "document", **more) -> dict:
    """The settings of one benchmark as a flat dict (its cache-relevant fields plus limit)."""
    settings = EvalSettings.from_dict({"shots": shots, "fewshot_seed": seed,
                                       "stride": stride or 0, "wikitext_mode": mode, **more})
    return {"limit": limit, **settings.subset(get_benchmark(bench).settings)}


def settings_for(settings, bench: str, limit: int | None = None
                 ) -> tuple[EvalSettings, int | None]:
    """Accepts EvalSettings, a flat dict, or {bench: flat dict} (from `bench_settings`)."""
    if settings is None:
        return EvalSettings(), limit
    if isinstance(settings, EvalSettings):
        return settings, limit
    data = dict(settings)
    if isinstance(data.get(bench), dict):
        data = dict(data[bench])
    elif any(isinstance(v, dict) for v in data.values()):
        data = {}
    limit = data.pop("limit", limit)
    if limit is not None and int(limit) < 1:
        raise TinyLMError(f"limit must be >= 1, got {limit}")
    return EvalSettings.from_dict(data), (None if limit is None else int(limit))


# --------------------------------------------------------------------------- public API

def evaluate_checkpoint(path, benches=DEFAULT_BENCHES, settings=None, data_dir=None,
                        cache_dir=None, *, limit: int | None = None, isolate: bool = True,
                        timeout: float = DEFAULT_TIMEOUT, threads: int = 0,
                        batch_tokens: int | None = None, use_cache: bool = True,
                        score: bool = True, jobs: int = 0, log=None) -> dict:
    """Score a checkpoint folder. Only meta.json is read here; the weights are loaded where the
    scoring happens (each child, with `isolate`), and not at all when everything is cached.
    With `score=False` nothing runs: cache misses come back with status "not_scored"."""
    path = Path(path)
    info = checkpoint_info(path)
    return _evaluate(("checkpoint", str(path)), info, benches, settings, data_dir, cache_dir,
                     limit, isolate, timeout, threads, batch_tokens, use_cache, log, score, jobs)


def evaluate_model(model, tokenizer, model_id: str | None = None, benches=DEFAULT_BENCHES,
                   settings=None, limit: int | None = None, cache_dir=None, data_dir=None, *,
                   isolate: bool = False, timeout: float = DEFAULT_TIMEOUT, threads: int = 0,
                   batch_tokens: int | None = None, use_cache: bool = True, jobs: int = 0,
                   log=None) -> dict:
    """Score an in-memory model (e.g. a merged state dict loaded into a model) and tokenizer.
    It is hashed like a checkpoint, so its results are cached like one."""
    info = model_info(model, tokenizer, model_id)
    return _evaluate(("model", model, tokenizer), info, benches, settings, data_dir, cache_dir,
                     limit, isolate, timeout, threads, batch_tokens, use_cache, log, True, jobs)


def _evaluate(source, info: ModelInfo, benches, settings, data_dir, cache_dir, limit, isolate,
              timeout, threads, batch_tokens, use_cache, log, score, jobs) -> dict:
    from tinylm.data.sources import resolve_data_dir

    data_dir = resolve_data_dir(data_dir)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    names = parse_benches(benches)
    results, todo = {}, []
    for name in names:  # plan: what is skipped, cached, or to be scored
        job = _plan(name, info, settings, limit, data_dir, cache_dir, use_cache)
        if "result" in job:
            results[name] = job["result"]
            _log(log, name, job["result"])
        elif not score:
            results[name] = {**job["head"], "status": "not_scored", "cached": False,
                             "error": "no cached result for these settings"}
        else:
            todo.append(job)
    if isolate:
        jobs = max(1, jobs or available_cores())
        todo = [part for job in todo for part in _shards(job, jobs)]
        finished = _run_children(source, todo, data_dir, timeout, threads, batch_tokens, jobs)
    else:
        local = _LocalScorer(source, threads, batch_tokens)
        finished = ((job, *_timed(local.run, job, data_dir)) for job in todo)
    for job, status, payload, (started, ended, busy) in _merged(finished):
        result = {**job["head"], "status": status, "created": now(),
                  "wall_seconds": round(ended - started, 3),
                  "process_seconds": round(busy, 3), "cached": False}
        result["scores" if status == "ok" else "error"] = payload
        if status == "ok":
            write_json(job["cache_file"], {k: v for k, v in result.items() if k != "cached"})
        results[job["name"]] = result
        _log(log, job["name"], result)
    return {name: results[name] for name in names}


def _shards(job: dict, jobs: int) -> list[dict]:
    """A shardable benchmark becomes independent jobs (2 per parallel process, so the longest
    benchmark does not decide the wall time alone); others stay whole."""
    count = min(get_benchmark(job["name"]).shards, 2 * jobs) if jobs > 1 else 1
    if count <= 1:
        return [job]
    return [{**job, "shard": (i, count)} for i in range(count)]


def _merged(finished):
    """Shard results -> one result per benchmark: the first failure wins; times become
    (first start, last end, seconds summed over the shard processes)."""
    parts: dict[str, list] = {}
    for job, status, payload, (started, ended) in finished:
        if job.get("shard") is None:
            yield job, status, payload, (started, ended, ended - started)
            continue
        index, count = job["shard"]
        parts.setdefault(job["name"], []).append((index, status, payload, (started, ended)))
        done = parts[job["name"]]
        if len(done) < count:
            continue
        done.sort(key=lambda part: part[0])
        total = (min(p[3][0] for p in done), max(p[3][1] for p in done),
                 sum(p[3][1] - p[3][0] for p in done))
        failed = [part for part in done if part[1] != "ok"]
        if failed:
            i, status, payload, _ = failed[0]
            yield job, status, f"shard {i + 1} of {count}: {payload}", total
            continue
        try:
            scores = get_benchmark(job["name"]).merge([part[2] for part in done],
                                                       job["settings"])
        except Exception as err:  # noqa: BLE001 - reported like a benchmark's own error
            yield job, "error", f"merging shards: {type(err).__name__}: {err}", total
            continue
        yield job, "ok", scores, total


def _plan(name, info, settings, limit, data_dir, cache_dir, use_cache) -> dict:
    bench = get_benchmark(name)
    bench_settings_, bench_limit = settings_for(settings, name, limit)
    head = {"format": RESULT_FORMAT, "harness_version": HARNESS_VERSION, "benchmark": name,
            "benchmark_version": bench.version, "model": info.to_dict(),
            "settings": bench_settings_.subset(bench.settings), "limit": bench_limit}
    missing = bench.missing_files(data_dir, bench_settings_)
    if missing:
        return {"result": {**head, "status": "skipped", "cached": False, "error":
                           f"data not found: {', '.join(str(m) for m in missing)}"}}
    data = data_sha256(bench.data_files(data_dir, bench_settings_), data_dir)
    head.update(data_sha256=data["combined"], data_files=data["files"])
    identity = {k: head[k] for k in ("benchmark", "benchmark_version", "harness_version",
                                     "data_sha256", "settings", "limit")}
    file = cache_path(cache_dir, info, name, identity)
    cached = read_result(file) if use_cache else None
    if cached is not None:
        return {"result": {**cached, "cached": True}}
    return {"name": name, "head": head, "cache_file": file, "settings": bench_settings_,
            "limit": bench_limit, "shard": None}


def _timed(run, job, data_dir):
    started = time.perf_counter()
    status, payload = run(job["name"], job["settings"], job["limit"], data_dir)
    return status, payload, (started, time.perf_counter())


def _log(log, name: str, result: dict) -> None:
    if log is None:
        return
    if result["status"] == "ok":
        how = "cached" if result.get("cached") else f"{result['wall_seconds']:.1f}s"
        log(f"  {name}: ok ({how})")
    else:
        log(f"  {name}: {result['status']}: {str(result.get('error', '')).splitlines()[0]}")


# --------------------------------------------------------------------------- in this process

def build_scorer(source, batch_tokens: int | None = None) -> LMScorer:
    if source[0] == "checkpoint":
        from tinylm.train.checkpoint import load_checkpoint

        ckpt = load_checkpoint(source[1])
        return LMScorer(ckpt.build_model(), ckpt.tokenizer, batch_tokens)
    _, model, tokenizer = source
    if isinstance(tokenizer, dict):  # as sent to a child: the tokenizer's JSON form
        from tinylm.tokenizers import tokenizer_from_dict

        tokenizer = tokenizer_from_dict(tokenizer)
    return LMScorer(model, tokenizer, batch_tokens)


class _LocalScorer:
    """Scores benchmarks in this process, loading the model at most once."""

    def __init__(self, source, threads: int, batch_tokens: int):
        self.source, self.threads, self.batch_tokens = source, threads, batch_tokens
        self.scorer = None

    def run(self, name, settings, limit, data_dir) -> tuple[str, object]:
        try:
            if self.scorer is None:
                if self.threads:
                    import torch

                    torch.set_num_threads(self.threads)
                self.scorer = build_scorer(self.source, self.batch_tokens)
            return "ok", get_benchmark(name).run(self.scorer, settings, limit, data_dir)
        except Exception as err:  # noqa: BLE001 - reported in the result, like a child's
            return "error", f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=6)}"


# --------------------------------------------------------------------------- in a child

_CONTEXT = None


def _mp_context():
    """A fork server preloaded with torch where the platform has one, else spawn."""
    global _CONTEXT
    if _CONTEXT is None:
        if "forkserver" in multiprocessing.get_all_start_methods():
            _CONTEXT = multiprocessing.get_context("forkserver")
            _CONTEXT.set_forkserver_preload(["torch", "tinylm.eval.harness"])
        else:
            _CONTEXT = multiprocessing.get_context("spawn")
    return _CONTEXT


def _plugin_files() -> list[str]:
    """Source files of benchmarks registered from outside tinylm, for children to re-import."""
    package = Path(__file__).resolve().parent
    return sorted({b.source_file for b in BENCHMARKS.values() if b.source_file
                   and not Path(b.source_file).resolve().is_relative_to(package)})


def _load_plugin(file: str) -> None:
    name = "_tinylm_eval_plugin_" + hashlib.sha256(file.encode()).hexdigest()[:12]
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def _child_main(conn, source, name, settings: dict, limit, data_dir: str, shard, threads: int,
                batch_tokens: int, plugins: list[str]) -> None:
    from tinylm.procs import die_with_parent

    die_with_parent()  # a benchmark process never outlives the one that started it
    try:
        import torch

        if threads:
            torch.set_num_threads(threads)
        for file in plugins:
            _load_plugin(file)
        scorer = build_scorer(source, batch_tokens)
        settings = EvalSettings.from_dict(settings)
        bench = get_benchmark(name)
        if shard is None:
            scores = bench.run(scorer, settings, limit, Path(data_dir))
        else:
            scores = bench.run(scorer, settings, limit, Path(data_dir), shard=tuple(shard))
        conn.send(("ok", scores))
    except BaseException as err:  # noqa: BLE001 - the parent reports it and carries on
        conn.send(("error", f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=6)}"))
    finally:
        conn.close()


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run_children(source, todo: list[dict], data_dir: Path, timeout: float, threads: int,
                  batch_tokens, jobs: int):
    """Run each job in its own child, `jobs` at a time; yield (job, status, payload,
    (started, ended))
    as they finish. The parent only waits on pipes, so a hung child costs nothing but its
    timeout."""
    from multiprocessing.connection import wait

    if not todo:
        return
    jobs = max(1, min(jobs or available_cores(), len(todo)))
    threads = threads or max(1, available_cores() // jobs)
    todo = sorted(todo, key=lambda job: -get_benchmark(job["name"]).cost / (
        job["shard"][1] if job.get("shard") else 1))  # longest first: a shorter makespan
    pending, running = list(todo), {}
    while pending or running:
        while pending and len(running) < jobs:
            job = pending.pop(0)
            started = time.perf_counter()
            child, conn, error = _start_child(source, job, data_dir, threads, batch_tokens)
            if error:
                yield job, "error", error, (started, started)
                continue
            running[conn] = (job, child, started)
        if not running:
            continue
        soonest = min(started + timeout for _, _, started in running.values())
        for conn in wait(list(running), max(0.0, soonest - time.perf_counter())):
            job, child, started = running.pop(conn)
            yield (job, *_collect(child, conn), (started, time.perf_counter()))
        for conn, (job, child, started) in list(running.items()):
            if time.perf_counter() - started >= timeout:
                running.pop(conn)
                child.kill()
                child.join()
                conn.close()
                message = f"no result after {timeout:g}s; the benchmark process was killed"
                yield job, "timeout", message, (started, time.perf_counter())


def _start_child(source, job: dict, data_dir: Path, threads: int, batch_tokens):
    context = _mp_context()
    if source[0] == "model" and not isinstance(source[2], dict):
        from tinylm.tokenizers.base import FORMAT

        tokenizer = source[2]
        source = ("model", source[1], {"format": FORMAT, "kind": tokenizer.kind,
                                       **tokenizer.to_dict()})
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, daemon=True, args=(
        send, source, job["name"], job["settings"].to_dict(), job["limit"], str(data_dir),
        job.get("shard"), threads, batch_tokens, _plugin_files()))
    try:
        child.start()
    except Exception as err:  # noqa: BLE001 - e.g. a model that cannot be pickled
        receive.close()
        return None, None, f"cannot start the benchmark process: {type(err).__name__}: {err}"
    finally:
        send.close()
    return child, receive, None


def _collect(child, conn) -> tuple[str, object]:
    message = None
    try:
        message = conn.recv()
    except (EOFError, OSError):
        pass
    finally:
        conn.close()
    child.join(30)
    if child.is_alive():
        child.kill()
        child.join()
    if message is None:
        return "crashed", (f"the benchmark process died without a result (exit code "
                           f"{child.exitcode})")
    return message


# --------------------------------------------------------------------------- summaries

def summary(results: dict, arc_metric: str | None = None) -> dict:
    """Flat metrics (leaderboards, the tournament), with the composite when its three inputs
    are there. Keys: composite, wikitext2_ce, wikitext2_bpb, wikitext2_byte_ppl,
    wikitext2_word_ppl, blimp_acc, blimp_ties, arc_{easy,challenge}_{acc,acc_norm,acc_bytes};
    each metric with a standard error also has KEY_se (wikitext2_ce_se, wikitext2_bpb_se,
    blimp_acc_se, arc_easy_acc_se, ..., composite_se: see tinylm.eval.stats), and `split` is
    the item split when every scored benchmark used the same one."""
    from tinylm.eval.stats import composite_se

    arc_metric = arc_metric or "acc"
    if arc_metric not in ARC_METRICS:
        raise TinyLMError(f"unknown ARC metric {arc_metric!r}; use one of "
                          f"{', '.join(ARC_METRICS)}")
    ok = {b: r["scores"] for b, r in results.items() if r.get("status") == "ok"}
    flat: dict = {}

    def put(key: str, scores: dict, name: str) -> None:
        flat[key] = scores[name]
        if scores.get(f"{name}_se") is not None:
            flat[f"{key}_se"] = scores[f"{name}_se"]
    if "wikitext2" in ok:
        w = ok["wikitext2"]
        put("wikitext2_ce", w, "ce_loss")
        put("wikitext2_bpb", w, "bits_per_byte")
        flat.update(wikitext2_byte_ppl=w["byte_perplexity"],
                    wikitext2_word_ppl=w["word_perplexity"])
    if "blimp" in ok:
        put("blimp_acc", ok["blimp"], "acc")
        flat["blimp_ties"] = ok["blimp"]["ties"]
    for arc in ("arc_easy", "arc_challenge"):
        if arc in ok:
            for metric in ARC_METRICS:
                put(f"{arc}_{metric}", ok[arc], metric)
    if all(b in ok for b in COMPOSITE_BENCHES):
        flat["composite"] = composite(flat["wikitext2_ce"], flat["blimp_acc"],
                                      flat[f"arc_easy_{arc_metric}"])
        se = composite_se(flat.get("wikitext2_ce_se"), flat.get("blimp_acc_se"),
                          flat.get(f"arc_easy_{arc_metric}_se"))
        if se is not None:
            flat["composite_se"] = se
        flat["arc_metric"] = arc_metric
        flat["arc_shots"] = ok["arc_easy"].get("shots", 0)
    if "gsm8k_chat" in ok:  # the instruct metric (tasks/gsm8k_chat.py)
        for name in ("ce_loss", "bits_per_byte", "ended", "format", "acc"):
            put(f"gsm8k_chat_{'ce' if name == 'ce_loss' else name}", ok["gsm8k_chat"], name)
        if "composite" in flat:
            flat.update(instruct_composite(flat))
    splits = {(r.get("settings") or {}).get("split") for b, r in results.items() if b in ok}
    if len(splits) == 1 and None not in splits:
        flat["split"] = splits.pop()
    return flat


def instruct_composite(flat: dict) -> dict:
    """The instruct tournament's score: mean(WikiText-2 CE, 1 - BLiMP, 1 - ARC-Easy, GSM8K-chat
    answer CE, 1 - GSM8K-chat turns ended with <|im_end|>), lower is better: the base
    composite's three terms, so an instruct model may not forget the language it knew, plus
    the two terms SFT is for. Its se treats the five as independent."""
    import math

    arc = flat.get("arc_metric", "acc")
    terms = [(flat["wikitext2_ce"], flat.get("wikitext2_ce_se")),
             (1 - flat["blimp_acc"], flat.get("blimp_acc_se")),
             (1 - flat[f"arc_easy_{arc}"], flat.get(f"arc_easy_{arc}_se")),
             (flat["gsm8k_chat_ce"], flat.get("gsm8k_chat_ce_se")),
             (1 - flat["gsm8k_chat_ended"], flat.get("gsm8k_chat_ended_se"))]
    out = {"instruct_composite": sum(v for v, _ in terms) / len(terms)}
    if all(se is not None for _, se in terms):
        out["instruct_composite_se"] = math.sqrt(sum(se * se for _, se in terms)) / len(terms)
    return out


def composite(wikitext2_ce: float, blimp_acc: float, arc_easy: float) -> float:
    """mean(WikiText-2 CE, 1 - BLiMP acc, 1 - ARC-Easy), lower is better (the model cards)."""
    return (wikitext2_ce + (1.0 - blimp_acc) + (1.0 - arc_easy)) / 3.0


def report(results: dict, model: ModelInfo | dict, settings: EvalSettings | None = None,
           limit: int | None = None, wall_seconds: float | None = None) -> dict:
    """The document `tinylm eval` writes: every benchmark's result plus the summary."""
    settings = settings or EvalSettings()
    failed = {b: r["status"] for b, r in results.items() if r.get("status") != "ok"}
    return {"format": REPORT_FORMAT, "harness_version": HARNESS_VERSION, "created": now(),
            "model": model.to_dict() if isinstance(model, ModelInfo) else model,
            "settings": settings.to_dict(), "limit": limit,
            "summary": summary(results, settings.arc_metric), "not_ok": failed,
            "benchmarks": results, "wall_seconds": wall_seconds}
