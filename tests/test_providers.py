"""The API providers through the real anthropic and openai SDKs, over HTTP to loopback fakes (tests/api_fakes.py).

Pins what each provider makes of a vendor's reply (text, usage, request id, SDK retries), which failures the SDK
retries and how the rest come back (ApiFailure, retryable or not), the request bodies that carry structured
output, prompt caching, logprobs and seeds, key handling, and the price arithmetic.
"""

from __future__ import annotations

import json
import time

import pytest
from api_fakes import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    bad_request,
    last_user,
    overloaded,
    rate_limited,
    server_error,
    slow,
)

from affectlens.errors import AffectlensError
from affectlens.runtime.providers import ApiFailure, ApiRequest, open_provider
from affectlens.runtime.providers.pricing import estimate_cost, load_prices

pytest_plugins = ["api_fakes"]

VENDORS = ["anthropic", "openai"]
ROUTE = {"anthropic": "messages", "openai": "chat"}
SCHEMA = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}


def ask(text: str = "hello there", **kw) -> ApiRequest:
    return ApiRequest(system="You judge.", turns=(("user", text),), max_tokens=32, **kw)


# -- replies
@pytest.mark.parametrize("vendor", VENDORS)
def test_reply_text_usage_request_id(fake_api, vendor):
    fake_api.answer = lambda body: f"seen {last_user(body)}"
    reply = fake_api.provider(vendor).send(ask())
    assert reply.text == "seen hello there"
    assert (reply.input_tokens, reply.output_tokens, reply.cached_tokens) == (4, 3, 0)
    assert reply.request_id == ("req_fake_1" if vendor == "anthropic" else "req-openai-1")
    assert reply.retries == 0
    assert reply.stop_reason == ("end_turn" if vendor == "anthropic" else "stop")
    assert fake_api.hits[ROUTE[vendor]] == 1


@pytest.mark.parametrize("vendor", VENDORS)
def test_answer_is_per_prompt(fake_api, vendor):
    provider = fake_api.provider(vendor)
    assert [provider.send(ask(t)).text for t in ("a", "b")] == ["reply to: a", "reply to: b"]


def test_anthropic_body_system_schema_and_no_temperature(fake_api):
    fake_api.anthropic().send(ask(schema=SCHEMA, temperature=0.7, top_p=0.9, seed=3))
    (body,) = fake_api.bodies("messages")
    assert body["system"] == "You judge."  # short: not marked for caching
    assert body["messages"] == [{"role": "user", "content": "hello there"}]
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert not {"temperature", "top_p", "seed"} & set(body)  # the Messages API takes none of them
    assert fake_api.headers("messages")[0]["authorization"] == f"Bearer {ANTHROPIC_KEY}"  # this SDK's way


def test_anthropic_long_system_is_cached_and_counted_like_openai(fake_api):
    """A long system text carries a cache_control marker; input_tokens counts cache reads on both vendors."""
    fake_api.cached_tokens = 1000
    request = ApiRequest(system="word " * 1100, turns=(("user", "hi"),), max_tokens=8)
    claude, gpt = fake_api.anthropic().send(request), fake_api.openai().send(request)
    system = fake_api.bodies("messages")[0]["system"]
    assert system == [{"type": "text", "text": "word " * 1100, "cache_control": {"type": "ephemeral"}}]
    assert (claude.input_tokens, claude.cached_tokens) == (1101, 1000)
    assert (claude.input_tokens, claude.cached_tokens) == (gpt.input_tokens, gpt.cached_tokens)


def test_openai_body_schema_sampling_seed(fake_api):
    fake_api.openai().send(ask(schema=SCHEMA, temperature=0.7, top_p=0.9, seed=3))
    (body,) = fake_api.bodies("chat")
    assert body["messages"] == [{"role": "system", "content": "You judge."},
                                {"role": "user", "content": "hello there"}]  # fmt: skip
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
    }
    assert (body["temperature"], body["top_p"], body["seed"], body["max_tokens"]) == (0.7, 0.9, 3, 32)
    assert "logprobs" not in body
    assert fake_api.headers("chat")[0]["authorization"] == f"Bearer {OPENAI_KEY}"


def test_openai_reasoning_model_takes_no_sampling(fake_api):
    fake_api.openai("o3-mini").send(ask(temperature=0.7))
    (body,) = fake_api.bodies("chat")
    assert body["max_completion_tokens"] == 32
    assert not {"max_tokens", "temperature"} & set(body)


