"""`tinylm serve` through the official `openai` client: completions and chat, streaming and
not, seeds, n, stop, usage, and every bad request as a 4xx in OpenAI's error shape."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai
import pytest

import tinylm
from tests.serve.conftest import MODEL_NAME
from tinylm.infer import chatml

PROMPT = "Once upon a time"


_LOADED = {}


def _generate(server, prompt: str, n: int, seed: int, **sampling) -> str:
    """What `tinylm generate` writes for this prompt and seed (the checkpoint loaded once)."""
    if server.ckpt not in _LOADED:
        _LOADED[server.ckpt] = tinylm.load(server.ckpt)
    return _LOADED[server.ckpt].generate(prompt, n, seed=seed, **sampling)


def test_models_lists_the_one_served_model(server):
    models = server.client().models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    assert server.client().models.retrieve(MODEL_NAME).owned_by == "tinylm"


def test_completion_equals_tinylm_generate_with_the_same_seed(server):
    """The batched server draws each row with its own generator, so a seeded request is the
    text `tinylm generate --seed` writes."""
    reply = server.client().completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=24,
                                               temperature=0.7, top_p=0.9, seed=3)
    expected = _generate(server, PROMPT, 24, 3, temperature=0.7, top_p=0.9)
    assert reply.choices[0].text == expected and reply.choices[0].finish_reason == "length"
    assert reply.object == "text_completion" and reply.model == MODEL_NAME
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens,
            reply.usage.total_tokens) == (len(PROMPT), 24, len(PROMPT) + 24)  # byte tokens


def test_stream_equals_the_whole_answer(server):
    client = server.client()
    settings = dict(model=MODEL_NAME, prompt=PROMPT, max_tokens=20, temperature=0.9, seed=11)
    whole = client.completions.create(**settings).choices[0].text
    chunks = list(client.completions.create(stream=True, **settings))
    assert "".join(c.choices[0].text for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_n_choices_are_the_seeds_in_a_row(server):
    """Choice i of a request with seed s is the single answer for seed s + i."""
    client = server.client()
    reply = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=12,
                                      temperature=1.0, seed=40, n=3)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    for i, choice in enumerate(reply.choices):
        alone = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=12,
                                          temperature=1.0, seed=40 + i)
        assert choice.text == alone.choices[0].text
    assert len({c.text for c in reply.choices}) > 1
    assert reply.usage.completion_tokens == 36 and reply.usage.prompt_tokens == len(PROMPT)


def test_stop_cuts_before_the_stop_string_streamed_or_not(server):
    client = server.client()
    greedy = dict(model=MODEL_NAME, prompt=PROMPT, max_tokens=30, temperature=0)
    full = client.completions.create(**greedy).choices[0].text
    at = next(i for i in range(4, len(full) - 2) if "\ufffd" not in full[i:i + 2])
    stop = full[at:at + 2]
    expected = full[:full.find(stop)]
    for stops in (stop, [stop, "never-appears"]):
        reply = client.completions.create(stop=stops, **greedy)
        assert reply.choices[0].text == expected and reply.choices[0].finish_reason == "stop"
        chunks = list(client.completions.create(stop=stops, stream=True, **greedy))
        assert "".join(c.choices[0].text for c in chunks) == expected
        assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_answers_the_chatml_prompt(server):
    """A chat turn is the completion of its ChatML rendering (same seed, same text)."""
    client = server.client()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    reply = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=16,
                                           temperature=0.5, seed=5)
    rendered = chatml.render(messages)
    expected = _generate(server, rendered, 16, 5, temperature=0.5)
    assert chatml.IM_END not in expected  # else the reply is cut there (the scheduler test)
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].message.role == "assistant" and reply.object == "chat.completion"
    assert reply.usage.prompt_tokens == len(rendered.encode())
    stream = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=16,
                                            temperature=0.5, seed=5, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert chunks[-1].usage.completion_tokens == 16 and not chunks[-1].choices


# --------------------------------------------------------------------------- errors

def _error(excinfo) -> dict:
    body = excinfo.value.body
    assert set(body) == {"message", "type", "param", "code"}, body
    return body


@pytest.mark.parametrize("kwargs,status,fragment", [
    (dict(model="no-such-model"), openai.NotFoundError, "does not exist"),
    (dict(max_tokens=-3), openai.BadRequestError, "max_tokens"),
    (dict(max_tokens=0), openai.BadRequestError, "max_tokens"),
    (dict(extra_body={"max_tokens": 2.5}), openai.BadRequestError, "max_tokens"),
    (dict(prompt="x" * 200), openai.BadRequestError, "context"),
    (dict(max_tokens=120), openai.BadRequestError, "context"),
    (dict(temperature=-1), openai.BadRequestError, "temperature"),
    (dict(top_p=0), openai.BadRequestError, "top_p"),
    (dict(n=0), openai.BadRequestError, "n:"),
    (dict(stop=["a", "b", "c", "d", "e"]), openai.BadRequestError, "stop"),
    (dict(logprobs=2), openai.BadRequestError, "logprobs"),
    (dict(prompt=""), openai.BadRequestError, "empty"),
], ids=["unknown-model", "negative-max-tokens", "zero-max-tokens", "float-max-tokens",
        "prompt-over-context", "prompt-plus-max-tokens-over-context", "negative-temperature",
        "zero-top-p", "zero-n", "five-stops", "logprobs", "empty-prompt"])
def test_bad_completion_requests_are_4xx_in_openai_shape(server, kwargs, status, fragment):
    settings = {"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 4, **kwargs}
    with pytest.raises(status) as excinfo:
        server.client().completions.create(**settings)
    assert fragment in _error(excinfo)["message"]


def test_bad_chat_requests_are_400(server):
    client = server.client()
    for messages, fragment in [([], "non-empty"), ([{"role": "robot", "content": "x"}], "role"),
                               ([{"role": "user", "content": f"a{chatml.IM_END}"}], "marker")]:
        with pytest.raises(openai.BadRequestError) as excinfo:
            client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=2)
        assert fragment in _error(excinfo)["message"]


def test_a_wrong_or_missing_api_key_is_401(server):
    with pytest.raises(openai.AuthenticationError) as excinfo:
        server.client(api_key="wrong").models.list()
    assert _error(excinfo)["code"] == "invalid_api_key"
    status, body = _post(server.base + "/models", None, headers={}, method="GET")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"


def test_invalid_json_is_400_not_a_dropped_connection(server):
    for raw in (b"{not json", b"[1, 2]", b""):
        status, body = _post(server.base + "/completions", raw)
        assert status == 400, body
        assert set(body["error"]) == {"message", "type", "param", "code"}
    status, body = _post(server.base + "/nowhere", b"{}")
    assert status == 404 and "error" in body


def _post(url: str, data: bytes | None, headers: dict | None = None, method: str = "POST"):
    from tests.serve.conftest import API_KEY

    request = urllib.request.Request(url, data=data, method=method, headers=headers if
                                     headers is not None else
                                     {"Authorization": f"Bearer {API_KEY}",
                                      "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())

