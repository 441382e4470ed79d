"""A bounded load test: 32 concurrent clients x 3 requests against `tinylm serve --max-queue 4
--max-batch 8`. Every request gets a full answer or a 429 in OpenAI's shape; none is lost, none
hangs (each client has a deadline, the whole test a timeout), and the server is still healthy
afterwards."""

from __future__ import annotations

import threading
from collections import Counter

import openai
import pytest

from tests.serve.conftest import MAX_BATCH, MODEL_NAME

CLIENTS, REQUESTS_EACH, MAX_TOKENS = 32, 3, 8


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_32_clients_get_an_answer_or_a_429_and_none_is_lost(server):
    outcomes: dict[tuple[int, int], str] = {}
    start = threading.Barrier(CLIENTS)

    def client_thread(c: int) -> None:
        client = server.client(timeout=120)
        start.wait()  # all 32 at once: more than batch + queue can hold
        for r in range(REQUESTS_EACH):
            outcomes[c, r] = _one_request(client, stream=(c + r) % 2 == 1, seed=c * 10 + r)

    threads = [threading.Thread(target=client_thread, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=200)
    assert not any(t.is_alive() for t in threads), "a client hung"
    counts = Counter(outcomes.values())
    assert len(outcomes) == CLIENTS * REQUESTS_EACH, "a request was lost"
    assert set(counts) <= {"answered", "429"}, counts
    assert counts["answered"] >= MAX_BATCH and counts["429"] > 0, counts
    assert [m.id for m in server.client().models.list().data] == [MODEL_NAME]
    print(f"\n{CLIENTS} clients x {REQUESTS_EACH}: {dict(counts)}")


def _one_request(client, stream: bool, seed: int) -> str:
    """'answered' only for a whole answer (every token, a finish reason); '429' only for the
    rate-limit error in OpenAI's shape; anything else is returned as what it was."""
    try:
        if stream:
            chunks = list(client.completions.create(model=MODEL_NAME, prompt="Once", seed=seed,
                                                    max_tokens=MAX_TOKENS, stream=True,
                                                    stream_options={"include_usage": True}))
            finish = [c.choices[0].finish_reason for c in chunks if c.choices]
            tokens = chunks[-1].usage.completion_tokens
        else:
            reply = client.completions.create(model=MODEL_NAME, prompt="Once", seed=seed,
                                              max_tokens=MAX_TOKENS)
            finish, tokens = [reply.choices[0].finish_reason], reply.usage.completion_tokens
        ok = finish[-1] in ("length", "stop") and 1 <= tokens <= MAX_TOKENS
        return "answered" if ok else f"incomplete {finish} {tokens}"
    except openai.RateLimitError as err:
        shaped = err.status_code == 429 and err.body.get("code") == "rate_limit_exceeded"
        return "429" if shaped else f"bad 429 body {err.body}"
    except Exception as err:  # a dropped connection, a timeout, a 5xx: all failures here
        return f"{type(err).__name__}: {err}"
