"""API stages (elicit, introspect, synthesize) on an in-process provider: schema, resume, the request cache,
bounded retries of malformed output, failures that ask for a rerun, the dry run, and the encoder schema.

HTTP and the real SDKs are pinned in test_providers.py and test_runner.py; here the provider is a stub so that
each stage's own logic is tested exactly.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from affectlens.api.remote import introspect, synthesize
from affectlens.cells import default_cells
from affectlens.config import ApiConfig, ElicitConfig, IntrospectConfig, SynthesizeConfig
from affectlens.errors import AffectlensError
from affectlens.runtime.providers import ApiFailure, ApiReply, ApiRequest, Capabilities
from affectlens.stages.api_elicit import ApiElicitation
from affectlens.stimuli import load_lexicon, load_prompts
from affectlens.store.runs import (
    GENERATION_COLUMNS,
    INTROSPECT,
    read_elicit,
    read_face_cells,
    read_judged_table,
    read_requests,
)

CODES = default_cells().codes
FACES = ["(^▽^)", "(╥﹏╥)", "(ಠ_ಠ)"]


class StubProvider:
    """Answers from a function of the request; counts what was sent; can fail the first n sends."""

    vendor, model, base_url = "openai", "stub", "http://127.0.0.1:9/v1"

    def __init__(self, answer, *, logprobs: int = 20, fail_first: int = 0, refuse: bool = False) -> None:
        self.answer, self.sent, self.fail_first, self.refuse = answer, [], fail_first, refuse
        self.capabilities = Capabilities(json_schema=True, logprobs=logprobs, batches=False, temperature=True,
                                         seed=True)  # fmt: skip

    @property
    def spec(self) -> str:
        return f"{self.vendor}:{self.model}"

    def send(self, request: ApiRequest) -> ApiReply:
        self.sent.append(request)
        if self.refuse:
            raise ApiFailure("HTTP 400: bad request", retryable=False)
        if len(self.sent) <= self.fail_first:
            raise ApiFailure("HTTP 500: overloaded", retryable=True)
        text, top = self.answer(request)
        return ApiReply(
            text=text, top_logprobs=top, input_tokens=10, output_tokens=5, request_id=f"r{len(self.sent)}"
        )

    def prompt_caching(self, system: str) -> str:
        return "stub"

    def describe(self) -> dict[str, object]:
        return {"spec": self.spec, "hidden_states": False}


@pytest.fixture(autouse=True)
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFECTLENS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def face_reply(request: ApiRequest):
    """A reply whose face depends on the message, so prompts differ."""
    message = request.turns[-1][1]
    return f"{FACES[len(message) % 3]} sure, here goes", []


def elicitation(out, provider, samples=2, concurrency=3, **api):
    config = ElicitConfig(samples=samples, max_new_tokens=12, primed=True)
    stage_api = ApiConfig(concurrency=concurrency, **api)
    return ApiElicitation(provider, str(out), load_prompts().balanced(1), config, stage_api, quiet=True)


def test_api_elicitation_writes_the_local_schema_without_hidden_states(tmp_path):
    provider = StubProvider(face_reply)
    summary = elicitation(tmp_path / "run", provider).run()
    run = read_elicit(tmp_path / "run")
    assert list(run.generations.columns) == GENERATION_COLUMNS
    assert len(run.generations) == 9 * 2 and run.h_first is None and not run.has_hidden_states
    assert run.entry["hidden_states"] is False and run.entry["identity"]["model"]["spec"] == "openai:stub"
    assert set(run.generations["face"]) <= set(FACES) and run.generations["well_formed"].all()
    # The primer is sent as earlier turns; the instruction is the system text; samples get distinct seeds.
    first = provider.sent[0]
    assert (
        first.system == ElicitConfig().instruction and len(first.turns) > 1 and first.turns[-1][0] == "user"
    )
    assert len({(r.turns[-1][1], r.seed) for r in provider.sent}) == 18
    assert summary["requests"]["sent"] == 18 and summary["requests"]["from_cache"] == 0
    assert summary["requests"]["input_tokens"] == 180 and summary["requests"]["cost_usd_estimate"] is None
    assert len(read_requests(tmp_path / "run")) == 18


def test_a_rerun_elsewhere_sends_nothing_and_gives_the_same_replies(tmp_path):
    elicitation(tmp_path / "a", StubProvider(face_reply)).run()
    again = StubProvider(face_reply)
    summary = elicitation(tmp_path / "b", again).run()
    assert again.sent == [] and summary["requests"]["sent"] == 0 and summary["requests"]["from_cache"] == 18
    a, b = read_elicit(tmp_path / "a").generations, read_elicit(tmp_path / "b").generations
    pd.testing.assert_frame_equal(a, b)
    # Without the cache every request is sent again.
    fresh = StubProvider(face_reply)
    elicitation(tmp_path / "c", fresh, cache=False).run()
    assert len(fresh.sent) == 18


def test_failures_after_retries_ask_for_a_rerun_which_sends_only_what_is_missing(tmp_path):
    flaky = StubProvider(face_reply, fail_first=3)
    with pytest.raises(AffectlensError, match="rerun the same command to resume"):
        elicitation(tmp_path / "run", flaky).run()
    answered = len(flaky.sent) - 3
    resumed = StubProvider(face_reply)
    elicitation(tmp_path / "run", resumed).run()
    assert len(resumed.sent) == 18 - answered
    assert len(read_elicit(tmp_path / "run").generations) == 18


def test_a_refusal_stops_at_once_with_one_line(tmp_path):
    with pytest.raises(AffectlensError, match=r"openai:stub: HTTP 400: bad request \(not retried\)"):
        elicitation(tmp_path / "run", StubProvider(face_reply, refuse=True)).run()


def test_the_dry_run_counts_and_sends_nothing(tmp_path):
    provider = StubProvider(face_reply)
    plan = elicitation(tmp_path / "run", provider).plan()
    assert provider.sent == [] and not (tmp_path / "run").exists()
    assert plan["requests"] == 18 and plan["to_send"] == 18 and plan["output_tokens_at_most"] == 18 * 12
    elicitation(tmp_path / "run", provider).run()
    assert elicitation(tmp_path / "other", provider).plan()["to_send"] == 0


def test_local_only_settings_are_refused_for_api_models(tmp_path):
    stage = ApiElicitation(StubProvider(face_reply), str(tmp_path / "r"), load_prompts(),
                           ElicitConfig(suppress=("emoji",)), ApiConfig(), quiet=True)  # fmt: skip
    with pytest.raises(AffectlensError, match="--suppress needs a local model"):
        stage.run()


def distribution_answer(weights):
    def answer(request: ApiRequest):
        return json.dumps(dict(zip(CODES, weights, strict=True))), []

    return answer


def test_introspection_renormalises_keeps_the_raw_sum_and_writes_the_encoder_schema(tmp_path, monkeypatch):
    weights = [2.0, 1.0, 1.0, 0, 0, 0, 0, 0, 0]  # sums to 4: renormalised to 0.5, 0.25, 0.25
    provider = StubProvider(distribution_answer(weights))
    monkeypatch.setattr("affectlens.api.remote.provider", lambda spec, api: provider)
    summary = introspect("openai:stub", tmp_path / "j", faces=FACES, config=IntrospectConfig(samples=2))
    cells = read_face_cells(tmp_path / "j")
    assert list(cells.index) == FACES and list(cells.columns) == [*CODES, "entropy_bits", "top_cell"]
    np.testing.assert_allclose(cells.loc[FACES[0], CODES].to_numpy(float), np.array(weights) / 4)
    assert cells["top_cell"].eq(CODES[0]).all() and math.isclose(cells["entropy_bits"].iloc[0], 1.5)
    answers = read_judged_table(tmp_path / "j", "answers")
    assert len(answers) == 6 and answers["raw_sum"].eq(4.0).all()
    assert summary["raw_sum"]["median"] == 4.0 and provider.sent[0].schema["required"] == CODES
    assert INTROSPECT in json.loads((tmp_path / "j" / "manifest.json").read_text())["stages"]


def test_malformed_answers_are_retried_then_recorded_never_dropped(tmp_path, monkeypatch):
    provider = StubProvider(lambda request: ("{'not': json}", []))
    monkeypatch.setattr("affectlens.api.remote.provider", lambda spec, api: provider)
    summary = introspect("openai:stub", tmp_path / "j", faces=FACES[:1], config=IntrospectConfig(samples=1),
                         api=ApiConfig(parse_retries=2))  # fmt: skip
    assert len(provider.sent) == 3  # the first attempt and two retries
    answers = read_judged_table(tmp_path / "j", "answers")
    assert (
        len(answers) == 1 and not answers["ok"].iloc[0] and answers["reason"].iloc[0].startswith("malformed")
    )
    assert summary["faces_without_answer"] == FACES[:1] and summary["requests"]["failed_attempts"] == 3
    assert read_face_cells(tmp_path / "j").empty


@pytest.mark.parametrize(
    ("answer", "reason"),
    [({c: 0.1 for c in CODES[:-1]}, "missing cell"), ({**{c: 0.1 for c in CODES}, CODES[0]: -1}, "not a probability"),
     ({c: 0 for c in CODES}, "all probabilities are zero"), ([0.1] * 9, "not a JSON object")],
)  # fmt: skip
def test_each_malformed_distribution_names_its_fault(answer, reason):
    from affectlens.stages.introspect import parse_distribution

    with pytest.raises(ValueError, match=reason):
        parse_distribution(ApiReply(text=json.dumps(answer)), default_cells())


def test_introspection_from_label_logprobs(tmp_path, monkeypatch):
    top = {"1": math.log(0.6), " 3": math.log(0.2), "x": math.log(0.1), "12": math.log(0.05)}
    provider = StubProvider(lambda request: ("1", [top]))
    monkeypatch.setattr("affectlens.api.remote.provider", lambda spec, api: provider)
    summary = introspect("openai:stub", tmp_path / "j", faces=FACES[:1],
                         config=IntrospectConfig(method="logprobs", samples=1))  # fmt: skip
    row = read_face_cells(tmp_path / "j").loc[FACES[0], CODES].to_numpy(float)
    np.testing.assert_allclose(row[[0, 2]], [0.75, 0.25])
    assert math.isclose(row.sum(), 1)
    assert math.isclose(summary["raw_sum"]["median"], 0.8) and provider.sent[0].max_tokens == 1
    no_logprobs = StubProvider(lambda request: ("1", []), logprobs=0)
    monkeypatch.setattr("affectlens.api.remote.provider", lambda spec, api: no_logprobs)
    with pytest.raises(AffectlensError, match="gives no log-probs"):
        introspect("openai:stub", tmp_path / "k", faces=FACES[:1], config=IntrospectConfig(method="logprobs"))


def test_synthesis_averages_the_chosen_words_cell_weights(tmp_path, monkeypatch):
    elicitation(tmp_path / "run", StubProvider(face_reply)).run()
    lexicon = load_lexicon()
    # Two answers per face that differ by context, so averaging within and then across answers is pinned.
    picks = {FACES[0]: (["gleeful", "elated"], ["calm"]), FACES[1]: (["sad"], ["weary", "gloomy", "lonely"]),
             FACES[2]: (["annoyed"], ["baffled", "annoyed"])}  # fmt: skip

    def answer(request: ApiRequest):
        text = request.turns[-1][1]
        face = text.rsplit("Face: ", 1)[1]
        return json.dumps({"words": picks[face][len(text) % 2]}), []

    provider = StubProvider(answer)
    monkeypatch.setattr("affectlens.api.remote.provider", lambda spec, api: provider)
    summary = synthesize("openai:stub", tmp_path / "bol", contexts=tmp_path / "run",
                         config=SynthesizeConfig(contexts_per_face=2))  # fmt: skip
    cells = read_face_cells(tmp_path / "bol")
    words = read_judged_table(tmp_path / "bol", "words")
    emitted = set(read_elicit(tmp_path / "run").generations["face"])
    assert set(cells.index) == emitted and len(emitted) >= 2
    for face, group in words.groupby("face"):
        answers = [np.mean([lexicon.weight_of(w) for w in ws.split(",")], axis=0) for ws in group["words"]]
        np.testing.assert_allclose(cells.loc[face, CODES].to_numpy(float), np.mean(answers, axis=0))
    assert words.groupby("face").size().max() <= 2 and words["ok"].all()
    assert summary["lexicon"]["n_words"] == len(lexicon.words)
    assert provider.sent[0].schema["properties"]["words"]["maxItems"] == 3
    assert "Message: " in provider.sent[0].turns[0][1] and "Reply: " in provider.sent[0].turns[0][1]


def test_an_introspection_encoder_is_named_by_its_method_in_a_name_ensembles_accept(tmp_path, monkeypatch):
    from affectlens.analysis.encoders import load_encoder

    provider = StubProvider(distribution_answer([1.0] * 9))
    monkeypatch.setattr("affectlens.api.remote.provider", lambda spec, api: provider)
    introspect("openai:stub", tmp_path / "j", faces=FACES, config=IntrospectConfig(samples=1))
    name, frame = load_encoder(tmp_path / "j")
    assert name == "openai:stub (introspect schema)" and "," not in name  # ensemble members join on commas
    assert list(frame.index) == FACES


def test_a_killed_run_loses_only_the_request_in_flight(tmp_path):
    class Killed(StubProvider):
        def send(self, request: ApiRequest) -> ApiReply:
            if len(self.sent) == 5:
                raise KeyboardInterrupt  # the process is stopped while the sixth request is in flight
            return super().send(request)

    with pytest.raises(KeyboardInterrupt):
        elicitation(tmp_path / "run", Killed(face_reply), concurrency=1).run()
    resumed = StubProvider(face_reply)
    elicitation(tmp_path / "run", resumed).run()
    assert len(resumed.sent) == 18 - 5  # the five answered before the kill came from the cache


def test_sampling_filters_no_api_takes_are_refused(tmp_path):
    stage = ApiElicitation(StubProvider(face_reply), str(tmp_path / "r"), load_prompts(),
                           ElicitConfig(top_k=40), ApiConfig(), quiet=True)  # fmt: skip
    with pytest.raises(AffectlensError, match="--top-k and --min-p"):
        stage.run()


@pytest.mark.parametrize("value", ["10" * 200, "1e400"])
def test_numbers_beyond_float_range_are_malformed_not_a_crash(value):
    from affectlens.stages.introspect import parse_distribution

    text = "{" + ", ".join(f'"{c}": {value if i == 0 else 0.1}' for i, c in enumerate(CODES)) + "}"
    with pytest.raises(ValueError, match="not a probability|beyond float range"):
        parse_distribution(ApiReply(text=text), default_cells())


def test_label_logprobs_read_ascii_digits_only():
    from affectlens.stages.introspect import parse_label_logprobs

    top = {"²": 0.0, "١": 0.0, " 2": math.log(0.5), "2": math.log(0.25)}
    dist, mass = parse_label_logprobs(ApiReply(text="2", top_logprobs=[top]), default_cells())
    assert dist[1] == 1.0 and math.isclose(mass, 0.75)
