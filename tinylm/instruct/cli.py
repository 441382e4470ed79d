"""The instruct commands: `tinylm sft` (ChatML fine-tuning run) and `tinylm chat`."""

from __future__ import annotations

import sys

from tinylm.errors import TinyLMError


def cmd_sft(args) -> None:
    from tinylm.instruct.sft import run_sft

    last = run_sft(args)
    print(f"last checkpoint: {last}")


def cmd_chat(args) -> None:
    from tinylm.config import given_flags
    from tinylm.infer.settings import SamplingConfig
    from tinylm.instruct.chat import ChatSession, interactive, sampling_for

    if args.n < 1:
        raise TinyLMError(f"-n must be >= 1, got {args.n}")
    try:
        sampling = sampling_for(args.preset, given_flags(args, SamplingConfig))
    except TinyLMError as err:
        raise TinyLMError(f"sampling: {err}") from None
    if args.message is not None and not args.message.strip():
        raise TinyLMError("--message is empty")
    from tinylm.infer.chatml import check_messages

    if args.message is not None:  # before loading the model
        check_messages([{"role": "user", "content": args.message}], "--message")
    if args.system is not None:
        check_messages([{"role": "system", "content": args.system}], "--system")
    from tinylm.infer.generate import LoadedModel

    model = LoadedModel.from_checkpoint(args.checkpoint, device=args.device)
    session = ChatSession(model, sampling, args.n, args.seed, args.system)
    say = lambda s: print(s, file=sys.stderr, flush=True)
    if args.message is None:
        interactive(session, say=say)
        return
    if args.show_prompt:
        from tinylm.infer.chatml import render

        say(render([*([{"role": "system", "content": args.system}] if args.system else []),
                    {"role": "user", "content": args.message}]))
    write = lambda s: (sys.stdout.write(s), sys.stdout.flush())
    _, ended = session.reply(args.message, write, say)
    write("\n")
    if not ended:
        say(f"(no <|im_end|> within {args.n} tokens)")


def register(sub) -> None:
    from tinylm.config import add_dataclass_flags
    from tinylm.infer.chatml import CHAT_PRESETS
    from tinylm.infer.settings import SamplingConfig
    from tinylm.instruct.sft import add_sft_arguments

    p = sub.add_parser("sft", help="fine-tune a checkpoint on ChatML conversations (loss on "
                                   "assistant turns; resumable)")
    add_sft_arguments(p)
    p.set_defaults(func=cmd_sft)

    p = sub.add_parser("chat", help="chat with a checkpoint in ChatML (streaming, history)")
    p.add_argument("checkpoint")
    p.add_argument("--message", help="one turn, not interactive: print the answer and exit")
    p.add_argument("--system", help="a system message opening the conversation")
    p.add_argument("--preset", default="instruct", choices=sorted(CHAT_PRESETS),
                   help="decoding of the Blink-1 card: base (t 0.5, top-k 5, rep 1.1) | "
                        "instruct (t 0.2, top-k 10, rep 1.5); sampling flags override it")
    p.add_argument("-n", type=int, default=256, help="most new tokens per answer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--show-prompt", action="store_true",
                   help="with --message: print the ChatML prompt to stderr first")
    add_dataclass_flags(p, SamplingConfig)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_chat)
