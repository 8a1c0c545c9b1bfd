"""The Runner over real providers and loopback fakes (tests/api_fakes.py): the request cache, parse retries,
refusals, the concurrency bound, keys kept out of everything written, and Anthropic Message Batches.
"""

from __future__ import annotations

import json

import pytest
from api_fakes import bad_request, last_user, malformed, server_error

from affectlens.errors import AffectlensError
from affectlens.runtime.providers import ApiReply, ApiRequest
from affectlens.runtime.providers.cache import RequestCache, request_key
from affectlens.runtime.providers.runner import Job, Runner

pytest_plugins = ["api_fakes"]

VENDORS = ["anthropic", "openai"]
ROUTE = {"anthropic": "messages", "openai": "chat"}
SCHEMA = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}


def score_answer(body: dict) -> str:
    return json.dumps({"score": len(last_user(body))})


def parse_score(reply: ApiReply) -> int:
    data = json.loads(reply.text)  # a JSONDecodeError is a ValueError
    if not isinstance(data, dict) or not isinstance(data.get("score"), int):
        raise ValueError("no integer score")
    return data["score"]


def jobs(n: int, schema: bool = True) -> list[Job]:
    """``n`` jobs asking for a score, answered by ``score_answer`` with the prompt's length (1..n)."""
    requests = [ApiRequest("Score it.", (("user", "x" * (i + 1)),), 16, schema=SCHEMA if schema else None)
                for i in range(n)]  # fmt: skip
    return [Job(f"p{i}", r, parse=parse_score if schema else None) for i, r in enumerate(requests)]


@pytest.fixture
def cache(tmp_path) -> RequestCache:
    return RequestCache(tmp_path / "cache")


# -- the cache
@pytest.mark.parametrize("vendor", VENDORS)
def test_second_run_sends_nothing(fake_api, cache, vendor):
    fake_api.answer = score_answer
    first = Runner(fake_api.provider(vendor), cache, concurrency=2).run(jobs(4))
    assert [o.value for o in first] == [1, 2, 3, 4] and all(o.ok for o in first)
    assert fake_api.hits[ROUTE[vendor]] == 4
    second = Runner(fake_api.provider(vendor), cache, concurrency=2).run(jobs(4))
    assert fake_api.hits[ROUTE[vendor]] == 4  # nothing sent
    assert [o.reply for o in second] == [o.reply for o in first]
    assert [o.value for o in second] == [1, 2, 3, 4]
    assert all(a["from_cache"] for o in second for a in o.accounts)
    assert not any(a["from_cache"] for o in first for a in o.accounts)


def test_corrupt_cache_entry_is_asked_again(fake_api, cache):
    fake_api.answer = score_answer
    runner = Runner(fake_api.anthropic(), cache, concurrency=1)
    runner.run(jobs(3))
    path = cache.root / (key := runner.key(jobs(3)[1], 0))[:2] / f"{key}.json"
    for corrupt in ('{"text": "trunc', "[1, 2]", '{"nonsense": 1}'):
        path.write_text(corrupt)
        before = fake_api.hits["messages"]
        outcomes = Runner(fake_api.anthropic(), cache, concurrency=1).run(jobs(3))
        assert fake_api.hits["messages"] == before + 1  # only the corrupt one
        assert [o.value for o in outcomes] == [1, 2, 3]
        assert cache.get(key) == outcomes[1].reply  # and overwritten with the new answer


def test_samples_and_requests_have_distinct_keys(fake_api, cache):
    job = jobs(1)[0]
    runner = Runner(fake_api.openai(), cache, concurrency=1)
    samples = [Job("p0", job.request, sample=s, parse=parse_score) for s in range(3)]
    keys = {runner.key(j, a) for j in samples for a in range(3)}
    assert len(keys) == 9
    assert runner.key(job, 0) != Runner(fake_api.anthropic(), cache).key(job, 0)  # the spec is in the key


# -- parse retries
@pytest.mark.parametrize("vendor", VENDORS)
def test_malformed_output_retried_then_recorded(fake_api, cache, vendor):
    fake_api.script(malformed(), malformed("plain words"), malformed('{"score": 1.5}'))
    runner = Runner(fake_api.provider(vendor), cache, concurrency=1, parse_retries=2)
    (outcome,) = runner.run(jobs(1))
    assert fake_api.hits[ROUTE[vendor]] == 3  # parse_retries + 1 attempts, each a new request
    assert not outcome.ok and not outcome.transport_failed
    assert outcome.reason.startswith("malformed output")
    assert outcome.reply.text == '{"score": 1.5}'
    assert [a["attempt"] for a in outcome.accounts] == [0, 1, 2]
    assert len({a["key"] for a in outcome.accounts}) == 3
    assert all(a["key"] in cache for a in outcome.accounts)
    assert not any(a["ok"] for a in outcome.accounts)
    # a rerun reads the same three answers from the cache and records the same failure
    (again,) = Runner(fake_api.provider(vendor), cache, concurrency=1, parse_retries=2).run(jobs(1))
    assert fake_api.hits[ROUTE[vendor]] == 3
    assert again.reason == outcome.reason and not again.ok


