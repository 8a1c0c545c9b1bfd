"""Loopback fakes of the Anthropic and OpenAI HTTP APIs, for testing the providers through the real SDKs.

One threaded pytest-httpserver on 127.0.0.1 serves the whole session; the ``fake_api`` fixture gives each test a
fresh ``FakeApi`` with its own handlers, a per-prompt answer function, a scripted sequence of faults, request
counters and an in-flight gauge, and puts throwaway keys in the environment (never a real one). Use it from a
test module with ``pytest_plugins = ["api_fakes"]``.

Served: ``POST /v1/messages`` (Anthropic Messages), ``POST /v1/chat/completions`` (OpenAI, base_url ``.../v1``),
and Anthropic Message Batches (``POST /v1/messages/batches``, ``GET /v1/messages/batches/{id}``, which answers
in_progress for ``batch_polls`` polls and then ended with a ``results_url``, and that JSONL results file).

The test modules import helpers from here before pytest loads it as a plugin, and it asserts nothing, so it
opts out of assertion rewriting: PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

Answer = Callable[[dict[str, Any]], str]  # request body (or batch params) -> reply text
ANTHROPIC_KEY, OPENAI_KEY = "sk-ant-fake-test-key", "sk-fake-test-key"
ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 429: "rate_limit_error",
               500: "api_error", 529: "overloaded_error"}  # fmt: skip
STAMP = "2025-01-01T00:00:00Z"


@dataclass(frozen=True)
class Fault:
    """How to answer one request instead of (or before) the normal reply."""

    status: int = 0  # an error status to answer with; 0 answers 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to hold the request first (past the client's timeout: a timeout)
    text: str | None = None  # a 200 reply with this text instead of the answer (malformed output)


def rate_limited(retry_after: str = "0.01") -> Fault:
    return Fault(429, {"retry-after": retry_after})


def overloaded() -> Fault:
    return Fault(529, {"retry-after-ms": "5"})


def server_error() -> Fault:
    return Fault(500, {"retry-after-ms": "5"})


def bad_request() -> Fault:
    return Fault(400)


def slow(seconds: float = 1.5) -> Fault:
    return Fault(delay=seconds)


def malformed(text: str = '{"score": "not a number"') -> Fault:
    return Fault(text=text)


def last_user(body: dict[str, Any]) -> str:
    """The last user turn's text of an Anthropic or OpenAI request body."""
    content = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    return content if isinstance(content, str) else "".join(b.get("text", "") for b in content)


def prompt_words(body: dict[str, Any]) -> int:
    """The fake's input token count: words of the system text and every turn."""
    system = body.get("system") or ""
    if isinstance(system, list):
        system = " ".join(b["text"] for b in system)
    return len(system.split()) + sum(len(str(m["content"]).split()) for m in body["messages"])


def echo(body: dict[str, Any]) -> str:
    return f"reply to: {last_user(body)}"


