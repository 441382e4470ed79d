"""Loading the checkpoint for serving, binding the socket, and running uvicorn with the
scheduler thread beside it."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from tinylm.errors import TinyLMError
from tinylm.serve.app import ServedModel, create_app
from tinylm.serve.scheduler import Scheduler


def load_served(path, device: str, name: str):
    """(ServedModel, model) of a language-model checkpoint that the batched decoder can run."""
    from tinylm.train.config import valid_device_name

    if not valid_device_name(device):
        raise TinyLMError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps")
    if device != "cpu":
        from tinylm.train.loop import pick_device

        pick_device(device)
    from tinylm.infer.generate import LoadedModel

    loaded = LoadedModel.from_checkpoint(path, device=device)  # refuses qkvae with one line
    model = loaded.model.eval()
    if not callable(getattr(model, "new_cache", None)):
        raise TinyLMError(f"{path}: a {model.family} model has no KV cache; tinylm serve "
                          f"batches through one")
    created = int(Path(path, "meta.json").stat().st_mtime)
    return ServedModel(name, loaded.tokenizer, model.config.context_len, created), model


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before uvicorn starts so that port 0's pick can be printed
    and a port in use is one line, not a traceback from inside the server."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise TinyLMError(f"--host {host!r}: {err.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        why = "already in use" if err.errno == errno.EADDRINUSE else err.strerror
        raise TinyLMError(f"cannot listen on {host}:{port}: {why}") from None
    sock.listen(2048)
    return sock


def run_server(served: ServedModel, model, sock: socket.socket, max_batch: int,
               max_queue: int, api_key: str | None) -> None:
    import uvicorn

    scheduler = Scheduler(model, served.tokenizer, max_batch, max_queue)
    scheduler.start()
    app = create_app(served, scheduler, api_key)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        scheduler.close()
        sock.close()