def test_malformed_then_good(fake_api, cache):
    fake_api.answer = score_answer
    fake_api.script(malformed())
    outcomes = Runner(fake_api.anthropic(), cache, concurrency=1, parse_retries=2).run(jobs(2))
    assert [o.ok for o in outcomes] == [True, True] and [o.value for o in outcomes] == [1, 2]
    assert [a["ok"] for a in outcomes[0].accounts] == [False, True]
    assert fake_api.hits["messages"] == 3


def test_parse_retries_zero(fake_api, cache):
    fake_api.always = malformed()
    outcomes = Runner(fake_api.openai(), cache, concurrency=3, parse_retries=0).run(jobs(4))
    assert len(outcomes) == 4 and not any(o.ok for o in outcomes)  # never dropped
    assert fake_api.hits["chat"] == 4


# -- transport failures and refusals
@pytest.mark.parametrize("vendor", VENDORS)
def test_bad_request_stops_run_with_one_line(fake_api, cache, vendor):
    fake_api.always = bad_request()
    provider = fake_api.provider(vendor, max_retries=3)
    with pytest.raises(AffectlensError) as err:
        Runner(provider, cache, concurrency=1).run(jobs(3))
    message = str(err.value)
    assert message.startswith(f"{provider.spec}: HTTP 400") and message.endswith("(not retried)")
    assert "\n" not in message
    assert fake_api.hits[ROUTE[vendor]] == 1  # hit once, never retried, nothing after it


def test_bad_request_under_concurrency(fake_api, cache):
    fake_api.answer = score_answer
    fake_api.script(bad_request())
    fake_api.delay = 0.05  # the others are still in flight when the refusal arrives
    runner = Runner(fake_api.anthropic(max_retries=3), cache, concurrency=3)
    with pytest.raises(AffectlensError, match="anthropic:claude-sonnet-4-5: HTTP 400"):
        runner.run(jobs(12))
    sent = len(fake_api.bodies("messages"))
    assert sent < 12  # the queued requests were cancelled, not sent
    answered = sum(runner.cached(job) for job in jobs(12))
    assert answered == sent - 1  # every answer that came back is cached; the refused one is not


def test_server_error_is_failed_outcome_and_rerun_resumes(fake_api, cache):
    fake_api.answer = score_answer
    fake_api.always = server_error()
    failed = Runner(fake_api.openai(max_retries=1), cache, concurrency=1).run(jobs(2))
    assert all(o.transport_failed and not o.ok and o.reason.startswith("HTTP 500") for o in failed)
    assert fake_api.hits["chat"] == 4  # two attempts each
    assert not any(cache.root.rglob("*.json"))  # nothing failed is cached
    fake_api.always = None
    resumed = Runner(fake_api.openai(max_retries=1), cache, concurrency=1).run(jobs(2))
    assert [o.value for o in resumed] == [1, 2]


def test_concurrency_must_be_positive(fake_api, cache):
    with pytest.raises(AffectlensError, match="concurrency"):
        Runner(fake_api.openai(), cache, concurrency=0)


# -- the concurrency bound
@pytest.mark.parametrize("vendor", VENDORS)
def test_concurrency_bound_seen_by_server(fake_api, cache, vendor):
    fake_api.answer, fake_api.delay = score_answer, 0.2
    outcomes = Runner(fake_api.provider(vendor), cache, concurrency=3).run(jobs(9))
    assert [o.value for o in outcomes] == list(range(1, 10))  # in order
    assert fake_api.hits[ROUTE[vendor]] == 9
    assert 1 < fake_api.max_in_flight <= 3  # the server is threaded: it would see more if more were sent


def test_concurrency_bound_can_fail(fake_api, cache):
    """The gauge does see more than three at once when more are sent, so the bound above is a real check."""
    fake_api.delay = 0.2
    Runner(fake_api.openai(), None, concurrency=6).run(jobs(9, schema=False))
    assert fake_api.max_in_flight > 3


def test_concurrency_one_is_serial(fake_api):
    fake_api.delay = 0.02
    Runner(fake_api.openai(), None, concurrency=1).run(jobs(4, schema=False))
    assert fake_api.max_in_flight == 1 and fake_api.hits["chat"] == 4


# -- keys
@pytest.mark.parametrize("vendor", VENDORS)
def test_key_never_written_nor_in_cache_key(fake_api, tmp_path, monkeypatch, vendor):
    env = "ANTHROPIC_API_KEY" if vendor == "anthropic" else "OPENAI_API_KEY"
    sentinel = "sk-SENTINEL-b41c0e2d9a"
    monkeypatch.setenv(env, sentinel)
    fake_api.answer = score_answer
    fake_api.script(malformed())
    runner = Runner(fake_api.provider(vendor), RequestCache(tmp_path / "cache"), concurrency=2)
    outcomes = runner.run(jobs(3))
    assert fake_api.headers(ROUTE[vendor])[0]["authorization"] == f"Bearer {sentinel}"  # it did go out
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 4
    assert not any(sentinel.encode() in p.read_bytes() for p in files)
    assert sentinel not in json.dumps([a for o in outcomes for a in o.accounts])
    assert sentinel not in repr(runner.provider) + json.dumps(runner.provider.describe())
    keys = [runner.key(j, 0) for j in jobs(3)]
    monkeypatch.setenv(env, "sk-OTHER-0000")
    assert [Runner(fake_api.provider(vendor), None).key(j, 0) for j in jobs(3)] == keys


