"""The request bodies of the OpenAI API that `tinylm serve` honours, validated by pydantic, and
the error body every 4xx answer carries.

Field names, defaults and ranges follow the OpenAI API reference (completions: max_tokens
defaults to 16; chat: to the rest of the context). Fields that would change the answer and that
this server cannot honour (logprobs, echo, suffix, logit_bias, penalties, best_of, tools) are
refused with 400, not silently ignored; fields that change nothing here (user, metadata) pass.
`top_k` is an extension, as vLLM and llama.cpp's servers take it.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

MAX_STOPS = 4  # OpenAI's limit on stop sequences
MAX_N = 16

Temperature = Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)]
TopP = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
MaxTokens = Annotated[StrictInt, Field(ge=1)]
Seed = Annotated[StrictInt, Field(ge=0, lt=2**63)]

# Fields that change what an answer holds and that this server cannot produce: refused with 400.
UNSUPPORTED = {"logprobs": (None, False), "top_logprobs": (None,), "echo": (None, False),
               "suffix": (None,), "logit_bias": (None, {}), "best_of": (None, 1),
               "frequency_penalty": (None, 0, 0.0), "presence_penalty": (None, 0, 0.0),
               "tools": (None, []), "functions": (None, []), "response_format": (None,)}


class StreamOptions(BaseModel):
    include_usage: StrictBool = False


class _Sampling(BaseModel):
    """What completions and chat share."""
    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: MaxTokens | None = None
    temperature: Temperature = 1.0
    top_p: TopP = 1.0
    top_k: Annotated[StrictInt, Field(ge=0)] = 0
    n: Annotated[StrictInt, Field(ge=1, le=MAX_N)] = 1
    stop: str | list[str] | None = Field(None, validate_default=True)  # -> a list
    seed: Seed | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop):
        stops = [stop] if isinstance(stop, str) else (stop or [])
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences")
        if any(s == "" for s in stops):
            raise ValueError("a stop sequence must not be empty")
        return stops

    def unsupported(self) -> str | None:
        """The first field given that this server cannot honour, if any."""
        for name, harmless in UNSUPPORTED.items():
            value = (self.model_extra or {}).get(name)
            if value not in harmless:
                return name
        return None


class CompletionRequest(_Sampling):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, prompt):
        if isinstance(prompt, list) and not prompt:
            raise ValueError("prompt must be a string or a non-empty list of strings")
        return prompt


class ChatRequest(_Sampling):
    messages: list[dict[str, Any]]
    max_completion_tokens: MaxTokens | None = None  # the newer name of max_tokens


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """The shape of every OpenAI API error: {"error": {message, type, param, code}}."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