class FakeApi:
    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.url = server.url_for("/").rstrip("/")  # the Anthropic base_url
        self.openai_url = f"{self.url}/v1"
        self.answer: Answer = echo
        self.faults: deque[Fault] = deque()  # consumed one per model request, first in first out
        self.always: Fault | None = None  # once the script is spent: every request answered so
        self.delay = 0.0  # every model reply held this long (to overlap concurrent requests)
        self.cached_tokens = 0  # prompt tokens reported as read from the vendor cache (Anthropic: if marked)
        self.batch_polls = 1  # retrieves answered in_progress before a batch ends
        self.batch_error: Callable[[dict[str, Any]], bool] = lambda params: False
        self.hits: Counter[str] = Counter()  # requests received per route
        # (route, body, lower-cased headers) of every request, in arrival order
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.batches: dict[str, dict[str, Any]] = {}
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self._n = 0
        server.expect_request("/v1/messages", method="POST").respond_with_handler(self._messages)
        server.expect_request("/v1/chat/completions", method="POST").respond_with_handler(self._chat)
        server.expect_request("/v1/messages/batches", method="POST").respond_with_handler(self._batch_create)
        server.expect_request(
            re.compile(r"^/v1/messages/batches/[^/]+/results$"), method="GET"
        ).respond_with_handler(self._batch_results)
        server.expect_request(re.compile(r"^/v1/messages/batches/[^/]+$"), method="GET").respond_with_handler(
            self._batch_retrieve
        )

    # -- scripting and inspection
    def script(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def bodies(self, route: str) -> list[dict[str, Any]]:
        return [body for r, body, _ in self.requests if r == route]

    def headers(self, route: str) -> list[dict[str, str]]:
        return [headers for r, _, headers in self.requests if r == route]

    # -- providers pointed here
    def anthropic(self, model: str = "claude-sonnet-4-5", *, max_retries: int = 2, timeout: float = 1.0):
        from affectlens.runtime.providers.anthropic import AnthropicProvider

        return AnthropicProvider(model, base_url=self.url, max_retries=max_retries, timeout=timeout)

    def openai(self, model: str = "gpt-4.1-mini", *, max_retries: int = 2, timeout: float = 1.0):
        from affectlens.runtime.providers.openai import OpenAIProvider

        return OpenAIProvider(model, base_url=self.openai_url, max_retries=max_retries, timeout=timeout)

    def provider(self, vendor: str, **kw: Any):
        return self.anthropic(**kw) if vendor == "anthropic" else self.openai(**kw)

    # -- internals
    def _arrive(self, route: str, request: Request) -> tuple[int, dict[str, Any]]:
        body = json.loads(request.get_data() or b"null")
        with self._lock:
            self._n += 1
            self.hits[route] += 1
            self.requests.append((route, body, {k.lower(): v for k, v in request.headers.items()}))
            return self._n, body

    def _model_reply(self, route: str, request: Request, build: Callable[..., Response]) -> Response:
        n, body = self._arrive(route, request)
        with self._lock:
            fault = self.faults.popleft() if self.faults else self.always
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            wait = self.delay + (fault.delay if fault else 0.0)
            if wait:
                time.sleep(wait)
            vendor = "anthropic" if route == "messages" else "openai"
            if fault and fault.status:
                return error_response(vendor, fault.status, f"fake {fault.status}", n, fault.headers)
            text = fault.text if fault and fault.text is not None else self.answer(body)
            return build(n, body, text)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _messages(self, request: Request) -> Response:
        return self._model_reply("messages", request, self._anthropic_response)

    def _chat(self, request: Request) -> Response:
        return self._model_reply("chat", request, self._openai_response)

    def _anthropic_response(self, n: int, body: dict[str, Any], text: str) -> Response:
        return json_response(self.message(n, body, text), {"request-id": f"req_fake_{n}"})

    def message(self, n: int, body: dict[str, Any], text: str) -> dict[str, Any]:
        """A Messages API Message; cache reads only when the system text carries a cache_control marker."""
        total = prompt_words(body)
        system = body.get("system")
        marked = isinstance(system, list) and any("cache_control" in b for b in system)
        cached = min(self.cached_tokens, total) if marked else 0
        usage = {"input_tokens": total - cached, "output_tokens": len(text.split()),
                 "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0}  # fmt: skip
        return {"id": f"msg_fake_{n}", "type": "message", "role": "assistant", "model": body["model"],
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "stop_sequence": None, "usage": usage}  # fmt: skip

    def _openai_response(self, n: int, body: dict[str, Any], text: str) -> Response:
        total = prompt_words(body)
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None,
                                  "message": {"role": "assistant", "content": text, "refusal": None}}  # fmt: skip
        if body.get("logprobs"):
            k = int(body.get("top_logprobs") or 0)
            choice["logprobs"] = {
                "content": [token_logprobs(tok, k) for tok in text.split()],
                "refusal": None,
            }
        usage = {"prompt_tokens": total, "completion_tokens": len(text.split()),
                 "total_tokens": total + len(text.split()),
                 "prompt_tokens_details": {"cached_tokens": min(self.cached_tokens, total)}}  # fmt: skip
        completion = {"id": f"chatcmpl-fake-{n}", "object": "chat.completion", "created": 1735689600,
                      "model": body["model"], "choices": [choice], "usage": usage}  # fmt: skip
        return json_response(completion, {"x-request-id": f"req-openai-{n}"})

    # -- Message Batches
    def _batch_create(self, request: Request) -> Response:
        n, body = self._arrive("batches.create", request)
        batch_id = f"msgbatch_fake{n}"
        with self._lock:
            self.batches[batch_id] = {"requests": body["requests"], "polls": 0}
        return json_response(self._batch_json(batch_id, ended=False))

    def _batch_retrieve(self, request: Request) -> Response:
        n, _ = self._arrive("batches.retrieve", request)
        batch_id = request.path.rsplit("/", 1)[1]
        if batch_id not in self.batches:
            return error_response("anthropic", 404, f"no batch {batch_id}", n)
        with self._lock:
            batch = self.batches[batch_id]
            batch["polls"] += 1
            ended = batch["polls"] > self.batch_polls
        return json_response(self._batch_json(batch_id, ended=ended))

    def _batch_json(self, batch_id: str, *, ended: bool) -> dict[str, Any]:
        n = len(self.batches[batch_id]["requests"])
        counts = {"processing": 0 if ended else n, "succeeded": n if ended else 0, "errored": 0, "canceled": 0,
                  "expired": 0}  # fmt: skip
        return {"id": batch_id, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
                "request_counts": counts, "created_at": STAMP, "expires_at": STAMP,
                "ended_at": STAMP if ended else None, "archived_at": None, "cancel_initiated_at": None,
                "results_url": self.server.url_for(f"/v1/messages/batches/{batch_id}/results") if ended else None}  # fmt: skip

    def _batch_results(self, request: Request) -> Response:
        n, _ = self._arrive("batches.results", request)
        batch_id = request.path.rsplit("/", 2)[1]
        lines = []
        for i, item in enumerate(self.batches[batch_id]["requests"]):
            params = item["params"]
            if self.batch_error(params):
                error = {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": "fake batch error"},
                }
                result: dict[str, Any] = {"type": "errored", "error": error}
            else:
                result = {
                    "type": "succeeded",
                    "message": self.message(n * 1000 + i, params, self.answer(params)),
                }
            lines.append(json.dumps({"custom_id": item["custom_id"], "result": result}))
        return Response("\n".join(lines) + "\n", status=200, content_type="application/x-jsonl")


def token_logprobs(token: str, k: int) -> dict[str, Any]:
    """One position of chat.completions logprobs: the chosen token and ``k`` alternatives (itself first)."""
    alts = [token] + [f"{token}~{i}" for i in range(1, k)]
    top = [{"token": t, "logprob": -0.25 * i, "bytes": list(t.encode())} for i, t in enumerate(alts)]
    return {"token": token, "logprob": 0.0, "bytes": list(token.encode()), "top_logprobs": top}


def json_response(data: Any, headers: dict[str, str] | None = None, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, headers=headers or {}, content_type="application/json")


def error_response(
    vendor: str, status: int, message: str, n: int, headers: dict[str, str] | None = None
) -> Response:
    etype = ERROR_TYPES.get(status, "api_error")
    if vendor == "anthropic":
        body: dict[str, Any] = {"type": "error", "error": {"type": etype, "message": message}}
        headers = {"request-id": f"req_fake_{n}", **(headers or {})}
    else:
        body = {"error": {"message": message, "type": etype, "param": None, "code": None}}
        headers = {"x-request-id": f"req-openai-{n}", **(headers or {})}
    return json_response(body, headers, status)


@pytest.fixture(scope="session")
def api_server() -> Iterator[HTTPServer]:
    """One threaded loopback server for the session (stopping one takes up to half a second)."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def fake_api(api_server: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    """Fresh fake endpoints, throwaway keys in the environment, and no vendor URL or token from outside."""
    api_server.clear()
    for var in ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    api = FakeApi(api_server)
    yield api
    api_server.check_handler_errors()  # a bug in the fake is not a 500 the SDK retried
    api_server.clear()
