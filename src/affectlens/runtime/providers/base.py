"""What every API model offers: one request in, one reply out, through its vendor's official SDK.

A spec ``anthropic:MODEL`` or ``openai:MODEL`` names a provider. Keys come only from the SDKs' own environment
variables; nothing here reads, stores or prints one. A request is a plain frozen value, so its canonical JSON
is the request cache's key and the accounting's unit.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from affectlens.errors import AffectlensError

VENDORS = ("anthropic", "openai")


@dataclass(frozen=True)
class Capabilities:
    json_schema: bool  # structured output constrained by a JSON schema
    logprobs: int  # top alternatives per token the endpoint returns (0: none)
    batches: bool  # an asynchronous batch API that this package drives
    temperature: bool  # whether the model accepts temperature and top_p
    seed: bool = False  # whether a sampling seed is honoured


@dataclass(frozen=True)
class ApiRequest:
    """One chat request. ``turns`` are (role, text) pairs after the system text."""

    system: str
    turns: tuple[tuple[str, str], ...]
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    schema: dict[str, Any] | None = None  # JSON schema of the reply, or None for free text
    logprobs: int = 0  # top alternatives wanted at each reply token
    seed: int | None = None

    def canonical(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


@dataclass
class ApiReply:
    text: str
    stop_reason: str | None = None
    # Per reply token: {token: logprob} over the top alternatives (empty without logprobs).
    top_logprobs: list[dict[str, float]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0  # input tokens read from the vendor's prompt cache
    request_id: str | None = None
    retries: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApiReply:
        return cls(**data)


class ApiFailure(Exception):
    """A request that failed after the SDK's own retries; ``retryable`` says whether a rerun may succeed."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason, self.retryable = reason, retryable


class Provider(Protocol):
    vendor: str
    model: str
    base_url: str | None
    capabilities: Capabilities

    @property
    def spec(self) -> str: ...

    def send(self, request: ApiRequest) -> ApiReply:
        """One request through the SDK (which retries 408, 409, 429 and 5xx); raises ApiFailure."""
        ...

    def prompt_caching(self, system: str) -> str:
        """Whether the shared system text is cached by the vendor, in words (for the manifest and the CLI)."""
        ...

    def describe(self) -> dict[str, object]: ...


def parse_api_spec(spec: str) -> tuple[str, str] | None:
    """(vendor, model) for ``anthropic:MODEL`` or ``openai:MODEL``; None for a local model spec."""
    vendor, sep, model = spec.partition(":")
    if not sep or vendor not in VENDORS:
        return None
    if not model.strip():
        raise AffectlensError(f"model spec {spec!r} names no model; use {vendor}:MODEL")
    return vendor, model


def is_api_spec(spec: str) -> bool:
    return parse_api_spec(spec) is not None


CHARS_PER_TOKEN = 4  # for estimates only: an underestimate of tokens for non-ASCII text such as kaomoji
# Error messages can quote a key ("Incorrect API key provided: sk-ab...wxyz"): never pass one on.
_KEYLIKE = re.compile(r"\b(?:sk|rk|pk|hf|gh[pousr]|xox[a-z])[-_][^\s'\"]{3,}")


def retryable(status: int) -> bool:
    """What the SDKs retry themselves, so a rerun later may succeed: 408, 409, 429 and 5xx."""
    return status in (408, 409, 429) or status >= 500


def status_reason(status: int, message: str) -> str:
    first = _KEYLIKE.sub("<key>", " ".join(str(message).split()))[:200]
    return f"HTTP {status}: {first}"


def public_url(url: str | None) -> str | None:
    """``url`` without user:password, for manifests and cache keys."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))