def test_request_key_depends_on_what_was_asked():
    request = jobs(1)[0].request
    base = request_key("openai:m", None, request, 0, 0)
    assert base == request_key("openai:m", "", request, 0, 0)
    others = [request_key("openai:m", "http://x/v1", request, 0, 0), request_key("openai:n", None, request, 0, 0),
              request_key("openai:m", None, request, 1, 0), request_key("openai:m", None, request, 0, 1),
              request_key("openai:m", None, ApiRequest("Score it.", (("user", "y"),), 16), 0, 0)]  # fmt: skip
    assert base not in others and len(set(others)) == len(others)


# -- Anthropic Message Batches
def test_prefetch_batch_submits_uncached_and_fills_cache(fake_api, cache, tmp_path):
    fake_api.answer = score_answer
    runner = Runner(fake_api.anthropic(), cache, concurrency=2)
    todo = jobs(4)
    runner.run(todo[:1])  # one already answered
    state = tmp_path / "batch.json"
    assert runner.prefetch_batch(todo, state, poll_seconds=0.01) == 3
    (created,) = fake_api.bodies("batches.create")
    assert [r["custom_id"] for r in created["requests"]] == [runner.key(j, 0) for j in todo[1:]]
    assert created["requests"][0]["params"] == runner.provider.params(todo[1].request)
    assert fake_api.hits["batches.retrieve"] >= 2  # polled while in progress, then ended
    assert not state.exists()
    outcomes = runner.run(todo)
    assert fake_api.hits["messages"] == 1  # the batch answered the rest
    assert [o.value for o in outcomes] == [1, 2, 3, 4]
    assert [o.reply.request_id for o in outcomes[1:]] == ["batch:msgbatch_fake2"] * 3


def test_prefetch_batch_errored_items_sent_by_run(fake_api, cache, tmp_path):
    fake_api.answer = score_answer
    fake_api.batch_error = lambda params: last_user(params) == "xx"
    runner = Runner(fake_api.anthropic(), cache, concurrency=1)
    assert runner.prefetch_batch(jobs(3), tmp_path / "batch.json", poll_seconds=0.01) == 3
    assert [runner.cached(j) for j in jobs(3)] == [True, False, True]
    assert [o.value for o in runner.run(jobs(3))] == [1, 2, 3]
    assert fake_api.hits["messages"] == 1


def test_prefetch_batch_resumes_saved_batch(fake_api, cache, tmp_path):
    fake_api.answer, fake_api.batch_polls = score_answer, 2
    state = tmp_path / "batch.json"

    class Interrupted(Exception):
        pass

    def interrupt(message: str) -> None:
        raise Interrupted(message)

    with pytest.raises(Interrupted, match="waiting for batch msgbatch_fake1"):
        Runner(fake_api.anthropic(), cache).prefetch_batch(
            jobs(3), state, poll_seconds=0.01, progress=interrupt
        )
    saved = json.loads(state.read_text())
    assert saved["batch_id"] == "msgbatch_fake1" and len(saved["custom_ids"]) == 3
    runner = Runner(fake_api.anthropic(), cache)  # a new process: no memory but the state file
    assert runner.prefetch_batch(jobs(3), state, poll_seconds=0.01) == 3
    assert fake_api.hits["batches.create"] == 1  # polled the same batch, not paid twice
    assert all(runner.cached(j) for j in jobs(3)) and not state.exists()
    runner.run(jobs(3))
    assert fake_api.hits["messages"] == 0


def test_prefetch_batch_nothing_to_do(fake_api, cache, tmp_path):
    fake_api.answer = score_answer
    runner = Runner(fake_api.anthropic(), cache)
    runner.run(jobs(2))
    assert runner.prefetch_batch(jobs(2), tmp_path / "batch.json", poll_seconds=0.01) == 0
    assert fake_api.hits["batches.create"] == 0


def test_prefetch_batch_stale_state_is_one_line(fake_api, cache, tmp_path):
    state = tmp_path / "batch.json"
    state.write_text(json.dumps({"batch_id": "msgbatch_gone", "custom_ids": []}))
    with pytest.raises(AffectlensError, match="anthropic:claude-sonnet-4-5: batch msgbatch_gone: HTTP 404"):
        Runner(fake_api.anthropic(max_retries=0), cache).prefetch_batch(jobs(1), state, poll_seconds=0.01)
    assert state.exists()


def test_prefetch_batch_refusals(fake_api, cache, tmp_path):
    with pytest.raises(AffectlensError, match="no batch API"):
        Runner(fake_api.openai(), cache).prefetch_batch(jobs(1), tmp_path / "b.json")
    with pytest.raises(AffectlensError, match="needs the request cache"):
        Runner(fake_api.anthropic(), None).prefetch_batch(jobs(1), tmp_path / "b.json")
    assert not fake_api.hits