def test_openai_logprobs_are_token_dicts(fake_api):
    fake_api.answer = lambda body: "calm and glad"
    reply = fake_api.openai().send(ask(logprobs=3))
    body = fake_api.bodies("chat")[0]
    assert (body["logprobs"], body["top_logprobs"]) == (True, 3)
    assert reply.top_logprobs == [
        {tok: 0.0, f"{tok}~1": -0.25, f"{tok}~2": -0.5} for tok in ("calm", "and", "glad")
    ]
    assert all(isinstance(v, float) for position in reply.top_logprobs for v in position.values())


def test_openai_top_logprobs_capped(fake_api):
    fake_api.openai().send(ask(logprobs=50))
    assert fake_api.bodies("chat")[0]["top_logprobs"] == 20


# -- faults: what the SDK retries, and what comes back after
@pytest.mark.parametrize("vendor", VENDORS)
def test_rate_limit_retried_after_retry_after(fake_api, vendor):
    fake_api.script(rate_limited("0.3"))
    start = time.monotonic()
    reply = fake_api.provider(vendor).send(ask())
    assert time.monotonic() - start >= 0.3  # the SDK waited as told
    assert reply.text == "reply to: hello there"
    assert reply.retries == 1
    assert fake_api.hits[ROUTE[vendor]] == 2


@pytest.mark.parametrize("vendor", VENDORS)
def test_overloaded_and_server_error_retried(fake_api, vendor):
    fake_api.script(overloaded(), server_error(), rate_limited())
    reply = fake_api.provider(vendor, max_retries=3).send(ask())
    assert (reply.retries, fake_api.hits[ROUTE[vendor]]) == (3, 4)
    assert reply.request_id == ("req_fake_4" if vendor == "anthropic" else "req-openai-4")


@pytest.mark.parametrize("vendor", VENDORS)
def test_persistent_server_error_is_retryable_failure(fake_api, vendor):
    fake_api.always = server_error()
    with pytest.raises(ApiFailure) as failure:
        fake_api.provider(vendor, max_retries=2).send(ask())
    assert failure.value.retryable
    assert failure.value.reason.startswith("HTTP 500")
    assert fake_api.hits[ROUTE[vendor]] == 3  # max_retries + 1


@pytest.mark.parametrize("vendor", VENDORS)
def test_retries_exhausted_on_rate_limit(fake_api, vendor):
    fake_api.always = rate_limited()
    with pytest.raises(ApiFailure) as failure:
        fake_api.provider(vendor, max_retries=1).send(ask())
    assert failure.value.retryable and failure.value.reason.startswith("HTTP 429")
    assert fake_api.hits[ROUTE[vendor]] == 2


@pytest.mark.parametrize("vendor", VENDORS)
def test_timeout_is_retryable_failure(fake_api, vendor):
    fake_api.always = slow(1.5)
    start = time.monotonic()
    with pytest.raises(ApiFailure) as failure:
        fake_api.provider(vendor, max_retries=1, timeout=0.25).send(ask())
    assert failure.value.retryable
    assert failure.value.reason == "connection failed: APITimeoutError"
    assert fake_api.hits[ROUTE[vendor]] == 2  # the SDK retries a timeout too
    assert time.monotonic() - start < 1.5  # neither attempt waited for the slow reply


@pytest.mark.parametrize("vendor", VENDORS)
def test_bad_request_not_retried(fake_api, vendor):
    fake_api.script(bad_request())
    with pytest.raises(ApiFailure) as failure:
        fake_api.provider(vendor, max_retries=3).send(ask())
    assert not failure.value.retryable
    assert failure.value.reason.startswith("HTTP 400")
    assert "\n" not in failure.value.reason
    assert fake_api.hits[ROUTE[vendor]] == 1


def test_unreachable_endpoint_is_retryable_failure(fake_api):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from affectlens.runtime.providers.openai import OpenAIProvider

    provider = OpenAIProvider("gpt-4.1", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=1.0)
    with pytest.raises(ApiFailure) as failure:
        provider.send(ask())
    assert failure.value.retryable and failure.value.reason == "connection failed: APIConnectionError"


