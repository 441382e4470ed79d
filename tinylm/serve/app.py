"""The HTTP side of `tinylm serve`: OpenAI's routes on FastAPI, the scheduler behind them.

Every request is validated and tokenized here, before it can take a place in the queue; a
full queue answers 429 at once. Streams are server-sent events in OpenAI's chunk shapes, ending
with `data: [DONE]`; a client that goes away mid-stream cancels its rows (starlette cancels the
response's generator on disconnect, and its `finally` tells the scheduler).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tinylm.errors import TinyLMError
from tinylm.infer import chatml
from tinylm.infer.settings import SamplingConfig
from tinylm.serve.schemas import ChatRequest, CompletionRequest, error_body
from tinylm.serve.scheduler import Choice, Delta, Failed, Finished, Job, QueueFull, Scheduler

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.body = status, error_body(message, kind, param, code)


@dataclass
class ServedModel:
    """What the routes need to know about the checkpoint behind them."""
    name: str
    tokenizer: object
    context: int
    created: int


# --------------------------------------------------------------------------- the app

def create_app(served: ServedModel, scheduler: Scheduler, api_key: str | None = None) -> FastAPI:
    async def check_api_key(request: Request) -> None:
        # A dependency of every route, not an HTTP middleware: starlette's BaseHTTPMiddleware
        # wraps `receive`, and a handler behind it no longer sees its client disconnect.
        if api_key is not None and not _key_matches(request, api_key):
            raise APIError(401, "invalid API key: pass it as 'Authorization: Bearer KEY'",
                           code="invalid_api_key")

    app = FastAPI(title="tinylm serve", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(check_api_key)])
    _add_error_handlers(app)

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [_model_card(served)]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str):
        _check_model(served, model_id)
        return _model_card(served)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        _check_request(served, body)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        encoded = [_encode(served, p, "prompt") for p in prompts]
        max_tokens = body.max_tokens or DEFAULT_COMPLETION_TOKENS
        return await _answer(served, scheduler, body, encoded, max_tokens, body.stop,
                             "text_completion", request)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        _check_request(served, body)
        try:
            text = chatml.render(body.messages)
        except TinyLMError as err:
            raise APIError(400, str(err), param="messages") from None
        ids = _encode(served, text, "messages")
        limit = body.max_completion_tokens or body.max_tokens
        max_tokens = limit or max(1, served.context - len(ids))
        return await _answer(served, scheduler, body, [ids], max_tokens,
                             [*body.stop, chatml.IM_END], "chat.completion", request)

    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error in OpenAI's shape: validation (and bad JSON) as 400, not FastAPI's 422."""

    @app.exception_handler(APIError)
    async def api_error(request, err: APIError):
        return JSONResponse(err.body, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            message, where = "the request body is not valid JSON", []
        elif not where:
            message = "the request body must be a JSON object (Content-Type: application/json)"
        else:
            message = f"{'.'.join(where) or 'body'}: {first.get('msg', 'invalid request')}"
        return JSONResponse(error_body(message, param=".".join(where) or None),
                            status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, err: StarletteHTTPException):
        code = "not_found" if err.status_code == 404 else None
        return JSONResponse(error_body(str(err.detail), code=code), status_code=err.status_code)


def _key_matches(request: Request, api_key: str) -> bool:
    given = request.headers.get("authorization", "")
    token = given[len("Bearer "):] if given.startswith("Bearer ") else ""
    return hmac.compare_digest(token.encode("utf-8"), api_key.encode("utf-8"))  # constant time


def _model_card(served: ServedModel) -> dict:
    return {"id": served.name, "object": "model", "created": served.created, "owned_by": "tinylm"}


def _check_model(served: ServedModel, name: str) -> None:
    if name != served.name:
        raise APIError(404, f"the model {name!r} does not exist; this server has "
                            f"{served.name!r}", param="model", code="model_not_found")


def _check_request(served: ServedModel, body) -> None:
    _check_model(served, body.model)
    field = body.unsupported()
    if field is not None:
        raise APIError(400, f"{field} is not supported by tinylm serve", param=field,
                       code="unsupported_parameter")


def _encode(served: ServedModel, text: str, param: str) -> list[int]:
    if not text:
        raise APIError(400, f"{param}: empty; give at least one character", param=param)
    ids = served.tokenizer.encode(text)
    if len(ids) >= served.context:
        raise APIError(400, f"{param}: {len(ids)} tokens, but the model's context is "
                            f"{served.context} (a prompt may take at most {served.context - 1})",
                       param=param, code="context_length_exceeded")
    return ids


# --------------------------------------------------------------------------- answering

async def _answer(served, scheduler, body, prompts, max_tokens, stops, kind, request):
    """Queue the request (429 when full), then answer in one body or as a stream."""
    for ids in prompts:
        if len(ids) + max_tokens > served.context:
            raise APIError(400, f"max_tokens {max_tokens} plus the prompt's {len(ids)} tokens "
                                f"exceed the model's context of {served.context}",
                           param="max_tokens", code="context_length_exceeded")
    sampling = SamplingConfig(body.temperature, body.top_k, body.top_p)
    base_seed = body.seed if body.seed is not None else secrets.randbelow(2**62)
    choices = [Choice(p * body.n + i, ids, max_tokens, sampling, base_seed + p * body.n + i,
                      tuple(stops))
               for p, ids in enumerate(prompts) for i in range(body.n)]
    job = Job(choices, asyncio.get_running_loop())
    try:
        scheduler.submit(job)
    except QueueFull as err:
        raise APIError(429, str(err), kind="rate_limit_exceeded",
                       code="rate_limit_exceeded") from None
    meta = {"id": f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-"
                  f"{secrets.token_hex(12)}", "created": int(time.time()), "model": served.name}
    prompt_tokens = sum(len(ids) for ids in prompts)
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(_stream(job, kind, meta, prompt_tokens, include_usage),
                                 media_type="text/event-stream")
    collect = asyncio.ensure_future(_collect(job, kind, meta, prompt_tokens))
    watcher = asyncio.create_task(_cancel_when_gone(request, job, collect))
    try:
        return await collect
    except asyncio.CancelledError:
        if not job.cancelled:
            raise
        return Response(status_code=499)  # nobody is there to read it
    finally:
        watcher.cancel()


async def _cancel_when_gone(request: Request, job: Job, collect: asyncio.Future) -> None:
    """A whole-body answer has no stream for starlette to cancel: poll for the client leaving,
    then free its rows and stop waiting for them."""
    while not collect.done():
        if await request.is_disconnected():
            job.cancel()
            collect.cancel()
            return
        await asyncio.sleep(0.25)


async def _events(job: Job):
    """The job's events until every choice has finished; a failure raises."""
    left = len(job.choices)
    try:
        while left:
            event = await job.events.get()
            if isinstance(event, Failed):
                raise APIError(500, event.message, kind="server_error")
            if isinstance(event, Finished):
                left -= 1
            yield event
    finally:
        job.cancel()  # a no-op when all finished; frees the rows of a client gone mid-stream


async def _collect(job: Job, kind: str, meta: dict, prompt_tokens: int) -> dict:
    texts = {c.index: [] for c in job.choices}
    done: dict[int, Finished] = {}
    async for event in _events(job):
        if isinstance(event, Delta):
            texts[event.index].append(event.text)
        else:
            done[event.index] = event
    choices = []
    for index in sorted(texts):
        text = "".join(texts[index])
        body = {"message": {"role": "assistant", "content": text}} if kind == "chat.completion" \
            else {"text": text}
        choices.append({"index": index, **body, "logprobs": None,
                        "finish_reason": done[index].finish_reason})
    return {**meta, "object": kind, "choices": choices,
            "usage": _usage(prompt_tokens, done.values())}


async def _stream(job: Job, kind: str, meta: dict, prompt_tokens: int, include_usage: bool):
    chat = kind == "chat.completion"
    chunk_kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(index, text=None, finish=None, role=False):
        if chat:
            delta = {"role": "assistant", "content": ""} if role else \
                ({} if text is None else {"content": text})
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None,
                      "finish_reason": finish}
        return _sse({**meta, "object": chunk_kind, "choices": [choice]})

    done = []
    try:
        if chat:
            for choice in job.choices:
                yield chunk(choice.index, role=True)
        async for event in _events(job):
            if isinstance(event, Delta):
                yield chunk(event.index, event.text)
            else:
                done.append(event)
                yield chunk(event.index, finish=event.finish_reason)
    except APIError as err:  # the status line has gone; the error travels as an event
        yield _sse(err.body)
    if include_usage:
        yield _sse({**meta, "object": chunk_kind, "choices": [],
                    "usage": _usage(prompt_tokens, done)})
    yield "data: [DONE]\n\n"


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _usage(prompt_tokens: int, finished) -> dict:
    completion = sum(f.completion_tokens for f in finished)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion}
