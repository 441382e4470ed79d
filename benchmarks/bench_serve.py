"""Throughput of `tinylm serve` with continuous batching against the same server answering one
request at a time (`--max-batch 1`), at 1, 8 and 32 concurrent clients.

    python benchmarks/bench_serve.py                  # Glint-1.3 shape, 64 new tokens
    python benchmarks/bench_serve.py --quick          # a smoke run (fewer requests, 16 tokens)
    python benchmarks/bench_serve.py --shape debug --json out.json

Both sides are the real command (`python -m tinylm serve CKPT --port 0 ...`) in front of the
same random checkpoint (a Llama of the chosen preset's shape with byte tokens; random weights
decode as fast as trained ones), both up at once on this machine with the same OMP_NUM_THREADS
and measured alternately, round by round. The peer is the same code with one slot, so the ratio
is what batching buys, nothing else. Every request is POST /v1/completions with the same
prompt, a fixed seed per request (so both sides write the same tokens) and temperature 1;
`--max-queue` is set above the number of clients, so no request is refused. Clients are threads
of this process using http.client (lighter than the `openai` client, so the client side takes
less of the CPU it shares with the server). For each concurrency c, c clients each send `--per-
client` requests back to back; requests/s and completion tokens/s are over the wall time of all
of them, prefill included. Each setting runs `--rounds` times per side, the sides alternating;
the best round is kept (other load on a shared machine can only slow a round down). At one
client both sides do the same work, so that row's ratio shows how far the load skews it. The
load average is printed before and after.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONCURRENCY = (1, 8, 32)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="glint-1.3", help="llama preset whose shape to serve")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--per-client", type=int, default=4, help="requests each client sends")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the servers")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.max_tokens, args.per_client, args.rounds = 16, 2, 1
    return args


def make_checkpoint(folder: Path, shape: str) -> Path:
    import torch

    from tinylm.config import load_preset
    from tinylm.models import build_model
    from tinylm.tokenizers import ByteTokenizer
    from tinylm.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    config = {**load_preset(shape)["model"], "vocab_size": 257}
    model = build_model("llama", config)
    return save_checkpoint(folder / "ckpt", family="llama", model_config=config,
                           model_state=model.state_dict(), tokenizer=ByteTokenizer(),
                           extra_meta={"step": 0})


def start_server(ckpt: Path, max_batch: int, threads: int):
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(
        Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "tinylm", "serve", str(ckpt), "--port", "0",
                             "--max-batch", str(max_batch), "--max-queue", "1024",
                             "--model-name", "bench"], stdout=subprocess.PIPE, text=True,
                            env=env)
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise SystemExit(f"tinylm serve did not start: {line}")
    host, port = line.split("http://", 1)[1].split("/")[0].rsplit(":", 1)
    return proc, host, int(port)


def one_request(host: str, port: int, seed: int, max_tokens: int) -> int:
    """POST one completion; its completion tokens."""
    body = json.dumps({"model": "bench", "prompt": "Once upon a time", "max_tokens": max_tokens,
                       "temperature": 1.0, "seed": seed})
    conn = http.client.HTTPConnection(host, port, timeout=600)
    try:
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = json.loads(response.read())
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {payload}")
    return payload["usage"]["completion_tokens"]


def measure(host: str, port: int, clients: int, per_client: int, max_tokens: int) -> dict:
    tokens = [0] * clients
    errors: list[str] = []
    start = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        start.wait()
        for r in range(per_client):
            try:
                tokens[c] += one_request(host, port, 1000 * c + r, max_tokens)
            except Exception as err:  # counted and reported, never hidden
                errors.append(str(err))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, first: {errors[0]}")
    requests = clients * per_client
    return {"clients": clients, "requests": requests, "tokens": sum(tokens), "wall_s": wall,
            "requests_per_s": requests / wall, "tokens_per_s": sum(tokens) / wall}


def run_both(ckpt: Path, args) -> tuple[dict[int, dict], dict[int, dict]]:
    """Both servers up at once (an idle one costs nothing), measured alternately round by
    round, so a change in the machine's load hits both sides alike."""
    sides = {"batched": max(CONCURRENCY), "serial": 1}
    servers = {}
    try:
        for name, max_batch in sides.items():
            servers[name] = start_server(ckpt, max_batch, args.threads)
            one_request(*servers[name][1:], 0, 4)  # warm-up: first-call allocations
        best: dict[str, dict[int, dict]] = {name: {} for name in sides}
        for clients in CONCURRENCY:
            for _ in range(args.rounds):
                for name in sides:
                    _, host, port = servers[name]
                    result = measure(host, port, clients, args.per_client, args.max_tokens)
                    kept = best[name].get(clients)
                    if kept is None or result["wall_s"] < kept["wall_s"]:
                        best[name][clients] = result
        return best["batched"], best["serial"]
    finally:
        for proc, _, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)


def main(argv=None) -> None:
    args = parse_args(argv)
    print(f"load average at start: {os.getloadavg()}  cores: {os.cpu_count()}")
    print(f"shape {args.shape} (byte tokens), {args.max_tokens} new tokens per request, "
          f"{args.per_client} requests per client, best of {args.rounds}, "
          f"OMP_NUM_THREADS={args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(Path(tmp), args.shape)
        batched, serial = run_both(ckpt, args)
    print(f"\n{'clients':>7} | {'batched req/s':>13} {'tok/s':>8} | {'one-at-a-time req/s':>19} "
          f"{'tok/s':>8} | {'ratio':>5}")
    rows = []
    for clients in CONCURRENCY:
        b, s = batched[clients], serial[clients]
        ratio = b["tokens_per_s"] / s["tokens_per_s"]
        rows.append({"clients": clients, "batched": b, "one_at_a_time": s, "ratio": ratio})
        print(f"{clients:>7} | {b['requests_per_s']:>13.2f} {b['tokens_per_s']:>8.1f} | "
              f"{s['requests_per_s']:>19.2f} {s['tokens_per_s']:>8.1f} | {ratio:>5.2f}")
    print(f"\nload average at end: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
