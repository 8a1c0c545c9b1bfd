"""API models as emitters and judges: ``anthropic:MODEL`` and ``openai:MODEL`` through the official SDKs."""

from __future__ import annotations

from affectlens.errors import AffectlensError
from affectlens.runtime.providers.base import (
    ApiFailure,
    ApiReply,
    ApiRequest,
    Capabilities,
    Provider,
    is_api_spec,
    parse_api_spec,
)


def open_provider(spec: str, *, base_url: str | None = None, max_retries: int = 2, timeout: float = 120.0,
                  structured_output: str = "json_schema") -> Provider:  # fmt: skip
    """The provider an API spec names; one line for a spec that is not one."""
    parsed = parse_api_spec(spec)
    if parsed is None:
        raise AffectlensError(f"{spec!r} is not an API model spec; use anthropic:MODEL or openai:MODEL")
    vendor, model = parsed
    if vendor == "anthropic":
        from affectlens.runtime.providers.anthropic import AnthropicProvider

        return AnthropicProvider(model, base_url=base_url, max_retries=max_retries, timeout=timeout)
    from affectlens.runtime.providers.openai import OpenAIProvider

    return OpenAIProvider(
        model,
        base_url=base_url,
        max_retries=max_retries,
        timeout=timeout,
        structured_output=structured_output,
    )


__all__ = [
    "ApiFailure", "ApiReply", "ApiRequest", "Capabilities", "Provider", "is_api_spec", "open_provider",
    "parse_api_spec",
]  # fmt: skip
