"""One `tinylm serve` process for the serve tests: the real command, in a child process, on
127.0.0.1 and a port it picks, in front of a tiny random checkpoint built here."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tinylm.models import build_model
from tinylm.tokenizers import ByteTokenizer
from tinylm.train.checkpoint import save_checkpoint

API_KEY = "test-key-123"
MODEL_NAME = "tiny"
MAX_BATCH, MAX_QUEUE = 8, 4


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread in the test process too: a second one mostly spins at this size."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def save_tiny_checkpoint(path: Path, context_len: int = 128) -> Path:
    """A random llama with byte tokens; init_std 0.3 peaks the logits so that temperature and
    top-p change the draws."""
    torch.manual_seed(0)
    tokenizer = ByteTokenizer()
    config = {"vocab_size": tokenizer.vocab_size, "dim": 32, "n_layers": 2, "n_heads": 4,
              "n_kv_heads": 2, "ffn_hidden": 64, "context_len": context_len, "init_std": 0.3}
    model = build_model("llama", config)
    return save_checkpoint(path, family="llama", model_config=config,
                           model_state=model.state_dict(), tokenizer=tokenizer,
                           extra_meta={"step": 0})


def start_server(ckpt: Path, *flags: str, wait_s: float = 120):
    """(process, base URL) of `tinylm serve CKPT --port 0 FLAGS`, once it says where it
    listens."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.Popen([sys.executable, "-m", "tinylm", "serve", str(ckpt), "--port", "0",
                             *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        first = lines.get(timeout=wait_s)
    except queue.Empty:
        proc.kill()
        raise AssertionError("tinylm serve did not start") from None
    if "http://" not in first:
        proc.kill()
        raise AssertionError(f"tinylm serve failed: {first}{proc.stderr.read()}")
    url = first.split("http://", 1)[1].split()[0]
    return proc, f"http://{url}"


def stop_server(proc) -> str:
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The served tiny checkpoint, its URL and an `openai` client factory."""
    import openai

    ckpt = save_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "ckpt")
    proc, base = start_server(ckpt, "--model-name", MODEL_NAME, "--api-key", API_KEY,
                              "--max-batch", str(MAX_BATCH), "--max-queue", str(MAX_QUEUE))

    def client(api_key: str = API_KEY, **kw):
        return openai.OpenAI(base_url=base, api_key=api_key, max_retries=0,
                             timeout=kw.pop("timeout", 60), **kw)

    yield SimpleNamespace(ckpt=ckpt, base=base, client=client, proc=proc)
    err = stop_server(proc)
    assert "Traceback" not in err, err
