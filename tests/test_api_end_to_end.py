"""The public API and CLI on API models, through the real SDKs against loopback fakes: Anthropic batches with
their accounting, the dry run, keys that never reach a run folder or the cache, and one-line errors."""

from __future__ import annotations

import json

import pytest
from api_fakes import ANTHROPIC_KEY, OPENAI_KEY
from typer.testing import CliRunner

import affectlens
from affectlens.cli import app
from affectlens.config import ApiConfig, ElicitConfig
from affectlens.runtime.providers.pricing import estimate_cost
from affectlens.stimuli import load_prompts
from affectlens.store.runs import read_elicit, read_requests

pytest_plugins = ["api_fakes"]
FACE_TEXT = "(^_^) all good here"


@pytest.fixture(autouse=True)
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFECTLENS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def all_files_text(*roots) -> str:
    return "".join(
        p.read_bytes().decode("utf-8", "replace") for root in roots for p in root.rglob("*") if p.is_file()
    )


def test_anthropic_batch_elicitation_is_accounted_at_the_batch_price(fake_api, tmp_path):
    fake_api.answer = lambda body: FACE_TEXT
    api = ApiConfig(base_url=fake_api.url, batch=True, batch_poll_seconds=0.01)
    prompts = load_prompts().balanced(1)
    summary = affectlens.elicit("anthropic:claude-sonnet-4-5", tmp_path / "run", prompts=prompts,
                                config=ElicitConfig(samples=2), api=api, quiet=True)  # fmt: skip
    requests = summary["requests"]
    assert fake_api.hits["batches.create"] == 1 and fake_api.hits["messages"] == 0
    # Paid once, in the batch; the stage then read every answer from the cache the batch filled.
    assert requests["sent"] == 18 and requests["sent_in_batch"] == 18 and requests["from_cache"] == 18
    expected = estimate_cost("claude-sonnet-4-5", requests["input_tokens"], requests["output_tokens"],
                             requests["cached_tokens"], batch=True)  # fmt: skip
    assert requests["cost_usd_estimate"] == pytest.approx(expected, rel=1e-6) and expected > 0
    run = read_elicit(tmp_path / "run")
    assert run.generations["face"].eq("(^_^)").all() and run.entry["prompt_caching"].startswith("off")
    assert read_requests(tmp_path / "run")["request_id"].str.startswith("batch:").all()
    # Temperature is not a parameter of this SDK's Messages API: the manifest says so instead of pretending.
    assert "not accepted" in run.entry["sampling"]["temperature"]


def test_keys_reach_neither_the_run_folder_nor_the_cache(fake_api, tmp_path, cache_root):
    fake_api.answer = lambda body: FACE_TEXT
    prompts = load_prompts().balanced(1)
    for spec, url in (
        ("anthropic:claude-haiku-4-5", fake_api.url),
        ("openai:gpt-4.1-mini", fake_api.openai_url),
    ):
        affectlens.elicit(spec, tmp_path / spec.split(":")[0], prompts=prompts, config=ElicitConfig(samples=1),
                          api=ApiConfig(base_url=url), quiet=True)  # fmt: skip
    sent = [headers for _, _, headers in fake_api.requests]
    assert any(ANTHROPIC_KEY in json.dumps(h) for h in sent) and any(
        OPENAI_KEY in json.dumps(h) for h in sent
    )
    text = all_files_text(tmp_path / "anthropic", tmp_path / "openai", cache_root)
    assert ANTHROPIC_KEY not in text and OPENAI_KEY not in text and "sk-" not in text


def test_the_cli_dry_run_prints_the_plan_and_sends_nothing(fake_api, tmp_path):
    result = CliRunner().invoke(app, [
        "elicit", "--model", "openai:gpt-4.1-mini", "--base-url", fake_api.openai_url, "--per-cell", "2",
        "--samples", "3", "--dry-run", "--out", str(tmp_path / "run"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "54 requests" in result.output and "0 already cached" in result.output and "$" in result.output
    assert sum(fake_api.hits.values()) == 0 and not (tmp_path / "run").exists()


def test_the_cli_gives_one_line_for_a_missing_key_and_for_local_only_options(monkeypatch, tmp_path):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    runner = CliRunner()
    result = runner.invoke(
        app, ["introspect", "--judge", "anthropic:claude-haiku-4-5", "--out", str(tmp_path / "j")]
    )
    assert result.exit_code == 2 and "needs ANTHROPIC_API_KEY" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(
        app, ["elicit", "--model", "smollm2-135m", "--dry-run", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "for API models" in result.output


def test_a_failing_server_asks_for_a_rerun_and_the_rerun_completes(fake_api, tmp_path):
    from api_fakes import server_error

    fake_api.answer = lambda body: FACE_TEXT
    prompts = load_prompts().balanced(1)
    api = ApiConfig(base_url=fake_api.openai_url, max_retries=0, concurrency=1)
    fake_api.script(server_error(), server_error())
    with pytest.raises(affectlens.errors.AffectlensError, match="rerun the same command to resume"):
        affectlens.elicit("openai:gpt-4.1-mini", tmp_path / "run", prompts=prompts,
                          config=ElicitConfig(samples=1), api=api, quiet=True)  # fmt: skip
    before = fake_api.hits["chat"]
    summary = affectlens.elicit("openai:gpt-4.1-mini", tmp_path / "run", prompts=prompts,
                                config=ElicitConfig(samples=1), api=api, quiet=True)  # fmt: skip
    assert fake_api.hits["chat"] - before == 2  # only the two that failed were sent again
    # Every request sent is accounted, those of the interrupted run included: 9 answered + 2 that failed.
    assert len(read_elicit(tmp_path / "run").generations) == 9
    assert summary["requests"]["sent"] == 11 and summary["requests"]["failed_attempts"] == 2
