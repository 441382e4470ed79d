"""The `tinylm` command: a table of subcommands -> functions, with lazy imports so that
`tinylm --help` answers at once. A `TinyLMError` prints as one line and exits 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinylm.errors import TinyLMError


# --------------------------------------------------------------------------- info

def cmd_info(args) -> None:
    from tinylm.train.info import describe

    print(describe(args.target))


# --------------------------------------------------------------------------- tokenizer

def cmd_tokenizer_train(args) -> None:
    from tinylm.data.pack import tokenizer_training_texts
    from tinylm.io import check_output
    from tinylm.tokenizers import check_training_request, train_tokenizer

    check_training_request(args.kind, args.vocab, args.max_chars)
    if args.out:
        check_output(args.out, "file", force=args.force)
    texts = tokenizer_training_texts(args.data, args.data_dir, max_chars=args.max_chars)
    tok = train_tokenizer(args.kind, texts, args.vocab)
    out = Path(args.out or f"tokenizer-{args.kind}-{tok.vocab_size}-{Path(args.data).name}.json")
    check_output(out, "file", force=args.force)
    tok.save(out)
    print(f"wrote {out}: {tok.kind}, vocab {tok.vocab_size}, eos {tok.eos_id}, "
          f"hash {tok.content_hash()[:16]}")


def cmd_data_list(args) -> None:
    from tinylm.data.sources import SOURCES, resolve_data_dir_why

    folder, why = resolve_data_dir_why(args.data_dir)  # no data dir at all is an error
    print(f"data dir: {folder} ({why})")
    for name, source in sorted(SOURCES.items()):
        present = folder is not None and all((folder / f).is_file() for f in source.files)
        print(f"{'+' if present else '-'} {name:18s} {source.description}")


# --------------------------------------------------------------------------- train

def cmd_train(args) -> None:
    from tinylm.train.session import run_training

    run_training(args)


# --------------------------------------------------------------------------- generate

def cmd_generate(args) -> None:
    from dataclasses import asdict

    import tinylm
    from tinylm.config import given_flags
    from tinylm.infer.settings import SamplingConfig

    sampling = _sampling_from_flags(args, SamplingConfig, given_flags)  # before loading
    _check_sampling(args)
    prompts = _read_prompts(args)
    model = tinylm.load(args.checkpoint, device=args.device)
    settings = dict(max_new_tokens=args.n, seed=args.seed, **asdict(sampling))
    if len(prompts) == 1:
        sys.stdout.write(prompts[0])
        model.generate(prompts[0], stream=lambda s: (sys.stdout.write(s), sys.stdout.flush()),
                       **settings)
        sys.stdout.write("\n")
        return
    for prompt, text in zip(prompts, model.generate_batch(prompts, **settings)):
        print(f"{prompt}{text}\n---")


def _sampling_from_flags(args, config_class, given_flags):
    """The SamplingConfig of the flags; its complaint names the flag (`--top-p`), not the
    field."""
    import dataclasses

    try:
        return config_class(**given_flags(args, config_class))
    except TinyLMError as err:
        message = str(err)
        for field in dataclasses.fields(config_class):
            if message.startswith(field.name + " "):
                message = "--" + field.name.replace("_", "-") + message[len(field.name):]
        raise TinyLMError(message) from None


def _check_sampling(args) -> None:
    """Refuse settings the sampler cannot honour, before a model is loaded (SamplingConfig
    checks its own fields)."""
    from tinylm.train.config import valid_device_name

    checks = [(1 <= args.n <= 1_000_000, f"-n must be in [1, 1000000], got {args.n}"),
              (0 <= args.seed < 2**63, f"--seed must be in [0, 2**63), got {args.seed}")]
    for ok, message in checks:
        if not ok:
            raise TinyLMError(message)
    if not valid_device_name(args.device):
        raise TinyLMError(f"unknown device {args.device!r}; use cpu, cuda, cuda:N or mps")
    if args.device != "cpu":
        from tinylm.train.loop import pick_device

        pick_device(args.device)


def _read_prompts(args) -> list[str]:
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise TinyLMError(f"prompts file not found: {path}")
        try:
            lines = path.read_bytes().decode("utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise TinyLMError(f"{path}: not valid UTF-8 ({err})") from None
        prompts = [line for line in lines if line.strip()]
        if not prompts:
            raise TinyLMError(f"{path}: no prompts in it")
        return prompts
    if args.prompt is None or args.prompt == "":
        raise TinyLMError("empty prompt: pass --prompt TEXT (or --prompts-file)")
    try:
        args.prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise TinyLMError("prompt is not valid UTF-8 text") from None
    return [args.prompt]


# --------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    from tinylm import __version__
    from tinylm.config import add_dataclass_flags
    from tinylm.infer.settings import SamplingConfig

    parser = argparse.ArgumentParser(
        prog="tinylm", description="Train, score, SLERP-merge and ship tiny language models. "
                                   "Start with `tinylm run`.")
    parser.add_argument("--version", action="version", version=f"tinylm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="parameter count by part and size on disk")
    p.add_argument("target", help="a preset name or a checkpoint folder")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("tokenizer", help="tokenizer tools")
    tsub = p.add_subparsers(dest="tokenizer_command", required=True)
    t = tsub.add_parser("train", help="train a tokenizer on a named data set")
    t.add_argument("--kind", required=True, help="bytes | bpe | unigram")
    t.add_argument("--vocab", type=int, help="target vocabulary size")
    t.add_argument("--data", required=True, help="data set name or text file")
    t.add_argument("--data-dir")
    t.add_argument("--max-chars", type=int, default=50_000_000)
    t.add_argument("-o", "--out")
    t.add_argument("--force", action="store_true", help="replace an existing -o not written "
                                                         "by tinylm")
    t.set_defaults(func=cmd_tokenizer_train)

    p = sub.add_parser("data", help="data set tools")
    dsub = p.add_subparsers(dest="data_command", required=True)
    d = dsub.add_parser("list", help="the named data sets and whether they are present")
    d.add_argument("--data-dir")
    d.set_defaults(func=cmd_data_list)
    from tinylm.data.curate.cli import register as register_curate
    register_curate(dsub)
    from tinylm.data.curate.audit_cli import register as register_audit
    register_audit(dsub)

    p = sub.add_parser("train", help="train a model (resumable)")
    from tinylm.train.session import add_train_arguments
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="generate text from a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--prompt")
    p.add_argument("--prompts-file", help="one prompt per line: batched generation")
    p.add_argument("-n", type=int, default=200, help="new tokens")
    p.add_argument("--seed", type=int, default=0)
    add_dataclass_flags(p, SamplingConfig)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_generate)

    for register in _EXTENSIONS:
        register(sub)
    return parser


# Subcommands that live beside their feature (eval, merge, soup, export, run) register here.
_EXTENSIONS: list = []


def _load_extensions() -> None:
    """Fill _EXTENSIONS; idempotent, so main() can be called more than once in one process."""
    import importlib

    for module in ("tinylm.eval.cli", "tinylm.merge.cli", "tinylm.export.cli",
                   "tinylm.pipeline.cli", "tinylm.image.cli",
                   "tinylm.serve.cli", "tinylm.instruct.cli", "tinylm.export.import_cli"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name and module.startswith(err.name):
                continue  # that feature is not installed in this build
            raise
        if mod.register not in _EXTENSIONS:
            _EXTENSIONS.append(mod.register)


def main(argv: list[str] | None = None) -> int:
    _load_extensions()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except TinyLMError as err:
        print(f"tinylm: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinylm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as err:  # a full disk, a read-only folder: the user can fix it
        where = f"{err.filename}: " if err.filename else ""
        print(f"tinylm: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    return 0