# -- keys and specs
def test_missing_anthropic_key_names_spec(fake_api, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(AffectlensError, match="anthropic:claude-haiku-4-5") as err:
        open_provider("anthropic:claude-haiku-4-5", base_url=fake_api.url)
    assert "ANTHROPIC_API_KEY" in str(err.value)


def test_openai_without_key_needs_base_url(fake_api, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(AffectlensError, match="openai:gpt-4o"):
        open_provider("openai:gpt-4o")
    provider = open_provider("openai:local-model", base_url=fake_api.openai_url, timeout=1.0)
    assert provider.send(ask()).text == "reply to: hello there"
    assert fake_api.headers("chat")[0]["authorization"] == "Bearer unused-by-local-server"


def test_open_provider_specs(fake_api):
    provider = open_provider("anthropic:claude-sonnet-4-5", base_url=fake_api.url, max_retries=0, timeout=1.0)
    assert provider.spec == "anthropic:claude-sonnet-4-5" and provider.max_retries == 0
    assert provider.describe()["base_url"] == fake_api.url
    with pytest.raises(AffectlensError, match="names no model"):
        open_provider("openai:")
    with pytest.raises(AffectlensError, match="not an API model spec"):
        open_provider("hf:some/model")


@pytest.mark.parametrize("vendor", VENDORS)
def test_provider_text_never_shows_key(fake_api, monkeypatch, vendor):
    sentinel = "sk-SENTINEL-7f3a9c"
    monkeypatch.setenv("ANTHROPIC_API_KEY" if vendor == "anthropic" else "OPENAI_API_KEY", sentinel)
    provider = fake_api.provider(vendor)
    provider.send(ask())
    sent = fake_api.headers(ROUTE[vendor])[0]
    assert sentinel in (sent.get("x-api-key", "") + sent.get("authorization", ""))  # the key did go out
    assert sentinel not in repr(provider) and sentinel not in json.dumps(provider.describe())


# -- pricing
def test_estimate_cost_by_hand():
    # claude-sonnet-4: $3 in, $15 out per Mtok; 400k of 1M input tokens read from the cache at 10%.
    usd = estimate_cost("claude-sonnet-4-5", 1_000_000, 100_000, 400_000)
    assert usd == pytest.approx(600_000 * 3e-6 + 400_000 * 0.3e-6 + 100_000 * 15e-6)  # 3.42
    assert estimate_cost("claude-sonnet-4-5", 1_000_000, 100_000, 400_000, batch=True) == pytest.approx(1.71)
    assert estimate_cost("gpt-4o-mini", 2_000_000, 0) == pytest.approx(0.30)


def test_price_prefixes_longest_first_and_unknown():
    assert estimate_cost("claude-opus-4-5-20251101", 1_000_000, 0) == pytest.approx(5.0)
    assert estimate_cost("claude-opus-4-1", 1_000_000, 0) == pytest.approx(15.0)
    assert estimate_cost("gpt-4.1-mini", 0, 1_000_000) == pytest.approx(1.6)
    assert estimate_cost("mystery-model", 10, 10) is None


def test_price_file_overrides(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"mystery-model": [1, 2], "gpt-4o": [3.0, 4.0]}))
    table = load_prices(path)
    assert estimate_cost("mystery-model", 1_000_000, 1_000_000, table=table) == pytest.approx(3.0)
    assert table["gpt-4o"] == (3.0, 4.0) and table["gpt-4o-mini"] == (0.15, 0.6)


@pytest.mark.parametrize(
    "text",
    ["not json", "[1, 2]", "null", '{"m": 5}', '{"m": [1]}', '{"m": ["a", 1]}', '{"m": "12"}',
     '{"m": {"a": 1}}', '{"m": [1, 2, 3]}', '{"m": [true, 1]}', '{"m": [-1, 2]}'],
)  # fmt: skip
def test_malformed_price_file(tmp_path, text):
    path = tmp_path / "prices.json"
    path.write_text(text)
    with pytest.raises(AffectlensError, match="not a price table") as err:
        load_prices(path)
    assert str(path) in str(err.value)


def test_missing_price_file(tmp_path):
    with pytest.raises(AffectlensError, match="not a price table"):
        load_prices(tmp_path / "absent.json")


def test_openai_json_object_structured_output(fake_api):
    """llama.cpp's Python server takes {"type": "json_object", "schema": ...} instead of json_schema."""
    from affectlens.runtime.providers.openai import OpenAIProvider

    OpenAIProvider("local", base_url=fake_api.openai_url, structured_output="json_object").send(
        ask(schema=SCHEMA)
    )
    assert fake_api.bodies("chat")[0]["response_format"] == {"type": "json_object", "schema": SCHEMA}
    with pytest.raises(AffectlensError, match="structured output 'xml'"):
        OpenAIProvider("local", base_url=fake_api.openai_url, structured_output="xml")
