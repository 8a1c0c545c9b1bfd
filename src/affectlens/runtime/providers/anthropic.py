"""Claude through the official ``anthropic`` SDK: Messages, structured output, prompt caching, Message Batches.

The SDK reads ``ANTHROPIC_API_KEY`` (or ``ANTHROPIC_AUTH_TOKEN``) and ``ANTHROPIC_BASE_URL`` itself and retries
408, 409, 429 and 5xx (529 included) with its own backoff, honouring retry-after. Its Messages API no longer
takes temperature, so this provider says so in its capabilities instead of sending one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from affectlens.errors import AffectlensError
from affectlens.runtime.providers.base import (
    CHARS_PER_TOKEN,
    ApiFailure,
    ApiReply,
    ApiRequest,
    Capabilities,
    public_url,
    retryable,
    status_reason,
)

# The smallest system text each family caches (tokens), from Anthropic's prompt-caching documentation.
MIN_CACHEABLE = (("opus-4-5", 4096), ("haiku-4-5", 4096), ("haiku", 2048))  # others: 1024


def min_cacheable_tokens(model: str) -> int:
    return next((n for family, n in MIN_CACHEABLE if family in model), 1024)


def estimated_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN


class AnthropicProvider:
    vendor = "anthropic"
    capabilities = Capabilities(json_schema=True, logprobs=0, batches=True, temperature=False)

    def __init__(self, model: str, *, base_url: str | None = None, max_retries: int = 2,
                 timeout: float = 120.0) -> None:  # fmt: skip
        import anthropic

        if not (os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN")):
            raise AffectlensError(f"anthropic:{model} needs ANTHROPIC_API_KEY in the environment")
        self.model = model
        self.base_url = base_url or os.environ.get("ANTHROPIC_BASE_URL")
        self.max_retries = max_retries
        self._sdk = anthropic
        self.client = anthropic.Anthropic(base_url=self.base_url, max_retries=max_retries, timeout=timeout)

    @property
    def spec(self) -> str:
        return f"{self.vendor}:{self.model}"

    def caches_system(self, system: str) -> bool:
        """Whether the shared system text clears the model's minimum cacheable length."""
        return estimated_tokens(system) >= min_cacheable_tokens(self.model)

    def prompt_caching(self, system: str) -> str:
        n, floor = estimated_tokens(system), min_cacheable_tokens(self.model)
        if n >= floor:
            return f"on: the system text (~{n} tokens) is marked for caching"
        return (
            f"off: the system text (~{n} tokens) is below {self.model}'s minimum of {floor} cacheable tokens"
        )

    def params(self, request: ApiRequest) -> dict[str, Any]:
        system: Any = request.system
        if request.system and self.caches_system(request.system):
            system = [{"type": "text", "text": request.system, "cache_control": {"type": "ephemeral"}}]
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": [{"role": role, "content": text} for role, text in request.turns],
        }
        if request.system:
            params["system"] = system
        if request.schema is not None:
            params["output_config"] = {"format": {"type": "json_schema", "schema": request.schema}}
        return params

    def send(self, request: ApiRequest) -> ApiReply:
        try:
            raw = self.client.messages.with_raw_response.create(**self.params(request))
            message = raw.parse()
        except self._sdk.APIStatusError as exc:
            raise ApiFailure(
                status_reason(exc.status_code, exc.message), retryable=retryable(exc.status_code)
            ) from None
        except self._sdk.APIConnectionError as exc:  # timeouts are connection errors in the SDK
            raise ApiFailure(f"connection failed: {type(exc).__name__}", retryable=True) from None
        reply = _reply(message)
        reply.request_id, reply.retries = raw.headers.get("request-id"), raw.retries_taken
        return reply

    # -- Message Batches: submit once, poll, then read results by custom_id.
    def submit_batch(self, items: Sequence[tuple[str, ApiRequest]]) -> str:
        requests = [{"custom_id": cid, "params": self.params(req)} for cid, req in items]
        try:
            return str(self.client.messages.batches.create(requests=requests).id)
        except self._sdk.APIStatusError as exc:
            raise AffectlensError(
                f"{self.spec}: batch refused: {status_reason(exc.status_code, exc.message)}"
            ) from None

    def batch_ended(self, batch_id: str) -> bool:
        with self._batch_errors(batch_id):
            return self.client.messages.batches.retrieve(batch_id).processing_status == "ended"

    def batch_results(self, batch_id: str) -> Iterator[tuple[str, ApiReply | ApiFailure]]:
        with self._batch_errors(batch_id):
            for line in self.client.messages.batches.results(batch_id):
                result = line.result
                if result.type == "succeeded":
                    reply = _reply(result.message)
                    reply.request_id = f"batch:{batch_id}"
                    yield line.custom_id, reply
                else:
                    error = getattr(getattr(result, "error", None), "error", None)
                    reason = getattr(error, "message", None) or result.type
                    yield line.custom_id, ApiFailure(f"batch {result.type}: {reason}", retryable=True)

    @contextmanager
    def _batch_errors(self, batch_id: str) -> Iterator[None]:
        """A batch that cannot be read (unknown, expired, unreachable) as one line, not an SDK traceback."""
        try:
            yield
        except self._sdk.APIStatusError as exc:
            reason = status_reason(exc.status_code, exc.message)
            raise AffectlensError(f"{self.spec}: batch {batch_id}: {reason}") from None
        except self._sdk.APIConnectionError as exc:
            raise AffectlensError(
                f"{self.spec}: batch {batch_id}: connection failed: {type(exc).__name__}; rerun to resume"
            ) from None

    def describe(self) -> dict[str, object]:
        return {"spec": self.spec, "vendor": self.vendor, "model": self.model, "base_url": public_url(self.base_url),
                "hidden_states": False, "capabilities": asdict(self.capabilities)}  # fmt: skip


def _reply(message: Any) -> ApiReply:
    text = "".join(block.text for block in message.content if getattr(block, "type", None) == "text")
    usage = message.usage
    # Anthropic counts cache reads and writes apart from input_tokens; a reply's input_tokens is every input
    # token (as OpenAI's prompt_tokens is), cached_tokens the part of them read from the cache.
    cached = int(usage.cache_read_input_tokens or 0)
    written = int(getattr(usage, "cache_creation_input_tokens", 0) or 0)
    return ApiReply(
        text=text,
        stop_reason=message.stop_reason,
        input_tokens=int(usage.input_tokens or 0) + written + cached,
        output_tokens=int(usage.output_tokens or 0),
        cached_tokens=cached,
    )
