"""`tinylm serve CKPT`: the checkpoint behind an OpenAI-compatible HTTP API (uvicorn)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinylm.errors import TinyLMError


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve a checkpoint over an OpenAI-compatible HTTP API",
                       description="Serve CKPT with OpenAI's /v1/models, /v1/completions and "
                                   "/v1/chat/completions (streaming or not). Concurrent "
                                   "requests share each decoding step (continuous batching).")
    p.add_argument("checkpoint", help="a checkpoint folder (…/checkpoints/step_N)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one and prints it")
    p.add_argument("--model-name", default=None,
                   help="the model id clients ask for (default: the checkpoint's run name)")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on every request")
    p.add_argument("--max-batch", type=int, default=32,
                   help="most rows decoded together per step (1 = one request at a time)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="most requests waiting for a batch slot (beyond those that free "
                        "slots take at once); past it, 429")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p.set_defaults(func=cmd_serve)


def _check_flags(args: argparse.Namespace) -> None:
    checks = [(0 <= args.port <= 65535, f"--port must be in [0, 65535], got {args.port}"),
              (1 <= args.max_batch <= 4096,
               f"--max-batch must be in [1, 4096], got {args.max_batch}"),
              (0 <= args.max_queue <= 100_000,
               f"--max-queue must be in [0, 100000], got {args.max_queue}"),
              (args.api_key is None or args.api_key != "", "--api-key must not be empty"),
              (args.model_name is None or args.model_name.strip() != "",
               "--model-name must not be empty")]
    for ok, message in checks:
        if not ok:
            raise TinyLMError(message)
    if not Path(args.checkpoint).is_dir():
        raise TinyLMError(f"checkpoint not found: {args.checkpoint}")


def default_model_name(path: Path) -> str:
    """`run/checkpoints/step_N` -> `run/step_N`; any other folder -> its name."""
    path = path.resolve()
    if path.parent.name == "checkpoints":
        return f"{path.parent.parent.name}/{path.name}"
    return path.name


def cmd_serve(args) -> None:
    _check_flags(args)
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ModuleNotFoundError:
        raise TinyLMError("tinylm serve needs FastAPI and uvicorn: pip install "
                          "'tinylm[serve]'") from None
    from tinylm.serve.server import bind, load_served, run_server

    sock = bind(args.host, args.port)  # a port in use is refused before the model loads
    try:
        served, model = load_served(args.checkpoint, args.device,
                                    args.model_name or default_model_name(Path(args.checkpoint)))
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    print(f"tinylm serve: {served.name} on http://{host}:{port}/v1 (max batch {args.max_batch},"
          f" queue {args.max_queue}{', API key required' if args.api_key else ''})", flush=True)
    run_server(served, model, sock, args.max_batch, args.max_queue, args.api_key)
    sys.stdout.flush()
