"""OpenAI-compatible chat endpoints through the official ``openai`` SDK: OpenAI itself, vLLM, llama.cpp's
server, Ollama. ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` are the SDK's own; a local server that checks no key
gets a placeholder, never a real one.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from affectlens.errors import AffectlensError
from affectlens.runtime.providers.base import (
    ApiFailure,
    ApiReply,
    ApiRequest,
    Capabilities,
    public_url,
    retryable,
    status_reason,
)

# Reasoning models take neither temperature nor top_p, and count max_completion_tokens instead of max_tokens.
REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
PLACEHOLDER_KEY = "unused-by-local-server"
MAX_TOP_LOGPROBS = 20
# OpenAI and vLLM take {"type": "json_schema", ...}; llama.cpp's Python server takes {"type": "json_object",
# "schema": ...} and answers json_schema with a 500.
STRUCTURED_OUTPUTS = ("json_schema", "json_object")


class OpenAIProvider:
    vendor = "openai"

    def __init__(self, model: str, *, base_url: str | None = None, max_retries: int = 2, timeout: float = 120.0,
                 structured_output: str = "json_schema") -> None:  # fmt: skip
        import openai

        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        key = os.environ.get("OPENAI_API_KEY")
        if not key and not self.base_url:
            raise AffectlensError(f"openai:{model} needs OPENAI_API_KEY in the environment (or --base-url)")
        self.max_retries = max_retries
        if structured_output not in STRUCTURED_OUTPUTS:
            raise AffectlensError(
                f"structured output {structured_output!r}: use one of {', '.join(STRUCTURED_OUTPUTS)}"
            )
        self.structured_output = structured_output
        self._sdk = openai
        self.client = openai.OpenAI(api_key=key or PLACEHOLDER_KEY, base_url=self.base_url,
                                    max_retries=max_retries, timeout=timeout)  # fmt: skip
        reasoning = model.startswith(REASONING_PREFIXES)
        self.capabilities = Capabilities(json_schema=True, logprobs=0 if reasoning else MAX_TOP_LOGPROBS,
                                         batches=False, temperature=not reasoning, seed=True)  # fmt: skip

    @property
    def spec(self) -> str:
        return f"{self.vendor}:{self.model}"

    def prompt_caching(self, system: str) -> str:
        return "the endpoint's own (OpenAI caches long shared prefixes itself; local servers reuse their KV cache)"

    def params(self, request: ApiRequest) -> dict[str, Any]:
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages += [{"role": role, "content": text} for role, text in request.turns]
        params: dict[str, Any] = {"model": self.model, "messages": messages}
        params["max_tokens" if self.capabilities.temperature else "max_completion_tokens"] = (
            request.max_tokens
        )
        if self.capabilities.temperature:
            params.update({k: v for k, v in (("temperature", request.temperature), ("top_p", request.top_p))
                           if v is not None})  # fmt: skip
        if request.seed is not None:
            params["seed"] = request.seed
        if request.schema is not None and self.structured_output == "json_object":
            params["response_format"] = {"type": "json_object", "schema": request.schema}
        elif request.schema is not None:
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": request.schema, "strict": True},
            }
        if request.logprobs:
            params.update(logprobs=True, top_logprobs=min(request.logprobs, MAX_TOP_LOGPROBS))
        return params

    def send(self, request: ApiRequest) -> ApiReply:
        try:
            raw = self.client.chat.completions.with_raw_response.create(**self.params(request))
            completion = raw.parse()
        except self._sdk.APIStatusError as exc:
            status = exc.status_code
            raise ApiFailure(status_reason(status, exc.message), retryable=retryable(status)) from None
        except self._sdk.APIConnectionError as exc:
            raise ApiFailure(f"connection failed: {type(exc).__name__}", retryable=True) from None
        if not completion.choices:
            raise ApiFailure("the endpoint returned no choices", retryable=True)
        choice = completion.choices[0]
        usage = completion.usage
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        top = []
        if request.logprobs and choice.logprobs is not None and choice.logprobs.content:
            top = [{alt.token: float(alt.logprob) for alt in position.top_logprobs} or
                   {position.token: float(position.logprob)} for position in choice.logprobs.content]  # fmt: skip
        return ApiReply(
            text=choice.message.content or "",
            stop_reason=choice.finish_reason,
            top_logprobs=top,
            input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            cached_tokens=int(getattr(details, "cached_tokens", 0) or 0),
            request_id=raw.headers.get("x-request-id") or completion.id,
            retries=raw.retries_taken,
        )

    def describe(self) -> dict[str, object]:
        return {"spec": self.spec, "vendor": self.vendor, "model": self.model, "base_url": public_url(self.base_url),
                "hidden_states": False, "capabilities": asdict(self.capabilities),
                "structured_output": self.structured_output}  # fmt: skip
